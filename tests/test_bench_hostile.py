"""The parts of bench/synflood.py and bench/soak.py that decide something, without a network:
the spoofed SYNs the flood sends, the pattern check of downloads, and the verdicts."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import _synsender
import soak
import synflood

from ustack.wire import checksum, ipv4, tcp
from ustack.wire.checksum import internet_checksum

SPOOFED = ipaddress.IPv4Network("198.18.0.0/15")


def _as_the_kernel_sends_it(buf: bytearray) -> bytes:
    """raw(7): with IP_HDRINCL the kernel fills in the IP header checksum."""
    out = bytearray(buf)
    out[10:12] = b"\0\0"
    out[10:12] = internet_checksum(bytes(out[:20])).to_bytes(2, "big")
    return bytes(out)


def test_flood_syns_are_valid_linux_like_syns_from_spoofed_addresses() -> None:
    syns = _synsender.Syns("10.7.0.2", 7, str(SPOOFED), seed=1)
    sources, ports, isns = set(), set(), set()
    for _ in range(200):
        pkt = ipv4.parse(_as_the_kernel_sends_it(syns.next()))
        seg = tcp.parse(
            pkt.payload,
            pkt.src,
            pkt.dst,
            pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
        )  # raises on a bad TCP checksum
        assert pkt.dst == int(ipaddress.IPv4Address("10.7.0.2"))
        assert pkt.dont_fragment and pkt.ttl == 64
        src = ipaddress.IPv4Address(pkt.src)
        assert src in SPOOFED and src not in (SPOOFED.network_address, SPOOFED.broadcast_address)
        assert seg.control is tcp.Control.SYN and not seg.has_ack
        assert seg.dst_port == 7 and seg.src_port >= 1024
        assert seg.options.mss == 1460 and seg.options.wscale == 7
        assert seg.options.sack_permitted
        assert seg.options.timestamps is not None and seg.options.timestamps[1] == 0
        sources.add(pkt.src)
        ports.add(seg.src_port)
        isns.add(seg.seq)
    # Random per SYN, not one repeated tuple.
    assert min(len(sources), len(ports), len(isns)) > 190


def test_flood_syns_follow_the_seed() -> None:
    a = _synsender.Syns("10.7.0.2", 7, str(SPOOFED), seed=5)
    b = _synsender.Syns("10.7.0.2", 7, str(SPOOFED), seed=5)
    c = _synsender.Syns("10.7.0.2", 7, str(SPOOFED), seed=6)
    first_a, first_b, first_c = bytes(a.next()), bytes(b.next()), bytes(c.next())
    assert first_a == first_b
    assert first_a != first_c


def test_download_check_finds_a_wrong_byte_across_the_pattern_period() -> None:
    body = bytes(i % soak.PERIOD for i in range(300, 300 + 70_000))
    assert soak._check(body, 300) == 70_300
    broken = bytearray(body)
    broken[69_999] ^= 1
    with pytest.raises(soak.Failed):
        soak._check(bytes(broken), 300)
    with pytest.raises(soak.Failed):
        soak._check(body, 301)  # the right bytes at the wrong offset


def _soak_doc(rss_mb: Sequence[tuple[float, float]], *, ustack_errors: int = 0) -> dict[str, Any]:
    samples = [{"t": t, "rss_kb": int(mb * 1024), "fds": 13} for t, mb in rss_mb]
    return {
        "samples": {"ustack": samples},
        "traffic_seconds": 60.0,
        "drain": {"drained": True, "seconds": 1.0},
        "clients": {
            "ustack": {"ops": {"churn": 1000}, "errors": {"churn": {"timeout": ustack_errors}}},
            "kernel": {"ops": {"churn": 1000}, "errors": {"churn": {"timeout": 2}}},
        },
        "stuck_workers": {"ustack": [], "kernel": []},
        "ustack_alive": True,
    }


def test_soak_memory_is_measured_from_the_first_sample_after_the_warm_up() -> None:
    # Warm-up is 12 s of 60: the 10 MB at t=0 is not the base, 40 MB at t=20 is.
    grew = soak.verdicts(_soak_doc([(0, 10), (20, 40), (40, 41), (60, 43)]), 60.0)
    assert grew["memory"]["first_mb"] == pytest.approx(40.0, abs=0.01)
    assert grew["memory"]["growth"] == pytest.approx(0.075, abs=0.001)
    assert not grew["memory"]["met"] and not grew["met"]
    flat = soak.verdicts(_soak_doc([(0, 10), (20, 40), (40, 41), (60, 41.9)]), 60.0)
    assert flat["memory"]["met"] and flat["met"]


def test_soak_errors_are_allowed_up_to_the_kernel_reference_plus_a_tenth_of_a_percent() -> None:
    base = [(0, 40), (20, 40), (60, 40)]
    assert soak.verdicts(_soak_doc(base, ustack_errors=3), 60.0)["errors"]["met"]
    over = soak.verdicts(_soak_doc(base, ustack_errors=4), 60.0)
    assert over["errors"]["allowed"] == 3 and not over["errors"]["met"] and not over["met"]


def _flood_row(success: float, first: float, second: float) -> dict[str, Any]:
    return {
        "server": "ustack",
        "flood": "10000",
        "success": success,
        "rss_growth": second / first - 1,
        "rss_first_half_peak_mb": first,
        "rss_second_half_peak_mb": second,
    }


def test_synflood_target_needs_99_percent_and_bounded_memory() -> None:
    assert synflood.target_verdict([_flood_row(0.995, 40.0, 40.5)])["met"]
    few = synflood.target_verdict([_flood_row(0.98, 40.0, 40.5)])
    assert not few["success_met"] and few["memory_met"] and not few["met"]
    leak = synflood.target_verdict([_flood_row(1.0, 40.0, 43.0)])
    assert leak["success_met"] and not leak["memory_met"] and not leak["met"]
    assert not synflood.target_verdict([])["measured"]
