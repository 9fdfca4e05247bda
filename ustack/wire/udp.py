"""UDP (RFC 768): the 8-octet header, with the IPv4 or IPv6 pseudo-header checksum.

Theory of operation: a UDP header is source port, destination port, length (header and data,
in octets) and checksum. :func:`parse` checks the length once -- the header must fit, and the
Length field must cover the header and no more than the IP payload (octets after it are not
the datagram's, RFC 768 "Length") -- and verifies the checksum, then returns a
:class:`UdpDatagram` whose ``payload`` is a view of the data. The checksum covers a
pseudo-header of the carrying network layer, as TCP's does; like :mod:`ustack.wire.tcp` the
caller hands the partial sum of that pseudo-header with its length left 0
(:func:`ustack.wire.checksum.ipv4_pseudo_header_sum` or
:func:`ustack.wire.ipv6.pseudo_header_sum` with ``PROTO_UDP``), and this module adds the
datagram's own length, which sums the same in IPv4's 16-bit field and IPv6's 32-bit one.

Two rules differ by family. Over IPv4 a checksum field of zero means the sender computed none
(RFC 768), so there is nothing to verify; over IPv6 the checksum is mandatory and a zero field
makes the datagram invalid (RFC 8200 8.1). On the way out a computed checksum of zero is sent
as all ones (RFC 768: "If the computed checksum is zero, it is transmitted as all ones"), so
:func:`emit` never writes the "no checksum" value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ustack.wire import checksum as _cs
from ustack.wire.errors import ParseError

# Field layout (RFC 768): source port, destination port, length, checksum.
_HEADER = struct.Struct("!HHHH")
HEADER_LEN = 8
OFF_LENGTH = 4
OFF_CHECKSUM = 6
PROTO = 17  # the IPv4 Protocol / IPv6 Next Header value (IANA "Assigned Internet Protocol Numbers")
# The largest payload one datagram can carry: the Length field is 16 bits and counts the header.
MAX_PAYLOAD_LEN = 0xFFFF - HEADER_LEN
_ALL_ONES = 0xFFFF


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: memoryview


def parse(
    buf: bytes | bytearray | memoryview,
    pseudo: int,
    *,
    ipv6: bool = False,
    verify_checksum: bool = True,
) -> UdpDatagram:
    """Parse one UDP datagram (``buf`` is the IP payload); raise :class:`ParseError` if it is
    malformed. ``pseudo`` is the pseudo-header's partial sum with length 0 (see the module
    docstring); ``ipv6`` applies RFC 8200 8.1's rule that the checksum is mandatory."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if len(mv) < HEADER_LEN:
        raise ParseError("udp_truncated")
    src_port, dst_port, length, csum = _HEADER.unpack_from(mv)
    if length < HEADER_LEN or length > len(mv):
        raise ParseError("udp_bad_length")
    mv = mv[:length]
    if csum == 0:
        if ipv6:
            raise ParseError("udp_zero_checksum_ipv6")
    elif verify_checksum and _cs.internet_checksum(mv, pseudo + length):
        raise ParseError("udp_bad_checksum", integrity=True)
    return UdpDatagram(src_port, dst_port, mv[HEADER_LEN:])


def emit(
    buf: bytearray | memoryview,
    offset: int,
    *,
    src_port: int,
    dst_port: int,
    payload: bytes | bytearray | memoryview,
    pseudo: int,
) -> int:
    """Write the header and ``payload`` at ``buf[offset:]`` with the checksum over ``pseudo``
    (the pseudo-header's partial sum with length 0) plus the datagram; return its length."""
    length = HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP payload of {len(payload)} octets does not fit in one datagram")
    if not (0 <= src_port <= 0xFFFF and 0 <= dst_port <= 0xFFFF):
        raise ValueError("UDP ports are 16-bit")
    if offset < 0 or offset + length > len(buf):
        raise ValueError("buffer too small for the UDP datagram")
    _HEADER.pack_into(buf, offset, src_port, dst_port, length, 0)
    buf[offset + HEADER_LEN : offset + length] = payload
    csum = _cs.internet_checksum(memoryview(buf)[offset : offset + length], pseudo + length)
    struct.pack_into("!H", buf, offset + OFF_CHECKSUM, csum or _ALL_ONES)
    return length
