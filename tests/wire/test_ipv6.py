"""IPv6 header and extension headers: vectors, scapy both ways, every malformed case, fuzzing,
and the pseudo-header sum against scapy's TCP checksum."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    HBHOptUnknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
    Jumbo,
    Pad1,
    PadN,
    RouterAlert,
)
from scapy.packet import Packet, Raw

from ustack.wire import checksum, ipv6
from ustack.wire.errors import ParseError
from ustack.wire.ipv6 import ParameterProblem

LOCAL = "fd00:7::2"
PEER = "fd00:7::1"
LOCAL_INT = ipv6.addr_to_int(LOCAL)
PEER_INT = ipv6.addr_to_int(PEER)

# Hand-assembled: version 6, traffic class 0x12, flow label 0x34567, payload length 4, next
# header TCP, hop limit 64, fd00:7::1 -> fd00:7::2, then four payload octets.
KNOWN_HEADER = bytes.fromhex(
    "61234567" "0004" "06" "40"
    "fd000007000000000000000000000001"
    "fd000007000000000000000000000002"
)  # fmt: skip
KNOWN = KNOWN_HEADER + b"\xde\xad\xbe\xef"


def build(pkt: Packet) -> bytes:
    return raw(pkt)


def base(**kw: Any) -> IPv6:
    return IPv6(src=PEER, dst=LOCAL, **kw)


def ext(nh: int, body: bytes) -> bytes:
    """A raw Options/Routing-style extension header: next header, length in 8-octet units past
    the first, then ``body`` (which must make the total a multiple of 8)."""
    assert (len(body) + 2) % 8 == 0
    return bytes([nh, (len(body) + 2) // 8 - 1]) + body


def packet(first_nh: int, rest: bytes, *, plen: int | None = None) -> bytes:
    """A fixed header with ``first_nh`` in front of ``rest`` (extension headers and payload)."""
    header = bytearray(40)
    ipv6.emit(
        header,
        0,
        src=PEER_INT,
        dst=LOCAL_INT,
        next_header=first_nh,
        payload_len=len(rest) if plen is None else plen,
    )
    return bytes(header) + rest


def options(opts: bytes, nh: int = ipv6.PROTO_TCP) -> bytes:
    """An Options header holding ``opts`` padded to 8 octets with PadN/Pad1 (as RFC 8200 4.2)."""
    pad = (-(len(opts) + 2)) % 8
    if pad == 1:
        opts += b"\x00"
    elif pad:
        opts += bytes([1, pad - 2]) + bytes(pad - 2)
    return ext(nh, opts)


def reason_of(buf: bytes) -> str:
    with pytest.raises(ParseError) as exc_info:
        ipv6.parse(buf)
    return exc_info.value.reason


def problem_of(buf: bytes) -> ParameterProblem:
    with pytest.raises(ParameterProblem) as exc_info:
        ipv6.parse(buf)
    return exc_info.value


# --- fixed vectors -----------------------------------------------------------------------------


def test_parse_known_vector() -> None:
    p = ipv6.parse(KNOWN)
    assert (p.traffic_class, p.flow_label, p.payload_length, p.next_header, p.hop_limit) == (
        0x12,
        0x34567,
        4,
        6,
        64,
    )
    assert (p.src, p.dst) == (PEER_INT, LOCAL_INT)
    assert (p.proto, p.proto_pointer, p.payload_offset) == (6, 6, 40)
    assert (p.ext_headers, p.fragment, p.skipped_options, p.is_fragment) == ((), None, 0, False)
    assert bytes(p.payload) == b"\xde\xad\xbe\xef"


def test_emit_known_vector_byte_for_byte() -> None:
    buf = bytearray(b"\xff" * 50)
    n = ipv6.emit(
        buf,
        10,
        src=PEER_INT,
        dst=LOCAL_INT,
        next_header=ipv6.PROTO_TCP,
        payload_len=4,
        hop_limit=64,
        flow_label=0x34567,
        traffic_class=0x12,
    )
    assert n == ipv6.HEADER_LEN == 40
    assert bytes(buf[10:]) == KNOWN_HEADER
    assert buf[:10] == b"\xff" * 10


def test_payload_is_a_view_and_trailing_bytes_are_trimmed() -> None:
    buf = bytearray(KNOWN + b"\xee" * 6)  # link padding after the packet
    p = ipv6.parse(buf)
    assert bytes(p.payload) == b"\xde\xad\xbe\xef"
    buf[40] = 0x11
    assert p.payload[0] == 0x11  # a view into the caller's buffer, not a copy


def test_addresses() -> None:
    assert LOCAL_INT == 0xFD000007000000000000000000000002
    assert ipv6.int_to_addr(LOCAL_INT) == "fd00:7::2"
    assert ipv6.int_to_addr(0) == "::"
    assert ipv6.addr_to_int("::ffff:10.7.0.1") == 0xFFFF0A070001
    for bad in ("10.7.0.1", "fd00::7::1", ""):
        with pytest.raises(ValueError):
            ipv6.addr_to_int(bad)
    for bad_int in (-1, 1 << 128):
        with pytest.raises(ValueError):
            ipv6.int_to_addr(bad_int)


def test_emit_rejects_misuse() -> None:
    good: dict[str, int] = {"src": 1, "dst": 2, "next_header": 6, "payload_len": 0}
    for change in (
        {"payload_len": 0x10000},
        {"payload_len": -1},
        {"flow_label": 1 << 20},
        {"traffic_class": 256},
        {"hop_limit": 256},
        {"next_header": 256},
        {"src": 1 << 128},
        {"dst": -1},
    ):
        with pytest.raises(ValueError):
            ipv6.emit(bytearray(40), 0, **{**good, **change})
    with pytest.raises(ValueError):
        ipv6.emit(bytearray(39), 0, **good)
    with pytest.raises(ValueError):
        ipv6.emit(bytearray(60), 21, **good)
    assert ipv6.emit(bytearray(60), 20, **good) == 40


def test_format() -> None:
    assert ipv6.format(ipv6.parse(KNOWN)) == (
        "(class 0x12, flowlabel 0x34567, hlim 64, next-header TCP (6), payload length 4)"
    )
    frag = build(
        base(hlim=3)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrFragment(offset=2, m=1, id=0xABC, nh=17)
        / Raw(b"x" * 8)
    )
    assert ipv6.format(ipv6.parse(frag)) == (
        "(hlim 3, next-header UDP (17), payload length 24) HBH frag (id 0xabc, offset 16+)"
    )


# --- scapy builds, we parse --------------------------------------------------------------------

TCP_SEG = TCP(sport=40000, dport=80, seq=0x01020304, flags="S") / Raw(b"hello")
CHAINS: dict[str, list[Packet]] = {
    "none": [],
    "hbh": [IPv6ExtHdrHopByHop(options=[RouterAlert()])],
    "dstopt": [IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])],
    "routing-sl0": [IPv6ExtHdrRouting(type=0, segleft=0, addresses=["fd00::9"])],
    "srh-sl0": [IPv6ExtHdrSegmentRouting(addresses=["fd00::9"], segleft=0)],
    "atomic-fragment": [IPv6ExtHdrFragment(offset=0, m=0, id=7)],
    "all": [
        IPv6ExtHdrHopByHop(options=[Pad1(), PadN(optdata=b"\0\0")]),
        IPv6ExtHdrDestOpt(),
        IPv6ExtHdrRouting(type=0, segleft=0, addresses=[]),
        IPv6ExtHdrFragment(offset=0, m=0, id=0xFFFFFFFF),
        IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=b"skip")]),
    ],
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_scapy_built_chains_reach_the_upper_layer(name: str) -> None:
    chain = CHAINS[name]
    pkt: Packet = base(tc=0xB8, fl=0xABCDE, hlim=255)
    for header in chain:
        pkt = pkt / header
    data = build(pkt / TCP_SEG)
    p = ipv6.parse(data)
    upper = build(TCP_SEG)  # the checksum is computed without an IP header: skip it
    assert (p.proto, p.payload_offset) == (ipv6.PROTO_TCP, len(data) - len(upper))
    assert bytes(p.payload[:16]) + bytes(p.payload[18:]) == upper[:16] + upper[18:]
    assert (p.traffic_class, p.flow_label, p.hop_limit) == (0xB8, 0xABCDE, 255)
    assert (p.src, p.dst, p.payload_length) == (PEER_INT, LOCAL_INT, len(data) - 40)
    assert len(p.ext_headers) == len(chain)
    assert p.is_fragment is False
    # the field naming the upper layer: 6 with no extension headers, else the last one's first
    assert data[p.proto_pointer] == ipv6.PROTO_TCP
    assert p.proto_pointer == (6 if not chain else p.payload_offset - len(build(chain[-1])))


def test_scapy_chain_details() -> None:
    data = build(base() / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(id=0xFEEDF00D) / TCP_SEG)
    p = ipv6.parse(data)
    assert p.ext_headers == (ipv6.DSTOPTS, ipv6.FRAGMENT)
    assert p.fragment == ipv6.Fragment(0, False, 0xFEEDF00D, ipv6.PROTO_TCP, 48, 40)
    assert p.fragment is not None and p.fragment.atomic  # RFC 6946: processed as unfragmented
    all_chain = build(base() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP_SEG)
    q = ipv6.parse(all_chain)
    assert q.ext_headers == (ipv6.HOPOPTS, ipv6.DSTOPTS) and q.skipped_options == 0


def test_skipped_options_are_counted() -> None:
    opts = [HBHOptUnknown(otype=0x1E, optdata=b"a"), HBHOptUnknown(otype=0x3F, optdata=b"")]
    p = ipv6.parse(build(base() / IPv6ExtHdrHopByHop(options=opts) / TCP_SEG))
    assert p.skipped_options == 2 and p.proto == ipv6.PROTO_TCP


def test_first_fragment_ends_the_walk() -> None:
    data = build(
        base()
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrFragment(offset=0, m=1, id=99)
        / IPv6ExtHdrDestOpt()
        / Raw(b"y" * 16)
    )
    p = ipv6.parse(data)
    assert p.is_fragment and p.fragment is not None and not p.fragment.atomic
    assert (p.fragment.offset, p.fragment.more, p.fragment.ident) == (0, True, 99)
    assert (p.fragment.header_offset, p.fragment.named_at) == (48, 40)
    # the fragmentable part (the Destination Options header included) is left to reassembly
    assert (p.proto, p.proto_pointer, p.payload_offset) == (ipv6.DSTOPTS, 48, 56)
    assert len(p.payload) == 24


def test_last_fragment() -> None:
    data = build(base() / IPv6ExtHdrFragment(offset=185, m=0, id=5, nh=6) / Raw(b"z" * 3))
    p = ipv6.parse(data)
    assert p.is_fragment and p.fragment is not None
    assert (p.fragment.offset, p.fragment.more, p.proto, len(p.payload)) == (1480, False, 6, 3)


def test_no_next_header_ends_the_walk() -> None:
    data = build(base() / IPv6ExtHdrDestOpt(nh=ipv6.NO_NEXT_HEADER) / Raw(b"ignored"))
    p = ipv6.parse(data)
    assert (p.proto, p.payload_offset, p.ext_headers) == (59, 48, (ipv6.DSTOPTS,))


def test_unknown_next_header_gives_the_pointer() -> None:
    # RFC 8200 4: Parameter Problem code 1 pointing at the Next Header field naming it
    data = packet(ipv6.DSTOPTS, options(b"", nh=253) + b"data")
    p = ipv6.parse(data)
    assert (p.proto, p.proto_pointer, bytes(p.payload)) == (253, 40, b"data")
    q = ipv6.parse(packet(143, b"data"))
    assert (q.proto, q.proto_pointer) == (143, 6)


# --- we emit, scapy parses ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    src=st.integers(0, (1 << 128) - 1),
    dst=st.integers(0, (1 << 128) - 1),
    nh=st.integers(0, 255),
    payload=st.binary(max_size=64),
    hlim=st.integers(0, 255),
    fl=st.integers(0, 0xFFFFF),
    tc=st.integers(0, 255),
)
def test_emit_agrees_with_scapy(
    src: int, dst: int, nh: int, payload: bytes, hlim: int, fl: int, tc: int
) -> None:
    buf = bytearray(40 + len(payload))
    ipv6.emit(
        buf,
        0,
        src=src,
        dst=dst,
        next_header=nh,
        payload_len=len(payload),
        hop_limit=hlim,
        flow_label=fl,
        traffic_class=tc,
    )
    buf[40:] = payload
    # scapy dissects only the header: its own parsers for the next header (a Routing header,
    # say) can crash on a payload that is random bytes
    s = IPv6(bytes(buf[:40]))
    assert (s.version, s.tc, s.fl, s.plen, s.nh, s.hlim) == (6, tc, fl, len(payload), nh, hlim)
    assert (ipv6.addr_to_int(s.src), ipv6.addr_to_int(s.dst)) == (src, dst)
    # and scapy's build of the same header is byte-for-byte ours
    again = IPv6(src=s.src, dst=s.dst, nh=nh, hlim=hlim, fl=fl, tc=tc, plen=len(payload))
    assert build(again) == bytes(buf[:40])


# --- the pseudo-header sum ---------------------------------------------------------------------


@pytest.mark.parametrize("chain", ["none", "hbh", "all"])
@pytest.mark.parametrize("size", [0, 1, 1000])
def test_pseudo_header_sum_checks_scapy_tcp(
    checksum_impl: ModuleType, chain: str, size: int
) -> None:
    pkt: Packet = base()
    for header in CHAINS[chain]:
        pkt = pkt / header
    data = build(pkt / TCP(sport=1234, dport=443, seq=7, flags="PA") / Raw(b"\xa5" * size))
    p = ipv6.parse(data)
    tcp_bytes = bytearray(p.payload)
    pseudo = ipv6.pseudo_header_sum(p.src, p.dst, ipv6.PROTO_TCP, len(tcp_bytes))
    assert checksum_impl.internet_checksum(tcp_bytes, pseudo) == 0
    scapy_sum = struct.unpack_from("!H", tcp_bytes, 16)[0]
    tcp_bytes[16:18] = b"\0\0"
    assert checksum_impl.internet_checksum(tcp_bytes, pseudo) == scapy_sum


@settings(max_examples=300, deadline=None)
@given(
    src=st.integers(0, (1 << 128) - 1) | st.just(0),
    dst=st.integers(0, (1 << 128) - 1) | st.just((1 << 128) - 1),
    nh=st.integers(0, 255),
    length=st.integers(0, 0xFFFFFFFF) | st.just(0),
)
def test_pseudo_header_sum_is_the_sum_of_the_pseudo_header(
    src: int, dst: int, nh: int, length: int
) -> None:
    # RFC 8200 8.1's layout: source, destination, 32-bit length, three zero octets, next header
    pseudo = src.to_bytes(16, "big") + dst.to_bytes(16, "big") + struct.pack("!I3xB", length, nh)
    assert ipv6.pseudo_header_sum(src, dst, nh, length) == checksum.partial_sum(pseudo)


def test_pseudo_header_sum_rejects_out_of_range() -> None:
    assert ipv6.pseudo_header_sum(0, 0, 0, 0) == 0
    for args in ((1 << 128, 0, 6, 0), (0, -1, 6, 0), (0, 0, 256, 0), (0, 0, 6, 1 << 32)):
        with pytest.raises(ValueError):
            ipv6.pseudo_header_sum(*args)


# --- malformed input ---------------------------------------------------------------------------


def test_truncated_fixed_header() -> None:
    for n in (0, 1, 39):
        assert reason_of(KNOWN[:n]) == "ipv6_truncated"


def test_bad_version() -> None:
    for first in (0x45, 0x00, 0x75, 0xF0):
        assert reason_of(bytes([first]) + KNOWN[1:]) == "ipv6_bad_version"


def test_payload_length_beyond_buffer() -> None:
    assert reason_of(KNOWN[:-1]) == "ipv6_truncated"
    assert reason_of(packet(ipv6.PROTO_TCP, b"abc", plen=4)) == "ipv6_truncated"


def test_too_many_extension_headers() -> None:
    nine = b"".join(options(b"", nh=ipv6.DSTOPTS) for _ in range(8)) + options(b"")
    assert reason_of(packet(ipv6.DSTOPTS, nine)) == "ipv6_too_many_ext_headers"
    eight = b"".join(options(b"", nh=ipv6.DSTOPTS) for _ in range(7)) + options(b"")
    assert len(ipv6.parse(packet(ipv6.DSTOPTS, eight)).ext_headers) == ipv6.MAX_EXTENSION_HEADERS


def routing_sl0(nh: int, units: int) -> bytes:
    """A Routing header of ``units`` + 1 octets times 8, Segments Left 0: ignored, not walked."""
    return bytes([nh, units, 0, 0]) + bytes(units * 8 + 4)


def test_extension_header_chain_too_long() -> None:
    # exactly the 1240 octets the minimum MTU leaves after the fixed header is accepted...
    limit = routing_sl0(ipv6.PROTO_TCP, 154)
    assert len(limit) == ipv6.MAX_CHAIN_LEN == 1240
    assert ipv6.parse(packet(ipv6.ROUTING, limit)).payload_offset == 1280
    # ...and eight more are not
    over = routing_sl0(ipv6.DSTOPTS, 154) + options(b"")
    assert reason_of(packet(ipv6.ROUTING, over)) == "ipv6_ext_headers_too_long"
    assert reason_of(packet(ipv6.ROUTING, routing_sl0(6, 200))) == "ipv6_ext_headers_too_long"


def test_extension_header_overruns_payload() -> None:
    # a Destination Options header claiming 16 octets in an 8-octet payload
    assert reason_of(packet(ipv6.DSTOPTS, bytes([6, 1]) + bytes(6))) == "ipv6_ext_header_truncated"
    # fewer than 8 octets left for the next header
    assert reason_of(packet(ipv6.DSTOPTS, bytes([6, 0, 1, 2]))) == "ipv6_ext_header_truncated"
    assert reason_of(packet(ipv6.FRAGMENT, bytes(7))) == "ipv6_ext_header_truncated"
    # the bytes are in the buffer, but past the Payload Length: still truncated
    full = packet(ipv6.DSTOPTS, options(b"", nh=ipv6.ROUTING) + bytes([6, 0, 0, 0, 0, 0, 0, 0]))
    short = bytearray(full)
    short[4:6] = (12).to_bytes(2, "big")
    assert reason_of(bytes(short)) == "ipv6_ext_header_truncated"


def test_hop_by_hop_not_first() -> None:
    data = build(base() / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP_SEG)
    e = problem_of(data)
    assert (e.reason, e.code, e.pointer) == ("ipv6_hop_by_hop_not_first", 1, 40)
    assert e.even_if_multicast is False


def test_routing_type_0_with_segments_left() -> None:
    data = build(base() / IPv6ExtHdrRouting(type=0, segleft=1, addresses=["fd00::9"]) / TCP_SEG)
    e = problem_of(data)
    # RFC 5095 3: treated as an unrecognised routing type; pointer at the Routing Type field
    assert (e.reason, e.code, e.pointer) == ("ipv6_routing_type0", 0, 42)


def test_unsupported_routing_type_with_segments_left() -> None:
    data = build(
        base() / IPv6ExtHdrHopByHop() / IPv6ExtHdrSegmentRouting(addresses=["fd00::9"], segleft=1)
    )
    e = problem_of(data + build(TCP_SEG))
    assert (e.reason, e.code, e.pointer) == ("ipv6_routing_unsupported", 0, 50)


def test_option_walk_overrun() -> None:
    # an option whose length runs past the header (one option of 6 claims 7 data octets)
    assert reason_of(packet(ipv6.DSTOPTS, ext(6, bytes([0x1E, 5]) + bytes(4)))) == (
        "ipv6_option_truncated"
    )
    # an option type in the last octet with no room for its length
    hdr = ext(6, bytes([1, 3, 0, 0, 0, 0x1E]))
    assert reason_of(packet(ipv6.HOPOPTS, hdr)) == "ipv6_option_truncated"


@pytest.mark.parametrize(
    ("otype", "reason", "multicast"),
    [
        (0x5E, "ipv6_option_unknown_discard", None),  # 01: discard
        (0x9E, "ipv6_option_unknown", True),  # 10: discard, Parameter Problem even to multicast
        (0xDE, "ipv6_option_unknown", False),  # 11: discard, Parameter Problem unless multicast
    ],
)
@pytest.mark.parametrize("header", [ipv6.HOPOPTS, ipv6.DSTOPTS])
def test_unrecognised_option_actions(
    otype: int, reason: str, multicast: bool | None, header: int
) -> None:
    # RFC 8200 4.2: the two high-order bits of the option type say what to do
    data = packet(header, options(bytes([0x1E, 0]) + bytes([otype, 2, 9, 9])) + b"tcp")
    with pytest.raises(ParseError) as exc_info:
        ipv6.parse(data)
    e = exc_info.value
    assert e.reason == reason
    if multicast is None:
        assert not isinstance(e, ParameterProblem)
    else:
        assert isinstance(e, ParameterProblem)
        assert (e.code, e.pointer, e.even_if_multicast) == (2, 44, multicast)
        assert data[e.pointer] == otype


def test_padding_rules() -> None:
    # seven octets of padding are the most alignment needs (RFC 4942 2.1.9.5)
    seven = ext(59, bytes([0x1E, 5]) + bytes(5) + bytes(7))  # an option, then 7 Pad1
    seven = packet(ipv6.DSTOPTS, ext(ipv6.DSTOPTS, bytes(6)) + seven)
    assert ipv6.parse(seven).proto == ipv6.NO_NEXT_HEADER
    eight = ext(6, bytes([0x1E, 0]) + bytes(12))  # an option, then 12 Pad1
    assert reason_of(packet(ipv6.DSTOPTS, eight)) == "ipv6_option_bad_padding"
    padn_8 = ext(6, bytes([0x1E, 0]) + bytes([1, 6]) + bytes(6) + bytes([0x1E, 0]) * 2)
    assert reason_of(packet(ipv6.DSTOPTS, padn_8)) == "ipv6_option_bad_padding"
    nonzero = ext(6, bytes([1, 4, 0, 0, 7, 0]))
    assert reason_of(packet(ipv6.DSTOPTS, nonzero)) == "ipv6_option_bad_padding"


def test_too_many_options() -> None:
    nine = bytes([0x1E, 0]) * 9
    assert reason_of(packet(ipv6.HOPOPTS, options(nine))) == "ipv6_too_many_options"
    assert ipv6.parse(packet(ipv6.HOPOPTS, options(bytes([0x1E, 0]) * 8))).skipped_options == 8


def test_jumbogram_is_unsupported() -> None:
    data = build(base(plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]) / TCP_SEG)
    assert struct.unpack_from("!H", data, 4)[0] == 0
    assert reason_of(data) == "ipv6_jumbogram_unsupported"
    # payload length 0 with a Hop-by-Hop header and no Jumbo option is only truncated
    plain = bytearray(build(base() / IPv6ExtHdrHopByHop() / TCP_SEG))
    plain[4:6] = b"\0\0"
    assert reason_of(bytes(plain)) == "ipv6_ext_header_truncated"


def test_jumbo_option_with_payload_length() -> None:
    # RFC 2675 3: a Jumbo option in a packet whose Payload Length is not zero is an error
    data = build(base() / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]) / TCP_SEG)
    e = problem_of(data)
    assert (e.reason, e.code, e.pointer) == ("ipv6_jumbo_bad_length", 0, 42)


def test_fragment_checks() -> None:
    # RFC 8200 4.5: a fragment with M set must be a multiple of 8 octets long
    odd = build(base() / IPv6ExtHdrFragment(offset=0, m=1, id=1) / Raw(b"x" * 9))
    e = problem_of(odd)
    assert (e.reason, e.code, e.pointer) == ("ipv6_fragment_bad_length", 0, 4)
    # ...and must not reach past octet 65535 of the reassembled packet
    late = build(base() / IPv6ExtHdrFragment(offset=8190, m=0, id=1) / Raw(b"x" * 24))
    e = problem_of(late)
    assert (e.reason, e.code, e.pointer) == ("ipv6_fragment_too_long", 0, 42)
    fits = build(base() / IPv6ExtHdrFragment(offset=8190, m=0, id=1) / Raw(b"x" * 15))
    assert ipv6.parse(fits).is_fragment


# --- fuzzing -----------------------------------------------------------------------------------


def parse_or_reject(buf: bytes) -> None:
    try:
        p = ipv6.parse(buf)
    except ParameterProblem as e:
        assert e.reason.startswith("ipv6_") and 0 <= e.pointer < len(buf) and 0 <= e.code <= 2
        return
    except ParseError as e:
        assert e.reason.startswith("ipv6_") and " " not in e.reason
        return
    assert 40 <= p.payload_offset <= 40 + p.payload_length <= len(buf)
    assert len(p.ext_headers) <= ipv6.MAX_EXTENSION_HEADERS
    assert isinstance(ipv6.format(p), str)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    parse_or_reject(data)


EXT_TYPES = st.sampled_from([0, 6, 43, 44, 59, 60, 253])


@settings(max_examples=3000, deadline=None)
@given(first=EXT_TYPES, body=st.binary(max_size=120), cut=st.integers(0, 8))
def test_random_extension_chains_raise_only_parse_error(first: int, body: bytes, cut: int) -> None:
    # a valid fixed header in front of random bytes reaches the walk; some plausible next-header
    # values are planted at 8-octet boundaries so walks go several headers deep
    chain = bytearray(body)
    for i in range(0, len(chain), 8):
        chain[i] = (0, 6, 43, 44, 59, 60, 253, 60)[chain[i] % 8]
        if i + 1 < len(chain):
            chain[i + 1] %= 3
    data = packet(first, bytes(chain))
    parse_or_reject(data)
    parse_or_reject(data[: max(40, len(data) - cut)])
