"""Raw packets for host tests: build with the wire emitters, read the host's output back.

Both families: ``tcp_packet(..., family=6)`` builds an IPv6 packet (RFC 8200 fixed header, TCP
checksum over the RFC 8200 8.1 pseudo-header) from ``PEER6`` to ``HOST6``, and ``segments``
reads either family. A test that checks TCP's behaviour takes ``family`` (``@both_families``)
and gets its addresses and its MSS from :func:`addresses` and :func:`mss`.
"""

from __future__ import annotations

import weakref

import pytest

from ustack.stack.host import Host
from ustack.stack.isn import fixed_isn
from ustack.tcp.config import TcpConfig
from ustack.wire import addr, checksum, ipv4, ipv6, tcp
from ustack.wire.tcp import TcpSegment

HOST = ipv4.addr_to_int("10.7.0.2")
PEER = ipv4.addr_to_int("10.7.0.1")
HOST6 = addr.from_text("fd00:7::2")  # tagged, as the host files addresses (wire/addr.py)
PEER6 = addr.from_text("fd00:7::1")
SERVER_ISN = 5000

# The IP header in front of TCP: 20 octets for IPv4 without options (RFC 791), 40 for IPv6's
# fixed header (RFC 8200 3); the MSS a host advertises is what is left of the MTU after it and
# TCP's own 20 (RFC 9293 3.7.1, RFC 8200 8.3).
IP_HEADER_LEN = {4: ipv4.HEADER_LEN, 6: ipv6.HEADER_LEN}

both_families = pytest.mark.parametrize("family", [4, 6])

# The family each host from make_host was made for: ``segments`` checks that the host answered
# in it (a dual-stack host made for IPv6 that answers over IPv4 fails the test).
_FAMILY: weakref.WeakKeyDictionary[Host, int] = weakref.WeakKeyDictionary()


def addresses(family: int) -> tuple[int, int]:
    """``(host, peer)`` of the family: the host under test and the peer talking to it."""
    if family == 4:
        return HOST, PEER
    if family == 6:
        return HOST6, PEER6
    raise ValueError(f"family must be 4 or 6, not {family!r}")


def mss(family: int, mtu: int = 1500) -> int:
    """The MSS a host with this MTU advertises to a peer of the family."""
    return mtu - IP_HEADER_LEN[family] - tcp.HEADER_LEN


def make_host(family: int = 4, **kwargs: object) -> Host:
    """A host at ``HOST`` (IPv4), or at ``HOST`` and ``HOST6`` (dual stack) for family 6."""
    kwargs.setdefault("isn", fixed_isn(SERVER_ISN))
    kwargs.setdefault("config", TcpConfig())
    where: int | list[int] = HOST if family == 4 else [HOST, addresses(family)[0]]
    host = Host(where, **kwargs)  # type: ignore[arg-type]
    _FAMILY[host] = family
    return host


def config_of(host: Host, family: int) -> TcpConfig:
    """The TCP configuration the host gives connections of the family (its MSS differs)."""
    return host.config if family == 4 else host.config6


def tcp_packet(
    sport: int,
    dport: int,
    seq: int,
    ack: int = 0,
    flags: int = tcp.SYN,
    *,
    payload: bytes = b"",
    options: bytes = b"",
    window: int = 65535,
    src: int | None = None,
    dst: int | None = None,
    ident: int = 1,
    family: int = 4,
) -> bytearray:
    """One TCP segment in an IP packet of the family, from the peer to the host unless ``src``
    and ``dst`` (addresses of that family, IPv6 ones tagged) say otherwise. ``ident`` is the
    IPv4 Identification; IPv6 has none outside a Fragment header."""
    host, peer = addresses(family)
    src = peer if src is None else src
    dst = host if dst is None else dst
    if addr.is_v6(src) != (family == 6) or addr.is_v6(dst) != (family == 6):
        raise ValueError(f"addresses of another family than {family}")
    length = tcp.HEADER_LEN + len(options) + len(payload)
    if family == 4:
        at = ipv4.HEADER_LEN
        buf = bytearray(at + length)
        ipv4.emit(buf, 0, src=src, dst=dst, proto=ipv4.PROTO_TCP, payload_len=length, ident=ident)
        pseudo = checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, 0)
    else:
        at = ipv6.HEADER_LEN
        buf = bytearray(at + length)
        s6, d6 = addr.untag(src), addr.untag(dst)
        ipv6.emit(buf, 0, src=s6, dst=d6, next_header=ipv6.PROTO_TCP, payload_len=length)
        pseudo = ipv6.pseudo_header_sum(s6, d6, ipv6.PROTO_TCP, 0)
    tcp.emit(
        buf,
        at,
        pseudo=pseudo,
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        options=options,
        payload=payload,
    )
    return buf


def parse_packet(packet: bytes | bytearray | memoryview) -> TcpSegment:
    """A host's outgoing packet (either family, no virtio header) as a TCP segment addressed
    to the peer of its family; its checksum verified."""
    mv = memoryview(packet)
    if mv[0] >> 4 == 4:
        pkt = ipv4.parse(mv)
        assert pkt.proto == ipv4.PROTO_TCP and pkt.dst == PEER and pkt.dont_fragment
        pseudo = checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0)
        return tcp.parse(bytes(pkt.payload), pkt.src, pkt.dst, pseudo=pseudo)
    pkt6 = ipv6.parse(mv)
    src, dst = addr.tag6(pkt6.src), addr.tag6(pkt6.dst)
    assert pkt6.proto == ipv6.PROTO_TCP and not pkt6.ext_headers and dst == PEER6
    pseudo = ipv6.pseudo_header_sum(pkt6.src, pkt6.dst, ipv6.PROTO_TCP, 0)
    return tcp.parse(bytes(pkt6.payload), src, dst, pseudo=pseudo)


def segments(host: Host, now: float = 0.0) -> list[TcpSegment]:
    """The host's output, parsed (every packet must be a valid TCP segment to PEER or PEER6, of
    the family the host was made for by make_host)."""
    out = []
    for p in host.packets_to_send(now):
        assert not isinstance(p, tuple)  # no scatter here: every packet in one piece
        assert _FAMILY.get(host, p[0] >> 4) == p[0] >> 4, "a packet of another family"
        out.append(parse_packet(p))
    return out
