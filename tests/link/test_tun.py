"""TunLink against the real Linux kernel, always inside a private network namespace.

The kernel is the peer: it sends an ICMP echo request and a TCP SYN into the TUN device, we
read them with ``read_batch`` and check they parse as IPv4, then write hand-built answers back
and watch the kernel act on them (a raw socket receives the echo reply; ``connect()`` fails
with ECONNREFUSED after our RST). With offloads on, a hand-driven TCP connection shows the
kernel handing us super-segments and taking one from us; a kernel that refuses the offloads
(really, via a feature bit it does not know, or played by a replaced ioctl) shows the fallback.
Error paths that need no privileges run everywhere.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from ustack.link import netns as netns_mod
from ustack.link import tun as tun_mod
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace, have_net_admin
from ustack.link.tun import TunLink
from ustack.wire import checksum, icmp, ipv4, tcp, virtio
from ustack.wire.errors import ParseError

from .packets import echo

KERNEL = "10.7.0.1"
PEER = "10.7.0.2"
WAIT = 3.0  # seconds: the upper bound on any wait for the kernel; normally milliseconds

can_tun, why_not = have_net_admin()


def needs_tun(test: Callable[..., None]) -> Callable[..., None]:
    skip = pytest.mark.skipif(
        not can_tun, reason=f"needs /dev/net/tun and CAP_NET_ADMIN: {why_not}"
    )
    return pytest.mark.tun(skip(test))  # type: ignore[no-any-return]


def _ip_netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[NetNamespace]:
    with NetNamespace() as space:
        yield space
    assert space.name not in _ip_netns_list()
    assert not os.path.exists(space.path)


def inside(space: NetNamespace, make: Callable[[], socket.socket]) -> socket.socket:
    """Create a socket while this thread is in ``space``; it stays bound to that namespace."""
    space.enter()
    try:
        return make()
    finally:
        space.exit()


def read_until(
    link: TunLink, want: Callable[[ipv4.IPv4Packet], bool]
) -> tuple[bytes | memoryview, ipv4.IPv4Packet]:
    """Read from the TUN until a packet matching ``want`` arrives (bounded by WAIT).

    The kernel may also emit IPv6 router/multicast chatter on a fresh link; it is skipped.
    """
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        select.select([link.fileno()], [], [], left)
        for raw in link.read_batch(time.monotonic(), 64):
            try:
                packet = ipv4.parse(raw)
            except ParseError:
                continue
            if want(packet):
                return raw, packet
    raise AssertionError(f"no matching packet from the kernel within {WAIT} s")


@needs_tun
def test_kernel_echo_request_read_and_reply_accepted(ns: NetNamespace) -> None:
    link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER, offload="off")
    sock = inside(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    try:
        request = bytearray(icmp.HEADER_LEN + 16)
        icmp.emit_echo(
            request, 0, type=icmp.ECHO_REQUEST, ident=0x4242, sequence=7, payload=b"p" * 16
        )
        sock.sendto(request, (PEER, 0))

        _, packet = read_until(
            link, lambda p: p.proto == ipv4.PROTO_ICMP and p.dst == ipv4.addr_to_int(PEER)
        )
        assert packet.src == ipv4.addr_to_int(KERNEL)
        message = icmp.parse(packet.payload)
        assert (message.type, message.ident, message.sequence) == (icmp.ECHO_REQUEST, 0x4242, 7)
        assert bytes(message.payload) == b"p" * 16

        reply = echo(
            PEER, KERNEL, type=icmp.ECHO_REPLY, ident=0x4242, sequence=7, payload=b"p" * 16
        )
        link.write(reply, now=0.0)
        assert link.stats.tx_packets == 1 and link.stats.tx_dropped == 0

        sock.settimeout(WAIT)
        for _ in range(16):
            data, (sender, _port) = sock.recvfrom(4096)
            got = ipv4.parse(data)
            answer = icmp.parse(got.payload)
            if answer.type == icmp.ECHO_REPLY:
                break
        assert sender == PEER
        assert (answer.ident, answer.sequence) == (0x4242, 7)
        assert link.stats.rx_packets >= 1 and link.stats.rx_dropped == 0
    finally:
        sock.close()
        link.close()


@needs_tun
def test_kernel_syn_read_and_our_rst_refuses_connect(ns: NetNamespace) -> None:
    link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER, offload="off")
    client = inside(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        client.setblocking(False)
        assert client.connect_ex((PEER, 8080)) == errno.EINPROGRESS
        kernel, peer = ipv4.addr_to_int(KERNEL), ipv4.addr_to_int(PEER)

        _, packet = read_until(link, lambda p: p.proto == ipv4.PROTO_TCP)
        assert (packet.src, packet.dst) == (kernel, peer)
        syn = tcp.parse(
            packet.payload,
            packet.src,
            packet.dst,
            pseudo=checksum.ipv4_pseudo_header_sum(packet.src, packet.dst, tcp.PROTO, 0),
        )
        assert syn.control == tcp.Control.SYN and not syn.has_ack
        assert syn.dst_port == 8080
        assert syn.options.mss is not None

        # RFC 9293 3.10.7.1: a SYN to a closed port is answered <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>.
        out = bytearray(ipv4.HEADER_LEN + tcp.HEADER_LEN)
        n = tcp.emit(
            out,
            ipv4.HEADER_LEN,
            pseudo=checksum.ipv4_pseudo_header_sum(peer, kernel, tcp.PROTO, 0),
            src_port=8080,
            dst_port=syn.src_port,
            seq=0,
            ack=(syn.seq + 1) % 2**32,
            flags=tcp.RST | tcp.ACK,
            window=0,
        )
        ipv4.emit(out, 0, src=peer, dst=kernel, proto=ipv4.PROTO_TCP, payload_len=n)
        link.write(memoryview(out)[: ipv4.HEADER_LEN + n], now=0.0)

        select.select([], [client], [], WAIT)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    finally:
        client.close()
        link.close()


@needs_tun
def test_netlink_configuration_is_visible_and_removed_on_close(ns: NetNamespace) -> None:
    link = TunLink.open(
        "ustk7", netns=ns.name, mtu=1280, address="10.9.0.1", peer="10.9.0.2", prefixlen=30
    )
    try:
        assert (link.name, link.mtu) == ("ustk7", 1280)
        shown = subprocess.run(
            ["ip", "-n", ns.name, "link", "show", "ustk7"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "mtu 1280" in shown and ",UP" in shown
        addrs = ns.run(["ip", "-4", "addr", "show", "dev", "ustk7"], check=True).stdout
        assert "inet 10.9.0.1/30" in addrs
        # The root namespace never sees the device.
        assert "ustk7" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    finally:
        link.close()
    gone = subprocess.run(
        ["ip", "-n", ns.name, "link", "show", "ustk7"], capture_output=True, text=True
    )
    assert gone.returncode != 0


@needs_tun
def test_busy_and_wrong_type_are_one_line_errors(ns: NetNamespace) -> None:
    first = TunLink.open("ustack0", netns=ns.name)
    try:
        with pytest.raises(LinkError) as busy:
            TunLink.open("ustack0", netns=ns.name)
        assert busy.value.errno == errno.EBUSY
        assert str(busy.value) == "TUN device 'ustack0' is busy: another process has it open"
    finally:
        first.close()
    with pytest.raises(LinkError) as wrong:
        TunLink.open("lo", netns=ns.name)
    assert wrong.value.errno == errno.EINVAL
    assert "another type" in str(wrong.value) and "\n" not in str(wrong.value)


@needs_tun
def test_enter_and_exit_move_only_this_thread(ns: NetNamespace) -> None:
    def here() -> int:
        return os.stat("/proc/thread-self/ns/net").st_ino

    before = here()
    ns.enter()
    try:
        assert here() == os.stat(ns.path).st_ino != before
        with pytest.raises(RuntimeError):
            ns.enter()
    finally:
        ns.exit()
    assert here() == before
    assert ns.call(here) == os.stat(ns.path).st_ino


@needs_tun
def test_namespace_removed_even_on_exception() -> None:
    before = os.stat("/proc/thread-self/ns/net").st_ino
    space = NetNamespace()
    with pytest.raises(ZeroDivisionError), space:
        space.enter()
        assert space.name in _ip_netns_list()
        1 / 0  # noqa: B018
    assert space.name not in _ip_netns_list()
    assert not os.path.exists(space.path)
    # remove() left the entered thread where it started.
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


# -- offloads ---------------------------------------------------------------------------------


def read_frames(link: TunLink) -> list[tuple[virtio.VirtioNetHdr, ipv4.IPv4Packet]]:
    """Whatever the kernel has sent within WAIT, header and IPv4 packet (IPv6 chatter skipped)."""
    select.select([link.fileno()], [], [], WAIT)
    frames = []
    for raw in link.read_batch(time.monotonic(), 256):
        hdr = virtio.parse(raw)
        try:
            frames.append((hdr, ipv4.parse(memoryview(raw)[virtio.HEADER_LEN :])))
        except ParseError:
            continue
    return frames


def frame(
    src: int,
    dst: int,
    *,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    options: bytes = b"",
    payload: bytes = b"",
    gso_size: int = 0,
) -> bytearray:
    """Header + IPv4 + TCP. Plain (flags 0, full checksum), or with ``gso_size`` a super-segment
    whose checksum is left to the kernel (NEEDS_CSUM, the field holding the pseudo-header sum)."""
    tcp_len = tcp.HEADER_LEN + len(options) + len(payload)
    buf = bytearray(virtio.HEADER_LEN + ipv4.HEADER_LEN + tcp_len)
    at = virtio.HEADER_LEN + ipv4.HEADER_LEN
    pseudo = checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, 0)
    tcp.emit(buf, at, pseudo=pseudo, src_port=sport, dst_port=dport, seq=seq, ack=ack, flags=flags,
             window=65535, options=options, payload=payload)  # fmt: skip
    ipv4.emit(buf, virtio.HEADER_LEN, src=src, dst=dst, proto=ipv4.PROTO_TCP, payload_len=tcp_len)
    if gso_size:
        pseudo = checksum.ipv4_pseudo_header_sum(src, dst, ipv4.PROTO_TCP, tcp_len)
        struct.pack_into("!H", buf, at + tcp.OFF_CHECKSUM, pseudo)
        virtio.emit(buf, flags=virtio.F_NEEDS_CSUM, gso_type=virtio.GSO_TCPV4,
                    hdr_len=ipv4.HEADER_LEN + tcp.HEADER_LEN + len(options), gso_size=gso_size,
                    csum_start=ipv4.HEADER_LEN, csum_offset=virtio.TCP_CSUM_OFFSET)  # fmt: skip
    return buf


def finish_checksum(packet: ipv4.IPv4Packet) -> bytearray:
    """The TCP segment with its checksum completed, as a NIC doing checksum offload would."""
    segment = bytearray(packet.payload)
    struct.pack_into("!H", segment, tcp.OFF_CHECKSUM, checksum.internet_checksum(segment, 0))
    return segment


def interface_counters(space: NetNamespace, name: str) -> dict[str, int]:
    out = space.run(
        ["sh", "-c", f"cd /sys/class/net/{name}/statistics && grep -H . rx_* tx_*"], check=True
    ).stdout
    return {key: int(value) for key, value in (line.split(":") for line in out.split())}


@needs_tun
def test_offload_super_segments_cross_both_ways(ns: NetNamespace) -> None:
    link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER, offload="on")
    client = inside(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        assert (link.offload, link.header_len, link.offload_reason) == (True, 10, "")
        assert "vnet_hdr on" in ns.run(["ip", "-d", "link", "show", "ustack0"]).stdout
        kernel, peer = ipv4.addr_to_int(KERNEL), ipv4.addr_to_int(PEER)
        client.setblocking(False)
        assert client.connect_ex((PEER, 8080)) == errno.EINPROGRESS
        (hdr, packet), *_ = (f for f in read_frames(link) if f[1].proto == ipv4.PROTO_TCP)
        # The kernel leaves the checksum of what it sends to the "device" (us) ...
        assert (hdr.flags, hdr.gso_type) == (virtio.F_NEEDS_CSUM, virtio.GSO_NONE)
        assert (hdr.csum_start, hdr.csum_offset) == (ipv4.HEADER_LEN, virtio.TCP_CSUM_OFFSET)
        with pytest.raises(ParseError, match="tcp_bad_checksum"):
            tcp.parse(
                packet.payload,
                packet.src,
                packet.dst,
                pseudo=checksum.ipv4_pseudo_header_sum(packet.src, packet.dst, tcp.PROTO, 0),
            )
        # ... and completing it the way a NIC would makes it right.
        syn = tcp.parse(
            memoryview(finish_checksum(packet)),
            packet.src,
            packet.dst,
            pseudo=checksum.ipv4_pseudo_header_sum(packet.src, packet.dst, tcp.PROTO, 0),
        )
        assert syn.control == tcp.Control.SYN

        # Our SYN,ACK with MSS 1460 and no other option, so every segment carries 1460 bytes.
        sport, isn = syn.src_port, 5000
        mss = tcp.TcpOptions(mss=1460).encode()
        link.write(
            frame(peer, kernel, sport=8080, dport=sport, seq=isn, ack=syn.seq + 1,
                  flags=tcp.SYN | tcp.ACK, options=mss),
            now=0.0,
        )  # fmt: skip
        select.select([], [client], [], WAIT)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0

        data = bytes(range(256)) * 800  # 200 KB
        sent = client.send(data)
        assert sent > 14600  # at least the initial window
        received = bytearray()
        supers = []
        deadline = time.monotonic() + WAIT
        while len(received) < sent and time.monotonic() < deadline:
            for hdr, packet in read_frames(link):
                seg = tcp.parse(
                    packet.payload,
                    packet.src,
                    packet.dst,
                    pseudo=checksum.ipv4_pseudo_header_sum(packet.src, packet.dst, tcp.PROTO, 0),
                    verify_checksum=False,
                )
                offset = (seg.seq - syn.seq - 1) % 2**32
                if not seg.payload or offset != len(received):
                    continue
                received += seg.payload
                if hdr.gso_type:
                    supers.append((hdr, packet.total_length))
                link.write(
                    frame(peer, kernel, sport=8080, dport=sport, seq=isn + 1,
                          ack=syn.seq + 1 + len(received), flags=tcp.ACK),
                    now=0.0,
                )  # fmt: skip
        assert bytes(received) == data[:sent]
        assert supers, "the kernel sent no super-segment"
        for hdr, total_length in supers:
            assert (hdr.flags, hdr.gso_type, hdr.gso_size) == (
                virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 1460,
            )  # fmt: skip
            assert hdr.hdr_len == ipv4.HEADER_LEN + tcp.HEADER_LEN
            assert total_length > link.mtu
        assert link.stats.rx_oversize == link.stats.rx_error == 0

        # One write of twenty segments' worth: the kernel takes it as one packet.
        before = interface_counters(ns, "ustack0")
        payload = os.urandom(20 * 1460)
        superseg = frame(peer, kernel, sport=8080, dport=sport, seq=isn + 1,
                         ack=syn.seq + 1 + len(received), flags=tcp.ACK | tcp.PSH,
                         payload=payload, gso_size=1460)  # fmt: skip
        link.write(superseg, now=0.0)
        assert link.stats.tx_oversize == link.stats.tx_error == 0
        got = bytearray()
        while len(got) < len(payload):
            select.select([client], [], [], WAIT)
            chunk = client.recv(1 << 20)
            assert chunk
            got += chunk
        assert got == payload
        after = interface_counters(ns, "ustack0")
        assert after["rx_packets"] - before["rx_packets"] == 1
        assert after["rx_bytes"] - before["rx_bytes"] == len(superseg) - virtio.HEADER_LEN
    finally:
        client.close()
        link.close()


@needs_tun
def test_offload_refused_by_the_kernel_falls_back_or_fails_clearly(
    ns: NetNamespace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A feature bit no kernel knows: set_offload() in drivers/net/tun.c answers EINVAL.
    monkeypatch.setattr(tun_mod, "OFFLOAD_FEATURES", tun_mod.OFFLOAD_FEATURES | 1 << 30)
    reason = (
        "the kernel refused TUNSETOFFLOAD (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6|0x40000000): "
        "Invalid argument"
    )
    with caplog.at_level(logging.WARNING, logger="ustack.link.tun"):
        link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER)
    client = inside(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        assert (link.offload, link.header_len, link.offload_reason) == (False, 0, reason)
        assert reason in caplog.text
        assert "vnet_hdr off" in ns.run(["ip", "-d", "link", "show", "ustack0"]).stdout
        # A plain device: the kernel's SYN reads as a bare IPv4 packet with a full checksum.
        client.setblocking(False)
        client.connect_ex((PEER, 8080))
        _, packet = read_until(link, lambda p: p.proto == ipv4.PROTO_TCP)
        assert (
            tcp.parse(
                packet.payload,
                packet.src,
                packet.dst,
                pseudo=checksum.ipv4_pseudo_header_sum(packet.src, packet.dst, tcp.PROTO, 0),
            ).control
            == tcp.Control.SYN
        )
    finally:
        client.close()
        link.close()

    with pytest.raises(LinkError) as info:
        TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER, offload="on")
    assert str(info.value) == f"cannot turn on offloads for TUN device 'ustack0': {reason}"
    assert info.value.errno == errno.EINVAL
    # Nothing is left behind: the half-made device went with its fd.
    assert ns.run(["ip", "link", "show", "ustack0"]).returncode != 0


@needs_tun
@pytest.mark.parametrize(
    ("refused", "reason"),
    [
        ("TUNSETVNETHDRSZ", "the kernel refused TUNSETVNETHDRSZ: Inappropriate ioctl for device"),
        ("TUNSETOFFLOAD", "the kernel refused TUNSETOFFLOAD (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): "
         "Inappropriate ioctl for device"),
        # Little-endian is the header's order anyway on this host: no reason to give up.
        ("TUNSETVNETLE", ""),
    ],
)  # fmt: skip
def test_each_offload_step_a_kernel_may_refuse(
    ns: NetNamespace, monkeypatch: pytest.MonkeyPatch, refused: str, reason: str
) -> None:
    if refused == "TUNSETVNETLE" and sys.byteorder != "little":
        pytest.skip("big-endian hosts need TUNSETVNETLE")
    calls: list[str] = []
    real = tun_mod._ioctl

    def ioctl(fd: int, request: int, arg: object = 0) -> object:
        name = next(n for n in ("TUNSETVNETHDRSZ", "TUNSETVNETLE", "TUNSETOFFLOAD")
                    if getattr(tun_mod, n) == request)  # fmt: skip
        calls.append(name)
        if name == refused:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        return real(fd, request, arg)

    monkeypatch.setattr(tun_mod, "_ioctl", ioctl)
    link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER)
    try:
        assert link.offload is (not reason)
        assert link.offload_reason == reason
        # Every step up to the refused one was tried; one refused step ends the probe, except
        # TUNSETVNETLE, whose refusal does not matter here.
        steps = ["TUNSETVNETHDRSZ", "TUNSETVNETLE", "TUNSETOFFLOAD"]
        assert calls == (steps if refused == "TUNSETVNETLE" else steps[: steps.index(refused) + 1])
    finally:
        link.close()
    if reason:
        with pytest.raises(LinkError) as info:
            TunLink.open("ustack0", netns=ns.name, offload="on")
        assert str(info.value).endswith(reason) and "\n" not in str(info.value)


@needs_tun
def test_offload_off_asks_the_kernel_nothing(
    ns: NetNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ioctl(*args: object) -> None:
        raise AssertionError(f"unexpected ioctl {args}")

    monkeypatch.setattr(tun_mod, "_ioctl", ioctl)
    link = TunLink.open("ustack0", netns=ns.name, offload="off")
    try:
        assert (link.offload, link.header_len, link.offload_reason) == (False, 0, "not requested")
        assert "vnet_hdr off" in ns.run(["ip", "-d", "link", "show", "ustack0"]).stdout
    finally:
        link.close()


# -- error paths that need no privileges and create nothing --------------------------------


def test_missing_tun_device_is_a_one_line_error() -> None:
    with pytest.raises(LinkError) as info:
        TunLink.open("ustack0", device="/nonexistent/net/tun")
    assert info.value.errno == errno.ENOENT
    assert str(info.value).startswith("no TUN support at /nonexistent/net/tun: load the tun module")
    assert "\n" not in str(info.value)


def test_missing_privilege_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(tun_mod, "_TunDevice", refuse)
    with pytest.raises(LinkError) as info:
        TunLink.open("ustack0")
    assert info.value.errno == errno.EPERM
    assert str(info.value) == (
        "not allowed to create TUN device 'ustack0': needs CAP_NET_ADMIN "
        "(run as root, or docker run --cap-add NET_ADMIN)"
    )


@pytest.mark.parametrize(
    ("kwargs", "start"),
    [
        ({"mtu": 100}, "bad MTU 100: must be an integer from 576 to 65535"),
        ({"mtu": 70000}, "bad MTU 70000"),
        ({"name": ""}, "bad interface name ''"),
        ({"name": "much-too-long-name"}, "bad interface name"),
        ({"name": "a/b"}, "bad interface name"),
        ({"name": "a b"}, "bad interface name"),
        ({"address": "10.7.0.300"}, "bad address"),
        ({"peer": "10.8.0.2"}, "bad address: peer 10.8.0.2 is not in 10.7.0.0/24"),
        ({"peer": "10.7.0.1"}, "bad address: peer 10.7.0.1 is the kernel's own address"),
        ({"peer": "10.7.0.255"}, "bad address: peer 10.7.0.255 is not a host address"),
        ({"prefixlen": 33}, "bad address"),
        ({"netns": "ustack-no-such-ns"}, "no network namespace named 'ustack-no-such-ns'"),
        ({"offload": "yes"}, "bad offload mode 'yes': use one of auto, on, off"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict[str, object], start: str) -> None:
    with pytest.raises(LinkError) as info:
        TunLink.open(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(start)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, OSError)


def test_have_net_admin_explains_a_missing_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns_mod, "TUN_PATH", "/nonexistent/net/tun")
    ok, reason = have_net_admin.__wrapped__()
    assert not ok
    assert reason.startswith("no /dev/net/tun")
