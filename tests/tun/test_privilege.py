"""``ustack serve --user``: root only for setting the TUN device up, then an ordinary user."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace
from ustack.link.privilege import resolve

from .conftest import REPO, SAFETY, STACK, kernel_connect, needs_tun, run_in, startup_line
from .test_cli import SERVE, serving

NOBODY = 65534


def _status(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(row.split(":\t", 1) for row in rows if ":\t" in row)


def test_resolve_refuses_an_unknown_user_and_group() -> None:
    with pytest.raises(LinkError, match="unknown user 'no-such-user-ustack'"):
        resolve("no-such-user-ustack")
    with pytest.raises(LinkError, match="unknown group 'no-such-group-ustack'"):
        resolve("root", "no-such-group-ustack")


def test_resolve_takes_the_primary_group_and_the_supplementary_ones() -> None:
    me = resolve("root")
    assert (me.user, me.uid, me.gid) == ("root", 0, 0)
    assert 0 in me.groups


@pytest.mark.tun
@needs_tun
async def test_serve_with_an_unknown_user_is_refused_before_setup(netns: NetNamespace) -> None:
    rc, _, err = await run_in(netns, *SERVE, "--name", "tu0", "--user", "no-such-user-ustack")
    assert rc == 2
    assert err.decode().splitlines() == ["ustack: error: unknown user 'no-such-user-ustack'"]
    rc, out, _ = await run_in(netns, "ip", "-o", "link")
    assert rc == 0 and b"tu0" not in out  # nothing was set up


@pytest.mark.tun
@needs_tun
async def test_serve_drops_root_and_keeps_serving(netns: NetNamespace, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping root needs root")
    try:
        resolve("nobody")
    except LinkError:
        pytest.skip("no user 'nobody' here")
    pcap = tmp_path / "dropped.pcap"
    args = ["--name", "tp0", "--services", "echo", "--user", "nobody", "--pcap", str(pcap)]
    async with serving(netns, *args) as proc:
        status = _status(proc.pid)
        assert status["Uid"].split() == [str(NOBODY)] * 4
        assert status["Gid"].split() == [str(NOBODY)] * 4
        assert "0" not in status["Groups"].split()
        assert status["CapEff"] == "0000000000000000"
        reader, writer = await kernel_connect(netns, 7, STACK)
        writer.write(b"as nobody\n")
        assert await asyncio.wait_for(reader.readline(), SAFETY) == b"as nobody\n"
        writer.close()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), SAFETY)
        assert proc.returncode == 0
        assert proc.stderr is not None
        assert b"Traceback" not in await proc.stderr.read()
    # the capture, opened before the drop, was written to the end
    assert pcap.stat().st_size > 24 + 3 * (16 + 40)


@pytest.mark.tun
@needs_tun
async def test_serve_says_who_it_runs_as(netns: NetNamespace) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping root needs root")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns.name, *SERVE, "--name", "tq0", "--services", "echo",
        "--user", "nobody",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = (await startup_line(proc))[1].decode()
        assert "serving echo:7" in line and "running as user nobody (uid 65534)" in line, line
    finally:
        proc.kill()
        await proc.wait()
