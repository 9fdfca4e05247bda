"""TUN offloads end to end: curl through ustack with the virtio-net header on and off.

With offloads on, the kernel hands ustack TCP super-segments of up to 64 KB and takes them from
ustack, so the tun interface's own counters (``/sys/class/net/<tun>/statistics`` inside the
namespace) show far fewer packets than ``bytes / MTU``; with them off, no packet is longer than
the MTU. Either way 50 MB cross each way intact. A kernel that refuses the offloads leaves a
working plain device ("auto") or a one-line error ("on"); ``ustack serve`` says which it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ustack
from ustack import Stack
from ustack.apps import HttpApp, pattern_bytes
from ustack.link import tun as tun_mod
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace
from ustack.link.pcap import PcapTap, PcapWriter
from ustack.link.tun import TunLink

from .conftest import (
    KERNEL,
    PYTHON,
    REPO,
    SAFETY,
    STACK,
    TUN_NAME,
    MiB,
    needs_curl,
    needs_tun,
    run_in,
    tun_config,
)

pytestmark = [pytest.mark.tun, needs_tun, needs_curl]

BASE = f"http://{STACK}"
BIG = 50 * MiB
MTU = 1500
# "Far fewer packets than bytes / MTU": the average packet is at least this many MTUs. Linux
# sends 64 KB super-segments once its window has opened, ustack sends up to its TSO limit; a
# handful of MTU-sized packets at the start and the ACKs cannot pull it below a few.
SUPER = 4


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def counters(ns: NetNamespace, name: str = TUN_NAME) -> dict[str, int]:
    """The kernel's counters for the tun interface; rx is what ustack wrote, tx what it read."""
    script = (
        f"cd /sys/class/net/{name}/statistics && grep -H . rx_bytes rx_packets tx_bytes tx_packets"
    )
    rc, out, err = await run_in(ns, "sh", "-c", script)
    assert rc == 0, err
    return {key: int(value) for key, value in (line.split(":") for line in out.decode().split())}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


@contextlib.asynccontextmanager
async def http_stack(ns: NetNamespace, offload: str, **wrap: object) -> AsyncIterator[Stack]:
    link = TunLink.open(TUN_NAME, address=KERNEL, peer=STACK, netns=ns.name, offload=offload)
    stack = Stack(link, address=STACK, config=tun_config())
    try:
        await ustack.start_server(HttpApp(), port=80, stack=stack)
        yield stack
    finally:
        await stack.aclose(grace=1.0)


@pytest.mark.parametrize("offload", ["on", "off"])
async def test_50_mb_each_way(netns: NetNamespace, tmp_path: Path, offload: str) -> None:
    async with http_stack(netns, offload) as stack:
        on = offload == "on"
        assert stack.link.offload is on and stack.host.offload is on

        start = await counters(netns)
        body = tmp_path / "body"
        rc, _, err = await run_in(
            netns, "curl", "-sS", "--fail", "-o", str(body), f"{BASE}/bytes/{BIG}"
        )
        assert rc == 0, err
        data = body.read_bytes()
        assert len(data) == BIG and _sha(data) == _sha(pattern_bytes(0, BIG))
        down = delta(await counters(netns), start)

        upload = tmp_path / "upload"
        upload.write_bytes(os.urandom(BIG))
        start = await counters(netns)
        rc, out, err = await run_in(
            netns, "curl", "-sS", "--fail", "--data-binary", f"@{upload}",
            "-H", "Content-Type: application/octet-stream", f"{BASE}/sha256",
        )  # fmt: skip
        assert rc == 0, err
        assert out.decode().strip() == _sha(upload.read_bytes())
        up = delta(await counters(netns), start)

    # Download: the kernel received (rx) what ustack wrote; upload: it sent (tx) what we read.
    assert down["rx_bytes"] > BIG and up["tx_bytes"] > BIG
    average_down = down["rx_bytes"] / down["rx_packets"]
    average_up = up["tx_bytes"] / up["tx_packets"]
    if on:
        assert down["rx_packets"] < BIG / MTU / SUPER, down
        assert up["tx_packets"] < BIG / MTU / SUPER, up
        assert average_down > SUPER * MTU and average_up > SUPER * MTU
        assert stack.stats.offload_tx_super > 0 and stack.stats.offload_rx_super > 0
    else:
        # No packet longer than the MTU: the average of full segments and ACKs stays below it.
        assert down["rx_packets"] > BIG / MTU and up["tx_packets"] > BIG / MTU
        assert average_down <= MTU and average_up <= MTU
    assert stack.link.stats.rx_oversize == stack.link.stats.tx_oversize == 0


async def test_capture_over_offload_holds_plain_ip_with_super_segments_whole(
    netns: NetNamespace, tmp_path: Path
) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    capture = tmp_path / "offload.pcap"
    link = TunLink.open(TUN_NAME, address=KERNEL, peer=STACK, netns=netns.name, offload="on")
    stack = Stack(PcapTap(link, PcapWriter(capture)), address=STACK, config=tun_config())
    try:
        assert stack.link.offload
        await ustack.start_server(HttpApp(), port=80, stack=stack)
        size = 4 * MiB
        rc, out, err = await run_in(netns, "curl", "-sS", "--fail", f"{BASE}/bytes/{size}")
        assert rc == 0, err
        assert out == pattern_bytes(0, size)
    finally:
        await stack.aclose(grace=1.0)
    # Every record starts with an IP header (a virtio-net header would start with 0x00-0x02);
    # besides our IPv4 there is the kernel's IPv6 chatter on a fresh interface.
    records = [bytes(p) for p in rdpcap(str(capture))]
    assert records and all(r[0] >> 4 in (4, 6) for r in records)
    packets = [p for p in (IP(r) for r in records) if p.version == 4]
    ours = [p for p in packets if TCP in p and p[IP].src == STACK]
    assert sum(len(p[TCP].payload) for p in ours) > size
    biggest = max(len(p) for p in ours)
    assert MTU < biggest <= 65535  # a super-segment, recorded as the one packet it was
    assert all(p[IP].len == len(p) for p in packets)  # nothing cut, no header left in front


async def test_kernel_refusing_offloads_auto_serves_plain_and_on_fails(
    netns: NetNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A feature bit the kernel does not know makes TUNSETOFFLOAD fail with EINVAL.
    monkeypatch.setattr(tun_mod, "OFFLOAD_FEATURES", tun_mod.OFFLOAD_FEATURES | 1 << 30)
    with pytest.raises(LinkError, match=r"^cannot turn on offloads for TUN device 'ustk0': "):
        Stack.tun(TUN_NAME, address=STACK, peer=KERNEL, netns=netns.name, offload="on")
    stack = Stack.tun(TUN_NAME, address=STACK, peer=KERNEL, netns=netns.name, config=tun_config())
    try:
        assert not stack.link.offload
        assert "TUNSETOFFLOAD" in stack.link.offload_reason
        stack.start()
        assert not stack.host.offload
        await ustack.start_server(HttpApp(), port=80, stack=stack)
        start = await counters(netns)
        rc, out, err = await run_in(netns, "curl", "-sS", "--fail", f"{BASE}/bytes/{4 * MiB}")
        assert rc == 0, err
        assert out == pattern_bytes(0, 4 * MiB)
        down = delta(await counters(netns), start)
        assert down["rx_bytes"] / down["rx_packets"] <= MTU
    finally:
        await stack.aclose(grace=1.0)


async def _serve_first_line(ns: NetNamespace, *args: str) -> str:
    """Start ``ustack serve ARGS`` in ``ns``, return its first stderr line, stop it."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, PYTHON, "-m", "ustack", "serve", "--name", "t3",
        "--no-control", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), SAFETY)
        while line.startswith(b"ustack: warning: IPv4 only"):  # IPv6 disabled (Docker)
            line = await asyncio.wait_for(proc.stderr.readline(), SAFETY)
        if b"serving" in line:
            rc, _, err = await run_in(ns, "curl", "-sS", "--fail", f"{BASE}/bytes/1000000")
            assert rc == 0, err
        return line.decode()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "offload: on (TSO/GRO, checksum)"),
        (["--offload", "on"], "offload: on (TSO/GRO, checksum)"),
        (["--offload", "off"], "offload: off (not requested)"),
        (["--loss", "1"], "offload: off (fault injection works per wire packet)"),
    ],
    ids=["auto", "on", "off", "auto-with-faults"],
)
async def test_serve_says_whether_offload_is_on(
    netns: NetNamespace, args: list[str], words: str
) -> None:
    line = await _serve_first_line(netns, "--services", "http", *args)
    assert "serving" in line and words in line, line
