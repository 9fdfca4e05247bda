"""IPv6 header and extension headers (RFC 8200), with RFC 5095, RFC 6946 and RFC 2675 receive rules.

Theory of operation: :func:`parse` checks that the buffer holds a version-6 fixed header and that
the Payload Length fits the bytes received; bytes past it (link padding) are trimmed, a buffer
shorter than it is a truncated packet. A Payload Length of 0 with a Hop-by-Hop header carrying a
Jumbo Payload option is a jumbogram (RFC 2675): TUN never delivers one, so it is refused with its
own reason instead of being taken for a truncated packet.

Then the extension-header chain is walked, in the order the Next Header fields give (RFC 8200 4.1
asks a host to accept any order and any number of repeats), until a Next Header value that is not
an extension header this module walks: that value is the upper-layer protocol, and the record
keeps the offset of the field that named it, because a host that does not know that protocol
answers with Parameter Problem code 1 pointing right there (RFC 8200 4, RFC 4443 3.4). AH, ESP,
Mobility, HIP and Shim6 are such "upper layers" here: ustack implements none of them, so they
get the same answer. The walk is bounded: at most :data:`MAX_EXTENSION_HEADERS` headers and
:data:`MAX_CHAIN_LEN` octets of them (RFC 8504 5.3 asks hosts to limit extension-header
processing), and every header's length is checked against the Payload Length before a byte of it
is read.

- Hop-by-Hop Options is accepted only right after the fixed header (RFC 8200 4.1); anywhere else
  it is an unrecognised Next Header (Parameter Problem code 1, as Linux answers too).
- Hop-by-Hop and Destination Options have their options walked (RFC 8200 4.2). Pad1 and PadN are
  padding; more than 7 consecutive octets of it, or a PadN with non-zero data, is dropped
  (RFC 4942 2.1.9.5: padding only ever aligns to 8 octets, and anything else is a covert channel);
  at most :data:`MAX_OPTIONS` other options per header. An unrecognised option is handled by the
  two high-order bits of its type: 00 skip it (counted in ``skipped_options``), 01 discard, 10
  discard and send Parameter Problem code 2 even to a multicast destination, 11 discard and send
  it only if the destination is not multicast.
- Routing: with Segments Left 0 the header is ignored, whatever its type (RFC 8200 4.4). With
  Segments Left > 0 a host that does not implement the routing type sends Parameter Problem code
  0 pointing at the Routing Type; ustack implements none, and RFC 5095 3 makes type 0 one of the
  unrecognised ones, which gets its own reason because it is the deprecated, abusable one.
- Fragment (RFC 8200 4.5): its fields go into the record. An atomic fragment (offset 0, M clear)
  is processed as if it had no Fragment header, independently of any other fragment (RFC 6946 4),
  so the walk goes on behind it. Any other fragment ends the walk: what follows is a piece of
  the fragmentable part, to be reassembled and parsed again; the fragment-length checks of RFC
  8200 4.5 (a non-last fragment a multiple of 8 octets, nothing past octet 65535) are made here
  because they need nothing but this one fragment.
- No Next Header (59) ends the walk; whatever follows is ignored (RFC 8200 4.7).

Malformed input raises :class:`~ustack.wire.errors.ParseError`; where RFC 8200 tells the receiver
to answer with an ICMPv6 Parameter Problem the error is a :class:`ParameterProblem` carrying the
code and pointer the answer needs. The returned :class:`IPv6Packet` holds the upper-layer
``payload`` as a view into the caller's buffer, so nothing is copied. :func:`emit` writes the fixed
40-byte header into a preallocated buffer; :func:`pseudo_header_sum` is the RFC 8200 8.1
pseudo-header as a partial sum for :func:`ustack.wire.checksum.internet_checksum`.

Addresses are 128-bit ``int`` everywhere in the core; :func:`addr_to_int` and :func:`int_to_addr`
convert at the edges.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from ustack.wire import checksum as _cs
from ustack.wire.errors import ParseError

# Field layout (RFC 8200 3): version/traffic class/flow label, payload length, next header, hop
# limit, then source and destination, each read as two 64-bit halves.
_HEADER = struct.Struct("!IHBBQQQQ")
HEADER_LEN = 40
OFF_VERSION_CLASS_FLOW = 0
OFF_PAYLOAD_LENGTH = 4
OFF_NEXT_HEADER = 6
OFF_HOP_LIMIT = 7
OFF_SRC = 8
OFF_DST = 24
MAX_PAYLOAD_LEN = 0xFFFF  # a 16-bit field; larger needs a jumbogram (RFC 2675)
FLOW_LABEL_MASK = 0xFFFFF  # 20 bits (RFC 6437)

MIN_MTU = 1280  # RFC 8200 5: every link carries packets of this size
DEFAULT_HOP_LIMIT = 64  # Linux's net.ipv6.conf.*.hop_limit

# Next Header values (IANA "Assigned Internet Protocol Numbers"; RFC 8200 4).
HOPOPTS = 0
PROTO_TCP = 6
PROTO_UDP = 17
ROUTING = 43
FRAGMENT = 44
ESP = 50
AH = 51
PROTO_ICMPV6 = 58
NO_NEXT_HEADER = 59
DSTOPTS = 60

# The extension headers the walk steps over; any other value ends it as the upper layer.
_WALKED: Final = frozenset({HOPOPTS, ROUTING, FRAGMENT, DSTOPTS})

# Bounds on the walk (RFC 8504 5.3). Eight headers leave room over the five of these that a
# packet in RFC 8200 4.1's recommended order carries (each once, Destination Options twice); a
# chain longer than the minimum MTU leaves after the fixed header could never travel in a first
# fragment, which must hold the whole chain (RFC 8200 4.5, RFC 7112).
MAX_EXTENSION_HEADERS = 8
MAX_CHAIN_LEN = MIN_MTU - HEADER_LEN
MAX_OPTIONS = 8  # non-padding options per Options header (RFC 8504 5.3; Linux's default)
MAX_PADDING = 7  # consecutive padding octets: PadN only aligns to 8 (RFC 4942 2.1.9.5)

_EXT_MIN_LEN = 8  # every walked extension header is a multiple of 8 octets, at least one
_FRAGMENT_LEN = 8

# Options (RFC 8200 4.2, RFC 2675 2).
OPT_PAD1 = 0
OPT_PADN = 1
OPT_JUMBO = 0xC2
# RFC 8200 4.2: the two high-order bits of an option type say what to do if it is unrecognised.
OPT_ACTION_SKIP = 0
OPT_ACTION_DISCARD = 1
OPT_ACTION_DISCARD_ICMP = 2  # send Parameter Problem even to a multicast destination
OPT_ACTION_DISCARD_ICMP_UNICAST = 3  # send it only if the destination is not multicast

ROUTING_TYPE_0 = 0  # deprecated by RFC 5095

# ICMPv6 Parameter Problem codes (RFC 4443 3.4, RFC 7112 3), here because the parse reports them.
PARAM_ERRONEOUS_FIELD = 0
PARAM_UNRECOGNIZED_NEXT_HEADER = 1
PARAM_UNRECOGNIZED_OPTION = 2

# Fragment header (RFC 8200 4.5): next header, reserved, offset/res/M, identification.
_FRAGMENT = struct.Struct("!BBHI")
_FRAG_OFFSET_MASK = 0xFFF8  # 13 bits of 8-octet units, already in bytes when masked in place
_FRAG_M = 0x0001


class ParameterProblem(ParseError):
    """A malformed packet that RFC 8200 answers with an ICMPv6 Parameter Problem (RFC 4443 3.4).

    ``pointer`` is the octet offset of the offending field within the packet, counted from the
    start of the IPv6 header. ``even_if_multicast`` is set only for an unrecognised option whose
    type says so (RFC 8200 4.2, action 10); every other Parameter Problem is not sent to a
    packet whose destination was multicast (RFC 4443 2.4 (e)).
    """

    __slots__ = ("code", "even_if_multicast", "pointer")

    def __init__(
        self, reason: str, *, code: int, pointer: int, even_if_multicast: bool = False
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.pointer = pointer
        self.even_if_multicast = even_if_multicast


@dataclass(frozen=True, slots=True)
class Fragment:
    """The Fragment header's fields (RFC 8200 4.5), and where it sits in the packet."""

    offset: int  # in bytes, not 8-octet units
    more: bool  # the M flag
    ident: int
    next_header: int  # the first header of the fragmentable part
    header_offset: int  # where the Fragment header starts in the packet
    named_at: int  # the offset of the Next Header field that names it (patched on reassembly)

    @property
    def atomic(self) -> bool:
        """Offset 0 and M clear: a whole packet that happens to carry a Fragment header,
        processed on its own (RFC 6946 4)."""
        return self.offset == 0 and not self.more


@dataclass(frozen=True, slots=True)
class IPv6Packet:
    traffic_class: int
    flow_label: int
    payload_length: int  # the fixed header's field: extension headers plus upper layer
    next_header: int  # the fixed header's field
    hop_limit: int
    src: int
    dst: int
    proto: int  # the upper-layer protocol the walk ended at (NO_NEXT_HEADER if none)
    proto_pointer: int  # offset of the Next Header field holding proto (Parameter Problem code 1)
    payload_offset: int  # where the upper-layer payload starts in the packet
    ext_headers: tuple[int, ...]  # the extension headers walked, in order
    fragment: Fragment | None  # the last Fragment header walked, if any
    skipped_options: int  # unrecognised options with action "skip" (RFC 8200 4.2)
    payload: memoryview  # the upper-layer payload: buf[payload_offset : 40 + payload_length]

    @property
    def is_fragment(self) -> bool:
        """True for a piece of a fragmented packet (the host reassembles it); an atomic
        fragment is not one."""
        return self.fragment is not None and not self.fragment.atomic


@dataclass(frozen=True, slots=True)
class HeaderChain:
    """What a walk of the extension headers found (see :class:`IPv6Packet` for the fields)."""

    proto: int
    proto_pointer: int
    payload_offset: int
    ext_headers: tuple[int, ...]
    fragment: Fragment | None
    skipped_options: int


_NO_EXT: tuple[int, ...] = ()


def parse(buf: bytes | bytearray | memoryview) -> IPv6Packet:
    """Parse one IPv6 packet and walk its extension headers; raise :class:`ParseError` (or its
    :class:`ParameterProblem` subclass) for anything malformed."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    n = len(mv)
    if n < HEADER_LEN:
        raise ParseError("ipv6_truncated")
    vcf, plen, nh, hlim, src_hi, src_lo, dst_hi, dst_lo = _HEADER.unpack_from(mv)
    if vcf >> 28 != 6:
        raise ParseError("ipv6_bad_version")
    if plen == 0 and nh == HOPOPTS and _has_jumbo_option(mv):
        raise ParseError("ipv6_jumbogram_unsupported")
    end = HEADER_LEN + plen
    if end > n:
        raise ParseError("ipv6_truncated")
    if nh in _WALKED:
        c = _walk(mv, nh, end, process=True)
        proto, pointer, off, exts = c.proto, c.proto_pointer, c.payload_offset, c.ext_headers
        fragment, skipped = c.fragment, c.skipped_options
    else:
        proto, pointer, off, exts, fragment, skipped = (
            nh,
            OFF_NEXT_HEADER,
            HEADER_LEN,
            _NO_EXT,
            None,
            0,
        )
    return IPv6Packet(
        (vcf >> 20) & 0xFF,
        vcf & FLOW_LABEL_MASK,
        plen,
        nh,
        hlim,
        (src_hi << 64) | src_lo,
        (dst_hi << 64) | dst_lo,
        proto,
        pointer,
        off,
        exts,
        fragment,
        skipped,
        mv[off:end],
    )


def walk_quoted(mv: memoryview) -> HeaderChain:
    """Walk the extension headers of a packet quoted in an ICMPv6 error (RFC 4443 2.4 (c)).

    The quote is usually cut short, so the walk is bounded by the bytes present, not by the
    quoted Payload Length; options and routing types are stepped over without judging them (the
    packet was ours or a peer's, already processed); a Fragment header with offset 0 is stepped
    over too, since the first fragment carries the whole chain (RFC 8200 4.5). A later fragment
    has no upper-layer header to find and raises ``ipv6_fragment_not_first``. The caller has
    checked the fixed header is present and version 6.
    """
    nh = mv[OFF_NEXT_HEADER]
    if nh not in _WALKED:
        return HeaderChain(nh, OFF_NEXT_HEADER, HEADER_LEN, _NO_EXT, None, 0)
    return _walk(mv, nh, len(mv), process=False)


def _walk(mv: memoryview, nh: int, end: int, *, process: bool) -> HeaderChain:
    """Step over the extension headers from the fixed header's Next Header ``nh`` up to the
    upper layer, never reading at or past ``end``. ``process`` applies the receive rules (option
    actions, routing, fragment checks); without it the headers are only stepped over."""
    pos = HEADER_LEN
    pointer = OFF_NEXT_HEADER
    exts: list[int] = []
    fragment: Fragment | None = None
    skipped = 0
    while nh in _WALKED:
        if nh == HOPOPTS and pos != HEADER_LEN:
            raise ParameterProblem(
                "ipv6_hop_by_hop_not_first", code=PARAM_UNRECOGNIZED_NEXT_HEADER, pointer=pointer
            )
        if len(exts) == MAX_EXTENSION_HEADERS:
            raise ParseError("ipv6_too_many_ext_headers")
        if pos + _EXT_MIN_LEN > end:
            raise ParseError("ipv6_ext_header_truncated")
        following = mv[pos]
        hlen = _FRAGMENT_LEN if nh == FRAGMENT else (mv[pos + 1] + 1) << 3
        if pos + hlen > end:
            raise ParseError("ipv6_ext_header_truncated")
        if pos + hlen - HEADER_LEN > MAX_CHAIN_LEN:
            raise ParseError("ipv6_ext_headers_too_long")
        if nh == FRAGMENT:
            _, _, off_m, ident = _FRAGMENT.unpack_from(mv, pos)
            fragment = Fragment(
                off_m & _FRAG_OFFSET_MASK, bool(off_m & _FRAG_M), ident, following, pos, pointer
            )
            if not fragment.atomic:
                if not process:
                    if fragment.offset:
                        raise ParseError("ipv6_fragment_not_first")
                else:
                    _check_fragment(fragment, end)
                    # The rest is a piece of the fragmentable part: reassembly comes first.
                    exts.append(nh)
                    return HeaderChain(following, pos, pos + hlen, tuple(exts), fragment, skipped)
        elif not process:
            pass
        elif nh == ROUTING:
            segments_left = mv[pos + 3]
            if segments_left:
                rtype = mv[pos + 2]
                reason = (
                    "ipv6_routing_type0" if rtype == ROUTING_TYPE_0 else "ipv6_routing_unsupported"
                )
                raise ParameterProblem(reason, code=PARAM_ERRONEOUS_FIELD, pointer=pos + 2)
        else:
            skipped += _walk_options(mv, pos, pos + hlen, hop_by_hop=nh == HOPOPTS)
        exts.append(nh)
        pointer = pos
        pos += hlen
        nh = following
    return HeaderChain(nh, pointer, pos, tuple(exts), fragment, skipped)


def _check_fragment(fragment: Fragment, end: int) -> None:
    """The RFC 8200 4.5 checks that one fragment can fail on its own."""
    data_len = end - (fragment.header_offset + _FRAGMENT_LEN)
    if fragment.more and data_len & 7:
        raise ParameterProblem(
            "ipv6_fragment_bad_length", code=PARAM_ERRONEOUS_FIELD, pointer=OFF_PAYLOAD_LENGTH
        )
    if fragment.offset + data_len > MAX_PAYLOAD_LEN:
        raise ParameterProblem(
            "ipv6_fragment_too_long",
            code=PARAM_ERRONEOUS_FIELD,
            pointer=fragment.header_offset + 2,
        )


def _walk_options(mv: memoryview, start: int, end: int, *, hop_by_hop: bool) -> int:
    """Walk the TLV options of the Options header at ``mv[start:end]`` (RFC 8200 4.2); return
    how many unrecognised options were skipped, raise for the ones that drop the packet."""
    pos = start + 2
    padding = 0
    options = 0
    skipped = 0
    while pos < end:
        otype = mv[pos]
        if otype == OPT_PAD1:
            padding += 1
            if padding > MAX_PADDING:
                raise ParseError("ipv6_option_bad_padding")
            pos += 1
            continue
        if pos + 2 > end:
            raise ParseError("ipv6_option_truncated")
        data_end = pos + 2 + mv[pos + 1]
        if data_end > end:
            raise ParseError("ipv6_option_truncated")
        if otype == OPT_PADN:
            padding += data_end - pos
            if padding > MAX_PADDING or any(mv[pos + 2 : data_end]):
                raise ParseError("ipv6_option_bad_padding")
            pos = data_end
            continue
        padding = 0
        options += 1
        if options > MAX_OPTIONS:
            raise ParseError("ipv6_too_many_options")
        if otype == OPT_JUMBO and hop_by_hop:
            # Only reached with a non-zero Payload Length (a real jumbogram was refused before
            # the walk), which RFC 2675 3 calls an error pointing at the option type.
            raise ParameterProblem("ipv6_jumbo_bad_length", code=PARAM_ERRONEOUS_FIELD, pointer=pos)
        action = otype >> 6
        if action == OPT_ACTION_SKIP:
            skipped += 1
        elif action == OPT_ACTION_DISCARD:
            raise ParseError("ipv6_option_unknown_discard")
        else:
            raise ParameterProblem(
                "ipv6_option_unknown",
                code=PARAM_UNRECOGNIZED_OPTION,
                pointer=pos,
                even_if_multicast=action == OPT_ACTION_DISCARD_ICMP,
            )
        pos = data_end
    return skipped


def _has_jumbo_option(mv: memoryview) -> bool:
    """Whether the Hop-by-Hop header right after the fixed header holds a Jumbo Payload option,
    looked for within the bytes received (its Payload Length of 0 bounds nothing)."""
    n = len(mv)
    if n < HEADER_LEN + _EXT_MIN_LEN:
        return False
    end = min(n, HEADER_LEN + ((mv[HEADER_LEN + 1] + 1) << 3))
    pos = HEADER_LEN + 2
    while pos + 2 <= end:
        otype = mv[pos]
        if otype == OPT_JUMBO:
            return True
        pos += 1 if otype == OPT_PAD1 else 2 + mv[pos + 1]
    return False


def emit(
    buf: bytearray | memoryview,
    offset: int,
    *,
    src: int,
    dst: int,
    next_header: int,
    payload_len: int,
    hop_limit: int = DEFAULT_HOP_LIMIT,
    flow_label: int = 0,
    traffic_class: int = 0,
) -> int:
    """Write the 40-byte fixed header at ``buf[offset:]``; return 40.

    The extension headers and payload (``payload_len`` octets of them together) are the caller's
    to write at ``buf[offset + 40:]``.
    """
    if not 0 <= payload_len <= MAX_PAYLOAD_LEN:
        raise ValueError(f"IPv6 payload length {payload_len} out of range")
    if not 0 <= flow_label <= FLOW_LABEL_MASK:
        raise ValueError(f"IPv6 flow label {flow_label} out of range")
    if not (0 <= traffic_class <= 0xFF and 0 <= hop_limit <= 0xFF and 0 <= next_header <= 0xFF):
        raise ValueError("IPv6 traffic class, hop limit and next header are octets")
    if not (0 <= src < 1 << 128 and 0 <= dst < 1 << 128):
        raise ValueError("IPv6 addresses are 128-bit integers")
    if offset < 0 or offset + HEADER_LEN > len(buf):
        raise ValueError("buffer too small for an IPv6 header")
    _HEADER.pack_into(
        buf,
        offset,
        (6 << 28) | (traffic_class << 20) | flow_label,
        payload_len,
        next_header,
        hop_limit,
        src >> 64,
        src & 0xFFFF_FFFF_FFFF_FFFF,
        dst >> 64,
        dst & 0xFFFF_FFFF_FFFF_FFFF,
    )
    return HEADER_LEN


# The RFC 8200 8.1 pseudo-header (source, destination, 32-bit upper-layer length, next header) as a
# partial sum for ``internet_checksum``'s ``initial``: the checksum module's, C-accelerated.
pseudo_header_sum = _cs.ipv6_pseudo_header_sum


def addr_to_int(addr: str) -> int:
    """``"fd00:7::2"`` -> ``0xFD000007000000000000000000000002``; ``ValueError`` for anything but
    an IPv6 address."""
    return int(ipaddress.IPv6Address(addr))


def int_to_addr(value: int) -> str:
    """``0xFD000007000000000000000000000002`` -> ``"fd00:7::2"`` (RFC 5952 text)."""
    if not 0 <= value < 1 << 128:
        raise ValueError(f"not an IPv6 address: {value!r}")
    return str(ipaddress.IPv6Address(value))


_NEXT_HEADER_NAMES = {
    PROTO_TCP: "TCP",
    PROTO_UDP: "UDP",
    PROTO_ICMPV6: "ICMPv6",
    NO_NEXT_HEADER: "none",
    ESP: "ESP",
    AH: "AH",
}
# tcpdump's names for the extension headers
_EXT_NAMES = {HOPOPTS: "HBH", ROUTING: "srcrt", FRAGMENT: "frag", DSTOPTS: "DSTOPT"}


def format(pkt: IPv6Packet) -> str:
    """The IPv6 header in tcpdump's ``-v`` style, e.g. ``(hlim 64, next-header TCP (6),
    payload length 20)``, with the extension headers walked after it."""
    parts = []
    if pkt.traffic_class:
        parts.append(f"class {pkt.traffic_class:#x}")
    if pkt.flow_label:
        parts.append(f"flowlabel {pkt.flow_label:#x}")
    name = _NEXT_HEADER_NAMES.get(pkt.proto, "unknown")
    parts += [
        f"hlim {pkt.hop_limit}",
        f"next-header {name} ({pkt.proto})",
        f"payload length {pkt.payload_length}",
    ]
    text = f"({', '.join(parts)})"
    for ext in pkt.ext_headers:
        frag = pkt.fragment
        if ext == FRAGMENT and frag is not None:
            more = "+" if frag.more else ""
            text += f" frag (id {frag.ident:#x}, offset {frag.offset}{more})"
        else:
            text += f" {_EXT_NAMES[ext]}"
    return text


def fragment(packet: bytes | bytearray | memoryview, mtu: int, ident: int) -> list[bytearray]:
    """Cut a packet without extension headers (as :func:`emit` writes them) into fragments of
    at most ``mtu`` octets (RFC 8200 4.5): each is the fixed header (its Next Header now
    Fragment, its Payload Length its own) and a Fragment header (the original Next Header, the
    offset in 8-octet units, M on all but the last, identification ``ident``) before its part
    of the payload, a multiple of 8 octets long but for the last. Only a source fragments in
    IPv6; the one packet ustack may need to is an echo reply to a request that came in
    fragments. Returns ``[packet]`` (a copy) when it fits already."""
    mv = memoryview(packet)
    if len(mv) < HEADER_LEN or mv[0] >> 4 != 6:
        raise ValueError("fragment takes an IPv6 packet")
    if len(mv) <= mtu:
        return [bytearray(mv)]
    if not 0 <= ident <= 0xFFFFFFFF:
        raise ValueError("a fragment identification is 32 bits")
    next_header = mv[OFF_NEXT_HEADER]
    if next_header in _WALKED:
        raise ValueError("fragment takes a packet without extension headers")
    step = (mtu - HEADER_LEN - _FRAGMENT_LEN) // 8 * 8
    if step < 8:
        raise ValueError(f"MTU {mtu} leaves no room for fragment data")
    head = bytes(mv[:HEADER_LEN])
    data = mv[HEADER_LEN:]
    out = []
    for at in range(0, len(data), step):
        piece = data[at : at + step]
        more = at + step < len(data)
        buf = bytearray(head)
        buf[OFF_NEXT_HEADER] = FRAGMENT
        buf[OFF_PAYLOAD_LENGTH : OFF_PAYLOAD_LENGTH + 2] = (_FRAGMENT_LEN + len(piece)).to_bytes(
            2, "big"
        )
        buf += _FRAGMENT.pack(next_header, 0, at | (_FRAG_M if more else 0), ident)
        buf += piece
        out.append(buf)
    return out
