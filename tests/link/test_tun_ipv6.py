"""TunLink with IPv6 on the kernel's side, against the real Linux kernel in a private namespace.

The kernel gets ``fd00:7::1/64`` on the TUN device and routes ``fd00:7::2`` (ustack's address)
into it. ``ping -6`` from inside the namespace puts an ICMPv6 echo request on the TUN fd, which
we parse with ``ustack.wire.ipv6``/``icmpv6``; an echo reply built with the same modules and
written back makes ping succeed, so the path works both ways before the host speaks IPv6. The
kernel is kept quiet on the link (no link-local address, no router solicitations), the capture
of the exchange reads back in tshark, and IPv6 disabled in the namespace is a clear error.
Argument errors need no privileges and run everywhere.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from ustack.link import tun as tun_mod
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace, have_net_admin
from ustack.link.pair import LinkPair
from ustack.link.pcap import PcapTap, PcapWriter
from ustack.link.tun import IFA_F_NODAD, TunLink
from ustack.wire import icmpv6, ipv6, virtio
from ustack.wire.errors import ParseError

KERNEL = "10.7.0.1"
PEER = "10.7.0.2"
KERNEL6 = "fd00:7::1/64"
PEER6 = "fd00:7::2"
IFA_F_TENTATIVE = 0x40  # <linux/if_addr.h>
WAIT = 3.0  # seconds: the upper bound on any wait for the kernel; normally milliseconds

can_tun, why_not = have_net_admin()
has_ipv6 = os.path.isdir("/proc/sys/net/ipv6")
needs_tun6 = pytest.mark.skipif(
    not (can_tun and has_ipv6),
    reason=f"needs /dev/net/tun, CAP_NET_ADMIN and IPv6: {why_not if not can_tun else 'no IPv6'}",
)
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@pytest.fixture
def ns() -> Iterator[NetNamespace]:
    with NetNamespace() as space:
        yield space


def open6(space: NetNamespace, **kwargs: object) -> TunLink:
    options: dict[str, object] = {
        "netns": space.name,
        "address": KERNEL,
        "peer": PEER,
        "address6": KERNEL6,
        "peer6": PEER6,
    }
    options.update(kwargs)
    return TunLink.open("ustack0", **options)  # type: ignore[arg-type]


def sysctl_writable(space: NetNamespace) -> bool:
    return space.run(["test", "-w", "/proc/sys/net/ipv6/conf/default/disable_ipv6"]).returncode == 0


def read_packets(
    link: TunLink | PcapTap, until: Callable[[ipv6.IPv6Packet], bool]
) -> tuple[list[bytes], virtio.VirtioNetHdr | None, ipv6.IPv6Packet]:
    """Read the TUN until a packet matching ``until`` arrives (bounded by WAIT). Returns every
    packet read before it (IP bytes, any header stripped), its virtio-net header if the link
    has one, and the match."""
    before: list[bytes] = []
    skip = link.header_len
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        select.select([link.fileno()], [], [], left)
        for raw in link.read_batch(time.monotonic(), 64):
            hdr = virtio.parse(raw) if skip else None
            data = bytes(raw[skip:])
            try:
                packet = ipv6.parse(data)
            except ParseError:
                before.append(data)
                continue
            if until(packet):
                return before, hdr, packet
            before.append(data)
    raise AssertionError(f"no matching packet from the kernel within {WAIT} s; got {before}")


def echo_reply(request: ipv6.IPv6Packet, message: icmpv6.Icmpv6Message, header_len: int) -> bytes:
    """Our answer to ``request``: header (if any), IPv6 from peer6 to the kernel, echo reply."""
    icmp_len = icmpv6.HEADER_LEN + len(message.payload)
    buf = bytearray(header_len + ipv6.HEADER_LEN + icmp_len)
    if header_len:
        virtio.emit(buf)  # a plain packet: checksum done, no segmentation
    at = header_len + ipv6.HEADER_LEN
    icmpv6.emit_echo_reply(buf, at, ident=message.ident, sequence=message.sequence,
                           payload=message.payload, src=request.dst, dst=request.src)  # fmt: skip
    ipv6.emit(buf, header_len, src=request.dst, dst=request.src,
              next_header=ipv6.PROTO_ICMPV6, payload_len=icmp_len)  # fmt: skip
    return bytes(buf)


def is_echo_request(packet: ipv6.IPv6Packet) -> bool:
    return packet.proto == ipv6.PROTO_ICMPV6 and packet.payload[0] == icmpv6.ECHO_REQUEST


@needs_tun6
def test_kernel_side_has_the_address_and_the_prefix_route(ns: NetNamespace) -> None:
    link = open6(ns, offload="off")
    try:
        assert (link.address6, link.prefixlen6, link.peer6) == ("fd00:7::1", 64, PEER6)
        assert "fd00:7::1/64 peer6=fd00:7::2" in repr(link)

        def read_back() -> tuple[list[tuple[str, int, int, int]], list[tuple[str, int]], int]:
            with IPRoute() as ipr:
                (index,) = ipr.link_lookup(ifname="ustack0")
                addrs = [
                    (a.get("IFA_ADDRESS"), a["prefixlen"], a["scope"], a.get("IFA_FLAGS"))
                    for a in ipr.get_addr(family=socket.AF_INET6, index=index)
                ]
                routes = [
                    (r.get("RTA_DST"), r["dst_len"])
                    for r in ipr.get_routes(family=socket.AF_INET6, table=254)
                    if r.get("RTA_OIF") == index
                ]
                return addrs, routes, index

        addrs, routes, _ = ns.call(read_back)
        # One address, the kernel's, usable at once; no link-local address beside it.
        ((address, prefixlen, scope, flags),) = addrs
        assert (address, prefixlen, scope) == ("fd00:7::1", 64, 0)
        assert flags & IFA_F_NODAD
        assert not flags & IFA_F_TENTATIVE  # not waiting for duplicate address detection
        assert routes == [("fd00:7::", 64)]
        # The route to ustack's address goes through the device.
        got = ns.run(["ip", "-6", "route", "get", PEER6], check=True).stdout
        assert got.startswith(f"{PEER6} from :: dev ustack0 ")
        # IPv4 is configured as before.
        assert "inet 10.7.0.1/24" in ns.run(["ip", "-4", "addr", "show", "ustack0"]).stdout
    finally:
        link.close()


@needs_tun6
def test_router_solicitations_are_off_where_writable(ns: NetNamespace) -> None:
    if not sysctl_writable(ns):
        pytest.skip("/proc/sys is read-only here")
    link = open6(ns, offload="off")
    try:
        out = ns.run(
            ["sh", "-c", "cd /proc/sys/net/ipv6/conf/ustack0 && "
             "grep -H . accept_ra router_solicitations addr_gen_mode"],
            check=True,
        ).stdout.split()  # fmt: skip
        assert out == ["accept_ra:0", "router_solicitations:0", "addr_gen_mode:1"]
    finally:
        link.close()


@needs_tun6
@pytest.mark.parametrize("offload", ["on", "off"])
def test_ping6_request_reaches_the_fd_and_our_reply_completes_ping(
    ns: NetNamespace, tmp_path: Path, offload: str
) -> None:
    capture = tmp_path / "ping6.pcap"
    link = PcapTap(open6(ns, offload=offload), PcapWriter(capture))
    assert link.header_len == (virtio.HEADER_LEN if offload == "on" else 0)
    ping = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, "ping", "-6", "-n", "-c", "1", "-W", str(int(WAIT)),
         "-s", "24", PEER6],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        before, hdr, request = read_packets(link, is_echo_request)
        # A quiet link: nothing unprompted came first (a fresh device with IPv6 left alone sends
        # a router solicitation from its link-local address as it comes up).
        assert before == []
        if offload == "on":
            # ICMPv6 carries its own checksum, finished by the kernel: a plain frame.
            assert hdr is not None and (hdr.gso_type, hdr.flags & virtio.F_NEEDS_CSUM) == (0, 0)
        assert (ipv6.int_to_addr(request.src), ipv6.int_to_addr(request.dst)) == (
            "fd00:7::1", PEER6,
        )  # fmt: skip
        message = icmpv6.parse(request.payload, request.src, request.dst)
        assert message.type == icmpv6.ECHO_REQUEST and len(message.payload) == 24

        link.write(echo_reply(request, message, link.header_len), now=0.0)
        assert link.stats.tx_packets == 1 and link.stats.tx_dropped == 0
        out, _ = ping.communicate(timeout=WAIT + 5)
        assert ping.returncode == 0, out
        assert "1 packets transmitted, 1 received" in out
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
        link.close()

    # The capture holds the request and our reply, IPv6 behind LINKTYPE_RAW, header stripped.
    if shutil.which("tshark") is not None:
        assert tshark_rows(capture) == [
            ["fd00:7::1", PEER6, "128", f"{message.ident:#06x}", "1"],
            [PEER6, "fd00:7::1", "129", f"{message.ident:#06x}", "1"],
        ]


def tshark_rows(path: Path) -> list[list[str]]:
    fields = ["ipv6.src", "ipv6.dst", "icmpv6.type", "icmpv6.echo.identifier",
              "icmpv6.echo.sequence_number"]  # fmt: skip
    result = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split("\t") for line in result.stdout.splitlines()]


@needs_tshark
def test_pcap_of_ipv6_packets_reads_back_in_tshark(tmp_path: Path) -> None:
    # No device needed: the tap records IPv6 just as it records IPv4 (LINKTYPE_RAW is either).
    src, dst = ipv6.addr_to_int("fd00:7::1"), ipv6.addr_to_int(PEER6)
    request = bytearray(ipv6.HEADER_LEN + icmpv6.HEADER_LEN + 5)
    icmpv6.emit_echo(request, ipv6.HEADER_LEN, type=icmpv6.ECHO_REQUEST, ident=0x77, sequence=3,
                     payload=b"hello", src=src, dst=dst)  # fmt: skip
    ipv6.emit(request, 0, src=src, dst=dst, next_header=ipv6.PROTO_ICMPV6,
              payload_len=icmpv6.HEADER_LEN + 5)  # fmt: skip
    a, b = LinkPair.create()
    path = tmp_path / "v6.pcap"
    tap = PcapTap(a, PcapWriter(path))
    tap.write(request, now=0.0)
    assert b.read_batch(0.0, 8) == [bytes(request)]
    tap.close()
    b.close()
    assert tshark_rows(path) == [["fd00:7::1", PEER6, "128", "0x0077", "3"]]


@needs_tun6
def test_ipv6_disabled_in_the_namespace_is_a_clear_error(ns: NetNamespace) -> None:
    if not sysctl_writable(ns):
        pytest.skip("/proc/sys is read-only here")
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=True)
    with pytest.raises(LinkError) as info:
        open6(ns)
    assert info.value.errno == errno.EAFNOSUPPORT
    assert str(info.value) == (
        f"cannot configure IPv6 on 'ustack0': IPv6 is disabled in network namespace "
        f"{ns.name!r} (net.ipv6.conf.all.disable_ipv6=1, net.ipv6.conf.default.disable_ipv6=1); "
        "set it to 0 or open the link without address6"
    )
    # Nothing is left behind, and without address6 the link opens as before.
    assert ns.run(["ip", "link", "show", "ustack0"]).returncode != 0
    TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER).close()


@needs_tun6
def test_kernel_without_ipv6_is_a_clear_error(
    ns: NetNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel booted with ipv6.disable=1 has no /proc/sys/net/ipv6; play one.
    missing = tmp_path / "no-ipv6"
    monkeypatch.setattr(tun_mod, "PROC_IPV6", str(missing))
    with pytest.raises(LinkError) as info:
        open6(ns)
    assert info.value.errno == errno.EAFNOSUPPORT
    assert str(info.value) == (
        f"cannot configure IPv6 on 'ustack0': the kernel has no IPv6 ({missing} is missing: "
        "booted with ipv6.disable=1, or built without IPv6); open the link without address6"
    )
    assert ns.run(["ip", "link", "show", "ustack0"]).returncode != 0


# -- argument errors: no privileges needed, nothing created -----------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address6": KERNEL6}, "bad IPv6 address: give address6 (the kernel's, e.g. fd00:7::1/64) "
         "and peer6 (ustack's, e.g. fd00:7::2) together"),
        ({"peer6": PEER6}, "bad IPv6 address: give address6"),
        ({"address6": "fd00:7::1", "peer6": PEER6}, "bad IPv6 address 'fd00:7::1': give the "
         "kernel's address with its prefix length, e.g. fd00:7::1/64"),
        ({"address6": "fd00:7::g/64", "peer6": PEER6}, "bad IPv6 address: "),
        ({"address6": "10.7.0.1/24", "peer6": PEER6}, "bad IPv6 address: "),
        ({"address6": KERNEL6, "peer6": "fd00:8::2"},
         "bad IPv6 address: peer6 fd00:8::2 is not in fd00:7::/64"),
        ({"address6": KERNEL6, "peer6": "fd00:7::1"},
         "bad IPv6 address: peer6 fd00:7::1 is the kernel's own address"),
        ({"address6": KERNEL6, "peer6": "fd00:7::"},
         "bad IPv6 address: peer6 fd00:7:: is the Subnet-Router anycast address of fd00:7::/64"),
        ({"address6": "ff02::1/64", "peer6": "ff02::2"},
         "bad IPv6 address: ff02::1 is not a unicast address"),
        ({"address6": KERNEL6, "peer6": PEER6, "mtu": 1279},
         "bad MTU 1279 for IPv6: every IPv6 link carries 1280 (RFC 8200 5)"),
    ],
)  # fmt: skip
def test_bad_ipv6_arguments_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LinkError) as info:
        TunLink.open("ustack0", netns="ustack-no-such-ns", **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert info.value.errno == errno.EINVAL
    assert "\n" not in str(info.value)


def test_a_127_prefix_may_use_both_addresses() -> None:
    # RFC 6164: on a /127 point-to-point link there is no Subnet-Router anycast address, so the
    # check passes and the error is the next one (the namespace that does not exist).
    with pytest.raises(LinkError, match="no network namespace named"):
        TunLink.open(
            "ustack0", netns="ustack-no-such-ns", address6="fd00:7::1/127", peer6="fd00:7::"
        )
