"""The sans-IO Ethernet/ARP layer on a virtual clock: RFC 826 answering and merging, RFC 5227
announcements and probes, the neighbour cache's timers and bounds, every drop counted; and IPv6's
Neighbor Discovery (RFC 4861 NS/NA) in the same cache, with scapy reading what it sends."""

from __future__ import annotations

from socket import AF_INET6, inet_pton

import pytest
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.utils6 import in6_getnsmac

from ustack.stack.arp import ArpConfig, ArpLayer, NeighbourState
from ustack.tcp.stats import Stats
from ustack.wire import addr, arp, ethernet, ipv4, ipv6
from ustack.wire.ipv4 import addr_to_int

OURS = bytes.fromhex("02000000000a")
KERNEL = bytes.fromhex("9a7fbebe0faf")
OTHER = bytes.fromhex("0a0000000003")
US = addr_to_int("10.7.0.2")
GW = addr_to_int("10.7.0.1")
NEIGHBOUR = addr_to_int("10.7.0.3")
T0 = 1000.0


def layer(**config: int | float) -> ArpLayer:
    # No announcements unless a test asks: they would sit in every output.
    config.setdefault("announce_num", 0)
    return ArpLayer(OURS, US, prefixlen=24, gateway=GW, config=ArpConfig(**config))  # type: ignore[arg-type]


def arp_frame(
    op: int, sha: bytes, spa: int, tpa: int, *, tha: bytes = bytes(6), dst: bytes | None = None
) -> bytes:
    if dst is None:
        dst = ethernet.BROADCAST if op == arp.OP_REQUEST else OURS
    return ethernet.header(dst, sha, ethernet.ETHERTYPE_ARP) + arp.build(
        op=op, sha=sha, spa=spa, tha=tha, tpa=tpa
    )


def ip_packet(dst: int, payload: bytes = b"x", src: int = US) -> bytes:
    buf = bytearray(20 + len(payload))
    ipv4.emit(buf, 0, src=src, dst=dst, proto=ipv4.PROTO_TCP, payload_len=len(payload), ident=1)
    buf[20:] = payload
    return bytes(buf)


def sent_arp(frames: list[bytes]) -> list[tuple[bytes, arp.ArpPacket]]:
    """(destination MAC, ARP packet) of each frame, checking each is an ARP frame from us."""
    out = []
    for frame in frames:
        f = ethernet.parse(frame)
        assert f.src == OURS and f.ethertype == ethernet.ETHERTYPE_ARP
        assert len(frame) == 60  # RFC 894 minimum: 46 octets of data
        out.append((f.dst, arp.parse(f.payload)))
    return out


def arp_counters(stats: Stats) -> dict[str, int]:
    return {k: v for k, v in stats.nonzero().items() if k.startswith(("eth_", "arp_"))}


def resolved(lay: ArpLayer, now: float = T0) -> None:
    """Make the kernel a REACHABLE neighbour by its request for us."""
    lay.receive(arp_frame(arp.OP_REQUEST, KERNEL, GW, US), now)
    lay.frames_to_send()
    lay.stats.reset()


# -- answering (RFC 826) ------------------------------------------------------------------


def test_request_for_us_is_answered_and_the_requester_learned() -> None:
    lay = layer()
    assert lay.receive(arp_frame(arp.OP_REQUEST, KERNEL, GW, US), T0) is None
    [(dst, reply)] = sent_arp(lay.frames_to_send())
    # RFC 826: swapped, our addresses as sender, sent to the requester's hardware address
    assert dst == KERNEL
    assert reply == arp.ArpPacket(arp.OP_REPLY, OURS, US, KERNEL, GW)
    assert lay.neighbours(T0) == [
        {"address": "10.7.0.1", "mac": "9a:7f:be:be:0f:af", "state": "REACHABLE", "queued": 0}
    ]
    assert arp_counters(lay.stats) == {
        "eth_rx": 1,
        "arp_rx": 1,
        "arp_learned": 1,
        "arp_requests_answered": 1,
    }


def test_request_for_another_address_is_not_answered_nor_learned() -> None:
    lay = layer()
    lay.receive(arp_frame(arp.OP_REQUEST, KERNEL, GW, NEIGHBOUR), T0)
    assert lay.frames_to_send() == []
    assert lay.neighbours(T0) == []
    assert arp_counters(lay.stats) == {"eth_rx": 1, "arp_rx": 1, "arp_other_target": 1}


def test_merge_rule_updates_a_known_sender_whoever_the_target() -> None:
    lay = layer()
    resolved(lay)
    # The kernel's MAC changed; it tells someone else (not us): RFC 826 merges anyway.
    lay.receive(arp_frame(arp.OP_REQUEST, OTHER, GW, NEIGHBOUR), T0 + 1)
    assert lay.frames_to_send() == []
    [entry] = lay.neighbours(T0 + 1)
    assert entry["mac"] == "0a:00:00:00:00:03"
    assert entry["state"] == "STALE"  # a new address not yet confirmed (as Linux)
    assert arp_counters(lay.stats) == {
        "eth_rx": 1,
        "arp_rx": 1,
        "arp_merged": 1,
        "arp_other_target": 1,
    }
    # packets now go to the new address
    header = lay.resolve(ip_packet(GW), T0 + 1)
    assert header is not None and header[:6] == OTHER


def test_merge_when_targeted_confirms_and_does_not_add_twice() -> None:
    lay = layer()
    resolved(lay)
    lay.receive(arp_frame(arp.OP_REQUEST, KERNEL, GW, US), T0 + 20)
    assert len(lay.frames_to_send()) == 1
    assert arp_counters(lay.stats) == {
        "eth_rx": 1,
        "arp_rx": 1,
        "arp_merged": 1,
        "arp_requests_answered": 1,
    }
    assert lay.lookup(GW) is not None and lay.lookup(GW).updated == T0 + 20  # type: ignore[union-attr]


def test_probe_is_answered_and_nothing_learned() -> None:
    lay = layer()
    lay.receive(arp_frame(arp.OP_REQUEST, KERNEL, 0, US), T0)
    [(dst, reply)] = sent_arp(lay.frames_to_send())
    assert dst == KERNEL
    assert reply == arp.ArpPacket(arp.OP_REPLY, OURS, US, KERNEL, 0)
    assert lay.neighbours(T0) == []
    assert arp_counters(lay.stats) == {"eth_rx": 1, "arp_rx": 1, "arp_probes_answered": 1}


def test_announcement_from_a_neighbour_updates_only_what_we_hold() -> None:
    lay = layer()
    lay.receive(arp_frame(arp.OP_REQUEST, OTHER, NEIGHBOUR, NEIGHBOUR), T0)
    assert lay.neighbours(T0) == []
    resolved(lay)
    lay.receive(arp_frame(arp.OP_REQUEST, OTHER, GW, GW), T0 + 1)
    assert lay.neighbours(T0 + 1)[0]["mac"] == "0a:00:00:00:00:03"
    assert lay.stats.arp_merged == 1


def test_someone_claiming_our_address_is_a_conflict() -> None:
    lay = layer()
    lay.receive(arp_frame(arp.OP_REPLY, OTHER, US, US), T0)
    assert lay.frames_to_send() == [] and lay.neighbours(T0) == []
    assert arp_counters(lay.stats) == {"eth_rx": 1, "arp_rx": 1, "arp_conflict": 1}


@pytest.mark.parametrize(
    ("sha", "spa"),
    [
        (ethernet.BROADCAST, GW),
        (bytes.fromhex("01005e000001"), GW),
        (bytes(6), GW),
        (KERNEL, addr_to_int("224.0.0.1")),
        (KERNEL, addr_to_int("255.255.255.255")),
        (KERNEL, addr_to_int("127.0.0.1")),
    ],
)
def test_bogus_sender_is_dropped(sha: bytes, spa: int) -> None:
    lay = layer()
    frame = ethernet.header(ethernet.BROADCAST, KERNEL, ethernet.ETHERTYPE_ARP) + arp.build(
        op=arp.OP_REQUEST, sha=sha, spa=spa, tha=bytes(6), tpa=US
    )
    lay.receive(frame, T0)
    assert lay.frames_to_send() == [] and lay.neighbours(T0) == []
    assert arp_counters(lay.stats) == {"eth_rx": 1, "arp_rx": 1, "arp_bad_sender": 1}


@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (bytes(10), "arp_truncated"),
        (
            b"\x00\x06" + arp.build(op=1, sha=KERNEL, spa=GW, tha=bytes(6), tpa=US)[2:],
            "arp_unsupported_hardware",
        ),
        (arp.build(op=3, sha=KERNEL, spa=GW, tha=bytes(6), tpa=US), "arp_bad_op"),
    ],
)
def test_malformed_arp_is_counted_by_reason(payload: bytes, counter: str) -> None:
    lay = layer()
    lay.receive(ethernet.header(ethernet.BROADCAST, KERNEL, ethernet.ETHERTYPE_ARP) + payload, T0)
    assert lay.frames_to_send() == []
    assert arp_counters(lay.stats) == {"eth_rx": 1, "arp_rx": 1, counter: 1}


# -- frames ---------------------------------------------------------------------------------


def test_ipv4_goes_up_as_a_view() -> None:
    lay = layer()
    packet = ip_packet(US, src=GW)
    up = lay.receive(ethernet.header(OURS, KERNEL, ethernet.ETHERTYPE_IPV4) + packet, T0)
    assert isinstance(up, memoryview) and bytes(up) == packet
    # broadcast frames are ours too
    up = lay.receive(ethernet.header(ethernet.BROADCAST, KERNEL, 0x0800) + packet, T0)
    assert up is not None
    assert arp_counters(lay.stats) == {"eth_rx": 2}


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        (bytes(13), "eth_truncated"),
        (ethernet.header(OURS, KERNEL, 0x0026) + bytes(40), "eth_not_ethernet_ii"),
        (ethernet.header(OTHER, KERNEL, 0x0800) + ip_packet(US), "eth_not_for_us"),
        (
            ethernet.header(bytes.fromhex("01005e000001"), KERNEL, 0x0800) + bytes(20),
            "eth_not_for_us",
        ),
        (
            ethernet.header(bytes.fromhex("333300000001"), KERNEL, 0x86DD) + bytes(40),
            "eth_not_for_us",
        ),
        (
            ethernet.header(OURS, bytes.fromhex("01005e000001"), 0x0800) + bytes(20),
            "eth_bad_source",
        ),
        (ethernet.header(OURS, OURS, 0x0800) + bytes(20), "eth_bad_source"),
        (ethernet.header(OURS, KERNEL, 0x86DD) + bytes(40), "eth_ipv6_unsupported"),
        (ethernet.header(OURS, KERNEL, 0x8100) + bytes(40), "eth_unknown_type"),
    ],
)
def test_frames_dropped_with_a_reason(frame: bytes, counter: str) -> None:
    lay = layer()
    assert lay.receive(frame, T0) is None
    assert arp_counters(lay.stats) == {"eth_rx": 1, counter: 1}


# -- resolution, retransmission, pending queues ----------------------------------------------


def test_unresolved_packet_waits_and_goes_when_the_reply_comes() -> None:
    lay = layer()
    first, second = ip_packet(GW, b"one"), ip_packet(GW, b"two")
    assert lay.resolve(first, T0) is None
    assert lay.resolve(bytearray(second), T0 + 0.1) is None
    [(dst, request)] = sent_arp(lay.frames_to_send())
    assert dst == ethernet.BROADCAST
    assert request == arp.ArpPacket(arp.OP_REQUEST, OURS, US, bytes(6), GW)
    assert lay.next_deadline() == T0 + 1.0
    lay.receive(arp_frame(arp.OP_REPLY, KERNEL, GW, US, tha=OURS), T0 + 0.2)
    released = lay.frames_to_send()
    header = ethernet.header(KERNEL, OURS, ethernet.ETHERTYPE_IPV4)
    assert released == [header + first, header + second]  # in order, whole
    assert lay.next_deadline() is None
    assert lay.resolve(ip_packet(GW), T0 + 0.3) == header
    assert arp_counters(lay.stats) == {
        "eth_rx": 1,
        "arp_rx": 1,
        "arp_requests_sent": 1,
        "arp_queued": 2,
        "arp_queue_sent": 2,
        "arp_merged": 1,  # the INCOMPLETE entry is in the table: RFC 826 merges into it
        "arp_replies_received": 1,
    }


def test_queued_packet_is_a_copy() -> None:
    lay = layer()
    buf = bytearray(ip_packet(GW, b"abc"))
    lay.resolve(memoryview(buf), T0)
    buf[20:] = b"zzz"  # the host reuses its buffer
    lay.frames_to_send()
    lay.receive(arp_frame(arp.OP_REPLY, KERNEL, GW, US, tha=OURS), T0 + 0.1)
    [frame] = lay.frames_to_send()
    assert frame.endswith(b"abc")


def test_request_retransmitted_at_one_second_then_queued_packets_dropped() -> None:
    lay = layer()
    for i in range(2):
        lay.resolve(ip_packet(GW, bytes([i])), T0)
    times = [T0]
    assert len(lay.frames_to_send()) == 1
    now = T0
    while (deadline := lay.next_deadline()) is not None:
        assert deadline == now + 1.0  # RETRANS_TIME
        now = deadline
        lay.on_deadline(now)
        frames = lay.frames_to_send()
        if frames:
            [(dst, request)] = sent_arp(frames)
            assert dst == ethernet.BROADCAST and request.tpa == GW
            times.append(now)
    assert times == [T0, T0 + 1, T0 + 2]  # MAX_REQUESTS = 3
    assert now == T0 + 3
    assert lay.neighbours(now) == []
    assert arp_counters(lay.stats) == {
        "arp_requests_sent": 1,
        "arp_request_retransmits": 2,
        "arp_queued": 2,
        "arp_resolution_failed": 1,
        "arp_unresolved_dropped": 2,
    }
    # A new packet starts over.
    assert lay.resolve(ip_packet(GW), now) is None
    assert len(lay.frames_to_send()) == 1


def test_per_address_queue_keeps_the_latest() -> None:
    lay = layer(queue_per_address=3)
    for i in range(5):
        lay.resolve(ip_packet(GW, bytes([i])), T0)
    lay.frames_to_send()
    lay.receive(arp_frame(arp.OP_REPLY, KERNEL, GW, US, tha=OURS), T0 + 0.1)
    assert [f[-1] for f in lay.frames_to_send()] == [2, 3, 4]  # RFC 1122 2.3.2.2
    assert lay.stats.arp_queue_overflow == 2
    assert lay.stats.arp_queue_sent == 3


def test_total_queue_bound() -> None:
    lay = layer(queue_per_address=2, queue_total=3)
    hosts = [addr_to_int(f"10.7.0.{i}") for i in (3, 4)]
    for h in hosts:
        for i in range(2):
            lay.resolve(ip_packet(h, bytes([i])), T0)
    assert lay.stats.arp_queued == 3
    assert lay.stats.arp_queue_total_full == 1
    assert [n["queued"] for n in lay.neighbours(T0)] == [2, 1]
    # a failed resolution frees its share of the total
    now = T0
    while (d := lay.next_deadline()) is not None:
        now = d
        lay.on_deadline(now)
    assert lay.stats.arp_unresolved_dropped == 3
    lay.resolve(ip_packet(hosts[0]), now)
    lay.resolve(ip_packet(hosts[0]), now)
    lay.resolve(ip_packet(hosts[1]), now)
    assert lay.stats.arp_queue_total_full == 1


def test_off_subnet_goes_to_the_gateway_and_groups_need_no_resolution() -> None:
    lay = layer()
    resolved(lay)
    to_kernel = ethernet.header(KERNEL, OURS, ethernet.ETHERTYPE_IPV4)
    assert lay.resolve(ip_packet(addr_to_int("192.0.2.1")), T0) == to_kernel
    bcast = ethernet.header(ethernet.BROADCAST, OURS, ethernet.ETHERTYPE_IPV4)
    assert lay.resolve(ip_packet(addr_to_int("10.7.0.255")), T0) == bcast
    assert lay.resolve(ip_packet(addr_to_int("255.255.255.255")), T0) == bcast
    mcast = lay.resolve(ip_packet(addr_to_int("224.0.0.251")), T0)
    assert mcast is not None and mcast[:6] == bytes.fromhex("01005e0000fb")
    assert lay.frames_to_send() == []
    assert arp_counters(lay.stats) == {}


def test_no_gateway_no_route() -> None:
    lay = ArpLayer(OURS, US, prefixlen=24, config=ArpConfig(announce_num=0))
    assert lay.resolve(ip_packet(addr_to_int("192.0.2.1")), T0) is None
    assert arp_counters(lay.stats) == {"eth_tx_no_route": 1}


def test_outgoing_ipv6_and_garbage_are_counted() -> None:
    lay = layer()
    assert lay.resolve(b"\x60" + bytes(39), T0) is None
    assert lay.resolve(b"\x45" + bytes(10), T0) is None
    assert arp_counters(lay.stats) == {"eth_tx_ipv6_unsupported": 1, "eth_tx_malformed": 1}


# -- reachability ---------------------------------------------------------------------------


def test_reachable_turns_stale_after_30_s_then_probes_and_is_confirmed() -> None:
    lay = layer()
    resolved(lay)
    header = ethernet.header(KERNEL, OURS, ethernet.ETHERTYPE_IPV4)
    assert lay.resolve(ip_packet(GW), T0 + 29.9) == header
    assert lay.frames_to_send() == []
    # REACHABLE_TIME passed: still sent, but a unicast probe goes out to confirm
    assert lay.resolve(ip_packet(GW), T0 + 30.0) == header
    [(dst, probe)] = sent_arp(lay.frames_to_send())
    assert dst == KERNEL and probe == arp.ArpPacket(arp.OP_REQUEST, OURS, US, bytes(6), GW)
    assert lay.neighbours(T0 + 30)[0]["state"] == "PROBE"
    assert lay.next_deadline() == T0 + 31.0
    lay.receive(arp_frame(arp.OP_REPLY, KERNEL, GW, US, tha=OURS), T0 + 30.001)
    assert lay.neighbours(T0 + 30.001)[0]["state"] == "REACHABLE"
    assert lay.next_deadline() is None
    assert arp_counters(lay.stats) == {
        "eth_rx": 1,
        "arp_rx": 1,
        "arp_merged": 1,
        "arp_replies_received": 1,
        "arp_reachable_expired": 1,
        "arp_probes_sent": 1,
    }


def test_unanswered_probes_remove_the_entry() -> None:
    lay = layer()
    resolved(lay)
    lay.resolve(ip_packet(GW), T0 + 40)
    now = T0 + 40
    while (d := lay.next_deadline()) is not None:
        assert d == now + 1.0
        now = d
        lay.on_deadline(now)
    assert now == T0 + 43
    assert len(sent_arp(lay.frames_to_send())) == 3  # MAX_PROBES unicast requests
    assert lay.neighbours(now) == []
    assert arp_counters(lay.stats) == {
        "arp_reachable_expired": 1,
        "arp_probes_sent": 3,
        "arp_probe_failed": 1,
    }


def test_stale_entry_unused_is_forgotten() -> None:
    lay = layer()
    resolved(lay)
    assert lay.neighbours(T0 + 31)[0]["state"] == "STALE"
    assert lay.resolve(ip_packet(GW), T0 + 61) is None  # STALE_TIME after its last use
    [(dst, _)] = sent_arp(lay.frames_to_send())
    assert dst == ethernet.BROADCAST
    assert lay.stats.arp_stale_forgotten == 1


def test_cache_is_bounded() -> None:
    lay = layer(max_entries=2)
    resolved(lay)
    lay.resolve(ip_packet(NEIGHBOUR), T0)
    # full: the oldest resolved entry (the kernel) makes room
    lay.resolve(ip_packet(addr_to_int("10.7.0.4")), T0)
    assert [n["address"] for n in lay.neighbours(T0)] == ["10.7.0.3", "10.7.0.4"]
    assert lay.stats.arp_evicted == 1
    # full of entries still resolving: the packet is dropped
    assert lay.resolve(ip_packet(addr_to_int("10.7.0.5")), T0) is None
    assert lay.stats.arp_cache_full == 1
    assert len(lay.neighbours(T0)) == 2


# -- announcements (RFC 5227 2.3) -----------------------------------------------------------


def test_announcements_at_start() -> None:
    lay = ArpLayer(OURS, US, gateway=GW)
    assert lay.next_deadline() == 0.0  # due at once: the first timer sends it
    lay.on_deadline(T0)
    lay.on_deadline(T0 + 1)  # nothing due yet
    assert lay.next_deadline() == T0 + 2.0  # ANNOUNCE_INTERVAL
    lay.on_deadline(T0 + 2)
    assert lay.next_deadline() is None  # ANNOUNCE_NUM = 2
    sent = sent_arp(lay.frames_to_send())
    announcement = arp.ArpPacket(arp.OP_REQUEST, OURS, US, bytes(6), US)
    assert sent == [(ethernet.BROADCAST, announcement)] * 2
    assert arp_counters(lay.stats) == {"arp_announcements_sent": 2}


def test_share_stats_carries_counts_over() -> None:
    lay = ArpLayer(OURS, US, gateway=GW)
    lay.on_deadline(T0)
    host = Stats()
    host.ip_rx = 5
    lay.share_stats(host)
    lay.receive(arp_frame(arp.OP_REQUEST, KERNEL, GW, US), T0)
    assert arp_counters(host) == {
        "arp_announcements_sent": 1,
        "eth_rx": 1,
        "arp_rx": 1,
        "arp_learned": 1,
        "arp_requests_answered": 1,
    }
    assert host.ip_rx == 5


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="unicast MAC"):
        ArpLayer(ethernet.BROADCAST, US)
    with pytest.raises(ValueError, match="at least 1"):
        ArpConfig(max_requests=0)
    assert NeighbourState.PROBE.value == "PROBE"


# -- IPv6: Neighbor Discovery in the same cache (RFC 4861 7.2) ---------------------------------

US6 = addr.from_text("fd00:7::2")
GW6 = addr.from_text("fd00:7::1")
N6 = addr.from_text("fd00:7::3")
SOLICITED_US = bytes.fromhex("3333ff000002")
KERNEL_TEXT = "9a:7f:be:be:0f:af"


def layer6(**config: int | float) -> ArpLayer:
    config.setdefault("announce_num", 0)
    return ArpLayer(
        OURS,
        US,
        gateway=GW,
        address6=US6,
        prefixlen6=64,
        gateway6=GW6,
        config=ArpConfig(**config),  # type: ignore[arg-type]
    )


def ns_frame(
    src: str = "fd00:7::1", target: str = "fd00:7::2", *, dst: str | None = None, hlim: int = 255
) -> bytes:
    group = "ff02::1:ff00:" + target.rsplit(":", 1)[1]
    pkt = (
        Ether(
            src=KERNEL_TEXT,
            dst="02:00:00:00:00:0a" if dst else in6_getnsmac(inet_pton(AF_INET6, group)),
        )
        / IPv6(src=src, dst=dst or group, hlim=hlim)
        / ICMPv6ND_NS(tgt=target)
    )
    if src != "::":
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=KERNEL_TEXT)
    return bytes(pkt)


def na_frame(target: str = "fd00:7::1", *, s: int = 1, o: int = 1, mac: str = KERNEL_TEXT) -> bytes:
    return bytes(
        Ether(src=mac, dst="02:00:00:00:00:0a")
        / IPv6(src=target, dst="fd00:7::2", hlim=255)
        / ICMPv6ND_NA(tgt=target, S=s, O=o, R=0)
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
    )


def ip6_packet(dst: int, payload: bytes = b"x") -> bytes:
    buf = bytearray(40 + len(payload))
    ipv6.emit(
        buf, 0, src=addr.untag(US6), dst=addr.untag(dst), next_header=6, payload_len=len(payload)
    )
    buf[40:] = payload
    return bytes(buf)


def sent_nd(frames: list[bytes]) -> list[tuple[bytes, IPv6]]:
    out = []
    for frame in frames:
        f = ethernet.parse(frame)
        assert f.src == OURS and f.ethertype == ethernet.ETHERTYPE_IPV6
        pkt = IPv6(bytes(f.payload))
        assert pkt.hlim == 255 and pkt.src == "fd00:7::2"
        # the checksum is right: scapy computes the same one afresh
        body = pkt.payload
        stored = body.cksum
        del body.cksum
        assert IPv6(bytes(pkt)).payload.cksum == stored
        out.append((f.dst, IPv6(bytes(f.payload))))
    return out


def test_ns_for_us_is_answered_solicited_and_the_sender_learned_stale() -> None:
    lay = layer6()
    assert lay.receive(ns_frame(), T0) is None
    [(dst, na)] = sent_nd(lay.frames_to_send())
    assert dst == KERNEL
    assert na.dst == "fd00:7::1"
    adv = na[ICMPv6ND_NA]
    assert (adv.tgt, adv.S, adv.O, adv.R) == ("fd00:7::2", 1, 1, 0)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:0a"
    # RFC 4861 7.2.3: created STALE, not REACHABLE
    assert lay.neighbours(T0) == [
        {"address": "fd00:7::1", "mac": KERNEL_TEXT, "state": "STALE", "queued": 0}
    ]
    assert nd_counters(lay.stats) == {
        "eth_rx": 1,
        "nd_rx": 1,
        "nd_learned": 1,
        "nd_ns_answered": 1,
    }


def nd_counters(stats: Stats) -> dict[str, int]:
    return {k: v for k, v in stats.nonzero().items() if k.startswith(("eth_", "arp_", "nd_"))}


def test_ns_for_another_address_and_invalid_ns() -> None:
    lay = layer6()
    lay.receive(ns_frame(target="fd00:7::9", dst="fd00:7::2"), T0)  # unicast, to our MAC
    lay.receive(ns_frame(hlim=64), T0)
    assert lay.frames_to_send() == [] and lay.neighbours(T0) == []
    assert nd_counters(lay.stats) == {
        "eth_rx": 2,
        "nd_rx": 2,
        "nd_ns_other_target": 1,
        "nd_bad_hop_limit": 1,
    }


def test_dad_for_our_address_is_answered_to_all_nodes() -> None:
    lay = layer6()
    lay.receive(ns_frame(src="::"), T0)
    [(dst, na)] = sent_nd(lay.frames_to_send())
    assert dst == bytes.fromhex("333300000001") and na.dst == "ff02::1"
    assert na[ICMPv6ND_NA].S == 0 and na[ICMPv6ND_NA].O == 1
    assert lay.neighbours(T0) == []
    assert lay.stats.nd_dad_answered == 1


def test_group_frames_ours_and_others() -> None:
    lay = layer6()
    # an IPv6 packet to our solicited-node group MAC goes up (the host checks the address)
    frame = ethernet.header(SOLICITED_US, KERNEL, 0x86DD) + ip6_packet(US6)
    assert lay.receive(frame, T0) is not None
    # MLD reports to ff02::16 (33:33:00:00:00:16) are not for us
    frame = ethernet.header(bytes.fromhex("333300000016"), KERNEL, 0x86DD) + bytes(40)
    assert lay.receive(frame, T0) is None
    assert nd_counters(lay.stats) == {"eth_rx": 2, "eth_not_for_us": 1}


def test_resolution_by_ns_to_the_solicited_node_group() -> None:
    lay = layer6()
    first = ip6_packet(GW6, b"one")
    assert lay.resolve(first, T0) is None
    [(dst, ns)] = sent_nd(lay.frames_to_send())
    assert dst == bytes.fromhex("3333ff000001") and ns.dst == "ff02::1:ff00:1"
    assert ns[ICMPv6ND_NS].tgt == "fd00:7::1"
    assert ns[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:0a"
    # retransmitted at 1 s like an ARP request
    assert lay.next_deadline() == T0 + 1
    lay.on_deadline(T0 + 1)
    assert len(sent_nd(lay.frames_to_send())) == 1
    lay.receive(na_frame(), T0 + 1.5)
    header = ethernet.header(KERNEL, OURS, ethernet.ETHERTYPE_IPV6)
    assert lay.frames_to_send() == [header + first]
    assert lay.neighbours(T0 + 1.5)[0]["state"] == "REACHABLE"
    assert lay.resolve(ip6_packet(GW6), T0 + 2) == header
    # off the prefix: the kernel routes it
    assert lay.resolve(ip6_packet(addr.from_text("2001:db8::1")), T0 + 2) == header
    # multicast needs no resolution (RFC 2464 7)
    mc = lay.resolve(ip6_packet(addr.from_text("ff02::1:2")), T0 + 2)
    assert mc is not None and mc[:6] == bytes.fromhex("333300010002")
    assert nd_counters(lay.stats) == {
        "eth_rx": 1,
        "arp_requests_sent": 1,
        "arp_request_retransmits": 1,
        "arp_queued": 1,
        "arp_queue_sent": 1,
        "nd_rx": 1,
        "nd_na_received": 1,
    }


def test_na_rules() -> None:
    lay = layer6()
    # RFC 4861 7.2.5: no entry, silently discarded
    lay.receive(na_frame(), T0)
    assert lay.neighbours(T0) == []
    lay.resolve(ip6_packet(GW6), T0)
    # unsolicited (S clear): the address is taken, but STALE
    lay.receive(na_frame(s=0), T0 + 0.1)
    assert lay.neighbours(T0 + 0.1)[0]["state"] == "STALE"
    # Override clear with another address: ours kept
    lay.receive(na_frame(o=0, mac="0a:00:00:00:00:03"), T0 + 0.2)
    assert lay.neighbours(T0 + 0.2)[0]["mac"] == KERNEL_TEXT
    # someone advertising our own address
    lay.receive(na_frame(target="fd00:7::2"), T0 + 0.3)
    assert nd_counters(lay.stats) == {
        "eth_rx": 4,
        "arp_requests_sent": 1,
        "arp_queued": 1,
        "arp_queue_sent": 1,
        "nd_rx": 4,
        "nd_na_unsolicited": 1,
        "nd_na_received": 1,
        "nd_na_ignored": 1,
        "nd_conflict": 1,
    }


def test_stale_ipv6_neighbour_is_probed_by_unicast_ns() -> None:
    lay = layer6()
    lay.receive(ns_frame(), T0)  # learned STALE
    lay.frames_to_send()
    header = ethernet.header(KERNEL, OURS, ethernet.ETHERTYPE_IPV6)
    assert lay.resolve(ip6_packet(GW6), T0 + 1) == header  # sent, and a probe goes out
    [(dst, ns)] = sent_nd(lay.frames_to_send())
    assert dst == KERNEL and ns.dst == "fd00:7::1"
    lay.receive(na_frame(), T0 + 1.1)
    assert lay.neighbours(T0 + 1.1)[0]["state"] == "REACHABLE"
    assert lay.stats.arp_probes_sent == 1


def test_ipv6_without_an_address_is_refused_both_ways() -> None:
    lay = layer()
    assert lay.receive(ns_frame(), T0) is None
    assert lay.resolve(ip6_packet(GW6), T0) is None
    assert nd_counters(lay.stats) == {
        "eth_rx": 1,
        "eth_not_for_us": 1,  # its solicited-node group is not ours without IPv6
        "eth_tx_ipv6_unsupported": 1,
    }
    frame = ethernet.header(OURS, KERNEL, 0x86DD) + ip6_packet(US6)
    assert lay.receive(frame, T0) is None
    assert lay.stats.eth_ipv6_unsupported == 1
