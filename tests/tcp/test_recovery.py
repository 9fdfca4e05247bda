"""The scoreboard and loss detection on their own, with explicit times: RFC 6675 pipe and
NextSeg, RFC 8985 RACK and TLP, D-SACK and timestamp undo, reneging.

Sequence numbers here are the scoreboard's unwrapped ones: segment ``i`` (1-based) of 1000 bytes
is ``[1 + (i-1)*1000, 1 + i*1000)``.
"""

from __future__ import annotations

import pytest

from ustack.tcp.config import TcpConfig
from ustack.tcp.congestion import NewReno
from ustack.tcp.recovery import WC_DEL_ACK, LossState, Recovery
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer, Timers

MSS = 1000


def seg(i: int) -> tuple[int, int]:
    return 1 + (i - 1) * MSS, 1 + i * MSS


class Rig:
    """A Recovery with a real NewReno controller and ``n`` segments sent 1 ms apart."""

    def __init__(self, n: int = 10, *, sack: bool = True, rack: bool = True, t0: float = 0.0):
        self.stats = Stats()
        self.timers = Timers()
        self.cc = NewReno(MSS)
        self.cc.cwnd = 20 * MSS
        self.r = Recovery(TcpConfig(), self.stats, self.timers, self.cc, MSS)
        self.r.sack = sack
        self.r.rack = rack and sack
        self.r.tlp = sack
        self.una = 1
        self.high = 1
        self.srtt = 0.05
        self.send(n, t0)

    def send(self, n: int, t0: float, tsval: int = -1) -> None:
        for k in range(n):
            start = self.high
            self.r.sent_new(start, start + MSS, t0 + k * 0.001, tsval, False)
            self.high += MSS

    def ack(
        self,
        now: float,
        una: int | None = None,
        sacked: list[int] | tuple[int, ...] = (),
        dsack: tuple[int, int] | None = None,
        tsecr: int | None = None,
    ) -> tuple[int, float | None, float | None]:
        """An ACK of ``una`` (default: unchanged) SACKing segments ``sacked`` (numbers)."""
        old = self.una
        flight_old = self.flight
        if una is not None:
            self.una = una
        blocks = [seg(i) for i in sacked]
        r = self.r
        out = r.on_ack(old, self.una, self.high, blocks, dsack, now, tsecr)
        # what the connection does next with the ACK
        r.maybe_exit(self.una, now, self.flight)
        if r.rack:
            r.detect_loss(now, self.srtt)
        if r.tlp_end is not None:
            r.tlp_ack(self.una, now, flight_old, dsack is not None)
        r.board.check(self.una, self.high)
        return out

    @property
    def flight(self) -> int:
        return self.high - self.una

    def lost(self) -> list[int]:
        """Segments presumed lost and waiting to be sent again."""
        return [(rec.start - 1) // MSS + 1 for rec in self.r.board if rec.lost and not rec.retrans]


class TestScoreboard:
    def test_cumulative_ack_forgets_records_and_trims_a_partial_one(self) -> None:
        g = Rig(5)
        delivered, rtt, ca_rtt = g.ack(0.05, una=seg(2)[1])
        assert delivered == 2 * MSS
        # RFC 6298 timing from the oldest segment this ACK covers; RACK from the newest
        assert rtt == pytest.approx(0.05) and ca_rtt == pytest.approx(0.049)
        assert len(g.r.board) == 3
        delivered, _, _ = g.ack(0.06, una=seg(3)[0] + 300)
        assert delivered == 300 and g.r.board.first().start == seg(3)[0] + 300  # type: ignore[union-attr]

    def test_sack_marks_records_splitting_at_block_edges(self) -> None:
        g = Rig(5)
        a, b = seg(3)
        out = g.r.on_ack(1, 1, g.high, [(a + 400, b + 200)], None, 0.05, None)
        g.r.board.check(1, g.high)
        assert out[0] == 800  # [a+400, b+200): 600 of segment 3 and 200 of segment 4
        recs = [(r.start, r.end, r.sacked) for r in g.r.board]
        assert (a, a + 400, False) in recs and (a + 400, b, True) in recs
        assert (b, b + 200, True) in recs and (b + 200, b + MSS, False) in recs
        assert g.r.board.sacked_out == 800

    def test_a_block_repeated_in_every_ack_is_only_counted_once(self) -> None:
        g = Rig(10)
        assert g.ack(0.05, sacked=[5])[0] == MSS
        assert g.ack(0.051, sacked=[5])[0] == 0
        assert g.ack(0.052, sacked=[5, 6])[0] == MSS
        assert g.r.board.sacked_out == 2 * MSS

    def test_pipe_is_in_flight_minus_sacked_minus_lost_plus_retransmitted(self) -> None:
        g = Rig(10)
        g.ack(0.05, sacked=[4, 5, 6])  # three SACKed: segments 1-3 are lost (RFC 8985: reo_wnd 0)
        assert g.lost() == [1, 2, 3]
        assert g.r.pipe(g.flight) == 10 * MSS - 3 * MSS - 3 * MSS
        _, rec = g.r.next_lost()  # type: ignore[misc]
        g.r.retransmitted(rec, 0.06, -1)
        assert g.r.pipe(g.flight) == 5 * MSS
        g.r.board.check(g.una, g.high)


class TestRack:
    def test_a_segment_sent_before_a_delivered_one_waits_out_the_reordering_window(self) -> None:
        g = Rig(10)
        g.r.min_rtt = 0.040
        g.ack(0.050, sacked=[5])  # segment 5 was sent at 4 ms: RACK.rtt = 46 ms
        assert g.r.rack_rtt == pytest.approx(0.046)
        # one SACKed segment, no reordering seen: reo_wnd = min_rtt / 4 = 10 ms
        assert g.r.reo_wnd() == pytest.approx(0.010)
        assert g.lost() == []
        # the timer waits for the last of segments 1-4 (sent at 3 ms): 3 + 46 + 10 - 50 = 9 ms
        assert g.timers.get(Timer.REORDER) == pytest.approx(0.059)
        assert g.r.detect_loss(0.059, srtt=0.05) == 4
        assert g.lost() == [1, 2, 3, 4]

    def test_three_sacked_segments_and_no_reordering_seen_mean_no_window(self) -> None:
        g = Rig(10)
        g.r.min_rtt = 0.040
        g.ack(0.050, sacked=[5, 6, 7])
        assert g.r.reo_wnd() == 0.0  # RFC 8985 6.2: DupThresh SACKed, no reordering seen
        g.r.detect_loss(0.050, srtt=0.05)
        assert g.lost() == [1, 2, 3, 4]

    def test_once_reordering_is_seen_the_window_stays(self) -> None:
        g = Rig(10)
        g.r.min_rtt = 0.040
        g.ack(0.050, sacked=[3])
        g.ack(0.051, una=seg(3)[1])  # 1 and 2 arrive after 3 without being resent
        assert g.r.reordering_seen and g.stats.tcp_reordering_seen == 1
        g.ack(0.053, sacked=[7, 8, 9])
        g.r.detect_loss(0.053, srtt=0.05)
        assert g.lost() == []  # reo_wnd is min_rtt/4 although three segments are SACKed
        assert g.timers.armed(Timer.REORDER)

    def test_d_sacks_widen_the_window_up_to_srtt(self) -> None:
        g = Rig(10)
        g.r.min_rtt = 0.040
        g.r.reordering_seen = True
        assert g.r.reo_wnd() == pytest.approx(0.010)
        g.ack(0.05, dsack=(seg(1)[0] - MSS, seg(1)[0]))
        assert g.r.reo_wnd() == pytest.approx(0.020) and g.stats.tcp_dsack_received == 1
        g.ack(0.051, dsack=(seg(1)[0] - MSS, seg(1)[0]))  # same round trip: once only
        assert g.r.reo_wnd_mult == 2
        g.r.reo_wnd_mult = 40
        g.ack(0.052, sacked=[5])
        g.r.detect_loss(0.052, srtt=0.045)  # the window is capped at SRTT
        assert g.timers.get(Timer.REORDER) == pytest.approx(0.003 + 0.048 + 0.045)

    def test_retransmissions_are_judged_by_when_they_were_sent(self) -> None:
        g = Rig(10)
        g.ack(0.050, sacked=[4, 5, 6])
        _, rec = g.r.next_lost()  # type: ignore[misc]
        g.r.retransmitted(rec, 0.060, -1)  # segment 1 again at 60 ms
        g.send(1, 0.070)  # segment 11 at 70 ms
        # sent at 6-9 ms: they say nothing about the retransmission
        g.ack(0.100, sacked=[7, 8, 9, 10])
        assert 1 not in g.lost()
        g.ack(0.125, sacked=[11])  # sent after it and delivered: the retransmission is lost
        assert g.lost() == [1, 2, 3]
        assert g.stats.tcp_lost_retransmits == 1

    def test_an_ack_for_the_original_does_not_time_the_retransmission(self) -> None:
        g = Rig(3)
        g.r.min_rtt = 0.040
        rec = g.r.board.first()
        assert rec is not None
        g.r.board.mark_lost(rec)
        g.r.retransmitted(rec, 0.045, -1)
        # 2 ms after the retransmission: faster than min_rtt, so the original got there
        _, rtt, ca_rtt = g.ack(0.047, una=seg(1)[1])
        assert rtt is None and ca_rtt is None  # Karn (RFC 6298 3) and RFC 8985 6.2 step 2

    def test_rto_marks_the_first_segment_and_what_rack_deems_overdue(self) -> None:
        g = Rig(10)
        g.ack(0.050, sacked=[2])  # RACK.rtt = 49 ms
        g.send(5, 0.240)  # segments 11-15, just sent
        g.r.on_rto(0.250, g.una, g.high, g.flight)
        # RFC 8985 6.3: SND.UNA's segment, and those sent more than RACK.rtt + reo_wnd ago
        assert g.lost() == [1, 3, 4, 5, 6, 7, 8, 9, 10]
        assert g.r.state is LossState.LOSS and g.cc.cwnd == MSS
        g.r.board.check(g.una, g.high)


class TestDupThreshWithoutRack:
    def test_is_lost_needs_three_sacked_segments_above(self) -> None:
        g = Rig(10, rack=False)
        g.ack(0.05, sacked=[5, 6])
        assert g.r.detect_loss_dupthresh() == 0
        g.ack(0.06, sacked=[5, 6, 7])
        assert g.r.detect_loss_dupthresh() == 4
        assert g.lost() == [1, 2, 3, 4]


class TestNextSeg:
    def test_rule_1_takes_the_lowest_lost_segment_not_yet_resent(self) -> None:
        g = Rig(10)
        g.ack(0.05, sacked=[3, 6, 7, 8])
        g.r.enter_recovery(0.05, g.flight, g.high, "rack")
        order = []
        while (found := g.r.next_lost()) is not None:
            _, rec = found
            order.append((rec.start - 1) // MSS + 1)
            g.r.retransmitted(rec, 0.06, -1)
        assert order == [1, 2, 4, 5]

    def test_rule_4_rescue_once_after_a_partial_ack(self) -> None:
        g = Rig(10)
        g.ack(0.05, sacked=[2, 3, 4])  # segment 1 lost
        g.r.enter_recovery(0.05, g.flight, g.high, "rack")
        _, rec = g.r.next_lost()  # type: ignore[misc]
        g.r.retransmitted(rec, 0.06, -1)
        assert g.r.next_other(g.una) is None  # RFC 6675 (4.3): no rescue before a partial ACK
        g.ack(0.07, una=seg(4)[1])  # partial ACK beyond RescueRxt
        found = g.r.next_other(g.una)
        assert found is not None and found[1].start == seg(10)[0]  # the highest unSACKed
        assert g.r.next_other(g.una) is None  # once per recovery
        assert g.stats.tcp_rescue_retransmits == 1


class TestTailLossProbe:
    def test_pto_is_two_srtt_and_one_segment_in_flight_adds_the_delayed_ack(self) -> None:
        g = Rig(10)
        g.r.arm_probe(1.0, srtt=0.05, flight=10 * MSS, rto_at=1.3)
        assert g.timers.get(Timer.PROBE) == pytest.approx(1.1)
        g.r.arm_probe(1.0, srtt=0.05, flight=MSS, rto_at=1.9)
        assert g.timers.get(Timer.PROBE) == pytest.approx(1.1 + WC_DEL_ACK)

    def test_no_probe_when_the_rto_comes_first_in_recovery_or_with_one_out(self) -> None:
        g = Rig(10)
        g.r.arm_probe(1.0, srtt=0.05, flight=10 * MSS, rto_at=1.05)
        assert not g.timers.armed(Timer.PROBE)
        g.r.probe_sent(g.high, retrans=True)
        g.r.arm_probe(1.0, srtt=0.05, flight=10 * MSS, rto_at=2.0)
        assert not g.timers.armed(Timer.PROBE)  # one probe at a time
        g.r.tlp_end = None
        g.ack(0.05, sacked=[4, 5, 6])
        g.r.enter_recovery(0.05, g.flight, g.high, "rack")
        g.r.arm_probe(1.0, srtt=0.05, flight=10 * MSS, rto_at=2.0)
        assert not g.timers.armed(Timer.PROBE)  # RFC 8985 7.2: not in recovery

    def test_a_probe_that_repaired_a_loss_gets_a_congestion_response(self) -> None:
        g = Rig(10)
        g.r.probe_sent(g.high, retrans=True)
        g.ack(0.3, una=g.high)
        assert g.stats.tcp_tlp_recoveries == 1 and g.cc.ssthresh == 5 * MSS

    def test_a_probe_that_was_d_sacked_repaired_nothing(self) -> None:
        g = Rig(10)
        g.r.probe_sent(g.high, retrans=True)
        g.ack(0.3, una=g.high, dsack=seg(10))
        assert g.stats.tcp_tlp_spurious == 1 and g.stats.tcp_tlp_recoveries == 0
        assert g.cc.ssthresh > 100 * MSS


class TestUndo:
    def _recovery_with_two_retransmissions(self, tsval: int = -1) -> Rig:
        g = Rig(10)
        g.ack(0.05, sacked=[3, 4, 5])
        g.r.enter_recovery(0.05, g.flight, g.high, "rack")
        assert g.cc.ssthresh == 5 * MSS
        for _ in range(2):
            _, rec = g.r.next_lost()  # type: ignore[misc]
            g.r.retransmitted(rec, 0.06, tsval)
        return g

    def test_d_sacks_for_every_retransmission_undo_the_reduction(self) -> None:
        g = self._recovery_with_two_retransmissions()
        g.ack(0.07, una=seg(10)[1], dsack=seg(1))
        assert g.stats.tcp_undo_dsack == 0  # one of two
        g.ack(0.071, dsack=seg(2))
        assert g.stats.tcp_undo_dsack == 1
        assert g.cc.cwnd == 20 * MSS and g.cc.ssthresh > 100 * MSS  # as before the episode
        assert g.r.reordering_seen

    def test_a_d_sack_for_other_data_undoes_nothing(self) -> None:
        g = self._recovery_with_two_retransmissions()
        g.ack(0.07, una=seg(10)[1], dsack=seg(7))
        g.ack(0.071, dsack=seg(8))
        assert g.stats.tcp_undo_dsack == 0 and g.cc.ssthresh == 5 * MSS

    def test_eifel_an_echo_older_than_the_retransmission_means_spurious(self) -> None:
        g = self._recovery_with_two_retransmissions(tsval=600)
        g.ack(0.07, una=seg(10)[1], tsecr=590)  # echoes the original's TSval
        assert g.stats.tcp_undo_timestamps == 1 and g.cc.cwnd == 20 * MSS

    def test_eifel_an_echo_of_the_retransmission_means_it_was_needed(self) -> None:
        g = self._recovery_with_two_retransmissions(tsval=600)
        g.ack(0.07, una=seg(10)[1], tsecr=600)
        assert g.stats.tcp_undo_timestamps == 0 and g.cc.ssthresh == 5 * MSS


class TestReneging:
    def test_an_ack_stopping_at_sacked_data_is_reneging_and_the_rto_forgets_sacks(self) -> None:
        g = Rig(10)
        g.ack(0.05, sacked=[3, 4])
        g.ack(0.06, una=seg(2)[1])  # 3 and 4 were SACKed; the receiver now says it lacks 3
        assert g.r.reneged and g.stats.tcp_sack_reneging == 1
        g.r.on_rto(0.3, g.una, g.high, g.flight)
        assert g.r.board.sacked_out == 0 and not g.r.reneged
        assert 3 in g.lost() and 4 in g.lost()  # resent, not trusted any more

    def test_an_ack_that_still_sacks_the_data_is_not_reneging(self) -> None:
        g = Rig(10)
        g.ack(0.05, sacked=[3, 4])
        g.ack(0.06, una=seg(1)[1], sacked=[3, 4])
        assert not g.r.reneged

    def test_a_second_rto_in_a_row_forgets_sacks_too(self) -> None:
        g = Rig(10)
        g.ack(0.05, sacked=[5])
        g.r.on_rto(0.3, g.una, g.high, g.flight)
        assert g.r.board.sacked_out == MSS  # RFC 6675 5.1: kept after one RTO
        g.r.on_rto(0.7, g.una, g.high, g.flight)
        assert g.r.board.sacked_out == 0  # RFC 2018 8: not after two in a row
