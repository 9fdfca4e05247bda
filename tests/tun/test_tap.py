"""TAP with ARP against the Linux kernel, in a private namespace: ping, curl 20 MB, the kernel's
neighbour table, RFC 5227 probes and announcements on the wire, and the ladder's ARP rows."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

import ustack
from ustack.aio.ethernet import EthernetLink
from ustack.apps import HttpApp, pattern_bytes
from ustack.ladder import Ladder
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace
from ustack.link.tap import TapLink
from ustack.wire import arp, ethernet
from ustack.wire.ipv4 import addr_to_int

from .conftest import (
    KERNEL,
    KERNEL6,
    PYTHON,
    REPO,
    SAFETY,
    STACK,
    STACK6,
    MiB,
    needs_curl,
    needs_tun,
    run_in,
    tun_config,
    until,
)

TAP_NAME = "utap0"
ETH_P_ARP = 0x0806
# <linux/neighbour.h> NUD_* states that mean "the kernel has a usable address for it"
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x02, 0x04, 0x08, 0x10
FAKE_MAC = bytes.fromhex("0200000000fe")  # a third host on the segment, played by a raw socket

MakeTap = Callable[..., Awaitable[ustack.Stack]]


@pytest.fixture
async def make_tap(netns: NetNamespace) -> AsyncIterator[MakeTap]:
    stacks: list[ustack.Stack] = []

    async def make(*, start: bool = True, ipv6: bool = False, **kwargs: Any) -> ustack.Stack:
        kwargs.setdefault("config", tun_config())
        if ipv6:
            kwargs.update(address6=STACK6, peer6=KERNEL6)
        try:
            stack = ustack.Stack.tap(TAP_NAME, STACK, KERNEL, netns=netns.name, **kwargs)
        except LinkError as exc:
            if ipv6 and exc.errno == errno.EAFNOSUPPORT:
                pytest.skip(f"IPv6 is not available here: {exc}")
            raise
        stacks.append(stack)
        if start:
            stack.start()
        return stack

    yield make
    for stack in stacks:
        await stack.aclose(grace=1.0)


def eth(stack: ustack.Stack) -> EthernetLink:
    link = stack.link
    assert isinstance(link, EthernetLink)
    return link


def arp_counters(stack: ustack.Stack) -> dict[str, int]:
    return {k: v for k, v in stack.stats.nonzero().items() if k.startswith(("eth_", "arp_"))}


def raw_arp_socket(ns: NetNamespace) -> socket.socket:
    """An AF_PACKET socket on the TAP device's kernel side: what it sends reaches ustack, and it
    receives every ARP frame ustack writes."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.bind((TAP_NAME, ETH_P_ARP))
        sock.setblocking(False)
        return sock

    return ns.call(make)


async def next_arp(
    sock: socket.socket, pick: Callable[[ethernet.EthernetFrame, arp.ArpPacket], bool]
) -> tuple[ethernet.EthernetFrame, arp.ArpPacket]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SAFETY
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 2048), deadline - loop.time())
        frame = ethernet.parse(data)
        pkt = arp.parse(frame.payload)
        if pick(frame, pkt):
            return frame, pkt


def kernel_neighbour(ns: NetNamespace, address: str) -> tuple[str, int] | None:
    """(MAC, NUD state) of the kernel's neighbour entry for ``address`` on the TAP device."""

    def look() -> tuple[str, int] | None:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=TAP_NAME)
            for msg in ipr.get_neighbours(ifindex=index, dst=address):
                return str(msg.get_attr("NDA_LLADDR")), int(msg["state"])
        return None

    return ns.call(look)


# -- no privileges needed: refused before any device is made ----------------------------------


def test_half_an_ipv6_configuration_is_refused() -> None:
    with pytest.raises(LinkError, match="together"):
        TapLink.open(TAP_NAME, address6="fd00:7::1/64")
    with pytest.raises(ValueError, match="together"):
        ustack.Stack.tap(TAP_NAME, address6="fd00:7::2")


@pytest.mark.parametrize("mac", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00"])
def test_group_or_zero_mac_is_refused(mac: str) -> None:
    with pytest.raises(LinkError, match="unicast"):
        TapLink.open(TAP_NAME, mac=mac)


def test_unreadable_mac_is_refused() -> None:
    with pytest.raises(LinkError, match="bad MAC address 'nonsense'"):
        TapLink.open(TAP_NAME, mac="nonsense")


# -- against the kernel -----------------------------------------------------------------------


@needs_tun
async def test_ping_resolves_and_the_kernel_learns_our_mac(
    make_tap: MakeTap, netns: NetNamespace
) -> None:
    stack = await make_tap(mac="02:00:00:00:00:02")
    rc, out, err = await run_in(netns, "ping", "-c", "3", "-i", "0.2", "-W", "5", STACK)
    assert rc == 0, out + err
    assert b"3 received" in out
    assert stack.stats.icmp_echo_replies == 3
    # The kernel's neighbour table holds ustack's MAC for ustack's address ...
    entry = kernel_neighbour(netns, STACK)
    assert entry is not None
    mac, state = entry
    assert mac == "02:00:00:00:00:02"
    assert state & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE), hex(state)
    # ... and ustack's holds the kernel's, learned from its request (RFC 826 merge rule).
    loop = asyncio.get_running_loop()
    assert eth(stack).arp.neighbours(loop.time()) == [
        {
            "address": KERNEL,
            "mac": ethernet.mac_to_text(eth(stack).kernel_mac),
            "state": "REACHABLE",
            "queued": 0,
        }
    ]
    counters = arp_counters(stack)
    assert counters["arp_requests_answered"] == 1
    assert counters["arp_learned"] == 1
    assert counters["arp_announcements_sent"] >= 1
    assert counters["eth_rx"] >= 4  # the request and three echo requests
    # Nothing the kernel sent was dropped: the IPv6 side keeps quiet, every frame was for us.
    assert set(counters) <= {
        "eth_rx",
        "arp_rx",
        "arp_learned",
        "arp_merged",
        "arp_requests_answered",
        "arp_replies_received",
        "arp_announcements_sent",
    }, counters


@needs_tun
@needs_curl
async def test_curl_20_mb(make_tap: MakeTap, netns: NetNamespace, tmp_path: Path) -> None:
    stack = await make_tap()
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    size = 20 * MiB
    out = tmp_path / "body"
    rc, _, err = await run_in(
        netns, "curl", "-sS", "--fail", "-o", str(out), f"http://{STACK}/bytes/{size}"
    )
    assert rc == 0, err
    body = out.read_bytes()
    assert len(body) == size
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern_bytes(0, size)).digest()
    assert stack.stats.tcp_bytes_sent >= size
    assert stack.link.stats.tx_dropped == 0
    # Resolved once; every later packet found the neighbour in the cache.
    assert stack.stats.arp_requests_answered == 1
    assert stack.stats.arp_queued == 0


@needs_tun
async def test_announcement_then_probe_answered(make_tap: MakeTap, netns: NetNamespace) -> None:
    stack = await make_tap(mac="02:00:00:00:00:02", start=False)
    # The raw socket exists before the stack starts, so it sees the announcement.
    with raw_arp_socket(netns) as sock:
        stack.start()
        us = bytes.fromhex("020000000002")
        frame, pkt = await next_arp(sock, lambda f, p: p.is_announcement)
        # RFC 5227 2.3: a request with sender and target both our address, broadcast
        assert frame.dst == ethernet.BROADCAST and frame.src == us
        assert pkt == arp.ArpPacket(arp.OP_REQUEST, us, addr_to_int(STACK), bytes(6), pkt.tpa)
        assert pkt.tpa == addr_to_int(STACK)
        # RFC 5227 2.1.1: a probe for our address (sender 0.0.0.0) from a third host
        probe = ethernet.header(ethernet.BROADCAST, FAKE_MAC, ethernet.ETHERTYPE_ARP) + arp.build(
            op=arp.OP_REQUEST, sha=FAKE_MAC, spa=0, tha=bytes(6), tpa=addr_to_int(STACK)
        )
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, probe)
        frame, reply = await next_arp(sock, lambda f, p: p.op == arp.OP_REPLY)
        assert frame.dst == FAKE_MAC and frame.src == us
        assert reply == arp.ArpPacket(arp.OP_REPLY, us, addr_to_int(STACK), FAKE_MAC, 0)
        assert stack.stats.arp_probes_answered == 1
        # Nothing learned from a probe; an ordinary request from the same host is learned.
        assert [n["address"] for n in eth(stack).arp.neighbours(loop.time())] == []
        other = addr_to_int("10.7.0.9")
        request = ethernet.header(ethernet.BROADCAST, FAKE_MAC, ethernet.ETHERTYPE_ARP) + arp.build(
            op=arp.OP_REQUEST, sha=FAKE_MAC, spa=other, tha=bytes(6), tpa=addr_to_int(STACK)
        )
        await loop.sock_sendall(sock, request)
        frame, reply = await next_arp(sock, lambda f, p: p.op == arp.OP_REPLY)
        assert reply == arp.ArpPacket(arp.OP_REPLY, us, addr_to_int(STACK), FAKE_MAC, other)
        assert eth(stack).arp.neighbours(loop.time()) == [
            {"address": "10.7.0.9", "mac": "02:00:00:00:00:fe", "state": "REACHABLE", "queued": 0}
        ]


@needs_tun
async def test_ustack_resolves_the_kernel_itself(make_tap: MakeTap, netns: NetNamespace) -> None:
    """ustack connects first: its SYN waits in the pending queue while it asks who-has
    10.7.0.1, and goes once the kernel replies."""
    stack = await make_tap()

    def make() -> socket.socket:
        srv = socket.create_server((KERNEL, 0))
        srv.setblocking(False)
        return srv

    srv = netns.call(make)
    loop = asyncio.get_running_loop()
    with srv:
        port = srv.getsockname()[1]
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        _, writer = await asyncio.wait_for(
            ustack.open_connection(KERNEL, port, stack=stack), SAFETY
        )
        conn, _ = await asyncio.wait_for(accept, SAFETY)
        with conn:
            conn.setblocking(False)
            writer.write(b"hello")
            assert await asyncio.wait_for(loop.sock_recv(conn, 5), SAFETY) == b"hello"
            writer.close()
    counters = arp_counters(stack)
    assert counters["arp_requests_sent"] == 1
    assert counters["arp_queued"] >= 1  # the SYN
    assert counters["arp_queue_sent"] == counters["arp_queued"]
    assert counters["arp_replies_received"] == 1
    assert eth(stack).arp.neighbours(loop.time())[0]["mac"] == ethernet.mac_to_text(
        eth(stack).kernel_mac
    )


@needs_tun
async def test_ladder_of_a_fetch_starts_with_the_arp_exchange(
    make_tap: MakeTap, netns: NetNamespace
) -> None:
    ladder = Ladder()

    def on_packet(direction: str, packet: bytes | bytearray | memoryview, _now: float) -> None:
        ladder.packet(time.monotonic(), direction, packet)

    stack = await make_tap(mac="02:00:00:00:00:02", on_packet=on_packet, config=tun_config(msl=0.2))
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    (sock,) = netns.call(lambda: [socket.socket()])
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    with sock:
        await asyncio.wait_for(loop.sock_connect(sock, (STACK, 80)), SAFETY)
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while await asyncio.wait_for(loop.sock_recv(sock, 65536), SAFETY):
            pass
    await until(lambda: not stack.connections(), "TIME-WAIT over", timeout=SAFETY)
    rows = [line for line in ladder.render().splitlines() if "|" in line]
    arrows = [line.split("|")[1].strip(" -<>") for line in rows if "-->" in line or "<--" in line]
    first_syn = next(i for i, a in enumerate(arrows) if a.startswith("S "))
    assert arrows[:first_syn] == [
        "ARP announce 10.7.0.2 is-at 02:00:00:00:00:02",
        "ARP who-has 10.7.0.2? tell 10.7.0.1",
        "ARP 10.7.0.2 is-at 02:00:00:00:00:02",
    ]
    # the request comes from the kernel (left to right), the reply from ustack
    assert "-- ARP who-has" in rows[1] and rows[1].rstrip().endswith(">|")
    assert "<--" in rows[2]


@needs_tun
async def test_arp_scenario() -> None:
    from ustack.scenarios.arp import run_arp_scenario

    report = await run_arp_scenario()
    assert report.ok, report.text()
    lines = report.ladder.splitlines()
    who = next(i for i, line in enumerate(lines) if "ARP who-has 10.7.0.2? tell 10.7.0.1" in line)
    is_at = next(i for i, line in enumerate(lines) if "ARP 10.7.0.2 is-at" in line)
    syn = next(i for i, line in enumerate(lines) if "-- S " in line)
    assert who < is_at < syn
    assert "TIME-WAIT" in report.ladder and lines[-1].rstrip().endswith("CLOSED")
    assert "RFC 826" in report.explanation and "RFC 9293 3.5" in report.explanation


@needs_tun
@needs_curl
async def test_ipv6_with_neighbor_discovery(make_tap: MakeTap, netns: NetNamespace) -> None:
    ladder = Ladder()

    def on_packet(direction: str, packet: bytes | bytearray | memoryview, _now: float) -> None:
        ladder.packet(time.monotonic(), direction, packet)

    stack = await make_tap(ipv6=True, mac="02:00:00:00:00:02", on_packet=on_packet)
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    rc, out, err = await run_in(netns, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "5", STACK6)
    assert rc == 0, out + err
    size = 2 * MiB
    rc, body, err = await run_in(netns, "curl", "-gsS", "--fail", f"http://[{STACK6}]/bytes/{size}")
    assert rc == 0, err
    assert body == pattern_bytes(0, size)
    # The kernel resolved ustack's IPv6 address with an NS, and holds its MAC ...
    entry = kernel_neighbour(netns, STACK6)
    assert entry is not None
    assert entry[0] == "02:00:00:00:00:02"
    assert entry[1] & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE), hex(entry[1])
    # ... and ustack learned the kernel's from it (RFC 4861 7.2.3), then confirmed it.
    loop = asyncio.get_running_loop()
    kernel_mac = ethernet.mac_to_text(eth(stack).kernel_mac)
    assert {"address": KERNEL6, "mac": kernel_mac, "state": "REACHABLE", "queued": 0} in (
        eth(stack).arp.neighbours(loop.time())
    )
    assert stack.stats.nd_ns_answered >= 1
    assert stack.stats.nd_learned == 1
    assert stack.stats.icmp6_echo_replies == 2
    # The ladder of the fetch opens with the Neighbor Discovery exchange the ping caused.
    lines = ladder.render().splitlines()
    arrows = [line.split("|")[1].strip(" -<>") for line in lines if "-->" in line or "<--" in line]
    first_syn = next(i for i, a in enumerate(arrows) if a.startswith("S "))
    nd_rows = [a for a in arrows[:first_syn] if a.startswith("ND ")]
    assert nd_rows[:2] == [
        f"ND who-has {STACK6}? tell {KERNEL6}",
        f"ND {STACK6} is-at 02:00:00:00:00:02",
    ]


@needs_tun
async def test_ustack_resolves_the_kernels_ipv6_address(
    make_tap: MakeTap, netns: NetNamespace
) -> None:
    stack = await make_tap(ipv6=True)

    def make() -> socket.socket:
        srv = socket.create_server((KERNEL6, 0), family=socket.AF_INET6)
        srv.setblocking(False)
        return srv

    srv = netns.call(make)
    loop = asyncio.get_running_loop()
    with srv:
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        _, writer = await asyncio.wait_for(
            ustack.open_connection(KERNEL6, srv.getsockname()[1], stack=stack), SAFETY
        )
        conn, _ = await asyncio.wait_for(accept, SAFETY)
        with conn:
            conn.setblocking(False)
            writer.write(b"over ND")
            assert await asyncio.wait_for(loop.sock_recv(conn, 7), SAFETY) == b"over ND"
            writer.close()
    # its SYN waited for a Neighbor Solicitation's answer
    assert stack.stats.arp_requests_sent == 1
    assert stack.stats.nd_na_received >= 1
    assert stack.stats.arp_queue_sent == stack.stats.arp_queued >= 1


@needs_tun
async def test_deleted_device_closes_the_stack(make_tap: MakeTap, netns: NetNamespace) -> None:
    stack = await make_tap()
    rc, _, err = await run_in(netns, "ip", "link", "del", TAP_NAME)
    assert rc == 0, err
    with pytest.raises(LinkError, match=f"{TAP_NAME} disappeared"):
        await asyncio.wait_for(stack.wait_closed(), SAFETY)
    assert stack.closed


@needs_tun
async def test_wrapped_ethernet_link_still_counts_into_the_stack(
    netns: NetNamespace, tmp_path: Path
) -> None:
    """A pcap tap around the Ethernet/ARP layer (IP packets, the pcap's link type) does not
    hide the layer's counters from ``stack.stats``."""
    from ustack.link.pcap import PcapTap, PcapWriter

    tap = TapLink.open(TAP_NAME, address=KERNEL, peer=STACK, netns=netns.name)
    link = PcapTap(EthernetLink.over(tap), PcapWriter(tmp_path / "run.pcap"))
    async with ustack.Stack(link, address=STACK, config=tun_config()) as stack:
        rc, out, err = await run_in(netns, "ping", "-c", "1", "-W", "5", STACK)
        assert rc == 0, out + err
        assert stack.stats.arp_requests_answered == 1
        assert stack.stats.icmp_echo_replies == 1


# -- the command line: serve --link tap, demo --link tap ----------------------------------------


@needs_tun
@needs_curl
async def test_serve_link_tap_answers_curl_over_both_families_with_its_mac(
    netns: NetNamespace,
) -> None:
    from .test_cli import serving

    mac = "02:00:5e:00:00:42"
    async with serving(netns, "--name", "tcl0", "--link", "tap", "--mac", mac) as proc:
        rc, out, err = await run_in(netns, "curl", "-sS", "--fail", "http://10.7.0.2/bytes/200000")
        assert rc == 0, err
        assert out == pattern_bytes(0, 200_000)
        rc, neigh, _ = await run_in(netns, "ip", "neigh", "show", "10.7.0.2")
        assert rc == 0 and mac in neigh.decode()
        rc, _, _ = await run_in(netns, "curl", "-gsS", "--fail", "http://[fd00:7::2]/")
        if rc == 0:  # where IPv6 works in the namespace: Neighbor Discovery resolved us
            rc, neigh6, _ = await run_in(netns, "ip", "-6", "neigh", "show", "fd00:7::2")
            assert mac in neigh6.decode()
        proc.send_signal(2)
        _, err_all = await asyncio.wait_for(proc.communicate(), SAFETY)
    assert proc.returncode == 0, err_all


@needs_tun
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mac", "02:00:00:00:00:01"], ["--mac needs --link tap"]),
        (["--link", "tap", "--mac", "01:00:5e:00:00:01"], ["unicast MAC"]),
        (["--link", "tap", "--mac", "zz"], ["bad MAC"]),
        (["--link", "tap", "--offload", "on"], ["TAP has no offloads"]),
    ],
    ids=["mac-without-tap", "group-mac", "bad-mac", "offload-on-tap"],
)
async def test_serve_link_tap_bad_arguments_give_one_line(
    netns: NetNamespace, args: list[str], words: list[str]
) -> None:
    from .test_cli import SERVE

    rc, _, err = await run_in(netns, *SERVE, "--name", "tcl1", *args)
    text = err.decode()
    assert rc == 2 and "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert all(word in lines[-1] for word in words), text


@needs_tun
async def test_demo_link_tap_draws_arp_before_the_first_syn() -> None:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "ustack", "demo", "--link", "tap", "--size", "20000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    text = out.decode()
    who_has = text.index("ARP who-has 10.7.0.2? tell 10.7.0.1")
    is_at = text.index("ARP 10.7.0.2 is-at")
    syn = text.index("-- S   seq=0")
    assert who_has < is_at < syn, text
    assert "TIME-WAIT" in text and "verified" in err.decode()
