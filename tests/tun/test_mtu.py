"""A TUN device with a 65000-byte MTU: curl through ustack with jumbo segments both ways."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import ustack
from ustack.apps import HttpApp, pattern_bytes
from ustack.link.netns import NetNamespace

from .conftest import STACK, MakeStack, MiB, needs_curl, needs_tun, run_in

pytestmark = [pytest.mark.tun, needs_tun, needs_curl]

MTU = 65000
SIZE = 20 * MiB


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _curl_both_ways(netns: NetNamespace, tmp_path: Path) -> None:
    rc, out, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/bytes/{SIZE}")
    assert rc == 0, err
    assert _sha(out) == _sha(pattern_bytes(0, SIZE))
    data = os.urandom(SIZE)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    rc, out, err = await run_in(
        netns, "curl", "-sS", "--fail", "--data-binary", f"@{upload}", f"http://{STACK}/sha256"
    )
    assert rc == 0, err
    assert out.decode().strip() == _sha(data)


async def test_mtu_65000_carries_jumbo_segments(
    make_stack: MakeStack, netns: NetNamespace, tmp_path: Path
) -> None:
    # No MSS configured: the host derives it from the link MTU (RFC 9293 3.7.1).
    stack = await make_stack(mtu=MTU)
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    await _curl_both_ways(netns, tmp_path)
    link = stack.link.stats
    # Segments far beyond what a 1500-byte link allows went out and came in.
    assert link.tx_bytes / link.tx_packets > 8 * 1500
    assert link.rx_bytes / link.rx_packets > 8 * 1500
    assert link.rx_dropped == 0 and link.tx_dropped == 0
