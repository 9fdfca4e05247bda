"""ICMPv6 (RFC 4443): echo, and the four error messages; Packet Too Big per RFC 8201.

Theory of operation: every ICMPv6 message starts with type, code and checksum, followed by one
32-bit word whose meaning depends on the type (identifier and sequence number for echo; the MTU
for Packet Too Big; the pointer for Parameter Problem; unused for Destination Unreachable and
Time Exceeded) and then a body. Unlike ICMP for IPv4, the checksum covers the RFC 8200 8.1
pseudo-header too (RFC 4443 2.3), so :func:`parse` takes the addresses: it checks the length once,
verifies the checksum and returns an :class:`Icmpv6Message` whose ``payload`` is a view of the
body (echo data, or the quoted invoking packet). Types ustack does not act on still parse, with
the typed fields zero, so the host can count them by type; that includes Neighbor Discovery
(RFC 4861) and MLD: TUN is a point-to-point layer-3 link with no link-layer addresses to
resolve, so ustack does not implement them. Error types are below 128 (RFC 4443 2.1).

:func:`parse_quoted` reads the quoted invoking packet of an error far enough to find the
connection it is about: its addresses, the upper-layer protocol behind its extension headers and
the first 8 octets of the upper layer (TCP's ports and sequence number, which RFC 5927 4.1
checks). The quote is usually cut short, so its walk is bounded by the bytes present.

The emitters write into a preallocated buffer and fill the checksum with the pseudo-header, so
they take the addresses of the IPv6 header the caller will put in front. :func:`emit_error`
quotes "as much of invoking packet as possible without the ICMPv6 packet exceeding the minimum
IPv6 MTU" (RFC 4443 2.4 (c)); :func:`quote_length` says how much that is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ustack.wire import checksum as _cs
from ustack.wire import ipv6
from ustack.wire.errors import ParseError

# Field layout (RFC 4443 2.1): type, code, checksum, then the type-specific 32-bit word, read as
# two halves for echo (identifier, sequence) and whole for the errors.
_HEADER = struct.Struct("!BBHHH")
_WORD = struct.Struct("!I")
HEADER_LEN = 8
OFF_CHECKSUM = 2
OFF_WORD = 4

# Types (RFC 4443 2.1; ND per RFC 4861, MLD per RFC 2710 and RFC 3810).
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
MLD_QUERY = 130
MLD_REPORT = 131
MLD_DONE = 132
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
NEIGHBOR_SOLICITATION = 135
NEIGHBOR_ADVERTISEMENT = 136
REDIRECT = 137
MLD2_REPORT = 143

ERROR_TYPE_LIMIT = 128  # RFC 4443 2.1: types below are errors, the rest informational

# Destination Unreachable codes (RFC 4443 3.1).
NO_ROUTE = 0
ADMIN_PROHIBITED = 1
BEYOND_SCOPE = 2
ADDR_UNREACH = 3
PORT_UNREACH = 4
SOURCE_POLICY_FAILED = 5
REJECT_ROUTE = 6

# Time Exceeded codes (RFC 4443 3.3).
HOP_LIMIT_EXCEEDED = 0
REASSEMBLY_TIME_EXCEEDED = 1

# Parameter Problem codes (RFC 4443 3.4; code 3 from RFC 7112 3), shared with the IPv6 parse.
ERRONEOUS_FIELD = ipv6.PARAM_ERRONEOUS_FIELD
UNRECOGNIZED_NEXT_HEADER = ipv6.PARAM_UNRECOGNIZED_NEXT_HEADER
UNRECOGNIZED_OPTION = ipv6.PARAM_UNRECOGNIZED_OPTION
INCOMPLETE_HEADER_CHAIN = 3

_ERROR_CODES: Final = {
    DEST_UNREACH: range(REJECT_ROUTE + 1),
    PACKET_TOO_BIG: range(1),
    TIME_EXCEEDED: range(REASSEMBLY_TIME_EXCEEDED + 1),
    PARAM_PROBLEM: range(INCOMPLETE_HEADER_CHAIN + 1),
}

# RFC 4443 2.4 (c): the whole error, IPv6 header included, fits the minimum MTU.
MAX_QUOTE_LEN = ipv6.MIN_MTU - ipv6.HEADER_LEN - HEADER_LEN
QUOTED_TRANSPORT_LEN = 8  # enough for TCP's ports and sequence number (RFC 9293 3.1)

# The quoted upper-layer header's first 8 octets as TCP's: source port, destination port,
# sequence number (RFC 9293 3.1).
_QUOTED_PORTS_SEQ = struct.Struct("!HHI")
_ADDRESSES = struct.Struct("!QQQQ")


@dataclass(frozen=True, slots=True)
class Icmpv6Message:
    type: int
    code: int
    ident: int  # echo only, else 0
    sequence: int  # echo only, else 0
    mtu: int  # Packet Too Big only, else 0
    pointer: int  # Parameter Problem only, else 0
    payload: memoryview  # echo data, the quoted invoking packet, or the body of any other type

    @property
    def is_error(self) -> bool:
        return self.type < ERROR_TYPE_LIMIT


@dataclass(frozen=True, slots=True)
class QuotedPacket:
    """The part of an ICMPv6 error's quoted packet that identifies a connection.

    ``next_header`` is the upper-layer protocol found behind the quoted extension headers;
    ``src_port``, ``dst_port`` and ``seq`` are the first 8 octets of that upper layer read as
    TCP's (for UDP the ports are right too, and ``seq`` is its length and checksum).
    ``payload_length`` is the quoted fixed header's.
    """

    src: int
    dst: int
    next_header: int
    payload_length: int
    src_port: int
    dst_port: int
    seq: int
    transport: memoryview  # the first octets of the upper layer (at least 8)


def parse(
    buf: bytes | bytearray | memoryview, src: int, dst: int, *, verify_checksum: bool = True
) -> Icmpv6Message:
    """Parse one ICMPv6 message (the upper-layer payload of an IPv6 packet from ``src`` to
    ``dst``); raise :class:`ParseError` if malformed."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    n = len(mv)
    if n < HEADER_LEN:
        raise ParseError("icmpv6_truncated")
    if verify_checksum:
        pseudo = ipv6.pseudo_header_sum(src, dst, ipv6.PROTO_ICMPV6, n)
        if _cs.internet_checksum(mv, pseudo):
            raise ParseError("icmpv6_bad_checksum", integrity=True)
    type_, code, _csum, hi, lo = _HEADER.unpack_from(mv)
    body = mv[HEADER_LEN:]
    if type_ in (ECHO_REQUEST, ECHO_REPLY):
        return Icmpv6Message(type_, code, hi, lo, 0, 0, body)
    if type_ == PACKET_TOO_BIG:
        return Icmpv6Message(type_, code, 0, 0, (hi << 16) | lo, 0, body)
    if type_ == PARAM_PROBLEM:
        return Icmpv6Message(type_, code, 0, 0, 0, (hi << 16) | lo, body)
    return Icmpv6Message(type_, code, 0, 0, 0, 0, body)


def parse_quoted(msg: Icmpv6Message) -> QuotedPacket:
    """The addresses, upper-layer protocol and leading upper-layer octets an error quotes."""
    if not msg.is_error:
        raise ParseError("icmpv6_quote_not_error")
    q = msg.payload
    if len(q) < ipv6.HEADER_LEN:
        raise ParseError("icmpv6_quote_truncated")
    if q[0] >> 4 != 6:
        raise ParseError("icmpv6_quote_bad_version")
    try:
        chain = ipv6.walk_quoted(q)
    except ParseError as e:
        # A quote is cut short by design, so a chain running past it is a short quote.
        if e.reason == "ipv6_ext_header_truncated":
            raise ParseError("icmpv6_quote_truncated") from None
        if e.reason == "ipv6_fragment_not_first":
            raise ParseError("icmpv6_quote_not_first_fragment") from None
        raise ParseError("icmpv6_quote_malformed") from None
    start = chain.payload_offset
    if chain.proto == ipv6.NO_NEXT_HEADER:
        raise ParseError("icmpv6_quote_no_upper_layer")
    if len(q) < start + QUOTED_TRANSPORT_LEN:
        raise ParseError("icmpv6_quote_truncated")
    src_hi, src_lo, dst_hi, dst_lo = _ADDRESSES.unpack_from(q, ipv6.OFF_SRC)
    sport, dport, seq = _QUOTED_PORTS_SEQ.unpack_from(q, start)
    return QuotedPacket(
        (src_hi << 64) | src_lo,
        (dst_hi << 64) | dst_lo,
        chain.proto,
        (q[ipv6.OFF_PAYLOAD_LENGTH] << 8) | q[ipv6.OFF_PAYLOAD_LENGTH + 1],
        sport,
        dport,
        seq,
        q[start:],
    )


def _finish(buf: bytearray | memoryview, offset: int, length: int, src: int, dst: int) -> int:
    view = memoryview(buf)[offset : offset + length]
    pseudo = ipv6.pseudo_header_sum(src, dst, ipv6.PROTO_ICMPV6, length)
    struct.pack_into("!H", buf, offset + OFF_CHECKSUM, _cs.internet_checksum(view, pseudo))
    return length


def emit_echo(
    buf: bytearray | memoryview,
    offset: int,
    *,
    type: int,
    ident: int,
    sequence: int,
    payload: bytes | bytearray | memoryview,
    src: int,
    dst: int,
) -> int:
    """Write an echo request or reply from ``src`` to ``dst`` at ``buf[offset:]``; return its
    length."""
    if type not in (ECHO_REQUEST, ECHO_REPLY):
        raise ValueError(f"not an echo type: {type}")
    total = HEADER_LEN + len(payload)
    if offset < 0 or offset + total > len(buf):
        raise ValueError("buffer too small for the ICMPv6 echo message")
    _HEADER.pack_into(buf, offset, type, 0, 0, ident, sequence)
    buf[offset + HEADER_LEN : offset + total] = payload
    return _finish(buf, offset, total, src, dst)


def emit_echo_reply(
    buf: bytearray | memoryview,
    offset: int,
    *,
    ident: int,
    sequence: int,
    payload: bytes | bytearray | memoryview,
    src: int,
    dst: int,
) -> int:
    """Write the echo reply to a request (RFC 4443 4.2: its identifier, sequence number and data
    returned unchanged) at ``buf[offset:]``; return its length."""
    return emit_echo(
        buf,
        offset,
        type=ECHO_REPLY,
        ident=ident,
        sequence=sequence,
        payload=payload,
        src=src,
        dst=dst,
    )


def quote_length(original: bytes | bytearray | memoryview) -> int:
    """How many octets of ``original`` an error quotes: as many as fit in the minimum MTU
    (RFC 4443 2.4 (c)), but never past the packet's own Payload Length (so link padding is not
    quoted) nor past what was received."""
    n = min(len(original), MAX_QUOTE_LEN)
    if len(original) >= ipv6.HEADER_LEN and original[0] >> 4 == 6:
        plen = (original[ipv6.OFF_PAYLOAD_LENGTH] << 8) | original[ipv6.OFF_PAYLOAD_LENGTH + 1]
        if plen:  # 0 would be a jumbogram's: nothing to trim by
            n = min(n, ipv6.HEADER_LEN + plen)
    return n


def emit_error(
    buf: bytearray | memoryview,
    offset: int,
    *,
    type: int,
    code: int,
    value: int = 0,
    original: bytes | bytearray | memoryview,
    src: int,
    dst: int,
) -> int:
    """Write an error message about ``original`` (the invoking packet as received, IPv6 header
    first) at ``buf[offset:]``; return its length.

    ``src`` and ``dst`` are the addresses of the IPv6 header the error travels in (normally ours
    and the invoking packet's source). ``value`` is the MTU of Packet Too Big or the pointer of
    Parameter Problem; for Destination Unreachable and Time Exceeded that word is unused and
    must be zero (RFC 4443 3.1, 3.3).
    """
    codes = _ERROR_CODES.get(type)
    if codes is None:
        raise ValueError(f"not an ICMPv6 error type: {type}")
    if code not in codes:
        raise ValueError(f"bad code {code} for ICMPv6 type {type}")
    if type == PACKET_TOO_BIG:
        if not ipv6.MIN_MTU <= value <= 0xFFFF_FFFF:
            # RFC 8201 4: a receiver never lowers its path MTU below the minimum link MTU.
            raise ValueError(f"Packet Too Big MTU {value} below {ipv6.MIN_MTU} or too large")
    elif type == PARAM_PROBLEM:
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"Parameter Problem pointer {value} out of range")
    elif value:
        raise ValueError("Destination Unreachable and Time Exceeded carry no value")
    qlen = quote_length(original)
    total = HEADER_LEN + qlen
    if offset < 0 or offset + total > len(buf):
        raise ValueError("buffer too small for the ICMPv6 error message")
    _HEADER.pack_into(buf, offset, type, code, 0, value >> 16, value & 0xFFFF)
    buf[offset + HEADER_LEN : offset + total] = original[:qlen]
    return _finish(buf, offset, total, src, dst)


_TYPE_NAMES = {
    MLD_QUERY: "multicast listener query",
    MLD_REPORT: "multicast listener report",
    MLD_DONE: "multicast listener done",
    ROUTER_SOLICITATION: "router solicitation",
    ROUTER_ADVERTISEMENT: "router advertisement",
    NEIGHBOR_SOLICITATION: "neighbor solicitation",
    NEIGHBOR_ADVERTISEMENT: "neighbor advertisement",
    REDIRECT: "redirect",
    MLD2_REPORT: "multicast listener report v2",
}
_UNREACH_TEXT = (
    "unreachable route",
    "unreachable prohibited",
    "unreachable beyond scope",
    "unreachable address",
    "unreachable port",
    "unreachable source policy",
    "unreachable reject route",
)
_PARAM_TEXT = (
    "erroneous header field",
    "unrecognized next header",
    "unrecognized option",
    "incomplete header chain",
)
_PROTO_NAMES = {ipv6.PROTO_TCP: "tcp", ipv6.PROTO_UDP: "udp"}


def _quoted_dst(msg: Icmpv6Message) -> str:
    """The quoted packet's destination (and port), or '' when the quote does not parse."""
    try:
        q = parse_quoted(msg)
    except ParseError:
        return ""
    dst = ipv6.int_to_addr(q.dst)
    name = _PROTO_NAMES.get(q.next_header)
    return f" {dst} {name} port {q.dst_port}" if name else f" {dst}"


def format(msg: Icmpv6Message) -> str:
    """One line in tcpdump's style, without addresses, e.g. ``ICMP6, echo request, id 1, seq 1,
    length 64``."""
    length = HEADER_LEN + len(msg.payload)
    t = msg.type
    if t in (ECHO_REQUEST, ECHO_REPLY):
        kind = "request" if t == ECHO_REQUEST else "reply"
        return f"ICMP6, echo {kind}, id {msg.ident}, seq {msg.sequence}, length {length}"
    if t == DEST_UNREACH:
        text = _UNREACH_TEXT[msg.code] if msg.code < len(_UNREACH_TEXT) else f"code {msg.code}"
        return f"ICMP6, destination {text}{_quoted_dst(msg)}, length {length}"
    if t == PACKET_TOO_BIG:
        return f"ICMP6, packet too big, mtu {msg.mtu}, length {length}"
    if t == TIME_EXCEEDED:
        kind = "in-transit" if msg.code == HOP_LIMIT_EXCEEDED else "reassembly"
        return f"ICMP6, time exceeded {kind}, length {length}"
    if t == PARAM_PROBLEM:
        text = _PARAM_TEXT[msg.code] if msg.code < len(_PARAM_TEXT) else f"code {msg.code}"
        return f"ICMP6, parameter problem, {text} at {msg.pointer}, length {length}"
    name = _TYPE_NAMES.get(t)
    if name:
        return f"ICMP6, {name}, length {length}"
    return f"ICMP6, type {t}, code {msg.code}, length {length}"
