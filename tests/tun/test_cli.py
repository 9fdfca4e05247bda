"""``ustack serve`` as a real process in the namespace: serving, stopping, and refusing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ustack.apps import pattern_bytes
from ustack.link.netns import NetNamespace

from .conftest import (
    PYTHON,
    REPO,
    SAFETY,
    STACK,
    kernel_connect,
    needs_curl,
    needs_tun,
    run_in,
    startup_line,
)

pytestmark = [pytest.mark.tun, needs_tun]

# --no-control: tests leave nothing in the host's /run (the control socket has its own tests)
SERVE = [PYTHON, "-m", "ustack", "serve", "--no-control"]
STOP_BOUND = 5.0  # seconds from SIGTERM to exit, with connections open


@contextlib.asynccontextmanager
async def serving(ns: NetNamespace, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ustack serve ARGS`` inside ``ns``, yielded once it has printed its "serving" line."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, *SERVE, *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    try:
        await startup_line(proc)
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@needs_curl
async def test_serve_works_and_stops_on_sigterm_with_connections_open(netns: NetNamespace) -> None:
    async with serving(netns, "--name", "t0", "--services", "echo,http") as proc:
        rc, out, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/bytes/300000")
        assert rc == 0, err
        assert out == pattern_bytes(0, 300_000)

        # A kernel client that stays connected and never closes on its own.
        reader, writer = await kernel_connect(netns, 7)
        writer.write(b"still here\n")
        assert await asyncio.wait_for(reader.readline(), SAFETY) == b"still here\n"

        # A second instance cannot take the same TUN device while this one holds it.
        rc, _, err = await run_in(netns, *SERVE, "--name", "t0")
        _assert_one_line_error(rc, err, "busy")

        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        await asyncio.wait_for(proc.wait(), STOP_BOUND)
        assert proc.returncode == 0
        rest = await proc.stderr.read()
        assert b"Traceback" not in rest
        # The client saw the connection end (FIN from the graceful close, or the final reset).
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), SAFETY) == b""
        writer.close()


def _assert_one_line_error(rc: int, err: bytes, *words: str) -> None:
    text = err.decode()
    assert rc != 0
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("ustack"), text
    for word in words:
        assert word in lines[0], text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mtu", "100"], ["MTU"]),
        (["--mtu", "jumbo"], ["--mtu"]),
        (["--address", "10.7.0.300"], ["IPv4"]),
        (["--address", "192.168.5.2"], ["bad address"]),
        (["--address", "10.7.0.1"], ["bad address"]),
        (["--services", "echo,gopher"], ["unknown service", "gopher"]),
        (["--services", "echo,discard:7"], ["port 7", "already in use"]),
        (["--name", "bad/name"], ["interface name"]),
    ],
    ids=[
        "mtu-too-small",
        "mtu-not-a-number",
        "address-malformed",
        "address-outside-subnet",
        "address-is-the-peer",
        "unknown-service",
        "duplicate-port",
        "bad-tun-name",
    ],
)
async def test_bad_arguments_give_one_line(
    netns: NetNamespace, args: list[str], words: list[str]
) -> None:
    rc, _, err = await run_in(netns, *SERVE, "--name", "t1", *args)
    _assert_one_line_error(rc, err, *words)


@pytest.mark.skipif(shutil.which("capsh") is None, reason="capsh is not installed")
async def test_without_cap_net_admin_gives_one_line(netns: NetNamespace) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping a capability with capsh needs root")
    command = "exec " + shlex.join([*SERVE, "--name", "t2"])
    rc, _, err = await run_in(netns, "capsh", "--drop=cap_net_admin", "--", "-c", command)
    _assert_one_line_error(rc, err, "CAP_NET_ADMIN")


@needs_curl
async def test_serve_traces_state_changes_and_retransmissions_as_json(
    netns: NetNamespace, tmp_path: Path
) -> None:
    pcap = f"{tmp_path}/serve.pcap"
    async with serving(
        netns, "--name", "t1", "--services", "http", "--trace", "json",
        "--loss", "10", "--seed", "3", "--pcap", pcap,
    ) as proc:  # fmt: skip
        rc, out, err = await run_in(
            netns, "curl", "-sS", "--fail", "--max-time", "60", "-H", "Connection: close",
            f"http://{STACK}/bytes/400000",
        )  # fmt: skip
        assert rc == 0, err
        assert out == pattern_bytes(0, 400_000)
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = (await asyncio.wait_for(proc.stderr.read(), SAFETY)).decode()
        await asyncio.wait_for(proc.wait(), STOP_BOUND)
    assert proc.returncode == 0
    records = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    transitions = [(r["from"], r["to"]) for r in records if r["event"] == "state"]
    assert ("SYN-RECEIVED", "ESTABLISHED") in transitions
    assert ("ESTABLISHED", "FIN-WAIT-1") in transitions  # Connection: close -> we close first
    retransmits = [r for r in records if r["event"] == "retransmit"]
    assert retransmits, "10 % loss over 270 segments must cost at least one retransmission"
    assert all(r["remote"].startswith("10.7.0.1:") for r in records)
    # The capture is what ustack saw, readable by scapy.
    from scapy.utils import rdpcap

    assert len(rdpcap(pcap)) > 200


async def test_demo_draws_every_state_and_removes_its_namespace() -> None:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "ustack", "demo", "--size", "100000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    text, log = out.decode(), err.decode()
    assert "SHA-256" in log and "verified" in log
    for state in (
        "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
        "CLOSE-WAIT", "LAST-ACK", "TIME-WAIT", "CLOSED",
    ):  # fmt: skip
        assert state in text, f"{state} missing from the ladder:\n{text}"
    assert "|<" in text and ">|" in text  # arrows both ways
    name = next(w for w in log.split() if w.startswith("ustack-demo-"))
    listed = await asyncio.create_subprocess_exec(
        "ip", "netns", "list", stdout=asyncio.subprocess.PIPE
    )
    names, _ = await listed.communicate()
    assert name not in names.decode()
