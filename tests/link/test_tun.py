"""TunLink against the real Linux kernel, always inside a private network namespace.

The kernel is the peer: it sends an ICMP echo request and a TCP SYN into the TUN device, we
read them with ``read_batch`` and check they parse as IPv4, then write hand-built answers back
and watch the kernel act on them (a raw socket receives the echo reply; ``connect()`` fails
with ECONNREFUSED after our RST). Error paths that need no privileges run everywhere.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from ustack.link import netns as netns_mod
from ustack.link import tun as tun_mod
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace, have_net_admin
from ustack.link.tun import TunLink
from ustack.wire import icmp, ipv4, tcp
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
    link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER)
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
    link = TunLink.open("ustack0", netns=ns.name, address=KERNEL, peer=PEER)
    client = inside(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        client.setblocking(False)
        assert client.connect_ex((PEER, 8080)) == errno.EINPROGRESS
        kernel, peer = ipv4.addr_to_int(KERNEL), ipv4.addr_to_int(PEER)

        _, packet = read_until(link, lambda p: p.proto == ipv4.PROTO_TCP)
        assert (packet.src, packet.dst) == (kernel, peer)
        syn = tcp.parse(packet.payload, packet.src, packet.dst)
        assert syn.control == tcp.Control.SYN and not syn.has_ack
        assert syn.dst_port == 8080
        assert syn.options.mss is not None

        # RFC 9293 3.10.7.1: a SYN to a closed port is answered <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>.
        out = bytearray(ipv4.HEADER_LEN + tcp.HEADER_LEN)
        n = tcp.emit(
            out,
            ipv4.HEADER_LEN,
            peer,
            kernel,
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
