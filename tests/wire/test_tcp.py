"""TCP header and options: control classification, every option, malformed input, round trips,
scapy as an oracle in both directions, and segments captured from Linux."""

from __future__ import annotations

import inspect
import ipaddress
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from ustack.wire import checksum, ipv4, tcp
from ustack.wire.errors import ParseError
from ustack.wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Control, TcpOptions

GOLDEN = Path(__file__).parent / "golden"
SRC = ipv4.addr_to_int("10.7.0.1")
DST = ipv4.addr_to_int("10.7.0.2")
# What the network layer hands TCP: the IPv4 pseudo-header sum with its length field 0.
PSEUDO = checksum.ipv4_pseudo_header_sum(SRC, DST, tcp.PROTO, 0)


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text())


def golden_segment(name: str) -> tcp.TcpSegment:
    p = ipv4.parse(golden(name))
    return tcp.parse(
        p.payload, p.src, p.dst, pseudo=checksum.ipv4_pseudo_header_sum(p.src, p.dst, tcp.PROTO, 0)
    )


def segment(flags: int = ACK, options: bytes = b"", payload: bytes = b"", **kw: int) -> bytearray:
    buf = bytearray(20 + len(options) + len(payload))
    fields = {"src_port": 40000, "dst_port": 80, "seq": 1, "ack": 2, "window": 1000} | kw
    tcp.emit(buf, 0, pseudo=PSEUDO, flags=flags, options=options, payload=payload, **fields)
    return buf


def raw_segment(options: bytes, flags: int = ACK) -> bytes:
    """A segment with arbitrary (possibly malformed) option bytes and a correct checksum."""
    assert len(options) % 4 == 0
    return bytes(segment(flags, options))


# --- control classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "control"),
    [
        (0, Control.NONE),
        (ACK, Control.NONE),
        (PSH | ACK, Control.NONE),
        (SYN, Control.SYN),
        (SYN | ACK, Control.SYN),
        (SYN | ECE | CWR, Control.SYN),
        (FIN | ACK, Control.FIN),
        (FIN | PSH | ACK, Control.FIN),
        (RST, Control.RST),
        (RST | ACK, Control.RST),
        (URG | ACK, Control.NONE),
    ],
)
def test_control_is_classified_once(flags: int, control: Control) -> None:
    seg = tcp.parse(segment(flags), SRC, DST, pseudo=PSEUDO)
    assert seg.control is control
    assert seg.has_ack == bool(flags & ACK)
    assert seg.flags == flags
    assert seg.psh == bool(flags & PSH) and seg.urg == bool(flags & URG)


@pytest.mark.parametrize(
    "flags", [SYN | FIN, SYN | RST, FIN | RST, SYN | FIN | RST, SYN | FIN | ACK, RST | FIN | ACK]
)
def test_impossible_combinations_are_rejected(flags: int) -> None:
    with pytest.raises(ParseError) as e:
        tcp.parse(segment(flags), SRC, DST, pseudo=PSEUDO)
    assert e.value.reason == "tcp_bad_flags" and not e.value.integrity


def test_seg_len_counts_syn_and_fin() -> None:
    assert tcp.parse(segment(SYN), SRC, DST, pseudo=PSEUDO).seg_len == 1
    assert tcp.parse(segment(FIN | ACK, payload=b"abc"), SRC, DST, pseudo=PSEUDO).seg_len == 4
    assert tcp.parse(segment(ACK, payload=b"abc"), SRC, DST, pseudo=PSEUDO).seg_len == 3
    assert tcp.parse(segment(RST), SRC, DST, pseudo=PSEUDO).seg_len == 0


# --- header checks ----------------------------------------------------------------------------


def test_truncated_and_bad_offset() -> None:
    good = segment(ACK, options=TcpOptions(mss=1460).encode(), payload=b"xyz")
    with pytest.raises(ParseError, match="tcp_truncated"):
        tcp.parse(good[:19], SRC, DST, pseudo=PSEUDO)
    with pytest.raises(ParseError, match="tcp_truncated"):
        tcp.parse(good[:23], SRC, DST, pseudo=PSEUDO, verify_checksum=False)  # data offset says 24
    bad = bytearray(good)
    bad[12] = 4 << 4  # 16-byte header
    with pytest.raises(ParseError, match="tcp_bad_data_offset"):
        tcp.parse(bad, SRC, DST, pseudo=PSEUDO, verify_checksum=False)


def test_bad_checksum_is_an_integrity_error() -> None:
    buf = segment(ACK, payload=b"hello")
    buf[-1] ^= 0x20
    with pytest.raises(ParseError) as e:
        tcp.parse(buf, SRC, DST, pseudo=PSEUDO)
    assert e.value.reason == "tcp_bad_checksum" and e.value.integrity
    assert bytes(tcp.parse(buf, SRC, DST, pseudo=PSEUDO, verify_checksum=False).payload) == b"hellO"
    # The pseudo-header binds the addresses: the same bytes between other hosts fail.
    with pytest.raises(ParseError, match="tcp_bad_checksum"):
        tcp.parse(
            segment(ACK),
            SRC,
            DST + 1,
            pseudo=checksum.ipv4_pseudo_header_sum(SRC, DST + 1, tcp.PROTO, 0),
        )


def test_every_prefix_raises_parse_error_only() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(1, 2)).encode()
    full = segment(SYN, opts)
    for n in range(len(full)):
        for verify in (True, False):
            with pytest.raises(ParseError):
                tcp.parse(full[:n], SRC, DST, pseudo=PSEUDO, verify_checksum=verify)
    tcp.parse(full, SRC, DST, pseudo=PSEUDO)


def test_payload_is_a_view_not_a_copy() -> None:
    buf = segment(ACK, payload=b"abcd")
    seg = tcp.parse(buf, SRC, DST, pseudo=PSEUDO)
    buf[-1] = ord("Z")
    assert bytes(seg.payload) == b"abcZ"


# --- options ----------------------------------------------------------------------------------


def test_each_option_alone() -> None:
    cases: list[tuple[bytes, TcpOptions]] = [
        (b"\x02\x04\x05\xb4", TcpOptions(mss=1460)),
        (b"\x01\x03\x03\x07", TcpOptions(wscale=7)),
        (b"\x01\x01\x04\x02", TcpOptions(sack_permitted=True)),
        (b"\x01\x01\x08\x0a" + struct.pack("!II", 5, 6), TcpOptions(timestamps=(5, 6))),
        (b"\x01\x01\x05\x0a" + struct.pack("!II", 10, 20), TcpOptions(sack_blocks=((10, 20),))),
        (
            b"\x01\x01\x05\x22" + struct.pack("!8I", *range(1, 9)),
            TcpOptions(sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8))),
        ),
    ]
    for raw, expected in cases:
        assert tcp.parse(raw_segment(raw), SRC, DST, pseudo=PSEUDO).options == expected
        assert tcp.parse_options(memoryview(raw)) == expected


def test_no_options_is_the_shared_constant() -> None:
    assert tcp.parse(segment(ACK), SRC, DST, pseudo=PSEUDO).options is tcp.NO_OPTIONS
    assert (
        tcp.parse(raw_segment(b"\x01\x01\x01\x00"), SRC, DST, pseudo=PSEUDO).options
        is tcp.NO_OPTIONS
    )


def test_eol_ends_the_list() -> None:
    # After EOL the rest is padding, even if it looks like an (invalid) option.
    raw = b"\x02\x04\x05\xb4" + b"\x00\x02\x00\x00"
    assert tcp.parse(raw_segment(raw), SRC, DST, pseudo=PSEUDO).options == TcpOptions(mss=1460)


def test_unknown_options_are_skipped_by_length() -> None:
    raw = b"\xfd\x06abcd" + b"\x02\x04\x05\xb4" + b"\x1e\x02" + b"\x01\x01\x04\x02"
    assert tcp.parse(raw_segment(raw), SRC, DST, pseudo=PSEUDO).options == TcpOptions(
        mss=1460, sack_permitted=True
    )


def test_wscale_above_14_is_treated_as_14() -> None:
    assert (
        tcp.parse(raw_segment(b"\x01\x03\x03\x0f"), SRC, DST, pseudo=PSEUDO).options.wscale == 14
    )  # RFC 7323 2.3


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xfd\x00\x00\x00", "tcp_option_bad_length"),  # length 0 would loop forever
        (b"\xfd\x01\x00\x00", "tcp_option_bad_length"),  # length 1 cannot hold kind+length
        (b"\x02\x00\x05\xb4", "tcp_option_bad_length"),
        (b"\x01\x01\x01\xfd", "tcp_option_truncated"),  # a kind byte with no length after it
        (b"\xfd\x05\x00\x00", "tcp_option_overrun"),  # runs past the header
        (b"\x02\x04\x05\xb4\x08\x0a\x00\x00", "tcp_option_overrun"),
        (b"\x02\x03\x05\x00", "tcp_option_bad_length"),  # MSS must be 4
        (b"\x02\x05\x05\xb4\x00\x00\x00\x00", "tcp_option_bad_length"),
        (b"\x03\x04\x07\x00", "tcp_option_bad_length"),  # window scale must be 3
        (b"\x04\x03\x00\x00", "tcp_option_bad_length"),  # SACK-permitted must be 2
        (b"\x08\x08" + bytes(6), "tcp_option_bad_length"),  # timestamps must be 10
        (b"\x05\x02\x00\x00", "tcp_option_bad_length"),  # SACK with no block
        (b"\x05\x0b" + bytes(10), "tcp_option_bad_length"),  # SACK not a whole block
    ],
)
def test_malformed_options_are_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as e:
        tcp.parse(raw_segment(raw), SRC, DST, pseudo=PSEUDO)
    assert e.value.reason == reason and not e.value.integrity


def test_encode_refuses_more_than_40_bytes() -> None:
    with pytest.raises(ValueError):
        TcpOptions(timestamps=(1, 2), sack_blocks=((1, 2),) * 4).encode()


# --- emit -------------------------------------------------------------------------------------


def test_emit_rejects_a_short_buffer_without_growing_it() -> None:
    buf = bytearray(30)
    with pytest.raises(ValueError):
        tcp.emit(
            buf,
            0,
            pseudo=PSEUDO,
            src_port=1,
            dst_port=2,
            seq=0,
            ack=0,
            flags=ACK,
            window=0,
            payload=b"x" * 20,
        )
    assert len(buf) == 30
    with pytest.raises(ValueError):
        tcp.emit(
            buf,
            0,
            pseudo=PSEUDO,
            src_port=1,
            dst_port=2,
            seq=0,
            ack=0,
            flags=ACK,
            window=0,
            options=b"\x01\x01\x01",
        )


def test_emit_at_an_offset_leaves_the_rest_alone() -> None:
    buf = bytearray(b"\xaa" * 50)
    n = tcp.emit(buf, 20, pseudo=PSEUDO, src_port=1, dst_port=2, seq=3, ack=4, flags=SYN, window=5)
    assert n == 20 and buf[:20] == b"\xaa" * 20 and buf[40:] == b"\xaa" * 10
    assert checksum.verify_tcp(SRC, DST, buf[20:40])


# --- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (SYN, "S"),
        (SYN | ACK, "S."),
        (ACK, "."),
        (PSH | ACK, "P."),
        (FIN | PSH | ACK, "FP."),
        (RST, "R"),
        (RST | ACK, "R."),
        (SYN | ECE | CWR, "SEW"),
        (SYN | ACK | ECE, "S.E"),
        (URG | ACK, ".U"),
        (0, "none"),
    ],
)
def test_flag_string_in_tcpdump_order(flags: int, text: str) -> None:
    assert tcp.flag_string(flags) == text


def test_format_line() -> None:
    opts = TcpOptions(mss=1460, sack_permitted=True, timestamps=(7, 0), wscale=7).encode()
    seg = tcp.parse(segment(SYN, opts, seq=1, window=64240), SRC, DST, pseudo=PSEUDO)
    assert tcp.format(seg) == (
        "Flags [S], seq 1, win 64240, options [mss 1460,sackOK,TS val 7 ecr 0,wscale 7], length 0"
    )
    seg = tcp.parse(
        segment(PSH | ACK, payload=b"hello", seq=2**32 - 2, ack=9, window=3),
        SRC,
        DST,
        pseudo=PSEUDO,
    )
    assert tcp.format(seg) == "Flags [P.], seq 4294967294:3, ack 9, win 3, length 5"
    seg = tcp.parse(segment(URG | ACK, urgent=1, ack=1, window=3), SRC, DST, pseudo=PSEUDO)
    assert tcp.format(seg) == "Flags [.U], seq 1, ack 1, win 3, urg 1, length 0"
    blocks = TcpOptions(sack_blocks=((1, 2), (3, 4))).encode()
    assert "options [sack 1:2 3:4]" in tcp.format(
        tcp.parse(segment(ACK, blocks), SRC, DST, pseudo=PSEUDO)
    )


# --- round trips and the scapy oracle ---------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)


@st.composite
def options(draw: st.DrawFn) -> TcpOptions:
    o = TcpOptions(
        mss=draw(st.none() | u16),
        wscale=draw(st.none() | st.integers(0, 14)),
        sack_permitted=draw(st.booleans()),
        timestamps=draw(st.none() | st.tuples(u32, u32)),
        sack_blocks=tuple(draw(st.lists(st.tuples(u32, u32), max_size=4))),
    )
    assume(o.encoded_length() <= 40)
    return o


@given(options())
def test_encoded_length_matches_encode(o: TcpOptions) -> None:
    assert o.encoded_length() == len(o.encode())
    assert len(o.encode()) % 4 == 0


flag_bytes = st.integers(0, 255).filter(lambda f: tcp._CONTROL_BY_BITS[f & 7] is not None)


@settings(max_examples=400, deadline=None)
@given(
    u16, u16, u32, u32, flag_bytes, u16, u16, options(), st.binary(max_size=100), st.integers(0, 8)
)
def test_round_trip(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    win: int,
    urg: int,
    o: TcpOptions,
    data: bytes,
    offset: int,
) -> None:
    enc = o.encode()
    buf = bytearray(offset + 20 + len(enc) + len(data))
    n = tcp.emit(
        buf,
        offset,
        pseudo=PSEUDO,
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=win,
        options=enc,
        payload=data,
        urgent=urg,
    )
    assert n == len(buf) - offset
    seg = tcp.parse(memoryview(buf)[offset:], SRC, DST, pseudo=PSEUDO)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urgent) == (
        sport,
        dport,
        seq,
        ack,
        flags,
        win,
        urg,
    )
    assert seg.options == o and seg.header_length == 20 + len(enc)
    assert bytes(seg.payload) == data


def scapy_options(o: TcpOptions) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if o.mss is not None:
        out.append(("MSS", o.mss))
    if o.wscale is not None:
        out.append(("WScale", o.wscale))
    if o.sack_permitted:
        out.append(("SAckOK", b""))
    if o.timestamps is not None:
        out.append(("Timestamp", o.timestamps))
    if o.sack_blocks:
        out.append(("SAck", tuple(x for block in o.sack_blocks for x in block)))
    return out


def meaningful(opts: list[tuple[object, object]]) -> list[tuple[object, object]]:
    return [(k, v) for k, v in opts if k not in ("NOP", "EOL")]


@settings(max_examples=300, deadline=None)
@given(u16, u16, u32, u32, flag_bytes, u16, options(), st.binary(max_size=60))
def test_scapy_parses_what_ustack_emits(
    sport: int, dport: int, seq: int, ack: int, flags: int, win: int, o: TcpOptions, data: bytes
) -> None:
    enc = o.encode()
    seg_len = 20 + len(enc) + len(data)
    buf = bytearray(20 + seg_len)
    ipv4.emit(buf, 0, src=SRC, dst=DST, proto=6, payload_len=seg_len)
    tcp.emit(
        buf,
        20,
        pseudo=PSEUDO,
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=win,
        options=enc,
        payload=data,
    )
    s = IP(bytes(buf))
    t = s[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, t.dataofs * 4) == (
        sport,
        dport,
        seq,
        ack,
        flags,
        win,
        20 + len(enc),
    )
    assert sorted(meaningful(t.options), key=str) == sorted(scapy_options(o), key=str)
    assert bytes(t.payload) == data
    rebuilt = IP(bytes(buf))
    del rebuilt.chksum
    del rebuilt[TCP].chksum
    again = IP(bytes(rebuilt))
    assert (again.chksum, again[TCP].chksum) == (s.chksum, t.chksum)


unknown_option = st.tuples(st.sampled_from([6, 7, 9, 30, 34, 253, 254]), st.binary(max_size=4))


@settings(max_examples=300, deadline=None)
@given(
    u16,
    u16,
    u32,
    u32,
    flag_bytes,
    u16,
    options(),
    st.lists(unknown_option, max_size=2),
    st.integers(0, 3),
    st.binary(max_size=60),
)
def test_ustack_parses_what_scapy_builds(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    win: int,
    o: TcpOptions,
    unknown: list[tuple[int, bytes]],
    nops: int,
    data: bytes,
) -> None:
    opts: list[tuple[object, object]] = [("NOP", None)] * nops
    for i, item in enumerate(scapy_options(o)):
        opts.append(item)
        if i < len(unknown):
            opts.append(unknown[i])
    opts += unknown[len(scapy_options(o)) :]
    pkt = (
        IP(src="10.7.0.1", dst="10.7.0.2")
        / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=win, options=opts)
        / Raw(data)
    )
    raw = bytes(pkt)
    assume(IP(raw)[TCP].dataofs * 4 - 20 == len(raw) - 40 - len(data))  # scapy fit it in 40 bytes
    p = ipv4.parse(raw)
    seg = tcp.parse(
        p.payload, p.src, p.dst, pseudo=checksum.ipv4_pseudo_header_sum(p.src, p.dst, tcp.PROTO, 0)
    )
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window) == (
        sport,
        dport,
        seq,
        ack,
        flags,
        win,
    )
    assert seg.options == o
    assert bytes(seg.payload) == data


# --- the pseudo-header sum is the network layer's ----------------------------------------------

SRC6 = 0xFD00_0007_0000_0000_0000_0000_0000_0001  # fd00:7::1
DST6 = 0xFD00_0007_0000_0000_0000_0000_0000_0002  # fd00:7::2
PSEUDO6 = checksum.ipv6_pseudo_header_sum(SRC6, DST6, tcp.PROTO, 0)
_IPV6_FIXED = struct.Struct("!IHBB16s16s")  # RFC 8200 3: version/class/label, length, NH, hops


def test_parse_and_emit_take_no_ip_addresses_for_the_checksum() -> None:
    # emit needs no addresses at all; parse keeps them only for the record (demultiplexing).
    assert "src" not in inspect.signature(tcp.emit).parameters
    assert "dst" not in inspect.signature(tcp.emit).parameters
    assert inspect.signature(tcp.emit).parameters["pseudo"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(tcp.parse).parameters["pseudo"].kind is inspect.Parameter.KEYWORD_ONLY


@settings(max_examples=200, deadline=None)
@given(u16, u16, u32, u32, flag_bytes, u16, options(), st.binary(max_size=60))
def test_scapy_checks_what_ustack_emits_over_ipv6(
    sport: int, dport: int, seq: int, ack: int, flags: int, win: int, o: TcpOptions, data: bytes
) -> None:
    enc = o.encode()
    seg_len = 20 + len(enc) + len(data)
    buf = bytearray(40 + seg_len)
    _IPV6_FIXED.pack_into(
        buf, 0, 6 << 28, seg_len, tcp.PROTO, 64, SRC6.to_bytes(16, "big"), DST6.to_bytes(16, "big")
    )
    n = tcp.emit(
        buf,
        40,
        pseudo=PSEUDO6,
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=win,
        options=enc,
        payload=data,
    )
    assert n == seg_len
    t = IPv6(bytes(buf))[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window) == (
        sport,
        dport,
        seq,
        ack,
        flags,
        win,
    )
    rebuilt = IPv6(bytes(buf))
    del rebuilt[TCP].chksum
    assert IPv6(bytes(rebuilt))[TCP].chksum == t.chksum  # scapy's own TCP-over-IPv6 checksum


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1), u32, st.binary(max_size=60))
def test_ustack_verifies_what_scapy_builds_over_ipv6(
    src: int, dst: int, seq: int, data: bytes
) -> None:
    raw = bytes(
        IPv6(src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst)))
        / TCP(sport=443, dport=50000, seq=seq, flags="PA", options=[("Timestamp", (1, 2))])
        / Raw(data)
    )
    body = raw[40:]
    pseudo = checksum.ipv6_pseudo_header_sum(src, dst, tcp.PROTO, 0)
    seg = tcp.parse(body, src, dst, pseudo=pseudo)
    assert (seg.src, seg.dst, seg.seq, bytes(seg.payload)) == (src, dst, seq, data)
    assert seg.options.timestamps == (1, 2)
    # The sum binds the addresses: another destination's pseudo-header fails the same bytes ...
    other = checksum.ipv6_pseudo_header_sum(src, dst ^ 1, tcp.PROTO, 0)
    with pytest.raises(ParseError, match="tcp_bad_checksum"):
        tcp.parse(body, src, dst, pseudo=other)
    # ... and is not read when the checksum is not verified (an offloaded segment).
    assert tcp.parse(body, src, dst, pseudo=other, verify_checksum=False).seq == seq


@pytest.mark.parametrize(
    ("pseudo", "full"),
    [
        (PSEUDO, lambda n: checksum.ipv4_pseudo_header_sum(SRC, DST, tcp.PROTO, n)),
        (PSEUDO6, lambda n: checksum.ipv6_pseudo_header_sum(SRC6, DST6, tcp.PROTO, n)),
        # A sum that with the length comes to 0xFFFF: written so (one's-complement zero is
        # never 0 in a partial sum), as the checksum module writes it.
        (0xFFFF - 25, lambda n: 0xFFFF),
    ],
)
def test_partial_checksum_holds_the_pseudo_header_sum_with_the_length(
    pseudo: int, full: Callable[[int], int]
) -> None:
    buf = bytearray(25)
    n = tcp.emit(
        buf,
        0,
        pseudo=pseudo,
        src_port=1,
        dst_port=2,
        seq=3,
        ack=4,
        flags=PSH | ACK,
        window=5,
        payload=b"hello",
        partial_checksum=True,
    )
    assert n == 25
    field = struct.unpack_from("!H", buf, tcp.OFF_CHECKSUM)[0]
    assert field == full(n)
    # A device completes it over the segment, field included (virtio NEEDS_CSUM) ...
    struct.pack_into("!H", buf, tcp.OFF_CHECKSUM, checksum.internet_checksum(buf))
    # ... and the segment then verifies against the same pseudo-header sum.
    assert bytes(tcp.parse(buf, 0, 0, pseudo=pseudo).payload) == b"hello"


@pytest.mark.parametrize("pseudo", [-1, 0x10000, 2**128])
def test_emit_refuses_a_pseudo_sum_that_is_not_a_partial_sum(pseudo: int) -> None:
    buf = bytearray(b"\xaa" * 20)
    with pytest.raises(ValueError, match="pseudo"):
        tcp.emit(buf, 0, pseudo=pseudo, src_port=1, dst_port=2, seq=0, ack=0, flags=ACK, window=0)
    assert buf == b"\xaa" * 20


# --- Linux's own segments ---------------------------------------------------------------------


def test_linux_syn() -> None:
    seg = golden_segment("tcp_syn")
    assert seg.control is Control.SYN and not seg.has_ack and seg.flags == SYN
    assert seg.dst_port == 80 and seg.window == 64240 and seg.header_length == 40
    o = seg.options
    assert o.mss == 1460  # MTU 1500 - 20 - 20
    assert o.sack_permitted and o.wscale == 10
    assert o.timestamps is not None and o.timestamps[1] == 0
    assert o.sack_blocks == () and len(seg.payload) == 0
    # Re-encoding the parsed options gives the kernel's exact option bytes.
    assert o.encode() == golden("tcp_syn")[40:60]


def test_linux_handshake_data_fin_rst() -> None:
    syn = golden_segment("tcp_syn")
    ack = golden_segment("tcp_handshake_ack")
    data = golden_segment("tcp_data")
    fin = golden_segment("tcp_fin")
    rst = golden_segment("tcp_rst_abort")
    iss = syn.seq
    assert ack.control is Control.NONE and ack.has_ack and ack.seq == iss + 1 and ack.ack == 5001
    assert data.flags == PSH | ACK and bytes(data.payload) == b"hello, ustack\n"
    assert data.seq == iss + 1 and data.seg_len == 14
    assert fin.control is Control.FIN and fin.seq == iss + 15 and fin.seg_len == 1
    assert rst.control is Control.RST and rst.has_ack and rst.seq == iss + 16
    for seg in (ack, data, fin, rst):
        assert seg.options.timestamps is not None and seg.options.timestamps[1] == 777
        assert seg.options.mss is None and seg.header_length == 32
        assert seg.window == 63  # 64240 >> 10, rounded up by the kernel


def test_linux_synack_and_refusal() -> None:
    sa = golden_segment("tcp_synack")
    assert sa.control is Control.SYN and sa.has_ack and sa.ack == 2 and sa.src_port == 8080
    assert sa.options.mss == 1460 and sa.options.wscale == 10 and sa.options.sack_permitted
    assert sa.options.timestamps is not None and sa.options.timestamps[1] == 1000
    assert sa.window == 65160
    rst = golden_segment("tcp_rst_closed_port")
    # RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> for a SYN with seq 1000.
    assert rst.control is Control.RST and rst.has_ack and rst.seq == 0 and rst.ack == 1001
    assert rst.window == 0 and rst.options is tcp.NO_OPTIONS


@pytest.mark.parametrize("name", ["tcp_syn", "tcp_synack", "tcp_data", "tcp_rst_closed_port"])
def test_linux_segments_re_emit_byte_for_byte(name: str) -> None:
    raw = golden(name)
    seg = golden_segment(name)
    buf = bytearray(len(raw) - 20)
    tcp.emit(
        buf,
        0,
        pseudo=PSEUDO,
        src_port=seg.src_port,
        dst_port=seg.dst_port,
        seq=seg.seq,
        ack=seg.ack,
        flags=seg.flags,
        window=seg.window,
        options=raw[40 : 20 + seg.header_length],
        payload=seg.payload,
        urgent=seg.urgent,
    )
    assert bytes(buf) == raw[20:]


@given(
    ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 65535),
    ident=st.integers(0, 65535),
    ttl=st.integers(1, 255),
    options=st.sampled_from(
        [b"", tcp.encode_options(TcpOptions(timestamps=(1, 2))), b"\x02\x04\x05\xb4"]
    ),
    payload=st.binary(max_size=300),
    partial=st.booleans(),
)
def test_emit_ipv4_writes_what_the_two_emitters_write(
    ports: tuple[int, int],
    seq: int,
    ack: int,
    flags: int,
    window: int,
    ident: int,
    ttl: int,
    options: bytes,
    payload: bytes,
    partial: bool,
) -> None:
    src, dst = 0x0A070001, 0x0A070002
    length = tcp.HEADER_LEN + len(options) + len(payload)
    want = bytearray(ipv4.HEADER_LEN + length)
    ipv4.emit(want, 0, src=src, dst=dst, proto=tcp.PROTO, payload_len=length, ident=ident, ttl=ttl)
    tcp.emit(
        want,
        ipv4.HEADER_LEN,
        pseudo=checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, 0),
        src_port=ports[0],
        dst_port=ports[1],
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        options=options,
        payload=payload,
        partial_checksum=partial,
    )
    got = bytearray(4 + len(want))
    n = tcp.emit_ipv4(
        got,
        4,
        src,
        dst,
        ident=ident,
        ttl=ttl,
        src_port=ports[0],
        dst_port=ports[1],
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        options=options,
        payload=payload,
        partial_checksum=partial,
    )
    assert n == len(want)
    assert got[4:] == want
    if not partial:
        # scapy as the oracle: its own checksum of the same datagram
        oracle = IP(bytes(got[4:]))
        sent = oracle[TCP].chksum
        del oracle[TCP].chksum
        assert IP(bytes(oracle))[TCP].chksum == sent


def test_partial_checksum_completed_over_the_segment_gives_the_full_checksum() -> None:
    fields = {"ident": 1, "ttl": 64, "src_port": 1, "dst_port": 2, "seq": 3, "ack": 4}
    full, part = bytearray(60), bytearray(60)
    for buf, partial in ((full, False), (part, True)):
        tcp.emit_ipv4(
            buf,
            0,
            0x0A070001,
            0x0A070002,
            flags=tcp.ACK,
            window=5,
            options=b"",
            payload=b"x" * 20,
            partial_checksum=partial,
            **fields,
        )
    assert part != full
    # what a device does with NEEDS_CSUM: sum from csum_start with the partial sum in place
    struct.pack_into("!H", part, 36, checksum.internet_checksum(memoryview(part)[20:]))
    assert part == full


def test_emit_headers_only_writes_what_the_whole_segment_would_start_with() -> None:
    """``headers_only`` (a gathered write: the payload goes from where it is) gives the same
    header bytes, checksum field included, as writing the payload too; it needs the device to
    sum the payload (``partial_checksum``)."""
    payload = bytes(range(256)) * 8
    args = dict(pseudo=0x1234, src_port=1, dst_port=2, seq=3, ack=4, flags=tcp.ACK, window=5)
    whole = bytearray(20 + len(payload))
    tcp.emit(whole, 0, payload=payload, partial_checksum=True, **args)  # type: ignore[arg-type]
    head = bytearray(20)
    n = tcp.emit(
        head,
        0,
        payload=payload,
        partial_checksum=True,
        headers_only=True,
        **args,  # type: ignore[arg-type]
    )
    assert n == len(whole) and head + payload == whole
    with pytest.raises(ValueError, match="headers_only needs partial_checksum"):
        tcp.emit(head, 0, payload=payload, headers_only=True, **args)  # type: ignore[arg-type]
