"""RFC 6298 estimator and retransmission of data, with its limits."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, ISS_A, RST, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, TimedOut
from ustack.tcp.rto import RtoEstimator
from ustack.tcp.state import State

S0 = ISS_A + 1
MSS = 1460


class TestEstimator:
    def test_initial_rto_is_one_second(self) -> None:
        assert RtoEstimator(1.0, 0.2, 60.0, 0.001).rto == 1.0

    def test_first_and_later_samples(self) -> None:
        e = RtoEstimator(1.0, 0.0, 60.0, 0.001)
        e.sample(0.1)
        assert (e.srtt, e.rttvar) == (pytest.approx(0.1), pytest.approx(0.05))
        assert e.rto == pytest.approx(0.1 + 4 * 0.05)  # (2.2)
        e.sample(0.3)
        rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)
        srtt = 0.875 * 0.1 + 0.125 * 0.3
        assert (e.srtt, e.rttvar) == (pytest.approx(srtt), pytest.approx(rttvar))
        assert e.rto == pytest.approx(srtt + 4 * rttvar)  # (2.3)

    def test_clock_granularity(self) -> None:
        e = RtoEstimator(1.0, 0.0, 60.0, 0.5)
        for _ in range(50):
            e.sample(0.1)
        assert e.rto == pytest.approx(0.1 + 0.5, abs=1e-3)  # max(G, K*RTTVAR) = G

    def test_minimum_and_maximum(self) -> None:
        e = RtoEstimator(1.0, 0.2, 60.0, 0.001)
        e.sample(0.001)
        assert e.rto == 0.2
        e = RtoEstimator(1.0, 0.2, 5.0, 0.001)
        e.sample(10.0)
        assert e.rto == 5.0

    def test_backoff_doubles_to_the_maximum_and_sample_clears_it(self) -> None:
        e = RtoEstimator(1.0, 0.2, 60.0, 0.001)
        seen = []
        for _ in range(8):
            e.back_off()
            seen.append(e.rto)
        assert seen == [2, 4, 8, 16, 32, 60, 60, 60]
        e.sample(0.1)
        assert e.backoff == 0 and e.rto == pytest.approx(0.3)


def _send(s: Script, n: int = 1000) -> None:
    s.conn.send(b"r" * n)
    assert s.out()


class TestDataRetransmission:
    def test_retransmits_with_exponential_backoff_then_times_out(self) -> None:
        s = kit.established(TcpConfig(data_retries=4))
        c = s.conn
        assert c.rto == 0.2  # handshake RTT of 0 -> the configured floor
        _send(s)
        times = []
        while c.state is State.ESTABLISHED:
            sent = s.fire()
            if sent and sent[-1].flags & RST:  # giving up sends the RST of ABORT (test_endings.py)
                assert [(seg.flags, seg.seq) for seg in sent] == [(RST | ACK, S0 + 1000)]
                break
            for seg in sent:
                assert seg.seq == S0 and len(seg.payload) == 1000
                times.append(s.now)
        assert times == pytest.approx([0.2, 0.6, 1.4, 3.0])
        assert s.now == pytest.approx(6.2)
        assert kit.events(c) == [TimedOut(c, "retransmit"), Closed(c)]
        assert c.stats.tcp_retransmits == 4 and c.stats.tcp_timeout_retransmit == 1
        assert c.stats.tcp_rto_expired == 4

    def test_rto_minimum_configurable(self) -> None:
        s = kit.established(TcpConfig(rto_min=0.5))
        _send(s)
        s.fire()
        assert s.now == 0.5

    def test_rto_maximum_bounds_backoff(self) -> None:
        s = kit.established(TcpConfig(rto_max=1.0, data_retries=6))
        _send(s)
        gaps = []
        last = 0.0
        while s.conn.state is State.ESTABLISHED:
            s.fire()
            gaps.append(round(s.now - last, 6))
            last = s.now
        assert gaps == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]

    def test_user_timeout(self) -> None:
        s = kit.established(TcpConfig(user_timeout=5.0))
        s.now = 100.0  # idle first: the timeout counts from the first unacknowledged send
        _send(s)
        s.run_timers(lambda: s.conn.state is State.CLOSED)
        c = s.conn
        assert s.now == pytest.approx(105.0)
        assert kit.events(c) == [TimedOut(c, "user_timeout"), Closed(c)]
        assert c.stats.tcp_timeout_user == 1

    def test_ack_progress_resets_the_retry_count(self) -> None:
        s = kit.established(TcpConfig(data_retries=2, nagle=False))
        c = s.conn
        c.send(b"a" * 100)
        s.out()
        c.send(b"b" * 100)
        s.out()
        s.fire()
        s.fire()
        s.push(ACK, ack=S0 + 100)  # progress
        s.fire()
        s.fire()
        assert c.state is State.ESTABLISHED
        s.fire()
        assert c.state is State.CLOSED

    def test_karn_no_sample_from_retransmitted_segment(self) -> None:
        s = kit.established()
        c = s.conn
        samples = c.stats.tcp_rtt_samples
        _send(s)
        s.fire()
        s.now += 0.05
        s.push(ACK)
        assert c.stats.tcp_rtt_samples == samples and c.srtt == 0.0
        # a fresh segment is timed again
        _send(s)
        s.now += 0.1
        s.push(ACK)
        assert c.stats.tcp_rtt_samples == samples + 1 and c.srtt > 0

    def test_karn_after_fast_retransmit(self) -> None:
        s = kit.established(TcpConfig(nagle=False))
        c = s.conn
        samples = c.stats.tcp_rtt_samples
        c.send(b"a" * 10 * MSS)  # the first segment is timed
        s.out()
        s.now = 0.01
        for _ in range(4):  # the first one updates the window, three are duplicates
            s.push(ACK, ack=S0)
        assert c.stats.tcp_fast_retransmits == 1
        s.now = 0.5
        s.push(ACK)
        assert c.stats.tcp_rtt_samples == samples and c.srtt == 0.0

    def test_timer_restarts_on_progress_and_stops_when_all_acked(self) -> None:
        s = kit.established(TcpConfig(nagle=False))
        c = s.conn
        c.send(b"a" * 3000)
        s.out()
        assert c.timers["retransmit"] == pytest.approx(0.2)
        s.now = 0.1
        s.push(ACK, ack=S0 + MSS)
        assert c.timers["retransmit"] == pytest.approx(0.1 + c.rto)  # (5.3)
        s.push(ACK)
        assert c.timers["retransmit"] is None  # (5.2)

    def test_rto_goes_back_to_snd_una_and_collapses_cwnd(self) -> None:
        s = kit.established(TcpConfig(nagle=False, congestion="newreno"))
        c = s.conn
        c.send(b"a" * 10 * MSS)
        assert len(s.out()) == 10
        s.push(ACK, ack=S0 + 2 * MSS)
        sent = s.fire()
        # RFC 5681 (4): ssthresh = max(FlightSize/2, 2*SMSS), cwnd = 1 SMSS; resend from SND.UNA
        assert c.ssthresh == 4 * MSS and c.cwnd == MSS
        assert [x.seq for x in sent] == [S0 + 2 * MSS]
        assert c.stats.tcp_retransmitted_bytes == MSS
        # slow start from there: each ACK opens the window again
        assert [x.seq for x in s.push(ACK, ack=S0 + 3 * MSS)] == [S0 + 3 * MSS, S0 + 4 * MSS]

    def test_data_retransmitted_after_rto_is_counted_once_per_segment(self) -> None:
        p = kit.Pair(delay=0.01)
        p.handshake()
        p.drop = lambda d, s: d == "ab" and len(s.payload) > 0 and p.stats_a.tcp_rto_expired < 2
        p.feed_a = memoryview(b"x" * 500)
        p.run(lambda: len(p.got_b) == 500)
        assert p.stats_a.tcp_rto_expired == 2 and p.stats_a.tcp_retransmits == 2
