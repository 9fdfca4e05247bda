"""Congestion control in the connection: the registry, RFC 5681/6582 recovery for a peer
without SACK, and whole transfers (the controllers' arithmetic is in test_cc_unit.py)."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, ISS_A, Pair
from ustack.tcp import congestion
from ustack.tcp.config import TcpConfig
from ustack.tcp.congestion import Cubic, NewReno
from ustack.wire import tcp as wt

MSS = 1460
S0 = ISS_A + 1


class TestRegistry:
    def test_cubic_is_the_default_newreno_selectable(self) -> None:
        assert {"cubic", "newreno"} <= set(congestion.available())
        assert isinstance(kit.new_conn().cc, Cubic)
        assert isinstance(kit.new_conn(TcpConfig(congestion="newreno")).cc, NewReno)

    def test_unknown_name_is_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match="unknown congestion control"):
            kit.new_conn(TcpConfig(congestion="nope"))

    def test_registered_algorithm_is_used_by_name(self) -> None:
        class Fixed(NewReno):
            def on_ack(self, acked: int, now: float, **kw: object) -> None:
                pass

        congestion.register("fixed-test", Fixed)
        s = kit.established(TcpConfig(congestion="fixed-test"))
        assert type(s.conn.cc) is Fixed
        s.conn.send(b"a" * 5 * MSS)
        s.out()
        s.push(ACK)
        assert s.conn.cwnd == 14600


def _sent_ten(nodelay: bool = True, congestion_name: str = "newreno") -> kit.Script:
    """Ten segments in flight to a peer without SACK (the scripted peer offers none)."""
    s = kit.established(TcpConfig(nagle=not nodelay, congestion=congestion_name))
    s.conn.send(b"d" * 10 * MSS)
    assert len(s.out()) == 10
    assert not s.conn.sack_ok
    return s


class TestNewRenoRecoveryWithoutSack:
    """RFC 5681 3.2 and RFC 6582 for a peer without SACK: each duplicate ACK stands for one
    segment that left the network, so RFC 6675's pipe drives what goes out."""

    def test_fast_retransmit_on_third_duplicate_ack(self) -> None:
        s = _sent_ten()
        c = s.conn
        s.push(ACK, ack=S0 + MSS)
        assert s.push(ACK, ack=S0 + MSS) == []
        assert s.push(ACK, ack=S0 + MSS) == []
        (rtx,) = s.push(ACK, ack=S0 + MSS)
        assert rtx.seq == S0 + MSS and len(rtx.payload) == MSS
        # RFC 5681 3.2 (2): ssthresh = max(FlightSize/2, 2*SMSS); RFC 6675 5 (4.2): cwnd too
        assert c.ssthresh == 9 * MSS // 2 and c.cwnd == c.ssthresh
        assert c.in_recovery
        assert c.stats.tcp_dup_acks == 3 and c.stats.tcp_fast_retransmits == 1
        assert c.stats.tcp_recoveries == 1

    def test_limited_transmit_on_the_first_two_duplicate_acks(self) -> None:
        # RFC 3042: new data goes out on the first and second duplicate ACK, one segment each,
        # although cwnd is full
        s = _sent_ten()
        c = s.conn
        c.send(b"n" * 5 * MSS)
        assert s.out() == []  # cwnd (10 MSS) is full
        # new data acked: slow start grows cwnd by one segment; two new ones fit
        assert len(s.push(ACK, ack=S0 + MSS)) == 2
        (first,) = s.push(ACK, ack=S0 + MSS)
        (second,) = s.push(ACK, ack=S0 + MSS)
        assert first.seq == S0 + 12 * MSS and second.seq == S0 + 13 * MSS
        assert not c.in_recovery and c.stats.tcp_retransmits == 0

    def test_further_dup_acks_release_one_new_segment_each(self) -> None:
        s = _sent_ten()
        c = s.conn
        for _ in range(4):
            s.push(ACK, ack=S0 + MSS)
        c.send(b"n" * 10 * MSS)
        # cwnd 4.5 MSS; pipe = 9 in flight - 3 dup ACKs - 1 lost + 1 retransmitted = 6 MSS
        assert s.out() == []
        assert c.pipe == 6 * MSS
        new = []
        for _ in range(6):
            new += s.push(ACK, ack=S0 + MSS)
        # each dup ACK takes one MSS off pipe; new data once cwnd - pipe >= 1 MSS
        assert [x.seq for x in new] == [S0 + (10 + i) * MSS for i in range(4)]
        assert c.pipe <= c.cwnd

    def test_partial_ack_retransmits_next_hole_full_ack_exits(self) -> None:
        s = _sent_ten()
        c = s.conn
        for _ in range(4):
            s.push(ACK, ack=S0)
        assert c.in_recovery
        (rtx,) = s.push(ACK, ack=S0 + 4 * MSS)  # partial: segment 5 was lost too
        assert rtx.seq == S0 + 4 * MSS
        assert c.in_recovery and c.stats.tcp_partial_ack_retransmits == 1
        s.push(ACK, ack=S0 + 10 * MSS)  # full ACK
        assert not c.in_recovery and c.stats.tcp_recoveries_completed == 1
        assert c.cwnd == c.ssthresh == 5 * MSS

    def test_no_fast_retransmit_for_dup_acks_below_the_recovery_point_after_rto(self) -> None:
        s = _sent_ten()
        c = s.conn
        (rto,) = s.fire()  # RTO: everything up to the highest byte sent is its business
        assert rto.seq == S0 and c.cwnd == MSS
        for _ in range(5):
            s.push(ACK, ack=S0)
        assert c.stats.tcp_fast_retransmits == 0 and not c.in_recovery

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


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "newreno"])
def test_two_losses_in_one_window_one_recovery(sack: bool) -> None:
    # With SACK both holes are known at once; without, the partial ACK reveals the second
    # (RFC 6582). Either way: one recovery, one reduction, two retransmissions, no RTO.
    cfg = TcpConfig(sack=sack, timestamps=sack)
    mss = MSS - 12 if sack else MSS  # timestamps take 12 bytes of every segment
    p = Pair(delay=0.01, drop=_drop_first_copy({20 * mss, 24 * mss}), cfg_a=cfg, cfg_b=cfg)
    p.handshake()
    data = bytes(range(256)) * 1000
    p.feed_a = memoryview(data)
    p.run(lambda: len(p.got_b) == len(data))
    assert bytes(p.got_b) == data
    st = p.stats_a
    assert st.tcp_fast_retransmits == 2 and st.tcp_recoveries == 1
    assert st.tcp_partial_ack_retransmits == (0 if sack else 1)
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
    mss = p.a.snd_mss
    p.drop = _drop_first_copy({((p.a.snd_max - S0) & 0xFFFFFFFF) // mss * mss + 10 * mss})
    p.run(lambda: p.stats_a.tcp_recoveries_completed == 1)
    assert p.a.ssthresh < grown
