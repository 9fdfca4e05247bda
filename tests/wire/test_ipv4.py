"""IPv4 header: fixed vectors, round trips, malformed input, scapy as an oracle, Linux packets."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, IPOption_NOP, IPOption_RR
from scapy.packet import Raw

from ustack.wire import checksum, ipv4
from ustack.wire.errors import ParseError

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text())


# The classic worked example (192.168.0.1 -> 192.168.0.199, UDP, 115 bytes): checksum 0xb861.
KNOWN_HEADER = bytes.fromhex("45000073000040004011b861c0a80001c0a800c7")
KNOWN = KNOWN_HEADER + bytes(range(95))


def with_checksum(header: bytearray) -> bytearray:
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum.internet_checksum(header))
    return header


def test_parse_known_vector() -> None:
    p = ipv4.parse(KNOWN)
    assert (p.version, p.header_length, p.tos, p.total_length) == (4, 20, 0, 115)
    assert (p.ident, p.dont_fragment, p.more_fragments, p.frag_offset) == (0, True, False, 0)
    assert (p.ttl, p.proto, p.options, p.is_fragment) == (64, 17, b"", False)
    assert p.src == 0xC0A80001 and p.dst == 0xC0A800C7
    assert bytes(p.payload) == bytes(range(95))


def test_emit_known_vector_byte_for_byte() -> None:
    buf = bytearray(30)
    n = ipv4.emit(
        buf,
        10,
        src=0xC0A80001,
        dst=0xC0A800C7,
        proto=ipv4.PROTO_UDP,
        payload_len=95,
        ident=0,
        ttl=64,
    )
    assert n == ipv4.HEADER_LEN == 20
    assert bytes(buf[10:]) == KNOWN_HEADER
    assert buf[:10] == bytes(10)


def test_emit_df_off_and_tos() -> None:
    buf = bytearray(20)
    ipv4.emit(buf, 0, src=1, dst=2, proto=6, payload_len=0, ident=7, ttl=3, tos=0x10, df=False)
    p = ipv4.parse(buf)
    assert (p.dont_fragment, p.tos, p.ident, p.ttl, p.total_length) == (False, 0x10, 7, 3, 20)
    assert len(p.payload) == 0


def test_emit_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        ipv4.emit(bytearray(19), 0, src=1, dst=2, proto=6, payload_len=0)
    with pytest.raises(ValueError):
        ipv4.emit(bytearray(40), 21, src=1, dst=2, proto=6, payload_len=0)
    with pytest.raises(ValueError):
        ipv4.emit(bytearray(20), 0, src=1, dst=2, proto=6, payload_len=65516)
    with pytest.raises(ValueError):
        ipv4.emit(bytearray(20), 0, src=1, dst=2, proto=6, payload_len=-1)


def test_longer_buffer_is_trimmed_to_total_length() -> None:
    padded = KNOWN + b"\xee" * 7  # e.g. Ethernet padding
    p = ipv4.parse(padded)
    assert p.total_length == 115
    assert bytes(p.payload) == bytes(range(95))


def test_shorter_buffer_than_total_length_is_truncated() -> None:
    with pytest.raises(ParseError) as e:
        ipv4.parse(KNOWN[:-1])
    assert e.value.reason == "ipv4_truncated" and not e.value.integrity


@pytest.mark.parametrize("n", [0, 1, 19])
def test_shorter_than_a_header(n: int) -> None:
    with pytest.raises(ParseError, match="ipv4_truncated"):
        ipv4.parse(KNOWN[:n])


@pytest.mark.parametrize("version", [0, 5, 6, 15])
def test_bad_version(version: int) -> None:
    b = with_checksum(bytearray(KNOWN_HEADER))
    b[0] = (version << 4) | 5
    with pytest.raises(ParseError, match="ipv4_bad_version"):
        ipv4.parse(bytes(with_checksum(b)) + KNOWN[20:])


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_bad_ihl(ihl: int) -> None:
    b = bytearray(KNOWN_HEADER)
    b[0] = 0x40 | ihl
    with pytest.raises(ParseError, match="ipv4_bad_ihl"):
        ipv4.parse(bytes(b) + KNOWN[20:])


def test_ihl_past_the_buffer_is_truncated() -> None:
    b = bytearray(KNOWN_HEADER)
    b[0] = 0x4F  # 60-byte header claimed, 20 present
    with pytest.raises(ParseError, match="ipv4_truncated"):
        ipv4.parse(bytes(b))


@pytest.mark.parametrize("total", [0, 19])
def test_total_length_shorter_than_header(total: int) -> None:
    b = bytearray(KNOWN_HEADER)
    b[2:4] = struct.pack("!H", total)
    with pytest.raises(ParseError) as e:
        ipv4.parse(bytes(with_checksum(b)) + KNOWN[20:])
    assert e.value.reason == "ipv4_bad_total_length" and not e.value.integrity


def test_bad_checksum_is_an_integrity_error() -> None:
    b = bytearray(KNOWN)
    b[8] ^= 0x01  # TTL damaged in flight
    with pytest.raises(ParseError) as e:
        ipv4.parse(b)
    assert e.value.reason == "ipv4_bad_checksum" and e.value.integrity
    assert ipv4.parse(b, verify_checksum=False).ttl == 65


def test_damaged_total_length_is_reported_as_checksum_failure() -> None:
    b = bytearray(KNOWN)
    b[2:4] = struct.pack("!H", 2000)
    with pytest.raises(ParseError, match="ipv4_bad_checksum"):
        ipv4.parse(b)


def test_options_are_skipped_but_kept() -> None:
    options = b"\x07\x07\x04" + bytes(4) + b"\x00"  # record route, one empty slot, then EOL
    header = bytearray(KNOWN_HEADER[:20]) + options
    header[0] = 0x47
    header[2:4] = struct.pack("!H", 28 + 5)
    buf = bytes(with_checksum(header)) + b"hello"
    p = ipv4.parse(buf)
    assert p.header_length == 28 and p.options == options
    assert bytes(p.payload) == b"hello"
    damaged = bytearray(buf)
    damaged[22] ^= 0x04  # an option byte: covered by the header checksum too
    with pytest.raises(ParseError, match="ipv4_bad_checksum"):
        ipv4.parse(damaged)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=17, max_size=17), st.sampled_from([0, 1, 0xFFFF]))
def test_checksum_verdict_matches_the_checksum_module(rest: bytes, fixup: int) -> None:
    # parse() sums option-less headers from the unpacked fields; it must agree with RFC 1071.
    header = bytearray(b"\x45" + rest[:1] + b"\x00\x14" + rest[1:])
    if fixup:
        header[10:12] = b"\0\0"
        header[10:12] = struct.pack("!H", (checksum.internet_checksum(header) + fixup - 1) & 0xFFFF)
    ok = checksum.internet_checksum(header) == 0
    try:
        ipv4.parse(header)
        assert ok
    except ParseError as e:
        assert not ok and e.reason == "ipv4_bad_checksum"


@pytest.mark.parametrize(
    ("field", "df", "mf", "offset"),
    [
        (0x4000, True, False, 0),
        (0x2000, False, True, 0),
        (0x20B9, False, True, 185 * 8),
        (0x1FFF, False, False, 8191 * 8),
    ],
)
def test_fragment_fields(field: int, df: bool, mf: bool, offset: int) -> None:
    b = bytearray(KNOWN_HEADER)
    b[6:8] = struct.pack("!H", field)
    p = ipv4.parse(bytes(with_checksum(b)) + KNOWN[20:])
    assert (p.dont_fragment, p.more_fragments, p.frag_offset) == (df, mf, offset)
    assert p.is_fragment == (mf or offset != 0)


def test_every_prefix_of_a_valid_packet_raises_parse_error_only() -> None:
    for buf in (KNOWN, golden("tcp_syn"), golden("icmp_frag_needed")):
        for n in range(len(buf)):
            with pytest.raises(ParseError):
                ipv4.parse(buf[:n])
        ipv4.parse(buf)


def test_addresses() -> None:
    assert ipv4.addr_to_int("10.7.0.1") == 0x0A070001
    assert ipv4.addr_to_int("255.255.255.255") == 0xFFFFFFFF
    assert ipv4.int_to_addr(0x0A070002) == "10.7.0.2"
    assert ipv4.int_to_addr(0) == "0.0.0.0"
    for bad in ("10.7.0", "10.7.0.256", "a.b.c.d", "", "10.7.0.1.2"):
        with pytest.raises(ValueError):
            ipv4.addr_to_int(bad)
    for bad_int in (-1, 2**32):
        with pytest.raises(ValueError):
            ipv4.int_to_addr(bad_int)


@given(st.integers(0, 2**32 - 1))
def test_address_round_trip(a: int) -> None:
    assert ipv4.addr_to_int(ipv4.int_to_addr(a)) == a


def test_format_header() -> None:
    assert ipv4.format(ipv4.parse(KNOWN)) == (
        "(tos 0x0, ttl 64, id 0, offset 0, flags [DF], proto UDP (17), length 115)"
    )


headers = st.fixed_dictionaries(
    {
        "src": st.integers(0, 2**32 - 1),
        "dst": st.integers(0, 2**32 - 1),
        "proto": st.integers(0, 255),
        "payload_len": st.integers(0, 300),
        "ident": st.integers(0, 0xFFFF),
        "ttl": st.integers(0, 255),
        "tos": st.integers(0, 255),
        "df": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(headers, st.integers(0, 16))
def test_round_trip(h: dict[str, int], offset: int) -> None:
    buf = bytearray(offset + 20 + h["payload_len"])
    payload = bytes((i * 7) & 0xFF for i in range(h["payload_len"]))
    assert ipv4.emit(buf, offset, **h) == 20  # type: ignore[arg-type]
    buf[offset + 20 :] = payload
    p = ipv4.parse(memoryview(buf)[offset:])
    assert (p.src, p.dst, p.proto, p.ident, p.ttl, p.tos) == (
        h["src"],
        h["dst"],
        h["proto"],
        h["ident"],
        h["ttl"],
        h["tos"],
    )
    assert p.dont_fragment == h["df"] and not p.more_fragments and p.frag_offset == 0
    assert p.total_length == 20 + h["payload_len"] and bytes(p.payload) == payload


@settings(max_examples=200, deadline=None)
@given(headers)
def test_scapy_parses_what_ustack_emits(h: dict[str, int]) -> None:
    buf = bytearray(20 + h["payload_len"])
    ipv4.emit(buf, 0, **h)  # type: ignore[arg-type]
    s = IP(bytes(buf))
    assert (s.version, s.ihl, s.len, s.id, s.ttl, s.proto, s.tos) == (
        4,
        5,
        20 + h["payload_len"],
        h["ident"],
        h["ttl"],
        h["proto"],
        h["tos"],
    )
    assert s.src == ipv4.int_to_addr(h["src"]) and s.dst == ipv4.int_to_addr(h["dst"])
    assert bool(s.flags.DF) == bool(h["df"]) and s.frag == 0
    # scapy's own checksum of the same header equals ours
    theirs = IP(bytes(buf))
    del theirs.chksum
    assert IP(bytes(theirs)).chksum == s.chksum


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 8191),
    st.sampled_from(["", "DF", "MF"]),
    st.binary(max_size=64),
    st.booleans(),
)
def test_ustack_parses_what_scapy_builds(
    src: int, dst: int, ident: int, frag: int, flags: str, data: bytes, with_options: bool
) -> None:
    options = [IPOption_NOP(), IPOption_RR(routers=["1.2.3.4"])] if with_options else []
    pkt = IP(
        src=ipv4.int_to_addr(src),
        dst=ipv4.int_to_addr(dst),
        id=ident,
        frag=frag,
        flags=flags,
        proto=253,
        ttl=17,
        tos=0x28,
        options=options,
    ) / Raw(data)
    raw = bytes(pkt)
    p = ipv4.parse(raw + b"\0" * 3)
    assert (p.src, p.dst, p.ident, p.ttl, p.tos, p.proto) == (src, dst, ident, 17, 0x28, 253)
    assert p.frag_offset == frag * 8
    assert p.dont_fragment == (flags == "DF") and p.more_fragments == (flags == "MF")
    assert p.header_length == IP(raw).ihl * 4 and p.options == raw[20 : p.header_length]
    assert bytes(p.payload) == data


def test_linux_packets() -> None:
    # Facts the kernel's own packets show (see golden/PROVENANCE.md).
    syn = ipv4.parse(golden("tcp_syn"))
    assert (syn.proto, syn.ttl, syn.tos, syn.dont_fragment, syn.header_length) == (
        6,
        64,
        0,
        True,
        20,
    )
    assert (syn.src, syn.dst) == (ipv4.addr_to_int("10.7.0.1"), ipv4.addr_to_int("10.7.0.2"))
    assert syn.total_length == 60 and len(syn.payload) == 40
    # ICMP errors go out with precedence "internetwork control" (tos 0xc0) and without DF.
    err = ipv4.parse(golden("icmp_port_unreach"))
    assert (err.proto, err.tos, err.dont_fragment) == (1, 0xC0, False)
    # Linux's RST for a closed port carries IP id 0 with DF set.
    rst = ipv4.parse(golden("tcp_rst_closed_port"))
    assert (rst.ident, rst.dont_fragment, rst.total_length) == (0, True, 40)
    # Re-emitting the header fields gives the kernel's bytes (same checksum).
    buf = bytearray(20)
    ipv4.emit(buf, 0, src=syn.src, dst=syn.dst, proto=6, payload_len=40, ident=syn.ident, ttl=64)
    assert bytes(buf) == golden("tcp_syn")[:20]
