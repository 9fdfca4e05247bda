"""Congestion control: RFC 5681, RFC 6582 NewReno, RFC 6928, the pluggable registry."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, ISS_A, Pair
from ustack.tcp import congestion
from ustack.tcp.config import TcpConfig
from ustack.tcp.congestion import NewReno, initial_window
from ustack.wire import tcp as wt

MSS = 1460
S0 = ISS_A + 1


class TestNewRenoUnit:
    @pytest.mark.parametrize(("mss", "iw"), [(1460, 14600), (536, 5360), (9000, 18000)])
    def test_initial_window_rfc6928(self, mss: int, iw: int) -> None:
        assert initial_window(mss) == iw
        assert NewReno(mss).cwnd == iw

    def test_slow_start_counts_bytes_up_to_two_segments_per_ack(self) -> None:
        cc = NewReno(MSS)
        cc.on_ack(MSS, 0, 0.0)
        assert cc.cwnd == 14600 + MSS
        cc.on_ack(5 * MSS, 0, 0.0)
        assert cc.cwnd == 14600 + 3 * MSS  # RFC 3465: L = 2*SMSS

    def test_congestion_avoidance_one_mss_per_window(self) -> None:
        cc = NewReno(MSS)
        cc.cwnd = 10 * MSS
        cc.ssthresh = 5 * MSS
        for _ in range(9):
            cc.on_ack(MSS, 0, 0.0)
        assert cc.cwnd == 10 * MSS
        cc.on_ack(MSS, 0, 0.0)
        assert cc.cwnd == 11 * MSS

    def test_timeout(self) -> None:
        cc = NewReno(MSS)
        cc.on_timeout(10 * MSS, True)
        assert (cc.cwnd, cc.ssthresh) == (MSS, 5 * MSS)
        cc.on_timeout(MSS, True)
        assert cc.ssthresh == 2 * MSS  # never below 2*SMSS
        cc.on_timeout(100 * MSS, False)  # a repeated timeout keeps ssthresh
        assert cc.ssthresh == 2 * MSS

    def test_recovery_arithmetic(self) -> None:
        cc = NewReno(MSS)
        cc.on_enter_recovery(10 * MSS)
        assert (cc.ssthresh, cc.cwnd, cc.in_recovery) == (5 * MSS, 8 * MSS, True)
        cc.on_recovery_dup_ack()
        assert cc.cwnd == 9 * MSS
        cc.on_partial_ack(3 * MSS)
        assert cc.cwnd == 9 * MSS - 3 * MSS + MSS
        cc.on_exit_recovery(2 * MSS)
        assert cc.cwnd == 3 * MSS and not cc.in_recovery
        cc.on_enter_recovery(20 * MSS)
        cc.on_exit_recovery(20 * MSS)
        assert cc.cwnd == cc.ssthresh == 10 * MSS


class TestRegistry:
    def test_newreno_is_the_default(self) -> None:
        assert "newreno" in congestion.available()
        assert isinstance(kit.new_conn().cc, NewReno)

    def test_unknown_name_is_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match="unknown congestion control"):
            kit.new_conn(TcpConfig(congestion="nope"))

    def test_registered_algorithm_is_used_by_name(self) -> None:
        class Fixed(NewReno):
            def on_ack(self, acked: int, flight: int, now: float) -> None:
                pass

        congestion.register("fixed-test", Fixed)
        s = kit.established(TcpConfig(congestion="fixed-test"))
        assert type(s.conn.cc) is Fixed
        s.conn.send(b"a" * 5 * MSS)
        s.out()
        s.push(ACK)
        assert s.conn.cwnd == 14600


def _sent_ten(nodelay: bool = True) -> kit.Script:
    s = kit.established(TcpConfig(nagle=not nodelay))
    s.conn.send(b"d" * 10 * MSS)
    assert len(s.out()) == 10
    return s


class TestLossRecovery:
    def test_fast_retransmit_on_third_duplicate_ack(self) -> None:
        s = _sent_ten()
        c = s.conn
        s.push(ACK, ack=S0 + MSS)
        assert s.push(ACK, ack=S0 + MSS) == []
        assert s.push(ACK, ack=S0 + MSS) == []
        (rtx,) = s.push(ACK, ack=S0 + MSS)
        assert rtx.seq == S0 + MSS and len(rtx.payload) == MSS
        # RFC 5681 3.2: ssthresh = FlightSize/2, cwnd = ssthresh + 3*SMSS
        assert c.ssthresh == 9 * MSS // 2 and c.cwnd == 9 * MSS // 2 + 3 * MSS
        assert c.stats.tcp_dup_acks == 3 and c.stats.tcp_fast_retransmits == 1

    def test_more_dup_acks_inflate_and_release_new_data(self) -> None:
        s = _sent_ten()
        c = s.conn
        for _ in range(4):
            s.push(ACK, ack=S0 + MSS)
        c.send(b"n" * 10 * MSS)
        assert s.out() == []  # cwnd 7.5 MSS < 9 MSS in flight
        new = []
        for _ in range(6):
            new += s.push(ACK, ack=S0 + MSS)
        # cwnd = 4.5 MSS + 3 MSS + 6 MSS = 13.5 MSS against 9 MSS in flight: 4 new segments
        assert [x.seq for x in new] == [S0 + (10 + i) * MSS for i in range(4)]

    def test_partial_ack_retransmits_next_hole_full_ack_exits(self) -> None:
        s = _sent_ten()
        c = s.conn
        for _ in range(4):
            s.push(ACK, ack=S0)
        assert c.cc.in_recovery
        (rtx,) = s.push(ACK, ack=S0 + 4 * MSS)  # partial: segment 5 was lost too
        assert rtx.seq == S0 + 4 * MSS
        assert c.cc.in_recovery and c.stats.tcp_partial_ack_retransmits == 1
        s.push(ACK, ack=S0 + 10 * MSS)  # full ACK
        assert not c.cc.in_recovery and c.stats.tcp_recoveries_completed == 1
        # RFC 6582 3.2 (3): cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS)
        assert c.cwnd == min(c.ssthresh, 2 * MSS)

    def test_no_fast_retransmit_for_dup_acks_below_recover_after_rto(self) -> None:
        s = _sent_ten()
        c = s.conn
        s.fire()  # RTO: recover = highest sequence number sent
        for _ in range(5):
            s.push(ACK, ack=S0)
        assert c.stats.tcp_fast_retransmits == 0 and not c.cc.in_recovery

    def test_window_change_is_not_a_duplicate_ack(self) -> None:
        s = _sent_ten()
        for w in (100, 200, 300, 400):
            s.push(ACK, ack=S0, window=w)
        assert s.conn.stats.tcp_dup_acks == 0 and s.conn.stats.tcp_fast_retransmits == 0

    def test_ack_with_data_is_not_a_duplicate_ack(self) -> None:
        s = _sent_ten()
        for _ in range(4):
            s.push(ACK, ack=S0, payload=b"x")
        assert s.conn.stats.tcp_dup_acks == 0


def _drop_first_copy(offsets: set[int]) -> kit.Filter:
    seen: set[int] = set()

    def drop(d: str, s: wt.TcpSegment) -> bool:
        off = (s.seq - S0) & 0xFFFFFFFF
        if d == "ab" and len(s.payload) and off in offsets and off not in seen:
            seen.add(off)
            return True
        return False

    return drop


def test_newreno_between_two_machines_two_losses_one_window() -> None:
    p = Pair(delay=0.01, drop=_drop_first_copy({20 * MSS, 24 * MSS}))
    p.handshake()
    data = bytes(range(256)) * 1000
    p.feed_a = memoryview(data)
    p.run(lambda: len(p.got_b) == len(data))
    assert bytes(p.got_b) == data
    st = p.stats_a
    assert st.tcp_fast_retransmits == 1
    assert st.tcp_partial_ack_retransmits == 1
    assert st.tcp_recoveries_completed == 1
    assert st.tcp_rto_expired == 0
    assert st.tcp_retransmits == 2


def test_slow_start_then_loss_halves_the_window() -> None:
    p = Pair(delay=0.01)
    p.handshake()
    p.feed_a = memoryview(b"s" * 3_000_000)
    p.run(lambda: len(p.got_b) >= 1_000_000)
    grown = p.a.cwnd
    assert grown > 50 * MSS  # slow start opened the window far beyond the IW
    p.drop = _drop_first_copy({((p.a.snd_max - S0) & 0xFFFFFFFF) // MSS * MSS + 10 * MSS})
    p.run(lambda: p.stats_a.tcp_recoveries_completed == 1)
    assert p.a.ssthresh < grown
