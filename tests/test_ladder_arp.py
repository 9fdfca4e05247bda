"""The ladder draws ARP frames from a TAP link: before the first SYN, and on their own."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from ustack.ladder import ARP_INBOUND, ARP_OUTBOUND, Ladder
from ustack.wire import arp, ethernet
from ustack.wire.ipv4 import addr_to_int

OURS = bytes.fromhex("020000000002")
KERNEL_MAC = bytes.fromhex("9a7fbebe0faf")
US, KERNEL = addr_to_int("10.7.0.2"), addr_to_int("10.7.0.1")


def request() -> bytes:
    return ethernet.header(ethernet.BROADCAST, KERNEL_MAC, ethernet.ETHERTYPE_ARP) + arp.build(
        op=arp.OP_REQUEST, sha=KERNEL_MAC, spa=KERNEL, tha=bytes(6), tpa=US
    )


def reply() -> bytes:
    return ethernet.header(KERNEL_MAC, OURS, ethernet.ETHERTYPE_ARP) + arp.build(
        op=arp.OP_REPLY, sha=OURS, spa=US, tha=KERNEL_MAC, tpa=KERNEL
    )


def syn() -> bytes:
    return bytes(IP(src="10.7.0.1", dst="10.7.0.2") / TCP(sport=40000, dport=80, flags="S", seq=7))


def arrows(text: str) -> list[str]:
    return [
        line.split("|")[1].strip(" -<>")
        for line in text.splitlines()
        if "-->" in line or "<--" in line
    ]


def test_arp_rows_open_the_next_connections_ladder() -> None:
    ladder = Ladder()
    ladder.packet(1.0, ARP_INBOUND, request())
    ladder.packet(1.001, ARP_OUTBOUND, reply())
    ladder.packet(1.002, "in", syn())
    text = ladder.render()
    assert arrows(text) == [
        "ARP who-has 10.7.0.2? tell 10.7.0.1",
        "ARP 10.7.0.2 is-at 02:00:00:00:00:02",
        "S   seq=0 win=8192 len=0",
    ]
    lines = text.splitlines()
    assert lines[0].split() == ["time", "kernel", "10.7.0.1:40000", "ustack", "10.7.0.2:80"]
    assert lines[1].startswith("   0.000ms") and lines[1].rstrip().endswith(">|")  # kernel -> us
    assert "|<--" in lines[2]  # us -> kernel


def test_arp_without_a_connection_gets_a_block_of_its_own() -> None:
    ladder = Ladder()
    ladder.arp(5.0, "in", request())
    lines = ladder.render().splitlines()
    assert lines[0].split() == ["time", "kernel", "(ARP)", "ustack", "(ARP)"]
    assert arrows("\n".join(lines)) == ["ARP who-has 10.7.0.2? tell 10.7.0.1"]


def test_arp_during_a_connection_goes_to_the_newest() -> None:
    ladder = Ladder()
    ladder.packet(1.0, "in", syn())
    ladder.packet(2.0, ARP_INBOUND, request())
    assert arrows(ladder.render())[-1] == "ARP who-has 10.7.0.2? tell 10.7.0.1"


def test_garbage_arp_frames_are_not_drawn() -> None:
    ladder = Ladder()
    ladder.packet(1.0, ARP_INBOUND, request()[:30])
    ladder.packet(1.0, ARP_INBOUND, b"")
    assert ladder.render() == ""


def test_neighbor_discovery_rows() -> None:
    from scapy.layers.inet6 import (
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptSrcLLAddr,
        IPv6,
    )
    from scapy.layers.l2 import Ether

    ns = (
        Ether(src="9a:7f:be:be:0f:af", dst="33:33:ff:00:00:02")
        / IPv6(src="fd00:7::1", dst="ff02::1:ff00:2", hlim=255)
        / ICMPv6ND_NS(tgt="fd00:7::2")
        / ICMPv6NDOptSrcLLAddr(lladdr="9a:7f:be:be:0f:af")
    )
    na = (
        Ether(src="02:00:00:00:00:02", dst="9a:7f:be:be:0f:af")
        / IPv6(src="fd00:7::2", dst="fd00:7::1", hlim=255)
        / ICMPv6ND_NA(tgt="fd00:7::2", S=1, O=1, R=0)
        / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02")
    )
    ladder = Ladder()
    ladder.packet(1.0, ARP_INBOUND, bytes(ns))
    ladder.packet(1.001, ARP_OUTBOUND, bytes(na))
    broken = bytearray(bytes(na))
    broken[-1] ^= 1  # a bad checksum: not drawn
    ladder.packet(1.002, ARP_OUTBOUND, bytes(broken))
    assert arrows(ladder.render()) == [
        "ND who-has fd00:7::2? tell fd00:7::1",
        "ND fd00:7::2 is-at 02:00:00:00:00:02",
    ]
