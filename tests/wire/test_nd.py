"""Neighbor Solicitation and Advertisement (RFC 4861 4.3, 4.4, 7.1): scapy as the oracle,
and every validity check of 7.1.1/7.1.2 refusing with its reason."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.packet import Packet

from ustack.wire import ethernet, nd
from ustack.wire.errors import ParseError


def a(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


KERNEL, US = a("fd00:7::1"), a("fd00:7::2")
MAC = "9a:7f:be:be:0f:af"
OURS = bytes.fromhex("020000000002")


def icmp(pkt: Packet) -> tuple[bytes, int, int, int]:
    """The ICMPv6 message of a scapy packet, with its header's src, dst and hop limit."""
    raw = bytes(pkt)
    return raw[40:], a(pkt.src), a(pkt.dst), pkt.hlim


def test_solicited_node_and_its_mac() -> None:
    group = nd.solicited_node(US)
    assert ipaddress.IPv6Address(group) == ipaddress.IPv6Address("ff02::1:ff00:2")
    assert ethernet.mac_to_text(ethernet.ipv6_multicast_mac(group)) == "33:33:ff:00:00:02"
    assert ethernet.ipv6_multicast_mac(nd.ALL_NODES) == bytes.fromhex("333300000001")


def test_parse_scapy_solicitation() -> None:
    pkt = (
        IPv6(src="fd00:7::1", dst="ff02::1:ff00:2", hlim=255)
        / ICMPv6ND_NS(tgt="fd00:7::2")
        / ICMPv6NDOptSrcLLAddr(lladdr=MAC)
    )
    msg = nd.parse(*icmp(pkt))
    assert msg == nd.NdMessage(nd.NEIGHBOR_SOLICITATION, US, bytes.fromhex("9a7fbebe0faf"))


def test_parse_scapy_advertisement_skipping_other_options() -> None:
    pkt = (
        IPv6(src="fd00:7::1", dst="fd00:7::2", hlim=255)
        / ICMPv6ND_NA(tgt="fd00:7::1", R=0, S=1, O=1)
        / ICMPv6NDOptMTU(mtu=1500)
        / ICMPv6NDOptDstLLAddr(lladdr=MAC)
    )
    msg = nd.parse(*icmp(pkt))
    assert msg.type == nd.NEIGHBOR_ADVERTISEMENT and msg.target == KERNEL
    assert msg.lladdr == bytes.fromhex("9a7fbebe0faf")
    assert (msg.router, msg.solicited, msg.override) == (False, True, True)


def test_emitted_solicitation_is_what_scapy_reads() -> None:
    buf = bytearray(nd.message_len(OURS))
    group = nd.solicited_node(KERNEL)
    assert nd.emit_solicitation(buf, 0, src=US, dst=group, target=KERNEL, lladdr=OURS) == 32
    dst = str(ipaddress.IPv6Address(group))
    head = IPv6(src="fd00:7::2", dst=dst, hlim=255, nh=58, plen=len(buf))
    pkt = IPv6(bytes(head) + bytes(buf))
    ns = pkt[ICMPv6ND_NS]
    assert ns.tgt == "fd00:7::1"
    assert ns[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:02"
    # scapy's own checksum for the same message equals ours
    fresh = (
        IPv6(src="fd00:7::2", dst=str(ipaddress.IPv6Address(group)), hlim=255)
        / ICMPv6ND_NS(tgt="fd00:7::1")
        / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:02")
    )
    assert bytes(fresh)[40:] == bytes(buf)


def test_emitted_advertisement_is_what_scapy_builds() -> None:
    buf = bytearray(nd.message_len(OURS))
    nd.emit_advertisement(buf, 0, src=US, dst=KERNEL, target=US, lladdr=OURS, solicited=True)
    fresh = (
        IPv6(src="fd00:7::2", dst="fd00:7::1", hlim=255)
        / ICMPv6ND_NA(tgt="fd00:7::2", R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02")
    )
    assert bytes(fresh)[40:] == bytes(buf)
    assert nd.parse(bytes(buf), US, KERNEL, 255).solicited


def ns(
    *, src: str = "fd00:7::1", dst: str = "ff02::1:ff00:2", hlim: int = 255, **icmp: object
) -> Packet:
    fields: dict[str, object] = {"tgt": "fd00:7::2", **icmp}
    return IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (ns(hlim=64) / ICMPv6NDOptSrcLLAddr(lladdr=MAC), "nd_bad_hop_limit"),
        (ns(code=1) / ICMPv6NDOptSrcLLAddr(lladdr=MAC), "nd_bad_code"),
        (ns(tgt="ff02::1") / ICMPv6NDOptSrcLLAddr(lladdr=MAC), "nd_multicast_target"),
        (ns() / b"\x01\x00\x00\x00\x00\x00\x00\x00", "nd_bad_option"),  # length 0
        (ns() / b"\x01\x02\x00\x00\x00\x00\x00\x00", "nd_bad_option"),  # runs past the end
        (ns() / b"\x01", "nd_bad_option"),
        (ns(src="::") / ICMPv6NDOptSrcLLAddr(lladdr=MAC), "nd_bad_dad"),  # DAD with an SLLA
        (ns(src="::", dst="fd00:7::2"), "nd_bad_dad"),  # DAD not to the solicited-node group
        (
            IPv6(src="fd00:7::1", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="fd00:7::1", S=1),
            "nd_solicited_to_multicast",
        ),
    ],
)
def test_invalid(pkt: Packet, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        nd.parse(*icmp(pkt))
    assert info.value.reason == reason


def test_bad_checksum_truncated_and_other_types() -> None:
    raw, src, dst, hlim = icmp(ns() / ICMPv6NDOptSrcLLAddr(lladdr=MAC))
    broken = bytearray(raw)
    broken[20] ^= 1
    with pytest.raises(ParseError) as info:
        nd.parse(bytes(broken), src, dst, hlim)
    assert info.value.reason == "nd_bad_checksum" and info.value.integrity
    with pytest.raises(ParseError, match="nd_truncated"):
        nd.parse(raw[:23], src, dst, hlim)
    with pytest.raises(ParseError, match="nd_not_resolution"):
        nd.parse(b"\x85" + raw[1:], src, dst, hlim)  # a Router Solicitation


def test_dad_probe_is_valid_without_option() -> None:
    msg = nd.parse(*icmp(ns(src="::")))
    assert msg.lladdr is None and msg.target == US


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    try:
        nd.parse(data, KERNEL, US, 255)
    except ParseError:
        pass
