"""TCP header and options (RFC 9293 section 3.1, RFC 7323, RFC 2018).

Theory of operation: :func:`parse` checks lengths once, verifies the checksum over the
pseudo-header, classifies the SYN/FIN/RST bits into a single :class:`Control` value (rejecting
impossible combinations) and returns a :class:`TcpSegment` whose ``payload`` is a view into the
caller's buffer -- nothing is copied. :func:`emit` writes a header (with options) and payload into
a preallocated buffer and fills in the checksum. The state machine never looks at flag bits; it
matches on ``control`` and ``has_ack``.

:func:`parse` and :func:`emit` know nothing of IP versions: the network layer that carries the
segment hands them ``pseudo``, the partial sum of its pseudo-header (RFC 9293 3.1 for IPv4,
RFC 8200 8.1 for IPv6; see :mod:`ustack.wire.checksum`) computed with the length field 0, and
they add the segment's length, which only they know when emitting. The length is one 16-bit word
of the IPv4 pseudo-header and a 32-bit field of the IPv6 one, and either way it adds the integer
itself to a one's-complement sum (2**16 is 1 modulo 0xFFFF), so one rule serves both families;
and a connection's length-less sum never changes, so its owner may compute it once. The segment
record keeps the addresses as plain ints for demultiplexing only. :func:`emit_ipv4`,
:func:`parse_ipv4` and :func:`cut_ipv4` are the IPv4 fast paths (both headers in one pack or
unpack) and compute the IPv4 sum themselves; :func:`emit_ipv6`, :func:`parse_ipv6` and
:func:`cut_ipv6` are their IPv6 twins for packets without extension headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from ustack.wire import checksum as _cs
from ustack.wire import ipv4 as _ip
from ustack.wire import ipv6 as _ip6
from ustack.wire.addr import V6 as _V6
from ustack.wire.errors import ParseError

# Field layout (RFC 9293 3.1): ports, seq, ack, data offset/reserved, flags, window, checksum,
# urgent pointer.
_HEADER = struct.Struct("!HHIIBBHHH")
_CSUM = struct.Struct("!H")
# An option-less IPv4 header and a TCP header, packed together by emit_ipv4 (RFC 791 3.1).
_IPV4_TCP = struct.Struct("!BBHHHBBHII" + "HHIIBBHHH")
_IPV4_VERSION_IHL = 0x45
_IP_TCP_MIN = 40
_U16 = 0xFFFF
HEADER_LEN = 20
MAX_HEADER_LEN = 60
OFF_CHECKSUM = 16
PROTO = 6

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8

MAX_WSCALE = 14  # RFC 7323 2.3: larger shift counts are treated as 14


class Control(IntEnum):
    """The one control function a segment carries (flag bits classified once)."""

    NONE = 0
    SYN = 1
    FIN = 2
    RST = 3


# Index: (flags & (SYN|FIN|RST)). Impossible combinations map to None.
_CONTROL_BY_BITS: tuple[Control | None, ...] = (
    Control.NONE,  # -
    Control.FIN,  # F
    Control.SYN,  # S
    None,  # SF
    Control.RST,  # R
    None,  # RF
    None,  # RS
    None,  # RSF
)


class TcpOptions(NamedTuple):
    """The options of one segment, typed. A NamedTuple, not a frozen dataclass: one is built
    for nearly every segment sent (timestamps), and a tuple costs a fifth as much to make."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None  # (TSval, TSecr)

    def encoded_length(self) -> int:
        """Bytes :meth:`encode` produces, without building them; mirrors its layout."""
        n = 4 if self.mss is not None else 0
        if self.sack_permitted and self.timestamps is not None:
            n += 12
        else:
            if self.timestamps is not None:
                n += 12
            if self.sack_permitted:
                n += 4
        if self.wscale is not None:
            n += 4
        if self.sack_blocks:
            n += 4 + 8 * len(self.sack_blocks)
        return n

    def encode(self) -> bytes:
        """The option bytes, NOP-aligned the way Linux lays them out, padded with EOL."""
        out = bytearray()
        if self.mss is not None:
            out += struct.pack("!BBH", OPT_MSS, 4, self.mss)
        if self.sack_permitted and self.timestamps is not None:
            out += struct.pack("!BB", OPT_SACK_PERMITTED, 2)
            out += struct.pack("!BBII", OPT_TIMESTAMPS, 10, *self.timestamps)
        else:
            if self.timestamps is not None:
                out += struct.pack(
                    "!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *self.timestamps
                )
            if self.sack_permitted:
                out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2)
        if self.wscale is not None:
            out += struct.pack("!BBBB", OPT_NOP, OPT_WSCALE, 3, self.wscale)
        if self.sack_blocks:
            out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(self.sack_blocks))
            for left, right in self.sack_blocks:
                out += struct.pack("!II", left, right)
        if len(out) & 3:
            out += bytes(4 - (len(out) & 3))
        if len(out) > MAX_HEADER_LEN - HEADER_LEN:
            raise ValueError("TCP options exceed 40 bytes")
        return bytes(out)


NO_OPTIONS = TcpOptions()


# Not frozen: one of these is built per packet, and a frozen dataclass's __init__ goes through
# object.__setattr__ for every field (about 1.8 us against 0.3 us here). Treat it as read-only.
@dataclass(slots=True)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int  # the raw flag byte, kept for formatting and for ECE/CWR
    control: Control
    has_ack: bool
    window: int  # as on the wire; the receiver applies the negotiated shift
    urgent: int
    options: TcpOptions
    payload: memoryview
    header_length: int
    # the network addresses it was carried between, as the network layer gave them; TCP only
    # demultiplexes on them (0 for a segment made by hand)
    src: int = 0
    dst: int = 0

    @property
    def psh(self) -> bool:
        return bool(self.flags & PSH)

    @property
    def urg(self) -> bool:
        return bool(self.flags & URG)

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload octets plus one each for SYN and FIN (RFC 9293 3.4)."""
        return len(self.payload) + (
            1 if self.control is Control.SYN or self.control is Control.FIN else 0
        )


_TS_ONLY = struct.Struct("!BBBBII")
_TS_PREFIX = (OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10)
_TS_PREFIX_BYTES = bytes(_TS_PREFIX)
_TS_PAIR = struct.Struct("!II")
_TS_ONLY_HLEN = HEADER_LEN + 12


def encode_options(o: TcpOptions) -> bytes:
    """Encode ``o`` (the one place options become bytes); the options of a plain data segment
    or ACK -- timestamps only, the hot path -- skip the general layout code."""
    if o is NO_OPTIONS:
        return b""
    ts = o.timestamps
    if (
        ts is not None
        and o.mss is None
        and o.wscale is None
        and not o.sack_permitted
        and not o.sack_blocks
    ):
        return _TS_ONLY.pack(*_TS_PREFIX, ts[0], ts[1])
    return o.encode()


def parse_options(data: memoryview) -> TcpOptions:
    """Parse the option bytes between the fixed header and the data offset."""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None
    i = 0
    n = len(data)
    while i < n:
        kind = data[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise ParseError("tcp_option_truncated")
        length = data[i + 1]
        if length < 2:
            raise ParseError("tcp_option_bad_length")
        if i + length > n:
            raise ParseError("tcp_option_overrun")
        if kind == OPT_MSS:
            if length != 4:
                raise ParseError("tcp_option_bad_length")
            mss = (data[i + 2] << 8) | data[i + 3]
        elif kind == OPT_WSCALE:
            if length != 3:
                raise ParseError("tcp_option_bad_length")
            wscale = min(data[i + 2], MAX_WSCALE)
        elif kind == OPT_SACK_PERMITTED:
            if length != 2:
                raise ParseError("tcp_option_bad_length")
            sack_permitted = True
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length < 10:
                raise ParseError("tcp_option_bad_length")
            words = struct.unpack_from(f"!{(length - 2) // 4}I", data, i + 2)
            sack_blocks = tuple(zip(words[0::2], words[1::2], strict=True))
        elif kind == OPT_TIMESTAMPS:
            if length != 10:
                raise ParseError("tcp_option_bad_length")
            tsval, tsecr = struct.unpack_from("!II", data, i + 2)
            timestamps = (tsval, tsecr)
        # unknown options are skipped by their length (RFC 9293 3.2)
        i += length
    if (
        mss is None
        and wscale is None
        and not sack_permitted
        and not sack_blocks
        and timestamps is None
    ):
        return NO_OPTIONS
    return TcpOptions(mss, wscale, sack_permitted, sack_blocks, timestamps)


def _read_options(mv: memoryview, hlen: int) -> TcpOptions:
    """The options of a segment whose header is ``hlen`` (> 20) bytes long."""
    if hlen == _TS_ONLY_HLEN and mv[HEADER_LEN : HEADER_LEN + 4] == _TS_PREFIX_BYTES:
        # the options of nearly every segment once timestamps are on: NOP, NOP, TS (RFC 7323
        # appendix A's layout), read without the general option walk
        return TcpOptions(timestamps=_TS_PAIR.unpack_from(mv, HEADER_LEN + 4))
    return parse_options(mv[HEADER_LEN:hlen])


def parse(
    buf: bytes | bytearray | memoryview,
    src: int,
    dst: int,
    *,
    pseudo: int,
    verify_checksum: bool = True,
) -> TcpSegment:
    """Parse a TCP segment (header + payload) carried from ``src`` to ``dst``.

    ``buf`` must be exactly the IP payload; ``pseudo`` is the partial sum of the pseudo-header
    with its length field 0, and ``len(buf)`` is added to it here (see the module docstring).
    ``pseudo`` is not read when ``verify_checksum`` is false.
    """
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    n = len(mv)
    if n < HEADER_LEN:
        raise ParseError("tcp_truncated")
    sport, dport, seq, ack, off, flags, window, _csum, urgent = _HEADER.unpack_from(mv)
    hlen = (off >> 4) * 4
    if hlen < HEADER_LEN:
        raise ParseError("tcp_bad_data_offset")
    if hlen > n:
        raise ParseError("tcp_truncated")
    if verify_checksum and _cs.internet_checksum(mv, pseudo + n):
        raise ParseError("tcp_bad_checksum", integrity=True)
    control = _CONTROL_BY_BITS[flags & 0x07]
    if control is None:
        raise ParseError("tcp_bad_flags")
    options = NO_OPTIONS if hlen == HEADER_LEN else _read_options(mv, hlen)
    return TcpSegment(
        sport,
        dport,
        seq,
        ack,
        flags,
        control,
        bool(flags & ACK),
        window,
        urgent,
        options,
        mv[hlen:],
        hlen,
        src,
        dst,
    )


def emit(
    buf: bytearray | memoryview,
    offset: int,
    *,
    pseudo: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: TcpOptions | bytes = NO_OPTIONS,
    payload: bytes | bytearray | memoryview = b"",
    urgent: int = 0,
    partial_checksum: bool = False,
    headers_only: bool = False,
) -> int:
    """Write a TCP segment at ``buf[offset:]`` with its checksum; return its length.

    ``pseudo`` is the partial sum of the carrying network layer's pseudo-header with its length
    field 0; the segment's length is added here (see the module docstring). ``options`` is a
    :class:`TcpOptions` (encoded here, the one place options become bytes) or, for hand-made
    test packets, raw option bytes that are a multiple of 4 long.
    ``partial_checksum`` leaves the sum over the segment to the device (checksum offload,
    ``virtio.F_NEEDS_CSUM``): the field then holds only the pseudo-header sum, not inverted.
    ``headers_only`` (which needs ``partial_checksum``) writes the header for that payload but
    not the payload, which is then sent from where it is (a gathered write).
    """
    if headers_only and not partial_checksum:
        raise ValueError("headers_only needs partial_checksum: the device sums the payload")
    raw = encode_options(options) if isinstance(options, TcpOptions) else options
    olen = len(raw)
    if olen & 3 or olen > MAX_HEADER_LEN - HEADER_LEN:
        raise ValueError("encoded TCP options must be a multiple of 4 and at most 40 bytes")
    if pseudo < 0 or pseudo > _U16:
        raise ValueError("pseudo must be a 16-bit partial sum (see ustack.wire.checksum)")
    hlen = HEADER_LEN + olen
    total = hlen + len(payload)
    # A bytearray would silently grow under the slice assignments below; a short buffer is a
    # caller bug, so say so before writing anything.
    if offset < 0 or offset + (hlen if headers_only else total) > len(buf):
        raise ValueError("buffer too small for the TCP segment")
    _HEADER.pack_into(
        buf, offset, src_port, dst_port, seq, ack, (hlen >> 2) << 4, flags, window, 0, urgent
    )
    if olen:
        buf[offset + HEADER_LEN : offset + hlen] = raw
    if payload and not headers_only:
        buf[offset + hlen : offset + total] = payload
    if partial_checksum:
        # The pseudo-header sum with the length, in the canonical form the checksum module
        # gives (1..0xFFFF: the sum is never zero, as it includes the length).
        csum = (pseudo + total) % _U16 or _U16
    else:
        csum = _cs.internet_checksum(memoryview(buf)[offset : offset + total], pseudo + total)
    _CSUM.pack_into(buf, offset + OFF_CHECKSUM, csum)
    return total


# tcpdump's order (print-tcp.c), so ECN segments read the same: ``S.E``, ``SEW``, ``FP.``.
_FLAG_LETTERS = (
    (FIN, "F"),
    (SYN, "S"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "."),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "W"),
)


def flag_string(flags: int) -> str:
    """tcpdump's flag notation: ``S``, ``S.``, ``P.``, ``F.``, ``R``; ``.`` is ACK."""
    return "".join(ch for bit, ch in _FLAG_LETTERS if flags & bit) or "none"


def format_options(o: TcpOptions) -> str:
    parts: list[str] = []
    if o.mss is not None:
        parts.append(f"mss {o.mss}")
    if o.sack_permitted:
        parts.append("sackOK")
    if o.timestamps is not None:
        parts.append(f"TS val {o.timestamps[0]} ecr {o.timestamps[1]}")
    if o.wscale is not None:
        parts.append(f"wscale {o.wscale}")
    if o.sack_blocks:
        parts.append("sack " + " ".join(f"{a}:{b}" for a, b in o.sack_blocks))
    return ",".join(parts)


def format(seg: TcpSegment) -> str:
    """One line in tcpdump's style, without addresses (see :mod:`ustack.wire.fmt`)."""
    s = f"Flags [{flag_string(seg.flags)}], seq {seg.seq}"
    if len(seg.payload):
        s += f":{(seg.seq + len(seg.payload)) & 0xFFFFFFFF}"
    if seg.has_ack:
        s += f", ack {seg.ack}"
    s += f", win {seg.window}"
    if seg.urg:
        s += f", urg {seg.urgent}"
    if seg.options is not NO_OPTIONS:
        s += f", options [{format_options(seg.options)}]"
    return s + f", length {len(seg.payload)}"


def emit_ipv4(
    buf: bytearray,
    offset: int,
    src: int,
    dst: int,
    *,
    ident: int,
    ttl: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes,
    payload: bytes | bytearray | memoryview,
    partial_checksum: bool = False,
    headers_only: bool = False,
) -> int:
    """Write a whole IPv4 datagram (DF set, no IP options) carrying one TCP segment at
    ``buf[offset:]``; return its length. ``headers_only`` (which needs ``partial_checksum``)
    writes the headers for that payload but not the payload, which is then sent from where it
    is (a gathered write), and returns the headers' length. The transmit path's one call per segment: both headers
    in one pack, the IP header checksum from the field values, the TCP checksum in one C call
    (or only the pseudo-header sum with ``partial_checksum``, see :func:`emit`). ``options``
    are encoded already (:func:`encode_options`)."""
    olen = len(options)
    hlen = HEADER_LEN + olen
    tcp_len = hlen + len(payload)
    total = _ip.HEADER_LEN + tcp_len
    end = offset + (_ip.HEADER_LEN + hlen if headers_only else total)
    if offset < 0 or end > len(buf) or olen & 3 or olen > MAX_HEADER_LEN - HEADER_LEN:
        raise ValueError("buffer too small or bad options for the TCP/IPv4 datagram")
    if headers_only and not partial_checksum:
        raise ValueError("a gathered write leaves the checksum to the device")
    ip_sum = _ip.header_checksum(total, ident, _ip.FLAG_DF, ttl, PROTO, src, dst)
    _IPV4_TCP.pack_into(
        buf,
        offset,
        _IPV4_VERSION_IHL,
        0,
        total,
        ident,
        _ip.FLAG_DF,
        ttl,
        PROTO,
        ip_sum,
        src,
        dst,
        src_port,
        dst_port,
        seq,
        ack,
        (hlen >> 2) << 4,
        flags,
        window,
        0,
        0,
    )
    at = offset + _ip.HEADER_LEN
    if olen:
        buf[at + HEADER_LEN : at + hlen] = options
    if payload and not headers_only:
        buf[at + hlen : at + tcp_len] = payload
    if partial_checksum:
        csum = _cs.ipv4_pseudo_header_sum(src, dst, PROTO, tcp_len)
    else:
        csum = _cs.tcp_checksum(src, dst, memoryview(buf)[at : at + tcp_len])
    _CSUM.pack_into(buf, at + OFF_CHECKSUM, csum)
    return _ip.HEADER_LEN + hlen if headers_only else total


_IP_FRAGMENT_BITS = 0x3FFF  # MF and the fragment offset


def parse_ipv4(
    buf: bytes | bytearray | memoryview, verify_checksum: bool = True
) -> TcpSegment | None:
    """The receive path's one call per packet: a plain IPv4 datagram (no IP options, not a
    fragment) carrying a well-formed TCP segment, parsed with one unpack of both fixed headers
    into one record whose ``src``/``dst`` are set. Anything else -- another protocol, IP
    options, a fragment, *any* malformation or bad checksum -- returns ``None``, and the caller
    takes the general path (``ipv4.parse`` then :func:`parse`), which raises the precise
    :class:`ParseError`; so both paths count every packet the same way."""
    n = len(buf)
    if n < _IP_TCP_MIN:
        return None
    (
        vihl,
        tos,
        total,
        ident,
        flags_frag,
        ttl,
        proto,
        ip_csum,
        src,
        dst,
        sport,
        dport,
        seq,
        ack,
        off,
        flags,
        window,
        _csum,
        urgent,
    ) = _IPV4_TCP.unpack_from(buf)
    if (
        vihl != _IPV4_VERSION_IHL
        or proto != PROTO
        or flags_frag & _IP_FRAGMENT_BITS
        or not _IP_TCP_MIN <= total <= n
    ):
        return None
    if verify_checksum and not _ip.fields_sum_ok(
        vihl, tos, total, ident, flags_frag, ttl, proto, ip_csum, src, dst
    ):
        return None
    hlen = (off >> 4) * 4
    tcp_len = total - _ip.HEADER_LEN
    control = _CONTROL_BY_BITS[flags & 0x07]
    if hlen < HEADER_LEN or hlen > tcp_len or control is None:
        return None
    mv = (
        buf[_ip.HEADER_LEN : total]
        if isinstance(buf, memoryview)
        else memoryview(buf)[_ip.HEADER_LEN : total]
    )
    if verify_checksum and _cs.internet_checksum(
        mv, _cs.ipv4_pseudo_header_sum(src, dst, PROTO, tcp_len)
    ):
        return None
    if hlen == HEADER_LEN:
        options = NO_OPTIONS
    else:
        try:
            options = _read_options(mv, hlen)
        except ParseError:
            return None
    return TcpSegment(
        sport,
        dport,
        seq,
        ack,
        flags,
        control,
        bool(flags & ACK),
        window,
        urgent,
        options,
        mv[hlen:],
        hlen,
        src,
        dst,
    )


_IP_TOTAL_IDENT = struct.Struct("!HH")  # IPv4 total length and identification, at offset 2
_IP_ADDRS = struct.Struct("!II")  # IPv4 source and destination, at offset 12
_SEQ = struct.Struct("!I")
_IP_CSUM_AT = 10
_TCP_AT = 20  # cut_ipv4 works on datagrams without IP options (as emit_ipv4 writes them)


def cut_ipv4(
    first: bytearray, payload: memoryview, mss: int, last_flags: int, out: list[bytearray]
) -> int:
    """Software GSO: cut a TCP super-segment into wire segments the way the kernel's TSO does.
    ``first`` is the first segment, complete (from :func:`emit_ipv4`, with ``payload[:mss]``
    and the flags of a middle piece); it and the pieces after it are appended to ``out``, and
    their number returned. Each later piece is the first's headers with the fields that change
    patched: the sequence number advanced, the IP identification counted up, PSH/FIN
    (``last_flags``) on the last piece only, its lengths; the IP header checksum follows by
    RFC 1624 incremental updates, and the TCP checksum is computed over the piece."""
    hdr = len(first) - mss
    head = bytes(first[:hdr])
    total0, ident0 = _IP_TOTAL_IDENT.unpack_from(head, 2)
    (ip_csum0,) = _CSUM.unpack_from(head, _IP_CSUM_AT)
    src, dst = _IP_ADDRS.unpack_from(head, 12)
    (seq0,) = _SEQ.unpack_from(head, _TCP_AT + 4)
    update16 = _cs.update16
    tcp_checksum = _cs.tcp_checksum
    out.append(first)
    n = len(payload)
    count = 1
    off = mss
    while off < n:
        piece = payload[off : off + mss]
        buf = bytearray(head)
        buf += piece
        ident = (ident0 + count) & 0xFFFF
        total = hdr + len(piece)
        csum = update16(ip_csum0, ident0, ident)
        if total != total0:
            csum = update16(csum, total0, total)
        _IP_TOTAL_IDENT.pack_into(buf, 2, total, ident)
        _CSUM.pack_into(buf, _IP_CSUM_AT, csum)
        _SEQ.pack_into(buf, _TCP_AT + 4, (seq0 + off) & 0xFFFFFFFF)
        if off + mss >= n:
            buf[_TCP_AT + 13] = last_flags
        _CSUM.pack_into(buf, _TCP_AT + OFF_CHECKSUM, 0)
        _CSUM.pack_into(
            buf, _TCP_AT + OFF_CHECKSUM, tcp_checksum(src, dst, memoryview(buf)[_TCP_AT:])
        )
        out.append(buf)
        count += 1
        off += mss
    return count


# -- IPv6 fast paths ---------------------------------------------------------------------------
#
# The IPv6 pseudo-header (RFC 8200 8.1) is the source and destination addresses, the
# upper-layer length and the next header. In a packet without extension headers the two
# addresses (octets 8 to 40) lie right before the TCP header, so one checksum call over
# ``packet[8:]`` with the length and next header as its initial value covers pseudo-header and
# segment together: no address is turned into an integer to check or to write a checksum.

_IPV6_TCP = struct.Struct("!IHBBQQQQ" + "HHIIBBHHH")
_IP6_LEN = _ip6.HEADER_LEN
_IP6_ADDRS_AT = _ip6.OFF_SRC  # the pseudo-header's addresses, then (at 40) the segment
_IP6_TCP_MIN = _IP6_LEN + HEADER_LEN
_IP6_PLEN_AT = 4
_U16_STRUCT = _CSUM  # the payload length is one more 16-bit field


def parse_ipv6(
    buf: bytes | bytearray | memoryview, verify_checksum: bool = True
) -> TcpSegment | None:
    """:func:`parse_ipv4`'s IPv6 twin: a packet with no extension headers (Next Header TCP)
    carrying a well-formed TCP segment, both fixed headers in one unpack, into one record whose
    ``src``/``dst`` are the *tagged* addresses (:mod:`ustack.wire.addr`). Anything else --
    extension headers, another protocol, any malformation or bad checksum -- returns ``None``
    for the general path (``ipv6.parse`` then :func:`parse`) to handle and count. Octets past
    the Payload Length are ignored, as the general path ignores them."""
    n = len(buf)
    if n < _IP6_TCP_MIN:
        return None
    (
        vcf,
        plen,
        nh,
        _hlim,
        src_hi,
        src_lo,
        dst_hi,
        dst_lo,
        sport,
        dport,
        seq,
        ack,
        off,
        flags,
        window,
        _csum,
        urgent,
    ) = _IPV6_TCP.unpack_from(buf)
    end = _IP6_LEN + plen
    if vcf >> 28 != 6 or nh != PROTO or plen < HEADER_LEN or end > n:
        return None
    hlen = (off >> 4) * 4
    control = _CONTROL_BY_BITS[flags & 0x07]
    if hlen < HEADER_LEN or hlen > plen or control is None:
        return None
    whole = buf if isinstance(buf, memoryview) else memoryview(buf)
    if verify_checksum and _cs.internet_checksum(whole[_IP6_ADDRS_AT:end], PROTO + plen):
        return None
    mv = whole[_IP6_LEN:end]
    if hlen == HEADER_LEN:
        options = NO_OPTIONS
    else:
        try:
            options = _read_options(mv, hlen)
        except ParseError:
            return None
    return TcpSegment(
        sport,
        dport,
        seq,
        ack,
        flags,
        control,
        bool(flags & ACK),
        window,
        urgent,
        options,
        mv[hlen:],
        hlen,
        (src_hi << 64) | src_lo | _V6,
        (dst_hi << 64) | dst_lo | _V6,
    )


def emit_ipv6(
    buf: bytearray,
    offset: int,
    head: bytes,
    *,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes,
    payload: bytes | bytearray | memoryview,
    partial_checksum: bool = False,
    headers_only: bool = False,
) -> int:
    """:func:`emit_ipv4`'s IPv6 twin: a whole packet carrying one TCP segment at
    ``buf[offset:]``, its fixed header copied from ``head`` -- the connection's 40 octets
    (version, flow label, Next Header TCP, hop limit, addresses; any Payload Length, which is
    written here), made once with ``ipv6.emit`` -- and the checksum from one call over the
    addresses and the segment. Returns the packet's length, or with ``headers_only`` (which
    needs ``partial_checksum``: a gathered write) the headers' length."""
    olen = len(options)
    hlen = HEADER_LEN + olen
    tcp_len = hlen + len(payload)
    total = _IP6_LEN + tcp_len
    end = offset + (_IP6_LEN + hlen if headers_only else total)
    if offset < 0 or end > len(buf) or olen & 3 or olen > MAX_HEADER_LEN - HEADER_LEN:
        raise ValueError("buffer too small or bad options for the TCP/IPv6 packet")
    if headers_only and not partial_checksum:
        raise ValueError("a gathered write leaves the checksum to the device")
    if len(head) != _IP6_LEN or tcp_len > _ip6.MAX_PAYLOAD_LEN:
        raise ValueError("an IPv6 header is 40 octets and its payload at most 65535")
    at = offset + _IP6_LEN
    buf[offset:at] = head
    _U16_STRUCT.pack_into(buf, offset + _IP6_PLEN_AT, tcp_len)
    _HEADER.pack_into(buf, at, src_port, dst_port, seq, ack, (hlen >> 2) << 4, flags, window, 0, 0)
    if olen:
        buf[at + HEADER_LEN : at + hlen] = options
    if payload and not headers_only:
        buf[at + hlen : at + tcp_len] = payload
    mv = memoryview(buf)
    if partial_checksum:
        # the pseudo-header sum with the length, as tcp.emit writes it for the device
        csum = _cs.partial_sum(mv[offset + _IP6_ADDRS_AT : at], PROTO + tcp_len)
    else:
        csum = _cs.internet_checksum(mv[offset + _IP6_ADDRS_AT : at + tcp_len], PROTO + tcp_len)
    _CSUM.pack_into(buf, at + OFF_CHECKSUM, csum)
    return _IP6_LEN + hlen if headers_only else total


def cut_ipv6(
    first: bytearray, payload: memoryview, mss: int, last_flags: int, out: list[bytearray]
) -> int:
    """:func:`cut_ipv4`'s IPv6 twin (software GSO): ``first`` is the first piece, complete
    (from :func:`emit_ipv6`, with ``payload[:mss]`` and a middle piece's flags); it and the
    pieces after it go to ``out`` and their number is returned. A later piece is the first's
    headers with its Payload Length, sequence number and, on the last, PSH/FIN (``last_flags``)
    patched, and its checksum summed over addresses and segment in one call. IPv6 has no
    header checksum and no identification to count."""
    hdr = len(first) - mss
    head = bytes(first[:hdr])
    (seq0,) = _SEQ.unpack_from(head, _IP6_LEN + 4)
    internet_checksum = _cs.internet_checksum
    csum_at = _IP6_LEN + OFF_CHECKSUM
    tcp_hlen = hdr - _IP6_LEN
    out.append(first)
    n = len(payload)
    count = 1
    off = mss
    while off < n:
        piece = payload[off : off + mss]
        buf = bytearray(head)
        buf += piece
        tcp_len = tcp_hlen + len(piece)
        if off + mss >= n:
            _U16_STRUCT.pack_into(buf, _IP6_PLEN_AT, tcp_len)
            buf[_IP6_LEN + 13] = last_flags
        _SEQ.pack_into(buf, _IP6_LEN + 4, (seq0 + off) & 0xFFFFFFFF)
        _CSUM.pack_into(buf, csum_at, 0)
        _CSUM.pack_into(
            buf, csum_at, internet_checksum(memoryview(buf)[_IP6_ADDRS_AT:], PROTO + tcp_len)
        )
        out.append(buf)
        count += 1
        off += mss
    return count
