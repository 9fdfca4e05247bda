"""ARP for IPv4 over Ethernet (RFC 826): vectors, round trips, malformed input, scapy as oracle."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP

from ustack.wire import arp
from ustack.wire.errors import ParseError
from ustack.wire.ipv4 import addr_to_int

OURS = bytes.fromhex("02000000000a")
KERNEL = bytes.fromhex("9a7fbebe0faf")
US = addr_to_int("10.7.0.2")
THEM = addr_to_int("10.7.0.1")

# The request Linux sends on a TAP device before its first packet to 10.7.0.2 (the ARP part,
# kernel MAC from one run of tests/tun/test_tap.py).
LINUX_REQUEST = bytes.fromhex("00010800060400019a7fbebe0faf0a0700010000000000000a070002")


def test_linux_request() -> None:
    pkt = arp.parse(LINUX_REQUEST)
    assert pkt == arp.ArpPacket(arp.OP_REQUEST, KERNEL, THEM, bytes(6), US)
    assert not pkt.is_probe and not pkt.is_announcement
    assert arp.summary(pkt) == "who-has 10.7.0.2? tell 10.7.0.1"


def test_parse_scapy_reply() -> None:
    raw = bytes(
        ARP(
            op=2,
            hwsrc="02:00:00:00:00:0a",
            psrc="10.7.0.2",
            hwdst="9a:7f:be:be:0f:af",
            pdst="10.7.0.1",
        )
    )
    pkt = arp.parse(raw)
    assert pkt == arp.ArpPacket(arp.OP_REPLY, OURS, US, KERNEL, THEM)
    assert arp.summary(pkt) == "10.7.0.2 is-at 02:00:00:00:00:0a"


def test_build_is_what_scapy_reads() -> None:
    raw = arp.build(op=arp.OP_REPLY, sha=OURS, spa=US, tha=KERNEL, tpa=THEM)
    assert len(raw) == arp.PACKET_LEN
    s = ARP(raw)
    assert (s.hwtype, s.ptype, s.hwlen, s.plen, s.op) == (1, 0x0800, 6, 4, 2)
    assert (s.hwsrc, s.psrc, s.hwdst, s.pdst) == (
        "02:00:00:00:00:0a",
        "10.7.0.2",
        "9a:7f:be:be:0f:af",
        "10.7.0.1",
    )
    # and byte for byte what scapy builds from the same fields
    assert raw == bytes(
        ARP(
            op=2,
            hwsrc="02:00:00:00:00:0a",
            psrc="10.7.0.2",
            hwdst="9a:7f:be:be:0f:af",
            pdst="10.7.0.1",
        )
    )


def test_emit_at_an_offset() -> None:
    buf = bytearray(40)
    assert arp.emit(buf, 5, op=1, sha=OURS, spa=US, tha=bytes(6), tpa=THEM) == 28
    assert arp.parse(buf[5:]) == arp.ArpPacket(1, OURS, US, bytes(6), THEM)
    assert buf[:5] == bytes(5) and buf[33:] == bytes(7)


def test_probe_and_announcement() -> None:
    probe = arp.parse(bytes(ARP(op=1, hwsrc="9a:7f:be:be:0f:af", psrc="0.0.0.0", pdst="10.7.0.2")))
    assert probe.is_probe and not probe.is_announcement
    assert arp.summary(probe) == "who-has 10.7.0.2? tell 0.0.0.0 (probe)"
    announce = arp.parse(
        bytes(ARP(op=1, hwsrc="02:00:00:00:00:0a", psrc="10.7.0.2", pdst="10.7.0.2"))
    )
    assert announce.is_announcement and not announce.is_probe
    assert arp.summary(announce) == "announce 10.7.0.2 is-at 02:00:00:00:00:0a"


def test_padding_is_ignored() -> None:
    assert arp.parse(LINUX_REQUEST + bytes(18)) == arp.parse(LINUX_REQUEST)


@pytest.mark.parametrize("size", [0, 1, 8, 27])
def test_truncated(size: int) -> None:
    with pytest.raises(ParseError) as info:
        arp.parse(LINUX_REQUEST[:size])
    assert info.value.reason == "arp_truncated"


def _with(offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(LINUX_REQUEST)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_with(0, "!H", 6), "arp_unsupported_hardware"),  # IEEE 802 networks
        (_with(2, "!H", 0x86DD), "arp_unsupported_protocol"),
        (_with(4, "!B", 8), "arp_bad_address_length"),
        (_with(5, "!B", 16), "arp_bad_address_length"),
        (_with(6, "!H", 3), "arp_bad_op"),  # RARP request (RFC 903)
        (_with(6, "!H", 0), "arp_bad_op"),
    ],
)
def test_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        arp.parse(raw)
    assert info.value.reason == reason


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    try:
        pkt = arp.parse(data)
    except ParseError:
        return
    assert arp.build(op=pkt.op, sha=pkt.sha, spa=pkt.spa, tha=pkt.tha, tpa=pkt.tpa) == data[:28]


@given(
    st.sampled_from([arp.OP_REQUEST, arp.OP_REPLY]),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_round_trip(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> None:
    assert arp.parse(arp.build(op=op, sha=sha, spa=spa, tha=tha, tpa=tpa)) == arp.ArpPacket(
        op, sha, spa, tha, tpa
    )
