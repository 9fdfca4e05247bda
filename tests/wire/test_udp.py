"""UDP (RFC 768): parse and emit over both pseudo-headers, scapy as the oracle both ways, the
family rules for a zero checksum, malformed input and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from ustack.wire import checksum, ipv4, ipv6, udp
from ustack.wire.errors import ParseError

SRC4, DST4 = "10.0.2.100", "10.9.0.2"
SRC6, DST6 = "fd00:2::100", "fd00:9::2"
PSEUDO4 = checksum.ipv4_pseudo_header_sum(
    ipv4.addr_to_int(SRC4), ipv4.addr_to_int(DST4), udp.PROTO, 0
)
PSEUDO6 = ipv6.pseudo_header_sum(ipv6.addr_to_int(SRC6), ipv6.addr_to_int(DST6), udp.PROTO, 0)


def scapy_udp4(payload: bytes, sport: int = 40000, dport: int = 53) -> bytes:
    """The UDP part of a datagram scapy builds (and checksums) over IPv4."""
    return raw(IP(raw(IP(src=SRC4, dst=DST4) / UDP(sport=sport, dport=dport) / payload)))[20:]


def scapy_udp6(payload: bytes, sport: int = 40000, dport: int = 53) -> bytes:
    return raw(IPv6(src=SRC6, dst=DST6) / UDP(sport=sport, dport=dport) / payload)[40:]


@pytest.mark.parametrize("payload", [b"", b"x", b"hello, dns", bytes(range(256)) * 5])
def test_parse_what_scapy_builds_ipv4(payload: bytes) -> None:
    d = udp.parse(scapy_udp4(payload), PSEUDO4)
    assert (d.src_port, d.dst_port, bytes(d.payload)) == (40000, 53, payload)


@pytest.mark.parametrize("payload", [b"", b"x", b"hello, dns", bytes(range(256)) * 5])
def test_parse_what_scapy_builds_ipv6(payload: bytes) -> None:
    d = udp.parse(scapy_udp6(payload), PSEUDO6, ipv6=True)
    assert (d.src_port, d.dst_port, bytes(d.payload)) == (40000, 53, payload)


@pytest.mark.parametrize("payload", [b"", b"odd", b"even", bytes(range(256)) * 5])
def test_emit_is_what_scapy_builds(payload: bytes) -> None:
    for pseudo, oracle in ((PSEUDO4, scapy_udp4), (PSEUDO6, scapy_udp6)):
        buf = bytearray(3 + udp.HEADER_LEN + len(payload))
        n = udp.emit(buf, 3, src_port=40000, dst_port=53, payload=payload, pseudo=pseudo)
        assert n == udp.HEADER_LEN + len(payload)
        assert bytes(buf[3:]) == oracle(payload)


def test_scapy_accepts_what_we_emit() -> None:
    payload = b"\x12\x34 a query"
    buf = bytearray(20 + udp.HEADER_LEN + len(payload))
    n = udp.emit(buf, 20, src_port=5353, dst_port=53, payload=payload, pseudo=PSEUDO4)
    ipv4.emit(
        buf,
        0,
        src=ipv4.addr_to_int(SRC4),
        dst=ipv4.addr_to_int(DST4),
        proto=udp.PROTO,
        payload_len=n,
    )
    pkt = IP(bytes(buf))
    sent = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert IP(raw(pkt))[UDP].chksum == sent
    assert bytes(pkt[UDP].payload) == payload


def test_a_computed_zero_checksum_goes_out_as_all_ones() -> None:
    # Find a payload whose checksum computes to zero: the 16-bit word that cancels the rest.
    buf = bytearray(udp.HEADER_LEN + 2)
    udp.emit(buf, 0, src_port=1, dst_port=2, payload=b"\0\0", pseudo=PSEUDO4)
    fix = int.from_bytes(buf[6:8], "big")
    payload = fix.to_bytes(2, "big")
    udp.emit(buf, 0, src_port=1, dst_port=2, payload=payload, pseudo=PSEUDO4)
    assert buf[6:8] == b"\xff\xff"
    assert bytes(udp.parse(buf, PSEUDO4).payload) == payload


def test_zero_checksum_means_none_over_ipv4_and_is_invalid_over_ipv6() -> None:
    data = bytearray(scapy_udp4(b"abc"))
    data[6:8] = b"\0\0"
    assert bytes(udp.parse(data, PSEUDO4).payload) == b"abc"
    data6 = bytearray(scapy_udp6(b"abc"))
    data6[6:8] = b"\0\0"
    with pytest.raises(ParseError) as exc:
        udp.parse(data6, PSEUDO6, ipv6=True)
    assert exc.value.reason == "udp_zero_checksum_ipv6"


def test_a_damaged_datagram_fails_its_checksum() -> None:
    data = bytearray(scapy_udp4(b"payload"))
    data[-1] ^= 0x01
    with pytest.raises(ParseError) as exc:
        udp.parse(data, PSEUDO4)
    assert exc.value.reason == "udp_bad_checksum"
    assert exc.value.integrity
    # the pseudo-header is covered too: the same bytes from another address fail
    with pytest.raises(ParseError):
        udp.parse(scapy_udp4(b"payload"), PSEUDO4 + 1)
    assert udp.parse(data, PSEUDO4, verify_checksum=False).payload.tobytes()[:-1] == b"payloa"


def test_octets_after_the_length_are_not_the_datagrams() -> None:
    data = scapy_udp4(b"abc") + b"\0\0\0\0"  # link padding after the datagram
    assert bytes(udp.parse(data, PSEUDO4).payload) == b"abc"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "udp_truncated"),
        (b"\0" * 7, "udp_truncated"),
        (b"\x00\x01\x00\x02\x00\x07\x00\x00", "udp_bad_length"),  # shorter than the header
        (b"\x00\x01\x00\x02\x00\x0a\x00\x00" + b"x", "udp_bad_length"),  # beyond the buffer
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        udp.parse(data, PSEUDO4)
    assert exc.value.reason == reason


def test_emit_refuses_what_cannot_be_a_datagram() -> None:
    with pytest.raises(ValueError):
        udp.emit(bytearray(8), 0, src_port=1, dst_port=2, payload=b"x", pseudo=0)
    with pytest.raises(ValueError):
        udp.emit(bytearray(9), 0, src_port=70000, dst_port=2, payload=b"x", pseudo=0)
    with pytest.raises(ValueError):
        too_big = bytes(udp.MAX_PAYLOAD_LEN + 1)
        udp.emit(bytearray(len(too_big) + 8), 0, src_port=1, dst_port=2, payload=too_big, pseudo=0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_random_bytes_raise_only_parse_error(data: bytes, v6: bool) -> None:
    try:
        d = udp.parse(data, PSEUDO6 if v6 else PSEUDO4, ipv6=v6)
    except ParseError:
        return
    assert len(d.payload) <= len(data) - udp.HEADER_LEN
