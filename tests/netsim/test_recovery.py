"""Loss recovery end to end, in virtual time: scripted faults hit chosen segments of a 1 MB
transfer between two ustack hosts, and the sender's counters say how each was repaired.

Each scenario would come out differently without its feature: one loss or a burst of five is
one fast recovery and no RTO (SACK, RACK); a lost last segment is repaired by the tail loss probe
(no RTO); lost ACKs cost nothing; reordering by three segments is not taken for loss once RACK
has seen reordering; duplicates are reported as D-SACKs and cost nothing; an old segment is
dropped by PAWS; timestamps that wrap keep working. Every scenario runs over IPv4 and IPv6 (the
same hosts; the client connects to the server's address of the family).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tests.netsim.harness import MB, Outcome, run_transfer, sha
from ustack.tcp.config import TcpConfig
from ustack.wire import tcp as wt

SIZE = MB
# The payload of a full segment: 1500 - 40 (IPv4 and TCP headers) or 1500 - 60 (IPv6 and TCP),
# less 12 bytes of timestamps (RFC 7323 3.2) -- and without them.
MSS = {4: 1448, 6: 1428}
MSS_NO_TS = {4: 1460, 6: 1440}

both_families = pytest.mark.parametrize("family", [4, 6])


class Seg:
    """What a scripted fault knows about one packet: direction-relative offsets."""

    __slots__ = ("ack", "flags", "index", "length", "offset", "tsval")

    def __init__(self, offset: int, length: int, flags: int, ack: int, tsval: int, index: int):
        self.offset = offset  # payload offset from the sender's first data byte
        self.length = length
        self.flags = flags
        self.ack = ack
        self.tsval = tsval
        self.index = index  # how many packets this direction carried before this one


Rule = Callable[[Seg, float], list[float] | None]
"""Given a packet and its perfect arrival time: None to deliver it unchanged, else the extra
delays of each copy to deliver (an empty list drops it)."""


class ScriptedFault:
    """FaultModel's ``apply`` with decisions taken by a rule on parsed TCP headers."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.isn: int | None = None
        self.count = 0
        self.hits = 0
        self.later: list[tuple[float, bytes]] = []

    def apply(
        self, packet: bytes | bytearray | memoryview, now: float
    ) -> list[tuple[float, bytes]]:
        data = bytes(packet)
        # where TCP starts: after the IPv4 header's IHL, or IPv6's fixed header (ustack sends
        # no extension headers)
        ihl = (data[0] & 0x0F) * 4 if data[0] >> 4 == 4 else 40
        seq, ack = struct.unpack_from("!II", data, ihl + 4)
        doff = (data[ihl + 12] >> 4) * 4
        flags = data[ihl + 13]
        if flags & wt.SYN:
            self.isn = seq
        opts = wt.parse_options(memoryview(data)[ihl + 20 : ihl + doff])
        tsval = opts.timestamps[0] if opts.timestamps else -1
        offset = (seq - (self.isn or 0) - 1) & 0xFFFFFFFF
        seg = Seg(offset, len(data) - ihl - doff, flags, ack, tsval, self.count)
        self.count += 1
        delays = self.rule(seg, now)
        out = [(now, data)] if delays is None else [(now + d, data) for d in delays]
        if delays is not None:
            self.hits += 1
        return out


def drop_first_copy(offsets: set[int]) -> Rule:
    seen: set[int] = set()

    def rule(seg: Seg, now: float) -> list[float] | None:
        if seg.length and seg.offset in offsets and seg.offset not in seen:
            seen.add(seg.offset)
            return []
        return None

    return rule


def transfer(
    family: int, rule_ab: Rule | None = None, rule_ba: Rule | None = None, **kw: object
) -> Outcome:
    o = run_transfer(
        family=family,
        to_server=SIZE,
        fault_ab=ScriptedFault(rule_ab) if rule_ab else None,
        fault_ba=ScriptedFault(rule_ba) if rule_ba else None,
        max_time=100.0,
        **kw,  # type: ignore[arg-type]
    )
    assert o.finished and o.s.digest == sha(o.to_server) and o.s.received == SIZE
    # the connection was of the family: its MSS says so
    cfg = kw.get("config")
    timestamps = cfg.timestamps if isinstance(cfg, TcpConfig) else True
    assert o.conn is not None and o.conn.snd.snd_mss == (MSS if timestamps else MSS_NO_TS)[family]
    assert o.client.connections == [] and o.server.connections == []
    return o


@both_families
def test_clean_transfer_needs_no_recovery(family: int) -> None:
    o = transfer(family)
    st = o.client.stats
    assert st.tcp_retransmits == st.tcp_recoveries == st.tcp_rto_expired == 0
    assert o.client.stats.tcp_rtt_samples > 100  # every ACK times a segment


@both_families
def test_one_loss_one_fast_recovery_no_rto(family: int) -> None:
    o = transfer(family, drop_first_copy({300 * MSS[family]}))
    st = o.client.stats
    assert st.tcp_retransmits == 1 and st.tcp_retransmitted_bytes == MSS[family]
    assert st.tcp_fast_retransmits == st.tcp_recoveries == st.tcp_recoveries_completed == 1
    assert st.tcp_rto_expired == 0 and st.tcp_tlp_probes == 0
    assert o.server.stats.tcp_ooo_queued > 0  # the receiver held data beyond the hole


@both_families
def test_burst_of_five_losses_repaired_in_one_recovery(family: int) -> None:
    o = transfer(family, drop_first_copy({(300 + i) * MSS[family] for i in range(5)}))
    st = o.client.stats
    # SACK tells the sender about all five holes at once: no partial-ACK round trips, no RTO
    assert st.tcp_retransmits == 5 and st.tcp_retransmitted_bytes == 5 * MSS[family]
    assert st.tcp_recoveries == 1 and st.tcp_rto_expired == 0


@both_families
def test_burst_of_five_without_sack_needs_a_round_trip_per_hole(family: int) -> None:
    cfg = TcpConfig(sack=False, timestamps=False)
    o = transfer(
        family, drop_first_copy({(300 + i) * MSS_NO_TS[family] for i in range(5)}), config=cfg
    )
    st = o.client.stats
    assert st.tcp_retransmits >= 5 and st.tcp_partial_ack_retransmits == 4


@both_families
def test_lost_last_segment_is_repaired_by_the_tail_loss_probe(family: int) -> None:
    last = (SIZE // MSS[family]) * MSS[family]  # the final, short segment (with the FIN on it)

    o = transfer(family, drop_first_copy({last}))
    st = o.client.stats
    assert st.tcp_tlp_probes == 1 and st.tcp_tlp_recoveries == 1
    assert st.tcp_rto_expired == 0
    assert st.tcp_retransmits == 1
    # The probe's repair of a real loss gets the congestion response fast recovery would give.
    assert st.tcp_recoveries == 0


@both_families
def test_lost_last_segment_without_tlp_waits_for_the_rto(family: int) -> None:
    last = (SIZE // MSS[family]) * MSS[family]
    o = transfer(family, drop_first_copy({last}), config=TcpConfig(tlp=False))
    st = o.client.stats
    assert st.tcp_tlp_probes == 0 and st.tcp_rto_expired == 1


@both_families
def test_lost_acks_cost_nothing(family: int) -> None:
    def lose_acks(seg: Seg, now: float) -> list[float] | None:
        # two ACKs of every three, in the middle of the transfer (about 350 ACKs in all: one
        # per two segments) -- not the last ones, whose loss only the tail loss probe repairs
        return [] if not seg.length and 100 <= seg.index < 250 and seg.index % 3 else None

    o = transfer(family, rule_ba=lose_acks)
    st = o.client.stats
    # Cumulative ACKs cover for the lost ones: nothing is resent, nothing times out.
    assert st.tcp_retransmits == 0 and st.tcp_rto_expired == 0 and st.tcp_recoveries == 0


def hold_back(mss: int, depth: int, every: int, start: int, stop: int = 1 << 30) -> Rule:
    """Delay data segments number ``start``, ``start + every``, ... (below ``stop``) just long
    enough for ``depth`` later segments to overtake each: reordering by ``depth`` segments.
    Segments arrive one serialisation time (1500 bytes at 100 Mbit/s) apart."""
    gap = 1500 * 8 / 100e6
    seen: set[int] = set()

    def rule(seg: Seg, now: float) -> list[float] | None:
        n, rest = divmod(seg.offset, mss)
        if (
            seg.length
            and not rest
            and start <= n < stop
            and (n - start) % every == 0
            and n not in seen
        ):
            seen.add(n)
            return [(depth + 0.5) * gap]
        return None

    return rule


@both_families
def test_reordering_by_three_no_spurious_retransmission_once_reordering_is_seen(
    family: int,
) -> None:
    # First a reordering by two, which RACK's reordering window waits out (two SACKed segments
    # are below DupThresh), teaching it that this path reorders; then reordering by three.
    two = hold_back(MSS[family], depth=2, every=1, start=30, stop=31)
    three = hold_back(MSS[family], depth=3, every=40, start=80)

    def rule(seg: Seg, now: float) -> list[float] | None:
        return two(seg, now) or three(seg, now)

    o = transfer(family, rule)
    st = o.client.stats
    assert st.tcp_reordering_seen == 1
    assert st.tcp_retransmits == 0 and st.tcp_recoveries == 0
    assert o.server.stats.tcp_ooo_queued >= 15  # the reordering did happen, every time


@both_families
def test_reordering_by_three_without_rack_retransmits_every_time(family: int) -> None:
    # The DupThresh rule (RFC 6675 IsLost) has no reordering window: three SACKed segments
    # above a hole make it a loss, every time.
    o = transfer(
        family, hold_back(MSS[family], depth=3, every=40, start=80), config=TcpConfig(rack=False)
    )
    st = o.client.stats
    assert st.tcp_retransmits >= 15 and st.tcp_dsack_received >= 15


@both_families
def test_first_reordering_by_three_is_undone_by_d_sack(family: int) -> None:
    # The first time, RACK cannot know: three SACKed segments make the delayed one lost
    # (RFC 8985's reo_wnd is 0 until reordering is seen). The original arrives after all, the
    # receiver reports the retransmission as a D-SACK, the sender undoes the cwnd reduction
    # (and, with timestamps, Eifel says so first) and waits from then on.
    o = transfer(family, hold_back(MSS[family], depth=3, every=40, start=80))
    st = o.client.stats
    assert st.tcp_retransmits == 1
    assert st.tcp_undo_timestamps + st.tcp_undo_dsack == 1
    assert st.tcp_reordering_seen == 1
    assert o.server.stats.tcp_dsack_sent == 1


@both_families
def test_duplicates_are_reported_and_cost_nothing(family: int) -> None:
    def duplicate(seg: Seg, now: float) -> list[float] | None:
        return [0.0, 1e-6] if seg.length and seg.index % 25 == 0 else None

    o = transfer(family, duplicate)
    assert o.server.stats.tcp_dup_segments >= 20
    assert o.server.stats.tcp_dsack_sent == o.server.stats.tcp_dup_segments
    st = o.client.stats
    assert st.tcp_dsack_received == o.server.stats.tcp_dsack_sent
    assert st.tcp_retransmits == 0 and st.tcp_recoveries == 0


@both_families
def test_a_receiver_that_reneges_gets_its_data_again(family: int) -> None:
    # Segment 300 is lost; while the receiver holds what came after it (and has SACKed it), it
    # throws all that away (RFC 2018 8 allows this under memory pressure). The retransmission
    # of 300 is then ACKed only up to the first SACKed segment: the sender sees the reneging,
    # forgets its SACK marks and sends the data again. The transfer completes intact.
    reneged: list[int] = []
    server_conns: list[object] = []

    def drop_then_renege(seg: Seg, now: float) -> list[float] | None:
        if seg.length and seg.offset == 300 * MSS[family]:
            if not reneged:
                reneged.append(0)
                return []
            if len(reneged) == 1:
                # the retransmission is on its way: the receiver drops what it held beyond it
                reneged.append(server_conns[0].rcv.renege())  # type: ignore[attr-defined]
        return None

    from ustack.stack.tcp_demux import TcpDemux

    real = TcpDemux._new_connection

    def remember(self: TcpDemux, key: object, now: float) -> object:
        conn = real(self, key, now)  # type: ignore[arg-type]
        if conn.local_port == 5001:
            server_conns.append(conn)
        return conn

    TcpDemux._new_connection = remember  # type: ignore[method-assign, assignment]
    try:
        o = transfer(family, drop_then_renege)
    finally:
        TcpDemux._new_connection = real  # type: ignore[method-assign]
    assert len(reneged) == 2 and reneged[1] > 10 * MSS[family]  # it held (and dropped) SACKed data
    st = o.client.stats
    assert st.tcp_sack_reneging >= 1
    assert st.tcp_retransmitted_bytes > reneged[1]  # what was thrown away went out again


@both_families
def test_paws_drops_an_old_duplicate(family: int) -> None:
    # A copy of an early data segment turns up 50 ms later, while the transfer is still going:
    # its TSval is 50 ticks behind TS.Recent.
    def stale_copy(seg: Seg, now: float) -> list[float] | None:
        return [0.0, 0.05] if seg.length and seg.offset == 10 * MSS[family] else None

    o = transfer(family, stale_copy)
    assert o.server.stats.tcp_drop_paws == 1
    assert o.server.stats.tcp_dup_segments == 0  # PAWS decided before the sequence check


@both_families
def test_timestamps_that_wrap_keep_working(monkeypatch: pytest.MonkeyPatch, family: int) -> None:
    # Both clocks start 50 ms (50 ticks) before 2**32; the transfer (~0.1 s) crosses the wrap.
    from ustack.stack.tcp_demux import TcpDemux

    real = TcpDemux._new_connection

    def near_wrap(self: TcpDemux, key: object, now: float) -> object:
        conn = real(self, key, now)  # type: ignore[arg-type]
        conn._ts_offset = (1 << 32) - 50
        return conn

    monkeypatch.setattr(TcpDemux, "_new_connection", near_wrap)
    seen: list[int] = []

    def watch(seg: Seg, now: float) -> list[float] | None:
        seen.append(seg.tsval)
        return None

    o = transfer(family, watch)
    assert min(s for s in seen if s >= 0) < 50 and max(seen) > (1 << 32) - 60  # it wrapped
    for host in (o.client, o.server):
        assert host.stats.tcp_drop_paws == 0 and host.stats.tcp_retransmits == 0


@both_families
def test_spurious_rto_is_undone_with_timestamps(family: int) -> None:
    # Every ACK sent between 40 ms and 400 ms is held up until 0.4 s (a route flap): the tail
    # loss probe and then the RTO (0.2 s) fire although nothing was lost. The first ACK to
    # come back echoes the original's TSval, not the retransmission's, so Eifel (RFC 3522)
    # calls it spurious and cwnd and ssthresh are restored (RFC 4015).
    def flap(seg: Seg, now: float) -> list[float] | None:
        return [0.4 - now] if 0.04 <= now < 0.4 else None

    o = transfer(family, rule_ba=flap)
    st = o.client.stats
    assert st.tcp_rto_expired >= 1
    assert st.tcp_undo_timestamps >= 1
