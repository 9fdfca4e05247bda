"""IPv6 reassembly (RFC 8200 4.5, RFC 5722, RFC 6946, RFC 7112) in the shared Reassembler.

Fragments are made by scapy -- its own ``fragment6`` as the independent fragmenter, or an
``IPv6ExtHdrFragment`` by hand for the cases no fragmenter produces -- and the expected packet
is what scapy writes for the same packet without its Fragment header. Every time is virtual.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.packet import Packet, Raw

from ustack.stack.config import HostConfig
from ustack.stack.reassembly import (
    DATAGRAM_COST,
    IPV4,
    IPV6,
    PIECE_COST,
    ParamProblem,
    Reassembler,
    TimedOut,
)
from ustack.tcp.stats import Stats
from ustack.wire import icmpv6, ipv4, ipv6

A_SRC = "fd00:7::1"
A_DST = "fd00:7::2"
SRC = ipv6.addr_to_int(A_SRC)
DST = ipv6.addr_to_int(A_DST)
IDENT = 0x1234
UDP_NH = 17
DSTOPT_NH = 60
TCP_NH = 6
TIMEOUT4 = 30.0
TIMEOUT6 = 60.0
PAYLOAD = bytes(range(256)) * 12  # 3072 octets


def datagram(
    payload: bytes, before: tuple[type[Packet], ...], after: tuple[type[Packet], ...]
) -> tuple[Packet, bytes]:
    """An IPv6/UDP packet with the extension headers ``before`` and ``after`` around a Fragment
    header (for ``fragment6``), and the same packet without the Fragment header, as bytes."""

    def build(frag: bool) -> Packet:
        pkt: Packet = IPv6(src=A_SRC, dst=A_DST)
        for h in before:
            pkt = pkt / (IPv6ExtHdrRouting(segleft=0) if h is IPv6ExtHdrRouting else h())
        if frag:
            pkt = pkt / IPv6ExtHdrFragment(id=IDENT)
        for h in after:
            pkt = pkt / h()
        return pkt / UDP(sport=1000, dport=2000) / Raw(payload)

    return build(True), raw(build(False))


def frag6(
    offset: int,
    data: bytes,
    *,
    more: bool = True,
    ident: int = IDENT,
    src: str = A_SRC,
    dst: str = A_DST,
    nh: int = UDP_NH,
    before: tuple[Packet, ...] = (),
) -> bytes:
    """One hand-made fragment: ``data`` at octet ``offset`` of packet ``ident``."""
    pkt: Packet = IPv6(src=src, dst=dst)
    for h in before:
        pkt = pkt / h.copy()
    pkt = pkt / IPv6ExtHdrFragment(offset=offset // 8, m=int(more), id=ident, nh=nh)
    return raw(pkt / Raw(data))


def cut(data: bytes, points: list[int], **kw: object) -> list[bytes]:
    """``data`` (the fragmentable part) cut at ``points`` (multiples of 8), in order."""
    edges = [0, *points, len(data)]
    return [
        frag6(a, data[a:b], more=b != len(data), **kw)  # type: ignore[arg-type]
        for a, b in itertools.pairwise(edges)
    ]


def whole(
    data: bytes,
    *,
    nh: int = UDP_NH,
    src: str = A_SRC,
    dst: str = A_DST,
    before: tuple[Packet, ...] = (),
) -> bytes:
    """The packet the fragments of :func:`cut` come from, as scapy writes it."""
    layers = [h.copy() for h in before]
    if layers:
        layers[-1].nh = nh
    # With headers in front, scapy fills the fixed header's Next Header from the first of them.
    pkt: Packet = IPv6(src=src, dst=dst) if layers else IPv6(src=src, dst=dst, nh=nh)
    for h in layers:
        pkt = pkt / h
    return raw(pkt / Raw(data))


class Feeder:
    """A Reassembler with its own Stats, fed raw packets of either family."""

    def __init__(self, **cfg: object) -> None:
        self.stats = Stats()
        self.r = Reassembler(HostConfig(**cfg), self.stats)  # type: ignore[arg-type]

    def __call__(self, buf: bytes, now: float = 0.0) -> bytearray | ParamProblem | None:
        return self.r.add6(buf, ipv6.parse(buf), now)

    def all(self, bufs: list[bytes], now: float = 0.0) -> list[bytearray | ParamProblem]:
        return [w for b in bufs if (w := self(b, now)) is not None]

    def v4(self, buf: bytes, now: float = 0.0) -> bytearray | None:
        pkt = ipv4.parse(buf)
        assert pkt.is_fragment
        return self.r.add(pkt, memoryview(buf)[: pkt.header_length], now)


def out_bytes(results: list[bytearray | ParamProblem]) -> list[bytes]:
    assert all(isinstance(r, bytearray) for r in results), results
    return [bytes(r) for r in results]  # type: ignore[arg-type]


# -- reassembly with scapy's fragment6 -------------------------------------------------------


@pytest.mark.parametrize(
    "order", [[0, 1, 2], [2, 1, 0], [2, 0, 1]], ids=["in order", "reverse", "shuffled"]
)
def test_fragment6_in_any_order_reassembles_to_the_packet(order: list[int]) -> None:
    pkt, expected = datagram(PAYLOAD, (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt), (IPv6ExtHdrDestOpt,))
    made = [raw(p) for p in fragment6(pkt, 1280)]  # type: ignore[no-untyped-call]
    assert len(made) == 3
    pieces = [made[i] for i in order]
    f = Feeder()
    done = f.all(pieces)
    assert out_bytes(done) == [expected]
    # The result parses from the top: headers in order, UDP reached, its checksum intact.
    again = ipv6.parse(done[0])  # type: ignore[arg-type]
    assert again.fragment is None and again.proto == UDP_NH
    assert again.ext_headers == (ipv6.HOPOPTS, ipv6.DSTOPTS, ipv6.DSTOPTS)
    assert f.stats.nonzero() == {"ip6_reasm_fragments": 3, "ip6_reasm_ok": 1}
    assert len(f.r) == 0 and f.r.charged == 0 and f.r.next_deadline() is None


_EXT_BEFORE = st.lists(st.sampled_from([IPv6ExtHdrDestOpt, IPv6ExtHdrRouting]), max_size=2).map(
    lambda hs: tuple(hs)
)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 3000),
    frag_size=st.integers(128, 1500),
    hbh=st.booleans(),
    before=_EXT_BEFORE,
    after=st.lists(st.just(IPv6ExtHdrDestOpt), max_size=1).map(tuple),
    rnd=st.randoms(use_true_random=False),
    dup_picks=st.lists(st.integers(0, 20), max_size=3),
)
def test_property_fragment6_any_size_headers_and_permutation(
    size: int,
    frag_size: int,
    hbh: bool,
    before: tuple[type[Packet], ...],
    after: tuple[type[Packet], ...],
    rnd: random.Random,
    dup_picks: list[int],
) -> None:
    payload = bytes(rnd.getrandbits(8) for _ in range(size))
    pkt, expected = datagram(payload, ((IPv6ExtHdrHopByHop,) if hbh else ()) + before, after)
    pieces = [raw(p) for p in fragment6(pkt, frag_size)]  # type: ignore[no-untyped-call]
    order = list(pieces)
    rnd.shuffle(order)
    # Exact duplicates anywhere before the fragment that completes it change nothing.
    body = order[:-1]
    for pick in dup_picks:
        if body:
            body.insert(pick % (len(body) + 1), body[pick % len(body)])
    order = [*body, order[-1]]
    f = Feeder()
    done = f.all(order)
    if len(pieces) == 1:
        # fragment6 leaves a packet that fits as one atomic fragment (offset 0, M clear).
        assert f.stats.ip6_reasm_atomic == len(order)
        assert out_bytes(done) == [expected] * len(order)
    else:
        assert out_bytes(done) == [expected]
        assert f.stats.nonzero() == {
            "ip6_reasm_fragments": len(order),
            "ip6_reasm_ok": 1,
            **(
                {"ip6_reasm_duplicate": len(order) - len(pieces)}
                if len(order) > len(pieces)
                else {}
            ),
        }
    assert len(f.r) == 0 and f.r.charged == 0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(9, 3000).flatmap(
        lambda n: st.tuples(
            st.binary(min_size=n, max_size=n),
            st.lists(st.integers(1, (n - 1) // 8), unique=True, min_size=1, max_size=10),
            st.randoms(use_true_random=False),
        )
    )
)
def test_property_any_split_any_order(case: tuple[bytes, list[int], random.Random]) -> None:
    data, units, rnd = case
    before = (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt())
    pieces = cut(data, sorted(u * 8 for u in units), before=before)
    rnd.shuffle(pieces)
    f = Feeder()
    assert out_bytes(f.all(pieces)) == [whole(data, before=before)]
    assert f.stats.nonzero() == {"ip6_reasm_fragments": len(pieces), "ip6_reasm_ok": 1}


def test_unfragmentable_part_and_next_header_come_from_the_first_fragment() -> None:
    # RFC 8200 4.5: only the offset-0 fragment's headers and Fragment Next Header count; a later
    # fragment's other extension headers and Next Header are not part of the result (nor key).
    data = bytes(range(48))
    first = frag6(0, data[:16], nh=UDP_NH, before=(IPv6ExtHdrDestOpt(),))
    later = frag6(16, data[16:], more=False, nh=TCP_NH)
    f = Feeder()
    assert f(later) is None
    out = f(first)
    assert isinstance(out, bytearray)
    assert bytes(out) == whole(data, before=(IPv6ExtHdrDestOpt(),))


# -- overlaps and duplicates (RFC 5722) ------------------------------------------------------

SMALL = bytes(range(32))
HELD = [frag6(0, SMALL[:16]), frag6(24, SMALL[24:], more=False)]
MISSING = frag6(16, SMALL[16:24])


@pytest.mark.parametrize(
    "intruder",
    [
        frag6(8, b"E" * 16),  # reaches into the first piece's tail
        frag6(0, b"X" * 16),  # same offset and length, other octets: not a duplicate
        frag6(16, b"W" * 16),  # fills the hole and runs on into the final piece
        frag6(16, b"Z" * 8, more=False),  # a second final fragment, ending elsewhere
        frag6(32, b"Q" * 8),  # beyond the end the final fragment fixed
    ],
    ids=["tail", "same-range-other-data", "into-next", "second-end", "beyond-end"],
)
def test_overlap_drops_the_whole_packet_silently(intruder: bytes) -> None:
    f = Feeder()
    assert f.all(HELD) == []
    assert f(intruder) is None  # silently: no Parameter Problem
    assert f.stats.ip6_reasm_overlap == 1
    # "and any constituent fragments, including those not yet received"
    assert f.all([MISSING, *HELD], 1.0) == []
    assert f.stats.nonzero() == {
        "ip6_reasm_fragments": 6,
        "ip6_reasm_overlap": 1,
        "ip6_reasm_discarded": 3,
    }
    assert f.r.charged == DATAGRAM_COST
    assert f.r.next_deadline() == TIMEOUT6
    assert f.r.on_deadline(TIMEOUT6) == []  # no time exceeded for a dropped packet
    assert f.stats.ip6_reasm_timeout == 0 and len(f.r) == 0
    assert out_bytes(f.all([*HELD, MISSING], TIMEOUT6 + 1)) == [whole(SMALL)]


def test_exact_duplicate_is_dropped_alone() -> None:
    f = Feeder()
    assert f.all([HELD[0], HELD[0], HELD[1], HELD[1]]) == []
    assert out_bytes(f.all([MISSING])) == [whole(SMALL)]
    assert f.stats.nonzero() == {
        "ip6_reasm_fragments": 5,
        "ip6_reasm_duplicate": 2,
        "ip6_reasm_ok": 1,
    }


# -- atomic fragments (RFC 6946) -------------------------------------------------------------


def test_atomic_fragment_passes_straight_through_and_never_mixes() -> None:
    f = Feeder()
    assert f(HELD[0]) is None  # a packet with the same identity is in progress
    atomic = frag6(0, SMALL, more=False, before=(IPv6ExtHdrDestOpt(),))
    out = f(atomic)
    assert isinstance(out, bytearray) and bytes(out) == whole(SMALL, before=(IPv6ExtHdrDestOpt(),))
    assert f.stats.ip6_reasm_atomic == 1 and f.stats.ip6_reasm_fragments == 1
    # The packet in progress did not see it: it still completes from its own fragments.
    assert len(f.r) == 1
    assert out_bytes(f.all([MISSING, HELD[1]])) == [whole(SMALL)]
    assert f.stats.nonzero() == {"ip6_reasm_atomic": 1, "ip6_reasm_fragments": 3, "ip6_reasm_ok": 1}


def test_a_packet_without_a_fragment_header_is_a_caller_error() -> None:
    buf = whole(SMALL)
    with pytest.raises(ValueError, match="Fragment header"):
        Feeder().r.add6(buf, ipv6.parse(buf), 0.0)


# -- the errors answered with Parameter Problem ----------------------------------------------


def test_m_set_and_not_a_multiple_of_8_gets_parameter_problem_at_payload_length() -> None:
    bad = frag6(0, SMALL[:12])
    # The wire parse already refuses it with the same answer ...
    with pytest.raises(ipv6.ParameterProblem) as err:
        ipv6.parse(bad)
    assert (err.value.code, err.value.pointer) == (0, ipv6.OFF_PAYLOAD_LENGTH)
    # ... and the reassembler, given a record of it from anywhere, answers the same.
    pkt = ipv6.parse(frag6(0, SMALL[:12], more=False))
    assert pkt.fragment is not None
    pkt = dataclasses.replace(pkt, fragment=dataclasses.replace(pkt.fragment, more=True))
    f = Feeder()
    assert f.r.add6(bad, pkt, 0.0) == ParamProblem(icmpv6.ERRONEOUS_FIELD, ipv6.OFF_PAYLOAD_LENGTH)
    assert f.stats.nonzero() == {"ip6_reasm_fragments": 1, "ip6_reasm_bad_length": 1}
    assert len(f.r) == 0


def test_empty_fragment_is_dropped_alone() -> None:
    f = Feeder()
    assert f(frag6(8, b"")) is None
    assert f.stats.nonzero() == {"ip6_reasm_fragments": 1, "ip6_reasm_bad_length": 1}
    assert len(f.r) == 0


def test_too_long_with_the_headers_in_front_gets_parameter_problem_at_fragment_offset() -> None:
    # 65,520 + 8 octets fit a Payload Length by themselves (the wire parse lets it through), but
    # the Destination Options header in front of the Fragment header is part of the reassembled
    # Payload Length too: 8 + 65,528 > 65,535.
    opts = (IPv6ExtHdrDestOpt(),)
    f = Feeder()
    assert f(frag6(0, SMALL[:16], before=opts)) is None
    tail = frag6(65520, b"t" * 8, more=False, before=opts)
    assert f(tail) == ParamProblem(icmpv6.ERRONEOUS_FIELD, ipv6.HEADER_LEN + 8 + 2)
    assert f(frag6(16, SMALL[16:24], before=opts)) is None  # the packet is gone
    assert f.stats.nonzero() == {
        "ip6_reasm_fragments": 3,
        "ip6_reasm_too_long": 1,
        "ip6_reasm_discarded": 1,
    }
    assert f.r.charged == DATAGRAM_COST
    # Without the header in front the same fragment is fine.
    g = Feeder()
    assert g(frag6(65520, b"t" * 8, more=False)) is None
    assert g.stats.nonzero() == {"ip6_reasm_fragments": 1}


def test_first_fragment_headers_longer_than_a_later_ones_drop_at_completion() -> None:
    # Each fragment passes on its own headers; the whole takes the first fragment's, and with
    # them it would exceed 65,535: dropped, with nobody to blame.
    # Destination Options of 32 octets (Next Header Fragment, length 3, one 28-octet option of
    # a type to skip), then the first fragment's 8 octets, of "No Next Header".
    opts = bytes([ipv6.FRAGMENT, 3, 0x1E, 28]) + bytes(28)
    frag_header = IPv6ExtHdrFragment(m=1, id=IDENT, nh=ipv6.NO_NEXT_HEADER)
    first = raw(IPv6(src=A_SRC, dst=A_DST, nh=DSTOPT_NH) / Raw(opts) / frag_header / Raw(bytes(8)))
    f = Feeder()
    assert f(first) is None
    last = frag6(
        65504, b"z" * 24, more=False, nh=ipv6.NO_NEXT_HEADER
    )  # 65,528 with no headers in front
    assert f(last) is None
    # The middle, all in 8-octet-aligned fragments of 1,448 octets.
    offs = list(range(8, 65504, 1448))
    for a, b in itertools.pairwise([*offs, 65504]):
        assert f(frag6(a, b"m" * (b - a), nh=ipv6.NO_NEXT_HEADER)) is None
    assert f.stats.ip6_reasm_too_long == 1
    assert f.stats.ip6_reasm_ok == 0 and f.r.charged == DATAGRAM_COST


@pytest.mark.parametrize(
    "first",
    [
        frag6(0, b"\0" * 8, nh=TCP_NH),  # 8 octets of a 20-octet TCP header
        frag6(0, bytes([UDP_NH, 1]) + bytes(6), nh=DSTOPT_NH),  # 8 octets of 16 of options
    ],
    ids=["tcp-header-cut", "dest-opts-cut"],
)
def test_first_fragment_without_the_whole_header_chain_gets_code_3(first: bytes) -> None:
    f = Feeder()
    assert f(first) == ParamProblem(icmpv6.INCOMPLETE_HEADER_CHAIN, 0)
    assert f.stats.nonzero() == {"ip6_reasm_fragments": 1, "ip6_reasm_incomplete_chain": 1}
    assert len(f.r) == 0 and f.r.charged == 0


def test_first_fragment_holding_exactly_the_chain_is_taken() -> None:
    # Destination Options (8) then the whole UDP header (8): the chain is all there.
    first = frag6(0, bytes([UDP_NH, 0, 1, 4, 0, 0, 0, 0]) + b"u" * 8, nh=DSTOPT_NH)
    f = Feeder()
    assert f(first) is None
    assert f.stats.nonzero() == {"ip6_reasm_fragments": 1}
    assert len(f.r) == 1


# -- timeouts: 60 s for IPv6 beside IPv4's 30 s ----------------------------------------------


def v4frag(
    offset: int, data: bytes, *, more: bool = True, ident: int = IDENT, src: str = "10.7.0.1"
) -> bytes:
    ip = IP(
        src=src, dst="10.7.0.2", id=ident, proto=17, frag=offset // 8, flags="MF" if more else 0
    )
    return raw(ip / Raw(data))


def test_timeouts_per_family_in_deadline_order() -> None:
    f = Feeder()
    assert f(HELD[0], 0.0) is None  # IPv6, first fragment: deadline 60
    assert f.v4(v4frag(0, SMALL[:16]), 10.0) is None  # IPv4, begun later: deadline 40
    assert f(frag6(8, SMALL[8:16], ident=99), 20.0) is None  # IPv6, no first fragment: 80
    assert f.r.next_deadline() == 10.0 + TIMEOUT4
    assert f.r.on_deadline(39.9) == []
    late4 = f.r.on_deadline(40.0)
    assert late4 == [
        TimedOut(
            ipv4.addr_to_int("10.7.0.1"),
            ipv4.addr_to_int("10.7.0.2"),
            v4frag(0, SMALL[:16])[:28],
            IPV4,
        )
    ]
    assert f.r.next_deadline() == TIMEOUT6
    assert f.r.on_deadline(59.9) == []
    # The whole first fragment is quoted (the ICMPv6 emitter cuts it to the minimum MTU).
    assert f.r.on_deadline(TIMEOUT6) == [TimedOut(SRC, DST, HELD[0], IPV6)]
    assert f.r.next_deadline() == 20.0 + TIMEOUT6
    assert f.r.on_deadline(1000.0) == []  # no first fragment: nothing owed
    assert f.stats.nonzero() == {
        "ip_reasm_fragments": 1,
        "ip_reasm_timeout": 1,
        "ip6_reasm_fragments": 2,
        "ip6_reasm_timeout": 2,
    }
    assert len(f.r) == 0 and f.r.charged == 0 and f.r.next_deadline() is None


def test_timeout6_is_a_setting() -> None:
    f = Feeder(reasm_timeout6=5.0)
    assert f(HELD[0], 1.0) is None
    assert f.r.next_deadline() == 6.0
    with pytest.raises(ValueError, match="reassembly"):
        HostConfig(reasm_timeout6=0.0)


# -- one table, one bound, two families ------------------------------------------------------


def test_ipv4_and_ipv6_with_equal_numbers_never_mix() -> None:
    # The IPv6 addresses ::10.7.0.1 and ::10.7.0.2 are the same integers as the IPv4 ones, and
    # the identifications are equal: still two packets, and one source each (bound 1).
    v6 = {"src": "::10.7.0.1", "dst": "::10.7.0.2"}
    assert ipv6.addr_to_int(v6["src"]) == ipv4.addr_to_int("10.7.0.1")
    f = Feeder(reasm_max_per_source=1)
    assert f.v4(v4frag(0, SMALL[:16])) is None
    assert f(frag6(0, b"6" * 16, **v6)) is None  # type: ignore[arg-type]
    assert len(f.r) == 2
    assert f.v4(v4frag(16, SMALL[16:], more=False)) is not None
    out = f(frag6(16, b"6" * 16, more=False, **v6))  # type: ignore[arg-type]
    assert isinstance(out, bytearray) and bytes(out) == whole(
        b"6" * 32, src=v6["src"], dst=v6["dst"]
    )
    assert f.stats.nonzero() == {
        "ip_reasm_fragments": 2,
        "ip_reasm_ok": 1,
        "ip6_reasm_fragments": 2,
        "ip6_reasm_ok": 1,
    }


def test_per_source_bound_counts_the_family_it_evicts() -> None:
    f = Feeder(reasm_max_per_source=1)
    assert f(frag6(0, SMALL[:16], ident=1)) is None
    assert f(frag6(0, SMALL[:16], ident=2)) is None
    assert f.stats.ip6_reasm_per_source_limit == 1 and f.stats.ip_reasm_per_source_limit == 0
    assert len(f.r) == 1


def test_byte_bound_is_shared_and_evicts_the_oldest_of_either_family() -> None:
    one = DATAGRAM_COST + PIECE_COST + 16  # a v4 datagram holding its 16-octet first piece
    head6 = len(HELD[0]) - 16  # the IPv6 headers a first fragment keeps, charged too
    f = Feeder(reasm_max_bytes=2 * one + head6)
    assert f.v4(v4frag(0, SMALL[:16], ident=1), 0.0) is None  # oldest
    assert f(HELD[0], 1.0) is None
    assert f.r.charged == 2 * one + head6
    # A third datagram, of IPv4, needs room: the oldest of all goes, the IPv4 one.
    assert f.v4(v4frag(0, SMALL[:16], ident=2), 2.0) is None
    assert (f.stats.ip_reasm_evicted, f.stats.ip6_reasm_evicted) == (1, 0)
    # Another: now the IPv6 one is the oldest, and it is counted as IPv6's.
    assert f.v4(v4frag(0, SMALL[:16], ident=3), 3.0) is None
    assert (f.stats.ip_reasm_evicted, f.stats.ip6_reasm_evicted) == (1, 1)
    assert len(f.r) == 2 and f.r.charged <= f.r.max_bytes


def test_eviction_takes_the_earliest_begun_not_the_earliest_deadline() -> None:
    # IPv6 begun at 0 (deadline 60) is older than IPv4 begun at 5 (deadline 35).
    one = DATAGRAM_COST + PIECE_COST + 16
    head6 = len(HELD[0]) - 16
    f = Feeder(reasm_max_bytes=2 * one + head6)
    assert f(HELD[0], 0.0) is None
    assert f.v4(v4frag(0, SMALL[:16], ident=1), 5.0) is None
    assert f.r.next_deadline() == 5.0 + TIMEOUT4
    assert f.v4(v4frag(0, SMALL[:16], ident=2), 6.0) is None
    assert (f.stats.ip_reasm_evicted, f.stats.ip6_reasm_evicted) == (0, 1)
    assert f.r.next_deadline() == 5.0 + TIMEOUT4
