"""Ethernet II framing (RFC 894) and MAC helpers: vectors, round trips, scapy as the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether, getmacbyip

from ustack.wire import ethernet
from ustack.wire.errors import ParseError
from ustack.wire.ipv4 import addr_to_int

OURS = bytes.fromhex("02000000000a")
KERNEL = bytes.fromhex("9a7fbebe0faf")


def test_parse_a_scapy_frame() -> None:
    raw = bytes(Ether(dst="02:00:00:00:00:0a", src="9a:7f:be:be:0f:af") / IP() / TCP())
    f = ethernet.parse(raw)
    assert (f.dst, f.src, f.ethertype) == (OURS, KERNEL, ethernet.ETHERTYPE_IPV4)
    assert bytes(f.payload) == raw[14:]
    assert isinstance(f.payload, memoryview)


@pytest.mark.parametrize(
    ("ethertype", "layer"),
    [(ethernet.ETHERTYPE_IPV4, "IP"), (ethernet.ETHERTYPE_ARP, "ARP"), (0x86DD, "IPv6")],
)
def test_header_is_what_scapy_reads(ethertype: int, layer: str) -> None:
    payload = bytes(IP()) if layer == "IP" else bytes(ARP()) if layer == "ARP" else bytes(40)
    frame = Ether(ethernet.header(ethernet.BROADCAST, OURS, ethertype) + payload)
    assert frame.dst == "ff:ff:ff:ff:ff:ff"
    assert frame.src == "02:00:00:00:00:0a"
    assert frame.type == ethertype
    assert frame.payload.name == {"IP": "IP", "ARP": "ARP", "IPv6": "IPv6"}[layer]


def test_emit_into_a_buffer_at_an_offset() -> None:
    buf = bytearray(20)
    assert ethernet.emit(buf, 3, KERNEL, OURS, ethernet.ETHERTYPE_ARP) == ethernet.HEADER_LEN
    assert bytes(buf[3:17]) == KERNEL + OURS + b"\x08\x06"
    assert buf[:3] == bytes(3) and buf[17:] == bytes(3)


def test_padding_stays_in_the_payload() -> None:
    # RFC 894 pads short data to 46 octets; the layer above stops at its own length.
    raw = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:0a") / ARP())
    padded = raw + bytes(18)
    assert len(ethernet.parse(padded).payload) == 46


@pytest.mark.parametrize("size", range(14))
def test_truncated(size: int) -> None:
    with pytest.raises(ParseError) as info:
        ethernet.parse(bytes(size))
    assert info.value.reason == "ethernet_truncated"


def test_8023_length_field_is_not_ethernet_ii() -> None:
    frame = ethernet.header(ethernet.BROADCAST, OURS, 0x0026) + bytes(38)  # LLC, e.g. STP
    with pytest.raises(ParseError) as info:
        ethernet.parse(frame)
    assert info.value.reason == "ethernet_8023_length"
    # 0x0600 is the first EtherType
    assert ethernet.parse(ethernet.header(OURS, KERNEL, 0x0600)).ethertype == 0x0600


def test_mac_text_round_trip() -> None:
    assert ethernet.mac_to_text(KERNEL) == "9a:7f:be:be:0f:af"
    assert ethernet.mac_from_text("9a:7f:be:be:0f:af") == KERNEL
    assert ethernet.mac_from_text("9A-7F-BE-BE-F-AF") == bytes.fromhex("9a7fbebe0faf")


@pytest.mark.parametrize(
    "text", ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "02:00:00:00:00:zz", "020:0:0:0:0:0"]
)
def test_bad_mac_text(text: str) -> None:
    with pytest.raises(ValueError, match="bad MAC address"):
        ethernet.mac_from_text(text)


def test_group_and_local_bits() -> None:
    assert ethernet.is_group(ethernet.BROADCAST)
    assert ethernet.is_group(bytes.fromhex("01005e000001"))
    assert not ethernet.is_group(OURS)
    assert ethernet.is_locally_administered(OURS)
    assert not ethernet.is_locally_administered(bytes.fromhex("001122334455"))


@given(st.binary(min_size=6, max_size=6))
def test_local_mac_is_unicast_and_local(seed: bytes) -> None:
    mac = ethernet.local_mac(seed)
    assert not ethernet.is_group(mac)
    assert ethernet.is_locally_administered(mac)
    assert mac[1:] == seed[1:]


def test_local_mac_needs_six_octets() -> None:
    with pytest.raises(ValueError, match="6 octets"):
        ethernet.local_mac(b"12345")


@pytest.mark.parametrize("group", ["224.0.0.1", "239.255.255.250", "224.128.1.2", "238.1.2.3"])
def test_ipv4_multicast_mac_is_scapys(group: str) -> None:
    assert ethernet.mac_to_text(ethernet.ipv4_multicast_mac(addr_to_int(group))) == getmacbyip(
        group
    )


def test_format_frame() -> None:
    f = ethernet.parse(
        ethernet.header(ethernet.BROADCAST, OURS, ethernet.ETHERTYPE_ARP) + bytes(28)
    )
    assert ethernet.format_frame(f) == (
        "02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42"
    )


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    try:
        f = ethernet.parse(data)
    except ParseError:
        return
    assert ethernet.header(f.dst, f.src, f.ethertype) + bytes(f.payload) == data
