"""ICMPv6: echo, the four errors and their quotes, checksums over the IPv6 pseudo-header, scapy
both ways, malformed input and fuzzing."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Packet, Raw

from ustack.wire import icmpv6, ipv6
from ustack.wire.errors import ParseError

LOCAL = "fd00:7::2"
PEER = "fd00:7::1"
LOCAL_INT = ipv6.addr_to_int(LOCAL)
PEER_INT = ipv6.addr_to_int(PEER)


def from_peer(message: Packet) -> icmpv6.Icmpv6Message:
    """Parse the ICMPv6 message in a scapy-built packet from PEER to LOCAL."""
    pkt = ipv6.parse(raw(IPv6(src=PEER, dst=LOCAL) / message))
    assert pkt.proto == ipv6.PROTO_ICMPV6
    return icmpv6.parse(pkt.payload, pkt.src, pkt.dst)


def sent_tcp(*headers: Packet, size: int = 100, seq: int = 0xDEADBEEF) -> bytes:
    """A packet ustack "sent" (LOCAL -> PEER, port 40000 -> 80), built by scapy."""
    pkt: Packet = IPv6(src=LOCAL, dst=PEER)
    for h in headers:
        pkt = pkt / h
    return raw(pkt / TCP(sport=40000, dport=80, seq=seq, flags="A") / Raw(b"d" * size))


def error_packet(**kw: Any) -> bytes:
    """A whole IPv6 packet (PEER -> LOCAL) carrying our emit_error(**kw)."""
    buf = bytearray(1500)
    n = icmpv6.emit_error(buf, 40, src=PEER_INT, dst=LOCAL_INT, **kw)
    ipv6.emit(buf, 0, src=PEER_INT, dst=LOCAL_INT, next_header=58, payload_len=n)
    return bytes(buf[: 40 + n])


def scapy_checksum_of(data: bytes, layer: type[Packet]) -> tuple[int, int]:
    """(the checksum in ``data``'s ICMPv6 header, the one scapy computes for the same packet)."""
    pkt = IPv6(data)
    message = pkt[layer]
    ours = message.cksum
    del message.cksum
    return ours, IPv6(raw(pkt))[layer].cksum


# --- echo --------------------------------------------------------------------------------------


def test_echo_reply_vector_matches_scapy(checksum_impl: ModuleType) -> None:
    buf = bytearray(b"\xff" * 4 + bytes(8 + 5))
    n = icmpv6.emit_echo_reply(
        buf, 4, ident=0xBEEF, sequence=7, payload=b"hello", src=LOCAL_INT, dst=PEER_INT
    )
    assert n == 13 and buf[:4] == b"\xff" * 4
    expected = raw(IPv6(src=LOCAL, dst=PEER) / ICMPv6EchoReply(id=0xBEEF, seq=7, data=b"hello"))
    assert bytes(buf[4:]) == expected[40:]
    # the checksum covers the pseudo-header: it verifies with these addresses only
    pseudo = ipv6.pseudo_header_sum(LOCAL_INT, PEER_INT, 58, n)
    assert checksum_impl.internet_checksum(buf[4:], pseudo) == 0
    other = ipv6.pseudo_header_sum(LOCAL_INT, PEER_INT + 1, 58, n)
    assert checksum_impl.internet_checksum(buf[4:], other) != 0


def test_echo_request_from_scapy() -> None:
    msg = from_peer(ICMPv6EchoRequest(id=0x1234, seq=0xFFFF, data=b"ping" * 10))
    assert (msg.type, msg.code, msg.ident, msg.sequence) == (128, 0, 0x1234, 0xFFFF)
    assert (msg.mtu, msg.pointer, msg.is_error, bytes(msg.payload)) == (0, 0, False, b"ping" * 10)
    assert icmpv6.format(msg) == "ICMP6, echo request, id 4660, seq 65535, length 48"


def test_emit_echo_round_trip_and_misuse() -> None:
    buf = bytearray(8 + 3)
    icmpv6.emit_echo(
        buf, 0, type=128, ident=1, sequence=2, payload=b"abc", src=LOCAL_INT, dst=PEER_INT
    )
    msg = icmpv6.parse(buf, LOCAL_INT, PEER_INT)
    assert (msg.type, msg.ident, msg.sequence, bytes(msg.payload)) == (128, 1, 2, b"abc")
    with pytest.raises(ValueError):
        icmpv6.emit_echo(buf, 0, type=1, ident=1, sequence=1, payload=b"", src=1, dst=2)
    with pytest.raises(ValueError):
        icmpv6.emit_echo_reply(bytearray(10), 0, ident=1, sequence=1, payload=b"abc", src=1, dst=2)


# --- parsing what scapy builds -----------------------------------------------------------------


def test_errors_from_scapy() -> None:
    quote = IPv6(src=LOCAL, dst=PEER) / TCP(sport=40000, dport=80)
    unreach = from_peer(ICMPv6DestUnreach(code=4) / quote)
    assert (unreach.type, unreach.code, unreach.is_error) == (1, 4, True)
    assert bytes(unreach.payload) == raw(quote)
    ptb = from_peer(ICMPv6PacketTooBig(mtu=1400) / quote)
    assert (ptb.type, ptb.mtu, ptb.pointer) == (2, 1400, 0)
    big = from_peer(ICMPv6PacketTooBig(mtu=0x12345678) / quote)
    assert big.mtu == 0x12345678
    exceeded = from_peer(ICMPv6TimeExceeded(code=1) / quote)
    assert (exceeded.type, exceeded.code, exceeded.mtu) == (3, 1, 0)
    problem = from_peer(ICMPv6ParamProblem(code=2, ptr=0x10002) / quote)
    assert (problem.type, problem.code, problem.pointer, problem.mtu) == (4, 2, 0x10002, 0)


def test_neighbour_discovery_parses_as_other() -> None:
    msg = from_peer(ICMPv6ND_NS(tgt=LOCAL))
    assert (msg.type, msg.ident, msg.sequence, msg.mtu, msg.pointer) == (135, 0, 0, 0, 0)
    assert len(msg.payload) == 16 and not msg.is_error  # the target address
    assert icmpv6.format(msg) == "ICMP6, neighbor solicitation, length 24"


def test_bad_checksum_and_truncation() -> None:
    data = bytearray(raw(IPv6(src=PEER, dst=LOCAL) / ICMPv6EchoRequest(data=b"xyz"))[40:])
    assert icmpv6.parse(data, PEER_INT, LOCAL_INT).type == 128
    with pytest.raises(ParseError) as exc_info:
        icmpv6.parse(data, PEER_INT, LOCAL_INT + 1)  # the pseudo-header is in the sum
    assert exc_info.value.reason == "icmpv6_bad_checksum" and exc_info.value.integrity
    data[-1] ^= 1
    with pytest.raises(ParseError) as exc_info:
        icmpv6.parse(data, PEER_INT, LOCAL_INT)
    assert exc_info.value.reason == "icmpv6_bad_checksum"
    assert icmpv6.parse(data, PEER_INT, LOCAL_INT, verify_checksum=False).type == 128
    for n in (0, 4, 7):
        with pytest.raises(ParseError) as exc_info:
            icmpv6.parse(data[:n], PEER_INT, LOCAL_INT, verify_checksum=False)
        assert exc_info.value.reason == "icmpv6_truncated"


# --- emitting errors ---------------------------------------------------------------------------


def test_packet_too_big_quotes_up_to_the_minimum_mtu() -> None:
    original = sent_tcp(size=2000)
    data = error_packet(type=icmpv6.PACKET_TOO_BIG, code=0, value=1280, original=original)
    # RFC 4443 2.4 (c): the whole error packet is exactly the minimum MTU
    assert len(data) == ipv6.MIN_MTU
    assert icmpv6.quote_length(original) == icmpv6.MAX_QUOTE_LEN == 1232
    s = IPv6(data)
    assert s[ICMPv6PacketTooBig].mtu == 1280
    assert raw(s[ICMPv6PacketTooBig].payload) == original[:1232]
    ours, scapys = scapy_checksum_of(data, ICMPv6PacketTooBig)
    assert ours == scapys
    msg = icmpv6.parse(data[40:], PEER_INT, LOCAL_INT)
    assert (msg.type, msg.mtu, len(msg.payload)) == (2, 1280, 1232)
    assert icmpv6.format(msg) == "ICMP6, packet too big, mtu 1280, length 1240"


@pytest.mark.parametrize(
    ("type_", "code", "value", "layer"),
    [
        (icmpv6.DEST_UNREACH, icmpv6.PORT_UNREACH, 0, ICMPv6DestUnreach),
        (icmpv6.TIME_EXCEEDED, icmpv6.REASSEMBLY_TIME_EXCEEDED, 0, ICMPv6TimeExceeded),
        (icmpv6.PARAM_PROBLEM, icmpv6.UNRECOGNIZED_NEXT_HEADER, 6, ICMPv6ParamProblem),
    ],
)
def test_errors_agree_with_scapy(type_: int, code: int, value: int, layer: type[Packet]) -> None:
    original = sent_tcp(size=10)
    data = error_packet(type=type_, code=code, value=value, original=original)
    assert len(data) == 40 + 8 + len(original)
    s = IPv6(data)
    assert (s[layer].type, s[layer].code) == (type_, code)
    if layer is ICMPv6ParamProblem:
        assert s[layer].ptr == value
    ours, scapys = scapy_checksum_of(data, layer)
    assert ours == scapys


def test_parameter_problem_from_a_parse() -> None:
    # a peer's packet with an option of action 10: the parse says what to answer, we answer
    bad = raw(
        IPv6(src=PEER, dst=LOCAL)
        / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x9E, optdata=b"ab")])
        / TCP()
    )
    with pytest.raises(ipv6.ParameterProblem) as exc_info:
        ipv6.parse(bad)
    e = exc_info.value
    buf = bytearray(1500)
    n = icmpv6.emit_error(
        buf,
        40,
        type=icmpv6.PARAM_PROBLEM,
        code=e.code,
        value=e.pointer,
        original=bad,
        src=LOCAL_INT,
        dst=PEER_INT,
    )
    ipv6.emit(buf, 0, src=LOCAL_INT, dst=PEER_INT, next_header=58, payload_len=n)
    s = IPv6(bytes(buf[: 40 + n]))
    assert (s[ICMPv6ParamProblem].code, s[ICMPv6ParamProblem].ptr) == (2, 42)
    assert raw(s[ICMPv6ParamProblem].payload) == bad
    msg = icmpv6.parse(buf[40 : 40 + n], LOCAL_INT, PEER_INT)
    assert icmpv6.format(msg) == "ICMP6, parameter problem, unrecognized option at 42, length 76"


def test_quote_length() -> None:
    original = sent_tcp(size=10)
    assert icmpv6.quote_length(original) == len(original)
    # link padding after the packet's own Payload Length is not quoted
    assert icmpv6.quote_length(original + b"\0" * 30) == len(original)
    assert icmpv6.quote_length(sent_tcp(size=5000)) == 1232
    assert icmpv6.quote_length(b"\x45" * 2000) == 1232  # not IPv6: only the MTU bound
    assert icmpv6.quote_length(b"abc") == 3
    jumbo_like = bytearray(sent_tcp(size=10))
    jumbo_like[4:6] = b"\0\0"
    assert icmpv6.quote_length(jumbo_like) == len(jumbo_like)


def test_emit_error_rejects_misuse() -> None:
    original = sent_tcp(size=10)
    good: dict[str, Any] = {
        "type": 1,
        "code": 4,
        "value": 0,
        "original": original,
        "src": 1,
        "dst": 2,
    }
    for change in (
        {"type": 128},
        {"type": 5},
        {"code": 7},
        {"type": 3, "code": 2},
        {"type": 2, "code": 1, "value": 1500},
        {"type": 4, "code": 4},
        {"value": 1},  # unreachable: the word is unused
        {"type": 3, "code": 0, "value": 5},
        {"type": 2, "code": 0, "value": 1279},  # RFC 8201 4: never below the minimum MTU
        {"type": 2, "code": 0, "value": 1 << 32},
        {"type": 4, "code": 0, "value": -1},
    ):
        with pytest.raises(ValueError):
            icmpv6.emit_error(bytearray(1500), 0, **{**good, **change})
    with pytest.raises(ValueError):
        icmpv6.emit_error(bytearray(8 + len(original) - 1), 0, **good)
    assert icmpv6.emit_error(bytearray(8 + len(original)), 0, **good) == 8 + len(original)


# --- the quoted packet -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()),
        # a routing header with segments left would be refused on receipt, but a quote is
        # only stepped over
        (IPv6ExtHdrRouting(type=0, segleft=1, addresses=["fd00::9"]),),
        (IPv6ExtHdrFragment(offset=0, m=1, id=3),),  # a first fragment holds the whole chain
        (IPv6ExtHdrFragment(offset=0, m=0, id=3), IPv6ExtHdrDestOpt()),
    ],
    ids=["plain", "hbh-dstopt", "routing", "first-fragment", "atomic-fragment"],
)
def test_parse_quoted_walks_to_the_upper_layer(headers: tuple[Packet, ...]) -> None:
    original = sent_tcp(*headers, size=3000, seq=0xCAFEF00D)
    data = error_packet(type=icmpv6.PACKET_TOO_BIG, code=0, value=1400, original=original)
    msg = icmpv6.parse(data[40:], PEER_INT, LOCAL_INT)
    q = icmpv6.parse_quoted(msg)
    assert (q.src, q.dst, q.next_header) == (LOCAL_INT, PEER_INT, ipv6.PROTO_TCP)
    assert (q.src_port, q.dst_port, q.seq) == (40000, 80, 0xCAFEF00D)
    assert q.payload_length == len(original) - 40
    chain = sum(len(raw(h)) for h in headers)
    assert bytes(q.transport) == original[40 + chain : 1232]


def test_parse_quoted_from_scapy() -> None:
    quote = IPv6(src=LOCAL, dst=PEER) / TCP(sport=40001, dport=8080, seq=5)
    q = icmpv6.parse_quoted(from_peer(ICMPv6DestUnreach(code=4) / quote))
    assert (q.src, q.dst, q.src_port, q.dst_port, q.seq) == (LOCAL_INT, PEER_INT, 40001, 8080, 5)
    line = icmpv6.format(from_peer(ICMPv6DestUnreach(code=4) / quote))
    assert line == "ICMP6, destination unreachable port fd00:7::1 tcp port 8080, length 68"


def quoted_reason(original: bytes, type_: int = icmpv6.DEST_UNREACH) -> str:
    msg = icmpv6.Icmpv6Message(type_, 0, 0, 0, 0, 0, memoryview(original))
    with pytest.raises(ParseError) as exc_info:
        icmpv6.parse_quoted(msg)
    return exc_info.value.reason


def test_parse_quoted_malformed() -> None:
    original = sent_tcp(IPv6ExtHdrDestOpt(), size=0)
    assert quoted_reason(original[:39]) == "icmpv6_quote_truncated"
    assert quoted_reason(original[:47]) == "icmpv6_quote_truncated"  # inside the chain
    assert quoted_reason(original[:55]) == "icmpv6_quote_truncated"  # 7 upper-layer octets
    assert icmpv6.parse_quoted(
        icmpv6.Icmpv6Message(1, 0, 0, 0, 0, 0, memoryview(original[:56]))
    ).seq == (0xDEADBEEF)
    assert quoted_reason(b"\x45" + original[1:]) == "icmpv6_quote_bad_version"
    assert quoted_reason(original, icmpv6.ECHO_REPLY) == "icmpv6_quote_not_error"
    later = sent_tcp(IPv6ExtHdrFragment(offset=10, m=1, id=3))
    assert quoted_reason(later) == "icmpv6_quote_not_first_fragment"
    nothing = raw(IPv6(src=LOCAL, dst=PEER) / IPv6ExtHdrDestOpt(nh=59) / Raw(b"x" * 8))
    assert quoted_reason(nothing) == "icmpv6_quote_no_upper_layer"
    nine = bytearray(raw(IPv6(src=LOCAL, dst=PEER, nh=60)) + (bytes([60]) + bytes(7)) * 9)
    assert quoted_reason(bytes(nine) + bytes(8)) == "icmpv6_quote_malformed"


def test_format_of_other_errors() -> None:
    quote = raw(IPv6(src=LOCAL, dst=PEER) / TCP())
    exceeded = from_peer(ICMPv6TimeExceeded(code=0) / Raw(quote))
    assert icmpv6.format(exceeded) == "ICMP6, time exceeded in-transit, length 68"
    unreach = from_peer(ICMPv6DestUnreach(code=0) / Raw(b"short"))
    assert icmpv6.format(unreach) == "ICMP6, destination unreachable route, length 13"
    odd = from_peer(ICMPv6DestUnreach(code=9) / Raw(quote))
    assert icmpv6.format(odd) == "ICMP6, destination code 9 fd00:7::1 tcp port 80, length 68"
    assert icmpv6.format(icmpv6.Icmpv6Message(200, 3, 0, 0, 0, 0, memoryview(b""))) == (
        "ICMP6, type 200, code 3, length 8"
    )


# --- fuzzing -----------------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=160), verify=st.booleans())
def test_random_bytes_raise_only_parse_error(data: bytes, verify: bool) -> None:
    try:
        msg = icmpv6.parse(data, PEER_INT, LOCAL_INT, verify_checksum=verify)
    except ParseError as e:
        assert e.reason.startswith("icmpv6_")
        return
    assert isinstance(icmpv6.format(msg), str)
    try:
        icmpv6.parse_quoted(msg)
    except ParseError as e:
        assert e.reason.startswith("icmpv6_quote_")


@settings(max_examples=2000, deadline=None)
@given(
    type_=st.integers(1, 4),
    nh=st.sampled_from([0, 6, 43, 44, 59, 60]),
    body=st.binary(max_size=120),
)
def test_random_quotes_raise_only_parse_error(type_: int, nh: int, body: bytes) -> None:
    # a plausible fixed header in front of random bytes reaches the quoted walk
    chain = bytearray(body)
    for i in range(0, len(chain), 8):
        chain[i] = (0, 6, 43, 44, 59, 60)[chain[i] % 6]
    quoted = raw(IPv6(src=LOCAL, dst=PEER, nh=nh, plen=len(chain))) + bytes(chain)
    msg = icmpv6.Icmpv6Message(type_, 0, 0, 0, 0, 0, memoryview(quoted))
    try:
        q = icmpv6.parse_quoted(msg)
    except ParseError as e:
        assert e.reason.startswith("icmpv6_quote_")
        return
    assert len(q.transport) >= 8
    assert isinstance(icmpv6.format(msg), str)
