"""Neighbor Discovery's address resolution messages (RFC 4861 4.3, 4.4): Neighbor Solicitation
and Neighbor Advertisement, with the link-layer address options of Ethernet (RFC 4861 4.6.1,
RFC 2464 6).

Theory of operation: both messages are ICMPv6 (type 135, 136) with a 32-bit word after the
checksum (reserved in a solicitation; the R, S and O flags in an advertisement), the 128-bit
target address, and options in units of 8 octets. :func:`parse` takes the whole ICMPv6 message
with the addresses and hop limit of its IPv6 header and applies the validity checks of RFC 4861
7.1.1 and 7.1.2 -- hop limit 255 (so it cannot have crossed a router), checksum, code 0, length,
target not multicast, every option of non-zero length, and for a solicitation from the
unspecified address (duplicate address detection) a solicited-node destination and no source
link-layer address -- raising a :class:`ParseError` naming the failed check. The one option
ustack reads is the link-layer address (Source in a solicitation, Target in an advertisement);
others are skipped, as 4.6 requires. Addresses are untagged 128-bit ints, as ``ipv6`` reads
them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ustack.wire import checksum as _cs
from ustack.wire import ipv6
from ustack.wire.errors import ParseError

NEIGHBOR_SOLICITATION: Final = 135
NEIGHBOR_ADVERTISEMENT: Final = 136
HOP_LIMIT: Final = 255  # RFC 4861 7.1: sent with 255, and anything less is not from this link

_HEADER: Final = struct.Struct("!BBHI")  # type, code, checksum, reserved / flags
_ADDRESS: Final = struct.Struct("!QQ")
MESSAGE_LEN: Final = 24  # RFC 4861 7.1.1/7.1.2: "ICMP length ... is 24 or more octets"
OPT_SOURCE_LLADDR: Final = 1
OPT_TARGET_LLADDR: Final = 2
_OPT_UNIT: Final = 8  # option lengths count 8-octet units
_LLADDR_OPT_LEN: Final = 8  # type, length, 6-octet MAC (RFC 2464 6)

FLAG_ROUTER: Final = 0x80000000
FLAG_SOLICITED: Final = 0x40000000
FLAG_OVERRIDE: Final = 0x20000000

_U128: Final = (1 << 128) - 1
# RFC 4291 2.7.1: the solicited-node multicast address is ff02::1:ff00:0/104 plus the low 24
# bits of the unicast address.
_SOLICITED_NODE_PREFIX: Final = 0xFF020000000000000000000000000000 | 0x1FF000000
ALL_NODES: Final = 0xFF020000000000000000000000000001  # ff02::1 (RFC 4291 2.7.1)


@dataclass(frozen=True, slots=True)
class NdMessage:
    type: int
    target: int
    lladdr: bytes | None  # the Source (NS) or Target (NA) link-layer address option's MAC
    router: bool = False  # NA only
    solicited: bool = False  # NA only
    override: bool = False  # NA only


def solicited_node(address: int) -> int:
    return _SOLICITED_NODE_PREFIX | (address & 0xFFFFFF)


def is_multicast(address: int) -> bool:
    return (address & _U128) >> 120 == 0xFF


def parse(message: bytes | bytearray | memoryview, src: int, dst: int, hop_limit: int) -> NdMessage:
    """Validate and parse one NS or NA, the ICMPv6 payload of an IPv6 packet ``src`` ->
    ``dst`` that arrived with ``hop_limit``."""
    mv = message if isinstance(message, memoryview) else memoryview(message)
    n = len(mv)
    if n < MESSAGE_LEN:
        raise ParseError("nd_truncated")
    type_, code, _csum, word = _HEADER.unpack_from(mv)
    if type_ not in (NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT):
        raise ParseError("nd_not_resolution")
    if hop_limit != HOP_LIMIT:
        raise ParseError("nd_bad_hop_limit")
    if _cs.internet_checksum(mv, ipv6.pseudo_header_sum(src, dst, ipv6.PROTO_ICMPV6, n)):
        raise ParseError("nd_bad_checksum", integrity=True)
    if code != 0:
        raise ParseError("nd_bad_code")
    hi, lo = _ADDRESS.unpack_from(mv, 8)
    target = (hi << 64) | lo
    if is_multicast(target):
        raise ParseError("nd_multicast_target")
    want = OPT_SOURCE_LLADDR if type_ == NEIGHBOR_SOLICITATION else OPT_TARGET_LLADDR
    lladdr: bytes | None = None
    off = MESSAGE_LEN
    while off < n:
        if off + 2 > n:
            raise ParseError("nd_bad_option")
        kind, units = mv[off], mv[off + 1]
        size = units * _OPT_UNIT
        if size == 0 or off + size > n:
            raise ParseError("nd_bad_option")
        if kind == want and size == _LLADDR_OPT_LEN:
            lladdr = bytes(mv[off + 2 : off + 8])
        off += size
    if type_ == NEIGHBOR_SOLICITATION:
        if src == 0 and (dst != solicited_node(target) or lladdr is not None):
            raise ParseError("nd_bad_dad")
        return NdMessage(type_, target, lladdr)
    solicited = bool(word & FLAG_SOLICITED)
    if solicited and is_multicast(dst):
        raise ParseError("nd_solicited_to_multicast")
    return NdMessage(
        type_,
        target,
        lladdr,
        router=bool(word & FLAG_ROUTER),
        solicited=solicited,
        override=bool(word & FLAG_OVERRIDE),
    )


def _emit(
    buf: bytearray,
    offset: int,
    type_: int,
    word: int,
    *,
    src: int,
    dst: int,
    target: int,
    option: int,
    lladdr: bytes | None,
) -> int:
    length = MESSAGE_LEN + (_LLADDR_OPT_LEN if lladdr is not None else 0)
    _HEADER.pack_into(buf, offset, type_, 0, 0, word)
    _ADDRESS.pack_into(buf, offset + 8, target >> 64, target & 0xFFFFFFFFFFFFFFFF)
    if lladdr is not None:
        buf[offset + MESSAGE_LEN] = option
        buf[offset + MESSAGE_LEN + 1] = _LLADDR_OPT_LEN // _OPT_UNIT
        buf[offset + MESSAGE_LEN + 2 : offset + length] = lladdr
    view = memoryview(buf)[offset : offset + length]
    struct.pack_into(
        "!H",
        buf,
        offset + 2,
        _cs.internet_checksum(view, ipv6.pseudo_header_sum(src, dst, ipv6.PROTO_ICMPV6, length)),
    )
    return length


def message_len(lladdr: bytes | None) -> int:
    return MESSAGE_LEN + (_LLADDR_OPT_LEN if lladdr is not None else 0)


def emit_solicitation(
    buf: bytearray, offset: int, *, src: int, dst: int, target: int, lladdr: bytes | None
) -> int:
    """Write an NS for ``target`` (with our MAC as Source link-layer address unless None, as a
    DAD probe must be) at ``buf[offset:]``, checksummed for ``src`` -> ``dst``."""
    return _emit(
        buf,
        offset,
        NEIGHBOR_SOLICITATION,
        0,
        src=src,
        dst=dst,
        target=target,
        option=OPT_SOURCE_LLADDR,
        lladdr=lladdr,
    )


def emit_advertisement(
    buf: bytearray,
    offset: int,
    *,
    src: int,
    dst: int,
    target: int,
    lladdr: bytes | None,
    solicited: bool,
    override: bool = True,
    router: bool = False,
) -> int:
    """Write an NA for ``target`` with the given flags and Target link-layer address."""
    word = (
        (FLAG_ROUTER if router else 0)
        | (FLAG_SOLICITED if solicited else 0)
        | (FLAG_OVERRIDE if override else 0)
    )
    return _emit(
        buf,
        offset,
        NEIGHBOR_ADVERTISEMENT,
        word,
        src=src,
        dst=dst,
        target=target,
        option=OPT_TARGET_LLADDR,
        lladdr=lladdr,
    )
