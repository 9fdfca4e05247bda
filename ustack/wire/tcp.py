"""TCP header and options (RFC 9293 section 3.1, RFC 7323, RFC 2018).

Theory of operation: :func:`parse` checks lengths once, verifies the checksum over the
pseudo-header, classifies the SYN/FIN/RST bits into a single :class:`Control` value (rejecting
impossible combinations) and returns a :class:`TcpSegment` whose ``payload`` is a view into the
caller's buffer -- nothing is copied. :func:`emit` writes a header (with options) and payload into
a preallocated buffer and fills in the checksum. The state machine never looks at flag bits; it
matches on ``control`` and ``has_ack``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from ustack.wire import checksum as _cs
from ustack.wire.errors import ParseError

# Field layout (RFC 9293 3.1): ports, seq, ack, data offset/reserved, flags, window, checksum,
# urgent pointer.
_HEADER = struct.Struct("!HHIIBBHHH")
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


def parse(
    buf: bytes | bytearray | memoryview, src: int, dst: int, *, verify_checksum: bool = True
) -> TcpSegment:
    """Parse a TCP segment (header + payload) carried from ``src`` to ``dst``.

    ``buf`` must be exactly the IP payload; the pseudo-header length is ``len(buf)``.
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
    if verify_checksum and _cs.internet_checksum(
        mv, _cs.ipv4_pseudo_header_sum(src, dst, PROTO, n)
    ):
        raise ParseError("tcp_bad_checksum", integrity=True)
    control = _CONTROL_BY_BITS[flags & 0x07]
    if control is None:
        raise ParseError("tcp_bad_flags")
    if hlen == HEADER_LEN:
        options = NO_OPTIONS
    elif hlen == _TS_ONLY_HLEN and mv[HEADER_LEN : HEADER_LEN + 4] == _TS_PREFIX_BYTES:
        # the options of nearly every segment once timestamps are on: NOP, NOP, TS (RFC 7323
        # appendix A's layout), read without the general option walk
        options = TcpOptions(timestamps=_TS_PAIR.unpack_from(mv, HEADER_LEN + 4))
    else:
        options = parse_options(mv[HEADER_LEN:hlen])
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
    )


def emit(
    buf: bytearray | memoryview,
    offset: int,
    src: int,
    dst: int,
    *,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: TcpOptions | bytes = NO_OPTIONS,
    payload: bytes | bytearray | memoryview = b"",
    urgent: int = 0,
) -> int:
    """Write a TCP segment at ``buf[offset:]`` with its checksum; return its length.

    ``options`` is a :class:`TcpOptions` (encoded here, the one place options become bytes) or,
    for hand-made test packets, raw option bytes that are a multiple of 4 long.
    """
    raw = encode_options(options) if isinstance(options, TcpOptions) else options
    olen = len(raw)
    if olen & 3 or olen > MAX_HEADER_LEN - HEADER_LEN:
        raise ValueError("encoded TCP options must be a multiple of 4 and at most 40 bytes")
    hlen = HEADER_LEN + olen
    total = hlen + len(payload)
    # A bytearray would silently grow under the slice assignments below; a short buffer is a
    # caller bug, so say so before writing anything.
    if offset < 0 or offset + total > len(buf):
        raise ValueError("buffer too small for the TCP segment")
    _HEADER.pack_into(
        buf, offset, src_port, dst_port, seq, ack, (hlen >> 2) << 4, flags, window, 0, urgent
    )
    if olen:
        buf[offset + HEADER_LEN : offset + hlen] = raw
    if payload:
        buf[offset + hlen : offset + total] = payload
    view = memoryview(buf)[offset : offset + total]
    csum = _cs.internet_checksum(view, _cs.ipv4_pseudo_header_sum(src, dst, PROTO, total))
    struct.pack_into("!H", buf, offset + OFF_CHECKSUM, csum)
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
