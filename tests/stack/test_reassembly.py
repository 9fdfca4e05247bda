"""IPv4 reassembly (RFC 791, RFC 815): the Reassembler on its own, then through the host.

Fragments are made by scapy (``IP(frag=..., flags="MF")`` by hand, or its own ``fragment()``),
an implementation independent of ustack's, and every time is virtual.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, defragment, fragment, raw
from scapy.packet import Raw

from tests.stack.helpers import HOST, PEER, SERVER_ISN, make_host, segments, tcp_packet
from ustack.stack.config import HostConfig
from ustack.stack.reassembly import DATAGRAM_COST, PIECE_COST, Reassembler
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.wire import checksum, icmp, ipv4, tcp

A_HOST = ipv4.int_to_addr(HOST)
A_PEER = ipv4.int_to_addr(PEER)
OTHER = "10.7.0.9"
TIMEOUT = 30.0


def frag(
    offset: int,
    data: bytes,
    *,
    more: bool = True,
    ident: int = 7,
    src: str = A_PEER,
    proto: int = 17,
    options: list[object] | None = None,
) -> bytes:
    """One fragment: ``data`` at octet ``offset`` of datagram ``ident``."""
    assert offset % 8 == 0
    ip = IP(src=src, dst=A_HOST, id=ident, proto=proto, frag=offset // 8, flags="MF" if more else 0)
    if options is not None:
        ip.options = options
    return raw(ip / Raw(data))


def cut(payload: bytes, points: list[int], **kw: object) -> list[bytes]:
    """``payload`` cut at ``points`` (multiples of 8) into fragments, in order."""
    edges = [0, *points, len(payload)]
    return [
        frag(a, payload[a:b], more=b != len(payload), **kw)  # type: ignore[arg-type]
        for a, b in itertools.pairwise(edges)
    ]


def whole(payload: bytes, *, ident: int = 7, src: str = A_PEER, proto: int = 17) -> bytes:
    """The datagram the fragments of :func:`cut` come from, as scapy writes it."""
    return raw(IP(src=src, dst=A_HOST, id=ident, proto=proto, flags=0) / Raw(payload))


class Feeder:
    """A Reassembler with its own Stats, fed raw fragments."""

    def __init__(self, **cfg: object) -> None:
        self.stats = Stats()
        self.r = Reassembler(HostConfig(**cfg), self.stats)  # type: ignore[arg-type]

    def __call__(self, buf: bytes, now: float = 0.0) -> bytearray | None:
        pkt = ipv4.parse(buf)
        assert pkt.is_fragment
        return self.r.add(pkt, memoryview(buf)[: pkt.header_length], now)

    def all(self, bufs: list[bytes], now: float = 0.0) -> list[bytearray]:
        return [w for b in bufs if (w := self(b, now)) is not None]


PAYLOAD = bytes(range(256)) * 12  # 3072 octets


# -- the Reassembler alone -----------------------------------------------------------------


@pytest.mark.parametrize("order", ["in order", "reverse", "shuffled"])
def test_any_order_reassembles_to_the_original(order: str) -> None:
    pieces = cut(PAYLOAD, [1480, 2960])
    if order == "reverse":
        pieces.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(pieces)
        assert pieces != cut(PAYLOAD, [1480, 2960])
    f = Feeder()
    assert f.all(pieces[:-1]) == []
    out = f(pieces[-1])
    assert out is not None and bytes(out) == whole(PAYLOAD)
    assert f.stats.nonzero() == {"ip_reasm_fragments": 3, "ip_reasm_ok": 1}
    assert len(f.r) == 0 and f.r.charged == 0 and f.r.next_deadline() is None


@settings(max_examples=150, deadline=None)
@given(
    st.integers(9, 4000).flatmap(
        lambda n: st.tuples(
            st.binary(min_size=n, max_size=n),
            st.lists(st.integers(1, (n - 1) // 8), unique=True, min_size=1, max_size=12),
            st.randoms(use_true_random=False),
            st.lists(st.integers(0, 20), max_size=4),
        )
    )
)
def test_property_any_fragmentation_and_permutation_reassembles(
    case: tuple[bytes, list[int], random.Random, list[int]],
) -> None:
    payload, units, rnd, dup_picks = case
    pieces = cut(payload, sorted(u * 8 for u in units))
    order = list(pieces)
    rnd.shuffle(order)
    # Exact duplicates of fragments, anywhere before the one that completes it, change nothing.
    body = order[:-1]
    for pick in dup_picks:
        if body:
            body.insert(pick % (len(body) + 1), body[pick % len(body)])
    order = [*body, order[-1]]
    f = Feeder()
    done = f.all(order)
    assert [bytes(d) for d in done] == [whole(payload)]
    assert f.stats.ip_reasm_ok == 1
    assert f.stats.ip_reasm_fragments == len(order)
    assert f.stats.ip_reasm_duplicate == len(order) - len(pieces)
    assert f.r.charged == 0


def test_exact_duplicate_is_dropped_alone() -> None:
    a, b, c = cut(PAYLOAD, [1480, 2960])
    f = Feeder()
    assert f.all([a, b, b, a]) == []
    assert f.stats.ip_reasm_duplicate == 2
    out = f(c)
    assert out is not None and bytes(out) == whole(PAYLOAD)
    assert f.stats.nonzero() == {"ip_reasm_fragments": 5, "ip_reasm_duplicate": 2, "ip_reasm_ok": 1}


# Held in the overlap tests: [0, 16) and the final [24, 32) of a 32-octet payload; [16, 24) is
# missing.
SMALL = bytes(range(32))
HELD = [frag(0, SMALL[:16]), frag(24, SMALL[24:], more=False)]
MISSING = frag(16, SMALL[16:24])


@pytest.mark.parametrize(
    "intruder",
    [
        frag(8, b"E" * 16),  # reaches into the first piece's tail
        frag(0, b"B" * 8),  # inside the first piece, at its start
        frag(0, b"X" * 16),  # same offset and length, other octets: not a duplicate
        frag(16, b"W" * 16),  # fills the hole and runs on into the final piece
        frag(16, b"Z" * 8, more=False),  # a second final fragment, ending elsewhere
        frag(32, b"Q" * 8),  # beyond the end the final fragment fixed
    ],
    ids=["tail", "inside", "same-range-other-data", "into-next", "second-end", "beyond-end"],
)
def test_overlap_drops_the_datagram_and_its_later_fragments(intruder: bytes) -> None:
    f = Feeder()
    assert f.all(HELD) == []
    assert f(intruder) is None
    assert f.stats.ip_reasm_overlap == 1
    # RFC 5722: the rest must not complete it -- not the missing piece, nor a fresh full set.
    assert f.all([MISSING, *HELD, MISSING], 1.0) == []
    assert f.stats.nonzero() == {
        "ip_reasm_fragments": 7,
        "ip_reasm_overlap": 1,
        "ip_reasm_discarded": 4,
    }
    assert f.r.charged == DATAGRAM_COST  # the record stays, its data is gone
    # Its record times out quietly (counted already) and the identification is free again.
    assert f.r.next_deadline() == TIMEOUT
    assert f.r.on_deadline(TIMEOUT) == []
    assert f.stats.ip_reasm_timeout == 0 and len(f.r) == 0
    out = f.all([*HELD, MISSING], TIMEOUT + 1)
    assert [bytes(o) for o in out] == [whole(SMALL)]


def test_final_fragment_behind_data_already_held_is_a_conflict() -> None:
    f = Feeder()
    assert f(frag(0, SMALL[:8])) is None
    assert f(frag(16, SMALL[16:])) is None  # [16, 32), MF set: there is more
    assert f(frag(8, SMALL[8:16], more=False)) is None  # "the end is at 16"
    assert f.stats.nonzero() == {"ip_reasm_fragments": 3, "ip_reasm_overlap": 1}


@pytest.mark.parametrize(
    "bad",
    [
        frag(0, b"x" * 12),  # not the last, not a multiple of 8
        frag(8, b"x" * 1),
        frag(8, b""),  # empty
        frag(16, b"", more=False),
    ],
    ids=["12-octets", "1-octet", "empty", "empty-final"],
)
def test_bad_lengths_dropped_alone(bad: bytes) -> None:
    f = Feeder()
    assert f(bad) is None
    assert f.stats.nonzero() == {"ip_reasm_fragments": 1, "ip_reasm_bad_length": 1}
    assert len(f.r) == 0
    # The datagram is not hurt: its good fragments still reassemble.
    out = f.all(cut(SMALL, [16]))
    assert [bytes(o) for o in out] == [whole(SMALL)]


def test_longer_than_65535_is_dropped() -> None:
    f = Feeder()
    # 65,512 + 8 octets of data behind a 20-octet header make 65,540.
    assert f(frag(65512, b"x" * 8, more=False)) is None
    assert f.stats.ip_reasm_too_long == 1
    assert f(frag(0, b"y" * 8)) is None  # later pieces of it are dropped too
    assert f.stats.nonzero() == {
        "ip_reasm_fragments": 2,
        "ip_reasm_too_long": 1,
        "ip_reasm_discarded": 1,
    }


def test_65535_exactly_reassembles_but_options_can_push_it_over() -> None:
    big = bytes(random.Random(1).getrandbits(8) for _ in range(65515))
    f = Feeder()
    out = f.all(cut(big, [32768]))
    assert len(out) == 1 and len(out[0]) == 65535 and bytes(out[0]) == whole(big)
    # The same data behind a first fragment with 4 octets of options would be 65,539.
    g = Feeder()
    first = frag(0, big[:32768], options=[IPOption_NOP() for _ in range(4)])
    assert (ipv4.parse(first).header_length, g(first)) == (24, None)
    assert g(frag(32768, big[32768:], more=False)) is None
    assert g.stats.nonzero() == {"ip_reasm_fragments": 2, "ip_reasm_too_long": 1}


def test_timeout_discards_and_names_the_first_fragment() -> None:
    f = Feeder()
    a, b, _c = cut(PAYLOAD, [1480, 2960])
    f(a, 0.0)
    f(b, 5.0)  # later fragments do not restart the timer (RFC 1122 3.3.2: a fixed time)
    f(frag(8, b"q" * 8, ident=8), 1.0)  # no first fragment: nobody to tell
    assert f.r.next_deadline() == TIMEOUT
    assert f.r.on_deadline(TIMEOUT - 0.001) == []
    [late] = f.r.on_deadline(TIMEOUT)
    assert (late.src, late.dst) == (PEER, HOST)
    assert late.first == a[: 20 + 8]  # the first fragment's header and 8 octets of data
    assert f.r.next_deadline() == TIMEOUT + 1.0
    assert f.r.on_deadline(TIMEOUT + 1.0) == []
    assert f.r.next_deadline() is None and f.r.charged == 0
    assert f.stats.nonzero() == {"ip_reasm_fragments": 3, "ip_reasm_timeout": 2}


def test_byte_bound_evicts_the_oldest() -> None:
    piece = 1480
    payload = PAYLOAD[: 2 * piece]
    per_datagram = DATAGRAM_COST + PIECE_COST + piece  # a datagram holding one half
    f = Feeder(reasm_max_bytes=3 * per_datagram)
    srcs = ["10.7.0.11", "10.7.0.12", "10.7.0.13", "10.7.0.14"]
    halves = {s: cut(payload, [piece], src=s) for s in srcs}
    for t, s in enumerate(srcs):
        assert f(halves[s][0], float(t)) is None
    assert f.stats.ip_reasm_evicted == 1 and len(f.r) == 3 and f.r.charged == 3 * per_datagram
    # The oldest (10.7.0.11) is gone: its second half starts over and completes nothing, and
    # pushes out the next oldest (10.7.0.12) ...
    assert f(halves[srcs[0]][1], 4.0) is None
    assert f.stats.ip_reasm_evicted == 2
    # ... while the newest still completes (its second half pushing out 10.7.0.13).
    out = f(halves[srcs[3]][1], 4.0)
    assert out is not None and bytes(out) == whole(payload, src=srcs[3])
    assert f.stats.ip_reasm_evicted == 3 and len(f.r) == 1 and f.r.charged == per_datagram


def test_a_datagram_larger_than_the_bound_is_evicted_itself() -> None:
    f = Feeder(reasm_max_bytes=DATAGRAM_COST + PIECE_COST + 100)
    assert f(frag(0, b"x" * 1480)) is None
    assert f.stats.nonzero() == {"ip_reasm_fragments": 1, "ip_reasm_evicted": 1}
    assert len(f.r) == 0 and f.r.charged == 0


def test_per_source_bound_evicts_that_sources_oldest() -> None:
    f = Feeder(reasm_max_per_source=2)
    for ident in (1, 2, 3):
        f(frag(0, PAYLOAD[:8], ident=ident), float(ident))
    f(frag(0, PAYLOAD[:8], ident=1, src=OTHER), 4.0)  # another source is not affected
    assert f.stats.ip_reasm_per_source_limit == 1 and len(f.r) == 3
    assert f(frag(8, PAYLOAD[8:16], more=False, ident=1)) is None  # ident 1 of PEER was evicted
    out = f(frag(8, PAYLOAD[8:16], more=False, ident=1, src=OTHER))
    assert out is not None and bytes(out) == whole(PAYLOAD[:16], ident=1, src=OTHER)
    assert f(frag(8, PAYLOAD[8:16], more=False, ident=3)) is not None
    assert f.stats.ip_reasm_per_source_limit == 2  # ident 1 of PEER began again, pushing out 2


def test_key_is_source_destination_protocol_and_identification() -> None:
    f = Feeder()
    assert f(frag(0, SMALL[:16], proto=17)) is None
    # Same source, destination and identification, another protocol: another datagram.
    assert f(frag(16, SMALL[16:], more=False, proto=6)) is None
    assert len(f.r) == 2
    out = f(frag(16, SMALL[16:], more=False, proto=17))
    assert out is not None and bytes(out) == whole(SMALL)


# -- through the host ------------------------------------------------------------------------


def fragment_by_scapy(packet: IP, size: int = 1480) -> list[bytes]:
    return [raw(p) for p in fragment(packet, fragsize=size)]


def test_fragmented_echo_request_is_answered() -> None:
    h = make_host()
    data = bytes(random.Random(2).getrandbits(8) for _ in range(3000))
    request = IP(src=A_PEER, dst=A_HOST, id=99) / ICMP(type=8, id=0x1234, seq=7) / Raw(data)
    pieces = fragment_by_scapy(request)
    assert len(pieces) == 3
    for p in pieces[::-1]:
        h.receive_packet(p, 0.0)
    # The reply is as long as the request, so it goes out in fragments as the request came.
    sent = [IP(bytes(p)) for p in h.packets_to_send(0.0)]  # type: ignore[arg-type]
    assert len(sent) == 3 and all(len(p) <= 1500 for p in sent)
    (reply,) = defragment(sent)  # type: ignore[no-untyped-call]
    assert (reply.src, reply.dst, reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (
        A_HOST,
        A_PEER,
        0,
        0x1234,
        7,
    )
    assert bytes(reply[ICMP].payload) == data
    assert h.stats.nonzero() == {
        "ip_rx": 3,
        "ip_reasm_fragments": 3,
        "ip_reasm_ok": 1,
        "icmp_rx": 1,
        "icmp_echo_replies": 1,
        "ip_frag_created": 3,
        "ip_tx": 3,
    }


def test_fragmented_data_reaches_an_established_connection() -> None:
    h = make_host()
    listener = h.listen(80)
    h.receive_packet(tcp_packet(40000, 80, 1000), 0.0)
    segments(h)
    h.receive_packet(tcp_packet(40000, 80, 1001, SERVER_ISN + 1, tcp.ACK), 0.0)
    conn = listener.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    data = bytes(random.Random(4).getrandbits(8) for _ in range(4000))
    segment = (
        IP(src=A_PEER, dst=A_HOST, id=5)
        / TCP(sport=40000, dport=80, seq=1001, ack=SERVER_ISN + 1, flags="PA", window=65535)
        / Raw(data)
    )
    pieces = fragment_by_scapy(segment, 1000)
    random.Random(5).shuffle(pieces)
    for p in pieces:
        h.receive_packet(p, 0.1)
    assert conn.read() == data
    assert h.stats.ip_reasm_ok == 1 and h.stats.ip_reasm_fragments == len(pieces) == 5
    # Acknowledged at once or by the delayed-ACK timer; either way, all of it.
    acks = segments(h, 0.1)
    h.on_deadline(1.0)
    acks += segments(h, 1.0)
    assert acks and acks[-1].ack == 1001 + len(data)


def test_fragmented_syn_to_a_closed_port_gets_the_rst_for_all_its_data() -> None:
    h = make_host()
    syn = IP(src=A_PEER, dst=A_HOST, id=6) / TCP(sport=40000, dport=81, seq=10, flags="S")
    pieces = fragment_by_scapy(syn / Raw(b"d" * 2000))
    for p in pieces:
        h.receive_packet(p, 0.0)
    [rst] = segments(h)
    # RFC 9293 3.10.7.1: ACK = SEG.SEQ + SEG.LEN, and SEG.LEN counts all 2000 octets.
    assert (rst.control, rst.ack) == (tcp.Control.RST, 10 + 2000 + 1)


def test_reassembled_unknown_protocol_gets_protocol_unreachable_quoting_the_whole() -> None:
    h = make_host()
    datagram = IP(src=A_PEER, dst=A_HOST, id=77) / UDP(sport=5, dport=53) / Raw(b"q" * 3000)
    for p in fragment_by_scapy(datagram):
        h.receive_packet(p, 0.0)
    [out] = h.packets_to_send(0.0)
    msg = IP(bytes(out))
    assert (msg[ICMP].type, msg[ICMP].code) == (3, 2)
    quoted = IP(bytes(msg[ICMP].payload)[:20])
    assert (quoted.len, quoted.flags, quoted.frag, quoted.id) == (3028, 0, 0, 77)
    assert h.stats.icmp_unreach_sent == 1 and h.stats.ip_reasm_ok == 1


def test_timeout_sends_time_exceeded_quoting_the_first_fragment() -> None:
    h = make_host()
    first, _rest = cut(PAYLOAD, [1480])
    h.receive_packet(first, 0.0)
    assert h.packets_to_send(0.0) == []
    assert h.next_deadline() == TIMEOUT
    h.on_deadline(TIMEOUT)
    [out] = h.packets_to_send(TIMEOUT)
    msg = IP(bytes(out))
    again = IP(bytes(out))
    del again.chksum
    del again[ICMP].chksum
    assert raw(again) == bytes(out)  # scapy agrees on both checksums
    assert (msg.src, msg.dst, msg[ICMP].type, msg[ICMP].code) == (A_HOST, A_PEER, 11, 1)
    assert bytes(msg[ICMP].payload) == first[:28]
    assert h.next_deadline() is None
    assert h.stats.nonzero() == {
        "ip_rx": 1,
        "ip_reasm_fragments": 1,
        "ip_reasm_timeout": 1,
        "icmp_time_exceeded_sent": 1,
        "ip_tx": 1,
    }


def test_timeout_without_the_first_fragment_sends_nothing() -> None:
    h = make_host()
    _first, rest = cut(PAYLOAD, [1480])
    h.receive_packet(rest, 0.0)
    h.on_deadline(TIMEOUT)
    assert h.packets_to_send(TIMEOUT) == []
    assert h.stats.nonzero() == {"ip_rx": 1, "ip_reasm_fragments": 1, "ip_reasm_timeout": 1}


def test_time_exceeded_is_rate_limited_like_every_icmp_error() -> None:
    h = make_host(host_config=HostConfig(icmp_error_burst=2, icmp_error_rate=0.001))
    for ident in range(3):
        h.receive_packet(frag(0, PAYLOAD[:8], ident=ident), 0.0)
    h.on_deadline(TIMEOUT)
    assert len(h.packets_to_send(TIMEOUT)) == 2
    assert h.stats.icmp_time_exceeded_sent == 2 and h.stats.icmp_rate_limited == 1


def test_host_deadline_includes_reassembly_past_its_cache() -> None:
    h = make_host()
    assert h.next_deadline() is None  # cached: nothing to do
    h.receive_packet(frag(0, PAYLOAD[:8]), 2.0)
    assert h.next_deadline() == 2.0 + TIMEOUT
    conn = h.connect(PEER, 80, 3.0)  # a SYN's retransmission timer comes first
    h.packets_to_send(3.0)
    rto = h.next_deadline()
    assert rto is not None and rto < 2.0 + TIMEOUT
    h.on_deadline(rto)
    conn.abort(rto)
    h.packets_to_send(rto)
    assert h.next_deadline() == 2.0 + TIMEOUT
    h.on_deadline(2.0 + TIMEOUT)
    assert h.stats.icmp_time_exceeded_sent == 1


def test_a_fragment_is_never_parsed_as_a_tcp_segment() -> None:
    # A first fragment that is, on its own bytes, a valid TCP segment (checksum included).
    piece = raw(IP(src=A_PEER, dst=A_HOST, id=3, flags="MF") / TCP(dport=81, flags="S") / b"abcd")
    assert (len(piece) - 20) % 8 == 0
    pkt = ipv4.parse(piece)
    assert (
        tcp.parse(
            pkt.payload,
            pkt.src,
            pkt.dst,
            pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
        ).control
        is tcp.Control.SYN
    )
    assert tcp.parse_ipv4(piece) is None  # the fast path leaves it to the general path
    h = make_host()
    h.receive_packet(piece, 0.0)
    assert h.packets_to_send(0.0) == []  # no RST from a closed port: it was held, not parsed
    assert h.stats.nonzero() == {"ip_rx": 1, "ip_reasm_fragments": 1}


def test_emit_time_exceeded_checks_its_code() -> None:
    buf = bytearray(64)
    original = frag(0, b"x" * 8)
    n = icmp.emit_time_exceeded(buf, 0, code=icmp.REASSEMBLY_TIME_EXCEEDED, original=original)
    msg = icmp.parse(buf[:n])
    assert (msg.type, msg.code, bytes(msg.payload)) == (11, 1, original[:28])
    with pytest.raises(ValueError, match="code"):
        icmp.emit_time_exceeded(buf, 0, code=2, original=original)
