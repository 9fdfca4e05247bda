"""ICMP echo and destination unreachable: vectors, round trips, quoting, scapy, Linux packets."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPerror, TCPerror
from scapy.packet import Raw

from ustack.wire import checksum, icmp, ipv4
from ustack.wire.errors import ParseError

GOLDEN = Path(__file__).parent / "golden"
LOCAL = ipv4.addr_to_int("10.7.0.1")
PEER = ipv4.addr_to_int("10.7.0.2")


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text())


def golden_icmp(name: str) -> icmp.IcmpMessage:
    return icmp.parse(ipv4.parse(golden(name)).payload)


def echo(
    type_: int = icmp.ECHO_REQUEST, ident: int = 1, sequence: int = 1, payload: bytes = b""
) -> bytearray:
    buf = bytearray(8 + len(payload))
    assert icmp.emit_echo(
        buf, 0, type=type_, ident=ident, sequence=sequence, payload=payload
    ) == len(buf)
    return buf


def tcp_datagram(options: bytes = b"", payload: bytes = b"0123456789", pad: int = 0) -> bytes:
    """An IPv4/TCP datagram (ports 40000 -> 80, seq 0x01020304), optionally with IP options and
    link padding after it."""
    ihl = 5 + len(options) // 4
    segment = (
        struct.pack("!HHIIBBHHH", 40000, 80, 0x01020304, 0, 5 << 4, 0x02, 1000, 0, 0) + payload
    )
    total = ihl * 4 + len(segment)
    header = bytearray(
        struct.pack("!BBHHHBBHII", 0x40 | ihl, 0, total, 1, 0, 64, 6, 0, PEER, LOCAL)
    )
    header += options
    return bytes(header) + segment + b"\xee" * pad


def test_echo_vector() -> None:
    # Hand-computed: 0800 0000 0001 0001 'ab' -> sum 0x0800+0x0001+0x0001+0x6162 = 0x6964.
    buf = echo(ident=1, sequence=1, payload=b"ab")
    assert bytes(buf) == bytes.fromhex("0800969b00010001") + b"ab"
    msg = icmp.parse(buf)
    assert (msg.type, msg.code, msg.ident, msg.sequence, msg.mtu) == (8, 0, 1, 1, 0)
    assert bytes(msg.payload) == b"ab"


def test_echo_with_odd_payload_and_offset() -> None:
    buf = bytearray(b"\xff" * 4 + bytes(8 + 3))
    n = icmp.emit_echo(buf, 4, type=icmp.ECHO_REPLY, ident=0xBEEF, sequence=0xFFFF, payload=b"xyz")
    assert n == 11 and buf[:4] == b"\xff" * 4
    msg = icmp.parse(memoryview(buf)[4:])
    assert (msg.type, msg.ident, msg.sequence, bytes(msg.payload)) == (0, 0xBEEF, 0xFFFF, b"xyz")


def test_emit_echo_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        icmp.emit_echo(bytearray(20), 0, type=icmp.DEST_UNREACH, ident=1, sequence=1, payload=b"")
    buf = bytearray(10)
    with pytest.raises(ValueError):
        icmp.emit_echo(buf, 0, type=icmp.ECHO_REQUEST, ident=1, sequence=1, payload=b"abc")
    assert len(buf) == 10


def test_bad_checksum_is_an_integrity_error() -> None:
    buf = echo(payload=b"hello")
    buf[-1] ^= 1
    with pytest.raises(ParseError) as e:
        icmp.parse(buf)
    assert e.value.reason == "icmp_bad_checksum" and e.value.integrity
    assert icmp.parse(buf, verify_checksum=False).ident == 1


def test_every_prefix_raises_parse_error_only() -> None:
    for full in (
        bytes(echo(payload=b"0123456789")),
        golden_icmp("icmp_port_unreach").payload.tobytes(),
    ):
        for n in range(8):
            with pytest.raises(ParseError, match="icmp_truncated"):
                icmp.parse(full[:n])
    # Longer prefixes of an echo are well-formed lengths but fail the checksum.
    full = bytes(echo(payload=b"0123456789"))
    for n in range(8, len(full)):
        with pytest.raises(ParseError):
            icmp.parse(full[:n])


def test_unreachable_quotes_header_and_8_octets() -> None:
    original = tcp_datagram(payload=b"x" * 100)
    buf = bytearray(100)
    n = icmp.emit_unreachable(buf, 0, code=icmp.PORT_UNREACH, original=original)
    assert n == 8 + 20 + 8
    msg = icmp.parse(memoryview(buf)[:n])
    assert (msg.type, msg.code, msg.mtu, msg.ident, msg.sequence) == (3, 3, 0, 0, 0)
    assert bytes(msg.payload) == original[:28]
    assert bytes(buf[4:8]) == bytes(4)  # "unused" word is zero (RFC 792)


def test_unreachable_quote_keeps_ip_options() -> None:
    options = b"\x01\x01\x01\x00"
    original = tcp_datagram(options=options)
    buf = bytearray(100)
    n = icmp.emit_unreachable(buf, 0, code=icmp.PROTO_UNREACH, original=original)
    assert bytes(icmp.parse(buf[:n]).payload) == original[: 24 + 8]


def test_unreachable_quote_stops_at_total_length_and_received_bytes() -> None:
    tiny = tcp_datagram(payload=b"")[:20] + b"\x00\x50\x00\x51"  # 24-byte datagram
    tiny = tiny[:2] + struct.pack("!H", 24) + tiny[4:]
    buf = bytearray(100)
    n = icmp.emit_unreachable(buf, 0, code=icmp.PROTO_UNREACH, original=tiny + b"\xee" * 30)
    assert bytes(icmp.parse(buf[:n]).payload) == tiny  # link padding is not quoted
    n = icmp.emit_unreachable(buf, 0, code=icmp.PROTO_UNREACH, original=tiny[:10])
    assert bytes(icmp.parse(buf[:n]).payload) == tiny[:10]
    assert icmp.quote_length(b"") == 0


def test_frag_needed_carries_the_next_hop_mtu() -> None:
    original = tcp_datagram(payload=b"y" * 1400)
    buf = bytearray(64)
    n = icmp.emit_unreachable(buf, 0, code=icmp.FRAG_NEEDED, original=original, mtu=1280)
    msg = icmp.parse(buf[:n])
    assert (msg.code, msg.mtu) == (icmp.FRAG_NEEDED, 1280)
    assert icmp.format(msg) == "ICMP 10.7.0.1 unreachable - need to frag (mtu 1280), length 36"


def test_emit_unreachable_rejects_misuse() -> None:
    original = tcp_datagram()
    with pytest.raises(ValueError):
        icmp.emit_unreachable(
            bytearray(100), 0, code=icmp.PORT_UNREACH, original=original, mtu=1280
        )
    with pytest.raises(ValueError):
        icmp.emit_unreachable(bytearray(100), 0, code=16, original=original)
    buf = bytearray(30)
    with pytest.raises(ValueError):
        icmp.emit_unreachable(buf, 0, code=icmp.PORT_UNREACH, original=original)
    assert len(buf) == 30


def test_parse_quoted_finds_the_connection() -> None:
    original = tcp_datagram(options=b"\x01\x01\x01\x00")
    buf = bytearray(100)
    n = icmp.emit_unreachable(buf, 0, code=icmp.PORT_UNREACH, original=original)
    q = icmp.parse_quoted(icmp.parse(buf[:n]))
    assert (q.src, q.dst, q.proto) == (PEER, LOCAL, 6)
    assert struct.unpack_from("!HHI", q.transport) == (40000, 80, 0x01020304)


@pytest.mark.parametrize(
    ("quote", "reason"),
    [
        (b"", "icmp_quote_truncated"),
        (bytes(19), "icmp_quote_truncated"),
        (b"\x60" + bytes(27), "icmp_quote_bad_version"),
        (b"\x44" + bytes(27), "icmp_quote_bad_ihl"),
        (b"\x46" + bytes(27), "icmp_quote_truncated"),  # 24-byte header + 8 needs 32
    ],
)
def test_parse_quoted_rejects_short_or_bad_quotes(quote: bytes, reason: str) -> None:
    msg = icmp.IcmpMessage(3, 3, 0, 0, 0, memoryview(quote))
    with pytest.raises(ParseError, match=reason):
        icmp.parse_quoted(msg)


def test_other_types_parse_with_zero_fields() -> None:
    buf = bytearray(struct.pack("!BBHI", icmp.TIME_EXCEEDED, 0, 0, 0xDEADBEEF)) + b"q"
    buf[2:4] = struct.pack("!H", checksum.internet_checksum(buf))
    msg = icmp.parse(buf)
    assert (msg.type, msg.ident, msg.sequence, msg.mtu) == (11, 0, 0, 0)
    assert icmp.format(msg) == "ICMP time exceeded in-transit, length 9"


def test_format_lines() -> None:
    assert (
        icmp.format(icmp.parse(echo(payload=bytes(56))))
        == "ICMP echo request, id 1, seq 1, length 64"
    )
    reply = echo(icmp.ECHO_REPLY, ident=9, sequence=2)
    assert icmp.format(icmp.parse(reply)) == "ICMP echo reply, id 9, seq 2, length 8"
    buf = bytearray(64)
    n = icmp.emit_unreachable(buf, 0, code=icmp.PORT_UNREACH, original=tcp_datagram())
    assert icmp.format(icmp.parse(buf[:n])) == "ICMP 10.7.0.1 tcp port 80 unreachable, length 36"
    n = icmp.emit_unreachable(buf, 0, code=icmp.PROTO_UNREACH, original=tcp_datagram())
    assert icmp.format(icmp.parse(buf[:n])) == "ICMP 10.7.0.1 protocol 6 unreachable, length 36"
    n = icmp.emit_unreachable(buf, 0, code=icmp.HOST_UNREACH, original=tcp_datagram())
    assert icmp.format(icmp.parse(buf[:n])) == "ICMP host 10.7.0.1 unreachable, length 36"
    n = icmp.emit_unreachable(buf, 0, code=icmp.PORT_UNREACH, original=b"junk")
    assert icmp.format(icmp.parse(buf[:n])) == "ICMP unreachable, code 3, length 12"


u16 = st.integers(0, 0xFFFF)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([icmp.ECHO_REQUEST, icmp.ECHO_REPLY]), u16, u16, st.binary(max_size=200))
def test_echo_round_trip_and_scapy_oracle(
    type_: int, ident: int, sequence: int, data: bytes
) -> None:
    buf = echo(type_, ident, sequence, data)
    msg = icmp.parse(buf)
    assert (msg.type, msg.code, msg.ident, msg.sequence, bytes(msg.payload)) == (
        type_,
        0,
        ident,
        sequence,
        data,
    )
    s = ICMP(bytes(buf))
    assert (s.type, s.code, s.id, s.seq, bytes(s.payload)) == (type_, 0, ident, sequence, data)
    theirs = ICMP(bytes(buf))
    del theirs.chksum
    assert ICMP(bytes(theirs)).chksum == s.chksum


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([icmp.ECHO_REQUEST, icmp.ECHO_REPLY]), u16, u16, st.binary(max_size=200))
def test_ustack_parses_scapy_echo(type_: int, ident: int, sequence: int, data: bytes) -> None:
    raw = bytes(
        IP(src="10.7.0.2", dst="10.7.0.1") / ICMP(type=type_, id=ident, seq=sequence) / Raw(data)
    )
    p = ipv4.parse(raw)
    assert p.proto == ipv4.PROTO_ICMP
    msg = icmp.parse(p.payload)
    assert (msg.type, msg.ident, msg.sequence, bytes(msg.payload)) == (type_, ident, sequence, data)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([icmp.PORT_UNREACH, icmp.PROTO_UNREACH, icmp.FRAG_NEEDED]),
    st.integers(68, 0xFFFF),
)
def test_unreachable_against_scapy(code: int, mtu: int) -> None:
    mtu = mtu if code == icmp.FRAG_NEEDED else 0
    original = tcp_datagram(payload=b"z" * 40)
    buf = bytearray(64)
    n = icmp.emit_unreachable(buf, 0, code=code, original=original, mtu=mtu)
    s = ICMP(bytes(buf[:n]))
    assert (s.type, s.code) == (3, code)
    if code == icmp.FRAG_NEEDED:
        assert s.nexthopmtu == mtu
    assert s[IPerror].src == "10.7.0.2" and s[TCPerror].dport == 80
    theirs = ICMP(bytes(buf[:n]))
    del theirs.chksum
    assert ICMP(bytes(theirs)).chksum == s.chksum
    # ... and scapy's own unreachable parses in ustack.
    built = bytes(ICMP(type=3, code=code, nexthopmtu=mtu) / Raw(original[:28]))
    msg = icmp.parse(built)
    assert (msg.type, msg.code, msg.mtu) == (3, code, mtu)
    assert icmp.parse_quoted(msg).dst == LOCAL


def test_linux_echo_request_and_reply() -> None:
    req = golden_icmp("icmp_echo_request")
    assert (req.type, req.code, req.sequence) == (icmp.ECHO_REQUEST, 0, 1)
    assert bytes(req.payload) == bytes(range(56))
    rep = golden_icmp("icmp_echo_reply")
    assert (rep.type, rep.code, rep.ident, rep.sequence) == (icmp.ECHO_REPLY, 0, 0x4242, 7)
    assert bytes(rep.payload) == b"ustack-ping" * 4
    # Our reply to the same request is byte-for-byte the kernel's ICMP message.
    buf = echo(icmp.ECHO_REPLY, 0x4242, 7, b"ustack-ping" * 4)
    assert bytes(buf) == bytes(ipv4.parse(golden("icmp_echo_reply")).payload)


def test_linux_unreachables() -> None:
    port = golden_icmp("icmp_port_unreach")
    assert (port.type, port.code, port.mtu) == (icmp.DEST_UNREACH, icmp.PORT_UNREACH, 0)
    q = icmp.parse_quoted(port)
    assert (q.src, q.dst, q.proto) == (PEER, LOCAL, 17)
    assert struct.unpack_from("!HH", q.transport) == (40003, 9)
    # Linux quotes the whole small datagram (RFC 1812 4.3.2.3 allows up to 576 octets in all).
    assert len(port.payload) == 40
    proto = golden_icmp("icmp_proto_unreach")
    assert (proto.code, icmp.parse_quoted(proto).proto) == (icmp.PROTO_UNREACH, 253)
    frag = golden_icmp("icmp_frag_needed")
    assert (frag.code, frag.mtu) == (icmp.FRAG_NEEDED, 1000)
    assert ipv4.parse(golden("icmp_frag_needed")).total_length == 576
    assert icmp.parse_quoted(frag).dst == ipv4.addr_to_int("10.8.0.5")


def test_our_quote_is_a_prefix_of_linux_quote() -> None:
    # Linux quotes more than RFC 792's minimum; ours must be exactly its first header+8 octets.
    port = golden_icmp("icmp_port_unreach")
    original = bytes(port.payload)
    buf = bytearray(64)
    n = icmp.emit_unreachable(buf, 0, code=icmp.PORT_UNREACH, original=original)
    assert bytes(icmp.parse(buf[:n]).payload) == original[:28]
