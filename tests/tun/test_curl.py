"""curl (the kernel's TCP) against ustack's HTTP service through the TUN device."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import ustack
from ustack.apps import HttpApp, pattern_bytes
from ustack.link.netns import NetNamespace

from .conftest import STACK, MakeStack, MiB, needs_curl, needs_tun, run_in, states, until

pytestmark = [pytest.mark.tun, needs_tun, needs_curl]

BASE = f"http://{STACK}"
BIG = 50 * MiB


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_get_50_mb(make_stack: MakeStack, netns: NetNamespace, tmp_path: Path) -> None:
    stack = await make_stack()
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    out = tmp_path / "body"
    rc, _, err = await run_in(netns, "curl", "-sS", "--fail", "-o", str(out), f"{BASE}/bytes/{BIG}")
    assert rc == 0, err
    body = out.read_bytes()
    assert len(body) == BIG
    assert _sha(body) == _sha(pattern_bytes(0, BIG))
    assert stack.stats.tcp_bytes_sent > BIG


async def test_post_50_mb(make_stack: MakeStack, netns: NetNamespace, tmp_path: Path) -> None:
    stack = await make_stack()
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    data = os.urandom(BIG)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    rc, out, err = await run_in(
        netns, "curl", "-sS", "--fail", "--data-binary", f"@{upload}",
        "-H", "Content-Type: application/octet-stream", f"{BASE}/sha256",
    )  # fmt: skip
    assert rc == 0, err
    assert out.decode().strip() == _sha(data)
    assert stack.stats.tcp_bytes_received > BIG


async def test_keep_alive_serves_several_requests_on_one_connection(
    make_stack: MakeStack, netns: NetNamespace, tmp_path: Path
) -> None:
    stack = await make_stack()
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    sizes = [1000, 300_000, 7, 2_000_000]
    argv = ["curl", "-sS", "--fail", "--write-out", "%{num_connects} %{size_download}\\n"]
    for i, size in enumerate(sizes):
        argv += ["-o", str(tmp_path / f"body{i}"), f"{BASE}/bytes/{size}"]
    rc, out, err = await run_in(netns, *argv)
    assert rc == 0, err
    # curl opened a connection for the first URL only and reused it for the rest ...
    assert out.decode().split("\n")[:-1] == [
        f"{1 if i == 0 else 0} {size}" for i, size in enumerate(sizes)
    ]
    # ... and ustack agrees: one connection accepted.
    assert stack.stats.tcp_passive_opens == 1
    for i, size in enumerate(sizes):
        assert (tmp_path / f"body{i}").read_bytes() == pattern_bytes(0, size)


async def test_connection_close_makes_ustack_close_first(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    stack = await make_stack()
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    rc, out, err = await run_in(
        netns, "curl", "-sS", "--fail", "-H", "Connection: close",
        "-o", "/dev/null", "--write-out", "%{local_port}", f"{BASE}/bytes/100000",
    )  # fmt: skip
    assert rc == 0, err
    remote = f"10.7.0.1:{int(out)}"

    def row() -> dict[str, object] | None:
        return next((r for r in stack.connections() if r["remote"] == remote), None)

    # The active closer ends in TIME-WAIT (RFC 9293 3.6): here that is ustack, not curl.
    await until(
        lambda: (r := row()) is not None and r["state"] == "TIME-WAIT",
        f"ustack's connection to {remote} in TIME-WAIT (states: {states(stack)})",
    )
    rc, out, err = await run_in(netns, "ss", "-Htn", "state", "time-wait")
    assert rc == 0, err
    assert out.strip() == b"", "the kernel should not be the side in TIME-WAIT"
