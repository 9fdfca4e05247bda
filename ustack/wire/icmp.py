"""ICMP for IPv4 (RFC 792): echo, and destination unreachable with RFC 1191's next-hop MTU.

Theory of operation: every ICMP message starts with type, code and checksum, followed by one
32-bit word whose meaning depends on the type (identifier and sequence number for echo; unused,
or the next-hop MTU for "fragmentation needed", for destination unreachable) and then a body.
:func:`parse` checks the length once, verifies the checksum over the whole message and returns
an :class:`IcmpMessage` whose ``payload`` is a view of the body (echo data, or the quoted
original datagram). Types ustack does not act on still parse, with the typed fields zero, so the
host can count them by type. :func:`parse_quoted` reads the quoted datagram of an error message
far enough to find the connection it is about (addresses, protocol, ports and TCP sequence
number, which RFC 5927 4.1 checks); :func:`error_errno` says what an error means to a sockets
application.

The emitters write into a preallocated buffer. :func:`emit_unreachable` quotes the offending
datagram's IP header plus the first 8 octets of its payload, as RFC 792 requires; 8 octets cover
the TCP/UDP ports (and TCP's sequence number), which is what the receiver needs to demultiplex.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Final

from ustack.wire import checksum as _cs
from ustack.wire.errors import ParseError
from ustack.wire.ipv4 import int_to_addr

# Field layout (RFC 792): type, code, checksum, then the type-specific word as two halves
# (echo: identifier, sequence; unreachable: unused, next-hop MTU per RFC 1191 4).
_HEADER = struct.Struct("!BBHHH")
HEADER_LEN = 8
OFF_CHECKSUM = 2

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4  # deprecated by RFC 6633: never sent, ignored on receipt
REDIRECT = 5  # for routers to send (RFC 1122 3.2.2.2); a host ignores it here
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12

# Destination-unreachable codes (RFC 792, RFC 1191).
NET_UNREACH = 0
HOST_UNREACH = 1
PROTO_UNREACH = 2
PORT_UNREACH = 3
FRAG_NEEDED = 4

QUOTED_TRANSPORT_LEN = 8  # RFC 792: "the internet header plus the first 64 bits of data"

_IPV4_MIN_HEADER = 20
_IPV4_MAX_HEADER = 60
# The quoted transport header's first 8 octets as TCP's: source port, destination port, sequence
# number (RFC 9293 3.1).
_QUOTED_PORTS_SEQ = struct.Struct("!HHI")


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    type: int
    code: int
    ident: int  # echo only, else 0
    sequence: int  # echo only, else 0
    mtu: int  # next-hop MTU of "fragmentation needed" (0 from pre-RFC 1191 routers), else 0
    payload: memoryview


# The errno an ICMP error stands for when reported to an application, as Linux's
# icmp_err_convert table has it (RFC 1122 4.2.3.9 asks that soft errors be made available to
# the application; the numbers are the ones a sockets application expects). Destination
# unreachable by code; the other error types below.
_UNREACH_ERRNO: Final = (
    errno.ENETUNREACH,  # 0 net unreachable
    errno.EHOSTUNREACH,  # 1 host unreachable
    errno.ENOPROTOOPT,  # 2 protocol unreachable
    errno.ECONNREFUSED,  # 3 port unreachable
    errno.EMSGSIZE,  # 4 fragmentation needed and DF set
    errno.EOPNOTSUPP,  # 5 source route failed
    errno.ENETUNREACH,  # 6 destination network unknown (RFC 1122 3.2.2.1)
    errno.EHOSTDOWN,  # 7 destination host unknown
    errno.ENONET,  # 8 source host isolated
    errno.ENETUNREACH,  # 9 network administratively prohibited
    errno.EHOSTUNREACH,  # 10 host administratively prohibited
    errno.ENETUNREACH,  # 11 network unreachable for type of service
    errno.EHOSTUNREACH,  # 12 host unreachable for type of service
    errno.EHOSTUNREACH,  # 13 communication administratively prohibited (RFC 1812)
    errno.EHOSTUNREACH,  # 14 host precedence violation (RFC 1812)
    errno.EHOSTUNREACH,  # 15 precedence cutoff in effect (RFC 1812)
)
_TYPE_ERRNO: Final = {
    TIME_EXCEEDED: errno.EHOSTUNREACH,  # the datagram never got there
    PARAM_PROBLEM: errno.EPROTO,  # a router or the host found our header bad
}


def error_errno(type_: int, code: int) -> int:
    """The errno an application sees for ICMP error ``type_``/``code`` (an unknown
    unreachable code is EHOSTUNREACH, an unknown type EPROTO)."""
    if type_ == DEST_UNREACH:
        return _UNREACH_ERRNO[code] if 0 <= code < len(_UNREACH_ERRNO) else errno.EHOSTUNREACH
    return _TYPE_ERRNO.get(type_, errno.EPROTO)


@dataclass(frozen=True, slots=True)
class QuotedDatagram:
    """The part of an ICMP error's quoted datagram that identifies a connection.

    ``src_port``, ``dst_port`` and ``seq`` are the first 8 octets of the quoted transport
    header read as TCP's (ports, then the sequence number); for UDP the ports are right too
    and ``seq`` is its length and checksum. ``total_length`` is the quoted IP header's: how
    long the datagram that did not get through was (RFC 1191 5 uses it when the router did not
    say the next-hop MTU).
    """

    src: int
    dst: int
    proto: int
    total_length: int
    src_port: int
    dst_port: int
    seq: int
    transport: memoryview  # the first octets of the original payload (at least 8)


def parse(buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True) -> IcmpMessage:
    """Parse one ICMP message (the IP payload); raise :class:`ParseError` if malformed."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if len(mv) < HEADER_LEN:
        raise ParseError("icmp_truncated")
    if verify_checksum and _cs.internet_checksum(mv):
        raise ParseError("icmp_bad_checksum", integrity=True)
    type_, code, _csum, hi, lo = _HEADER.unpack_from(mv)
    if type_ in (ECHO_REQUEST, ECHO_REPLY):
        return IcmpMessage(type_, code, hi, lo, 0, mv[HEADER_LEN:])
    if type_ == DEST_UNREACH and code == FRAG_NEEDED:
        return IcmpMessage(type_, code, 0, 0, lo, mv[HEADER_LEN:])
    return IcmpMessage(type_, code, 0, 0, 0, mv[HEADER_LEN:])


def parse_quoted(msg: IcmpMessage) -> QuotedDatagram:
    """The addresses, protocol and leading transport octets an error message quotes."""
    q = msg.payload
    if len(q) < _IPV4_MIN_HEADER:
        raise ParseError("icmp_quote_truncated")
    if q[0] >> 4 != 4:
        raise ParseError("icmp_quote_bad_version")
    hlen = (q[0] & 0x0F) << 2
    if hlen < _IPV4_MIN_HEADER:
        raise ParseError("icmp_quote_bad_ihl")
    if len(q) < hlen + QUOTED_TRANSPORT_LEN:
        raise ParseError("icmp_quote_truncated")
    total = (q[2] << 8) | q[3]
    if total < hlen:
        raise ParseError("icmp_quote_bad_total_length")
    src, dst = struct.unpack_from("!II", q, 12)
    sport, dport, seq = _QUOTED_PORTS_SEQ.unpack_from(q, hlen)
    return QuotedDatagram(src, dst, q[9], total, sport, dport, seq, q[hlen:])


def _finish(buf: bytearray | memoryview, offset: int, length: int) -> int:
    view = memoryview(buf)[offset : offset + length]
    struct.pack_into("!H", buf, offset + OFF_CHECKSUM, _cs.internet_checksum(view))
    return length


def emit_echo(
    buf: bytearray | memoryview,
    offset: int,
    *,
    type: int,
    ident: int,
    sequence: int,
    payload: bytes | bytearray | memoryview,
) -> int:
    """Write an echo request or reply at ``buf[offset:]``; return its length."""
    if type not in (ECHO_REQUEST, ECHO_REPLY):
        raise ValueError(f"not an echo type: {type}")
    total = HEADER_LEN + len(payload)
    if offset < 0 or offset + total > len(buf):
        raise ValueError("buffer too small for the ICMP echo message")
    _HEADER.pack_into(buf, offset, type, 0, 0, ident, sequence)
    buf[offset + HEADER_LEN : offset + total] = payload
    return _finish(buf, offset, total)


def quote_length(original: bytes | bytearray | memoryview) -> int:
    """How many octets of ``original`` an error message quotes: its IP header and 8 more.

    Never more than the datagram's own total length (so link padding is not quoted) nor than
    what was received.
    """
    n = len(original)
    if n < _IPV4_MIN_HEADER:
        return n
    hlen = min(max((original[0] & 0x0F) << 2, _IPV4_MIN_HEADER), _IPV4_MAX_HEADER)
    total = (original[2] << 8) | original[3]
    return min(n, hlen + QUOTED_TRANSPORT_LEN, max(total, hlen))


def emit_unreachable(
    buf: bytearray | memoryview,
    offset: int,
    *,
    code: int,
    original: bytes | bytearray | memoryview,
    mtu: int = 0,
) -> int:
    """Write a destination-unreachable message about ``original`` (the offending datagram as
    received, IP header first) at ``buf[offset:]``; return its length.

    ``mtu`` is the next-hop MTU and belongs only to ``FRAG_NEEDED`` (RFC 1191 4); for other codes
    that word is unused and must be zero (RFC 792).
    """
    if not 0 <= code <= 15:
        raise ValueError(f"bad destination-unreachable code: {code}")
    if mtu and code != FRAG_NEEDED:
        raise ValueError("a next-hop MTU only belongs to FRAG_NEEDED")
    qlen = quote_length(original)
    total = HEADER_LEN + qlen
    if offset < 0 or offset + total > len(buf):
        raise ValueError("buffer too small for the ICMP unreachable message")
    _HEADER.pack_into(buf, offset, DEST_UNREACH, code, 0, 0, mtu)
    buf[offset + HEADER_LEN : offset + total] = original[:qlen]
    return _finish(buf, offset, total)


_UNREACH_TEXT = {
    NET_UNREACH: "net {} unreachable",
    HOST_UNREACH: "host {} unreachable",
}

_PROTO_NAMES = {6: "tcp", 17: "udp"}


def _unreach_text(msg: IcmpMessage) -> str:
    try:
        q = parse_quoted(msg)
    except ParseError:
        return f"unreachable, code {msg.code}"
    dst = int_to_addr(q.dst)
    if msg.code == PORT_UNREACH and q.proto in _PROTO_NAMES:
        return f"{dst} {_PROTO_NAMES[q.proto]} port {q.dst_port} unreachable"
    if msg.code == PROTO_UNREACH:
        return f"{dst} protocol {q.proto} unreachable"
    if msg.code == FRAG_NEEDED:
        return f"{dst} unreachable - need to frag (mtu {msg.mtu})"
    text = _UNREACH_TEXT.get(msg.code)
    return text.format(dst) if text else f"{dst} unreachable, code {msg.code}"


def format(msg: IcmpMessage) -> str:
    """One line in tcpdump's style, without addresses (see :mod:`ustack.wire.fmt`)."""
    length = HEADER_LEN + len(msg.payload)
    if msg.type in (ECHO_REQUEST, ECHO_REPLY):
        kind = "request" if msg.type == ECHO_REQUEST else "reply"
        return f"ICMP echo {kind}, id {msg.ident}, seq {msg.sequence}, length {length}"
    if msg.type == DEST_UNREACH:
        return f"ICMP {_unreach_text(msg)}, length {length}"
    if msg.type == TIME_EXCEEDED:
        return f"ICMP time exceeded in-transit, length {length}"
    return f"ICMP type {msg.type}, code {msg.code}, length {length}"


# Time-exceeded codes (RFC 792).
TTL_EXCEEDED = 0  # "time to live exceeded in transit"
REASSEMBLY_TIME_EXCEEDED = 1  # "fragment reassembly time exceeded"


def emit_time_exceeded(
    buf: bytearray | memoryview,
    offset: int,
    *,
    code: int,
    original: bytes | bytearray | memoryview,
) -> int:
    """Write a time-exceeded message about ``original`` (IP header first; for code 1 the first
    fragment of the datagram that timed out, RFC 1122 3.3.2) at ``buf[offset:]``; return its
    length. The word after the checksum is unused and zero (RFC 792)."""
    if code not in (TTL_EXCEEDED, REASSEMBLY_TIME_EXCEEDED):
        raise ValueError(f"bad time-exceeded code: {code}")
    qlen = quote_length(original)
    total = HEADER_LEN + qlen
    if offset < 0 or offset + total > len(buf):
        raise ValueError("buffer too small for the ICMP time-exceeded message")
    _HEADER.pack_into(buf, offset, TIME_EXCEEDED, code, 0, 0, 0)
    buf[offset + HEADER_LEN : offset + total] = original[:qlen]
    return _finish(buf, offset, total)
