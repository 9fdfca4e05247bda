"""Live ladders of a running daemon: ``serve --ladder``, and ``ustack trace`` on the control socket.

Each test runs ``ustack serve`` in its own namespace with its control socket in a directory of
its own, and reads what it prints (or what a trace client prints) until the event it waits for;
ladders are checked by their defining lines (handshake, data, close), never by timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace
from ustack.link.privilege import resolve

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

SERVE = [PYTHON, "-m", "ustack", "serve"]
TRACE = [PYTHON, "-m", "ustack", "trace"]
NOBODY = 65534
MSL = "0.2"  # TIME-WAIT lasts 0.4 s, so a connection ustack closes first ends while we wait


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """A directory everyone may enter (pytest's tmp_path is root's alone), so that a client
    running as another user reaches the socket and the socket's own mode decides."""
    path = Path(tempfile.mkdtemp(prefix="ustack-ctl-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve(ns: NetNamespace, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ustack serve ARGS`` in ``ns`` with its stdout and stderr piped, once it serves."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, *SERVE, "--msl", MSL, *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
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


async def stop(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    """SIGTERM; the rest of (stdout, stderr) once it has exited cleanly."""
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = await asyncio.wait_for(
        asyncio.gather(proc.stdout.read(), proc.stderr.read()), SAFETY
    )
    await asyncio.wait_for(proc.wait(), SAFETY)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err, err
    return out.decode(), err.decode()


async def read_ladder(stream: asyncio.StreamReader) -> list[str]:
    """The next ladder on ``stream``: its header line and rows, up to the blank line."""
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(stream.readline(), SAFETY)
        assert raw, "output ended inside or before a ladder: " + "\n".join(lines)
        text = raw.decode().rstrip("\n")
        if not lines:
            assert text.startswith("=== "), f"not a ladder header: {text!r}"
        elif not text:
            return lines
        lines.append(text)


def assert_textbook_ladder(lines: list[str], port: int) -> None:
    """Header, handshake, data and close of one connection to ``port``."""
    header = lines[0]
    assert f"<-> {STACK}:{port}:" in header, header
    assert " bytes in, " in header and " bytes out, " in header, header
    rows = lines[1:]
    # kernel on the left, ustack on the right; arrows "--...->" inbound, "<--..." outbound
    inbound = [r for r in rows if "|--" in r]
    outbound = [r for r in rows if "|<-" in r]
    assert inbound[0].split("|--")[1].lstrip().startswith("S   seq=0 "), rows  # the SYN
    assert any("S.  seq=0 ack=1 " in r for r in outbound), rows  # the SYN,ACK
    assert any(r.rstrip().endswith("SYN-RECEIVED") for r in rows), rows
    assert any(r.rstrip().endswith("ESTABLISHED") for r in rows), rows
    assert any("len=0" not in r for r in outbound if "S." not in r), rows  # data from ustack
    assert any(" F" in r.split("|")[1] for r in inbound), rows  # the kernel's FIN
    assert any(" F" in r.split("|")[1] for r in outbound), rows  # ustack's FIN
    assert rows[-1].rstrip().endswith("| CLOSED"), rows


@needs_curl
async def test_serve_ladder_draws_each_finished_connection_of_the_listed_ports(
    netns: NetNamespace,
) -> None:
    async with serve(
        netns, "--name", "lv0", "--services", "echo,http", "--ladder", "80", "--no-control"
    ) as proc:
        assert proc.stdout is not None
        # A connection to port 7 first: not listed, so never drawn (checked at the end, where
        # a connection still tracked would be written too).
        reader, writer = await kernel_connect(netns, 7)
        writer.write(b"not drawn\n")
        assert await asyncio.wait_for(reader.readline(), SAFETY) == b"not drawn\n"
        writer.close()
        rc, out, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/bytes/20000")
        assert rc == 0, err
        assert len(out) == 20000
        lines = await read_ladder(proc.stdout)
        assert_textbook_ladder(lines, 80)
        # 20000 bytes of body and the response head, once each (offloads or not)
        sent = int(lines[0].split(" bytes out")[0].rsplit(" ", 1)[1])
        assert 20000 < sent < 21000, lines[0]
        # curl closes first: ustack's side ends from LAST-ACK at once, no TIME-WAIT to wait for
        assert "passive close" in lines[0], lines[0]
        rest, _ = await stop(proc)
    assert ":7:" not in rest and f"{STACK}:7" not in rest, rest


@needs_curl
async def test_trace_json_streams_a_connection_made_after_it_attached(
    netns: NetNamespace, control_dir: Path
) -> None:
    sock = str(control_dir / "ctl.sock")
    async with serve(netns, "--name", "lv1", "--services", "http", "--control", sock) as proc:
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode == 0o600, oct(mode)
        tracer = await asyncio.create_subprocess_exec(
            *TRACE, "--control", sock, "--json", "--count", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        try:
            assert tracer.stdout is not None
            hello = json.loads(await asyncio.wait_for(tracer.stdout.readline(), SAFETY))
            assert hello["v"] == 1 and hello["event"] == "hello" and hello["mode"] == "json"
            # Connection: close -> ustack closes first, so the trace goes through TIME-WAIT.
            rc, _, err = await run_in(
                netns, "curl", "-sS", "--fail", "-H", "Connection: close", f"http://{STACK}/"
            )
            assert rc == 0, err
            out, err = await asyncio.wait_for(tracer.communicate(), SAFETY)
        finally:
            if tracer.returncode is None:
                tracer.kill()
                await tracer.wait()
        assert tracer.returncode == 0, err
        records: list[dict[str, Any]] = [json.loads(line) for line in out.decode().splitlines()]
        await stop(proc)
    assert records and all(r["v"] == 1 for r in records)
    assert {r["local"] for r in records} == {f"{STACK}:80"}
    states = [r["to"] for r in records if r["event"] == "state"]
    expected = iter(["SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "TIME-WAIT", "CLOSED"])
    want = next(expected)
    for seen in states:
        if seen == want:
            want = next(expected, "")
    assert want == "", f"states {states} lack {want} in order"
    assert states[-1] == "CLOSED"
    segments = [(r["dir"], r["flags"]) for r in records if r["event"] == "segment"]
    assert segments[0] == ("in", "S"), segments
    assert ("out", "S.") in segments
    assert any(d == "out" and "F" in f for d, f in segments)
    assert any(d == "in" and "F" in f for d, f in segments)
    data = [r for r in records if r["event"] == "segment" and r["dir"] == "out" and r["len"]]
    assert data and all(isinstance(r["seq"], int) for r in data)


@needs_curl
async def test_trace_draws_ladders_of_the_ports_asked_for(
    netns: NetNamespace, control_dir: Path
) -> None:
    sock = str(control_dir / "ctl.sock")
    async with serve(netns, "--name", "lv2", "--services", "echo,http", "--control", sock) as proc:
        tracer = await asyncio.create_subprocess_exec(
            *TRACE, "--control", sock, "--ports", "80", "--count", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        try:
            assert tracer.stdout is not None and tracer.stderr is not None
            line = await asyncio.wait_for(tracer.stderr.readline(), SAFETY)
            assert line.startswith(b"ustack trace: attached to"), line
            # An echo connection (port 7, not asked for) made and closed first must not show.
            reader, writer = await kernel_connect(netns, 7)
            writer.write(b"x\n")
            assert await asyncio.wait_for(reader.readline(), SAFETY) == b"x\n"
            writer.close()
            rc, _, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/")
            assert rc == 0, err
            lines = await read_ladder(tracer.stdout)
            await asyncio.wait_for(tracer.wait(), SAFETY)
        finally:
            if tracer.returncode is None:
                tracer.kill()
                await tracer.wait()
        assert tracer.returncode == 0
        await stop(proc)
    assert_textbook_ladder(lines, 80)


def _python_for(uid: int) -> str | None:
    """An interpreter ``uid`` may run (ours may live under /root), or None."""
    for python in (PYTHON, "/usr/bin/python3"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [python, "-c", "pass"], user=uid, group=uid, extra_groups=[], timeout=SAFETY
            )
            if done.returncode == 0:
                return python
    return None


# A client that needs nothing but the standard library, to run as another user.
RAW_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect": e.errno}))
    sys.exit(0)
s.sendall(b'{"v": 1, "mode": "json", "ports": null}\\n')
print(s.makefile().readline().strip())
"""


async def _as_user(uid: int, python: str, sock: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        python, "-c", RAW_CLIENT, sock,
        stdout=asyncio.subprocess.PIPE, user=uid, group=uid, extra_groups=[],
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), SAFETY)
    result: dict[str, Any] = json.loads(out)
    return result


def _need_nobody() -> str:
    if os.geteuid() != 0:
        pytest.skip("running a client as another user needs root")
    try:
        resolve("nobody")
    except LinkError:
        pytest.skip("no user 'nobody' here")
    python = _python_for(NOBODY)
    if python is None:
        pytest.skip("no Python interpreter that user nobody may run")
    return python


async def test_control_socket_is_for_root_and_serves_user_only(
    netns: NetNamespace, control_dir: Path
) -> None:
    python = _need_nobody()
    sock = str(control_dir / "ctl.sock")
    async with serve(netns, "--name", "lv3", "--services", "http", "--control", sock) as proc:
        st = os.stat(sock)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
        # The file's mode keeps nobody out...
        assert await _as_user(NOBODY, python, sock) == {"connect": 13}  # EACCES
        # ...and past it, the credentials check does: open the mode up and nobody is refused.
        os.chmod(sock, 0o666)
        refused = await _as_user(NOBODY, python, sock)
        assert refused["v"] == 1 and refused["event"] == "error", refused
        assert "permission denied: uid 65534" in refused["error"], refused
        # root may attach
        assert (await _as_user(0, PYTHON, sock))["event"] == "hello"
        rc, out, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/stats.json")
        assert rc == 0, err
        counters = json.loads(out)["counters"]
        assert counters["control_refused_peer"] == 1
        await stop(proc)


async def test_control_socket_belongs_to_the_user_serve_drops_to(
    netns: NetNamespace, control_dir: Path
) -> None:
    python = _need_nobody()
    sock = str(control_dir / "ctl.sock")
    args = ["--name", "lv4", "--services", "echo", "--control", sock, "--user", "nobody"]
    async with serve(netns, *args) as proc:
        st = os.stat(sock)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, NOBODY)
        # serve's own user and root may attach
        assert (await _as_user(NOBODY, python, sock))["event"] == "hello"
        assert (await _as_user(0, PYTHON, sock))["event"] == "hello"
        await stop(proc)


@needs_curl
async def test_a_trace_client_that_stops_reading_does_not_stall_serve(
    netns: NetNamespace, control_dir: Path
) -> None:
    sock = str(control_dir / "ctl.sock")
    # Without offloads every 1448 bytes is a segment and a trace line: many lines per download.
    args = ["--name", "lv5", "--services", "http", "--control", sock, "--offload", "off"]
    async with serve(netns, *args) as proc:
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(sock)
        stalled.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=stalled, limit=1 << 22)
        writer.write(b'{"v": 1, "mode": "json", "ports": null}\n')
        assert json.loads(await asyncio.wait_for(reader.readline(), SAFETY))["event"] == "hello"
        # Stop reading: from now on the lines pile up in the socket and then in serve.
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        dropped = 0
        for _ in range(20):  # each a few thousand trace lines; bounded in count and time
            rc, out, err = await run_in(
                netns, "curl", "-sS", "--fail", f"http://{STACK}/bytes/2000000"
            )
            assert rc == 0 and len(out) == 2_000_000, err  # serve still answers
            rc, out, err = await run_in(netns, "curl", "-sS", f"http://{STACK}/stats.json")
            assert rc == 0, err
            dropped = json.loads(out)["counters"]["trace_lines_dropped"]
            if dropped:
                break
        assert dropped > 0
        # Reading again, the client hears how many lines it missed before the next ones.
        writer.transport.resume_reading()  # type: ignore[attr-defined]
        rc, _, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/")
        assert rc == 0, err
        while True:
            record = json.loads(await asyncio.wait_for(reader.readline(), SAFETY))
            if record["event"] == "dropped":
                break
        # at least those counted when we looked (the look itself, over HTTP, made more)
        assert record["lines"] >= dropped
        # A client that vanishes is detached; serve goes on.
        writer.transport.abort()
        rc, _, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/")
        assert rc == 0, err
        await stop(proc)


async def test_bad_control_arguments_give_one_line(netns: NetNamespace, tmp_path: Path) -> None:
    rc, _, err = await run_in(
        netns, *SERVE, "--name", "lv6", "--control", str(tmp_path / "no" / "such" / "c.sock")
    )
    lines = err.decode().splitlines()
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith("ustack: error: control socket") and "No such file" in lines[0]
    rc, _, err = await run_in(netns, *TRACE, "--control", str(tmp_path / "none.sock"))
    assert rc == 1 and err.decode().startswith("ustack: error: no control socket at"), err
    rc, _, err = await run_in(netns, *SERVE, "--ladder", "80,http")
    assert rc == 2 and err.decode().splitlines() == [
        "ustack serve: error: argument --ladder: bad port 'http': use 1-65535"
    ]
