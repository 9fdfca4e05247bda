"""ESTABLISHED (RFC 9293 3.10.7.4): data in both directions, ACK policy, windows, RFC 5961."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, ISS_A, ISS_B, PSH, RST, SYN, URG, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, DataReceived, EofReceived, Reset, WriteSpace
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.wire import tcp as wt

MSS = 1460
D0 = ISS_B + 1  # the peer's first data byte
S0 = ISS_A + 1  # our first data byte


def sizes(segs: list[wt.TcpSegment]) -> list[int]:
    return [len(x.payload) for x in segs]


# ---------------------------------------------------------------- sending


class TestSending:
    def test_segmented_by_mss_and_nagle_holds_the_tail(self, established: Script) -> None:
        c = established.conn
        assert c.send(b"a" * 5000) == 5000
        segs = established.out()
        assert sizes(segs) == [MSS, MSS, MSS]  # 3.7.4: 620 bytes wait for the ACK
        assert [x.seq for x in segs] == [S0, S0 + MSS, S0 + 2 * MSS]
        (tail,) = established.push(ACK)
        assert len(tail.payload) == 620 and tail.flags == ACK | PSH

    def test_nagle_uses_the_effective_mss(self) -> None:
        # the peer's MSS is 1000: a 1000-byte segment is full-sized and is not held back
        s = kit.established(opts=wt.TcpOptions(mss=1000, wscale=3))
        s.conn.send(b"a" * 2000)
        assert sizes(s.out()) == [1000, 1000]

    def test_nodelay_sends_small_segments_at_once(self, established: Script) -> None:
        c = established.conn
        c.send(b"a")
        assert sizes(established.out()) == [1]
        c.send(b"b")
        assert established.out() == []  # Nagle: one small segment in flight
        c.set_nodelay(True)
        assert sizes(established.out()) == [1]
        c.send(b"c")
        assert sizes(established.out()) == [1]

    def test_nagle_config_off(self) -> None:
        s = kit.established(TcpConfig(nagle=False))
        s.conn.send(b"a")
        s.out()
        s.conn.send(b"b")
        assert sizes(s.out()) == [1]

    def test_limited_by_peer_window(self) -> None:
        s = kit.established(TcpConfig(nagle=False), opts=wt.TcpOptions(mss=1460), syn_window=3000)
        c = s.conn
        c.send(b"a" * 20000)
        # 3.8.6.2.1: 1460, then 1460; 80 bytes left in the window is less than half of it
        assert sizes(s.out()) == [MSS, MSS]
        assert sizes(s.push(ACK, ack=S0 + MSS)) == [MSS]
        assert sizes(s.push(ACK, ack=S0 + 3 * MSS, window=10000)) == [MSS] * 6

    def test_limited_by_initial_window(self) -> None:
        s = kit.established()
        s.conn.send(b"a" * 100000)
        # RFC 6928: min(10*MSS, max(2*MSS, 14600)) = 14600 bytes = 10 segments
        assert sizes(s.out()) == [MSS] * 10
        assert s.conn.cwnd == 14600

    def test_sender_sws_avoidance_waits_for_a_useful_window(self) -> None:
        s = kit.established(TcpConfig(nagle=False), opts=wt.TcpOptions(mss=1460), syn_window=2000)
        c = s.conn
        c.send(b"a" * 20000)
        # 540 bytes fit after the first segment, but that is less than half the largest window
        # the peer offered (3.8.6.2.1 (3))
        assert sizes(s.out()) == [MSS]
        # the peer acks everything but offers only 100 bytes: too small to send
        assert s.push(ACK, window=100) == []
        assert c.stats.tcp_data_segments_sent == 1
        assert c.timers["persist"] is not None
        # 1200 bytes are less than an MSS but at least half the maximum window: sent
        assert sizes(s.push(ACK, window=1200)) == [1200]

    def test_send_buffer_bound_and_write_space(self) -> None:
        s = kit.established(TcpConfig(send_buffer=10000, send_low_water=4000))
        c = s.conn
        assert c.send(b"a" * 12000) == 10000
        assert c.send_space == 0 and c.send(b"more") == 0
        segs = s.out()
        s.push(ACK, ack=S0 + 3 * MSS)  # 5620 left: above the low-water mark
        assert kit.events(c) == []
        s.push(ACK, ack=S0 + 5 * MSS)
        assert kit.events(c) == [WriteSpace(c)]
        assert segs

    def test_send_after_shutdown_raises(self, established: Script) -> None:
        established.conn.shutdown(0.0)
        with pytest.raises(BrokenPipeError):
            established.conn.send(b"x")

    def test_window_larger_than_64k_with_scaling(self) -> None:
        s = kit.established(TcpConfig(nagle=False), window=30000)  # 30000 << 3 = 240000
        c = s.conn
        s.push(ACK)
        assert c.snd_wnd == 240000
        c.cc.cwnd = 10**6
        c.send(b"a" * 200000)
        assert sum(sizes(s.out())) == 200000


# ---------------------------------------------------------------- receiving and ACK policy


class TestReceiving:
    def test_delayed_ack_every_second_full_segment(self, established: Script) -> None:
        assert established.push(ACK, payload=b"a" * MSS) == []
        assert established.conn.timers["delayed_ack"] == pytest.approx(0.040)
        (ack,) = established.push(ACK, payload=b"b" * MSS)
        assert ack.ack == D0 + 2 * MSS and not len(ack.payload)
        assert established.conn.timers["delayed_ack"] is None

    @pytest.mark.parametrize("prediction", [True, False], ids=["predicted", "general"])
    def test_segments_read_together_get_one_cumulative_ack(self, prediction: bool) -> None:
        # Six full segments handled before the host asks for output (one read from the link):
        # one ACK for all of them, not one per two (as Linux ACKs a GRO super-segment).
        s = kit.established(TcpConfig(header_prediction=prediction))
        c = s.conn
        acks = c.stats.tcp_acks_sent  # the handshake's
        for i in range(6):
            c.receive(s.make(payload=b"s" * MSS, seq=D0 + i * MSS), s.now)
        (ack,) = s.out()
        assert ack.ack == D0 + 6 * MSS and not len(ack.payload)
        assert c.stats.tcp_acks_sent == acks + 1 and c.timers["delayed_ack"] is None

    def test_owed_ack_rides_on_data(self, established: Script) -> None:
        c = established.conn
        acks = c.stats.tcp_acks_sent
        for i in range(2):
            c.receive(established.make(payload=b"s" * MSS, seq=D0 + i * MSS), 0.0)
        c.send(b"reply")
        (seg,) = established.out()  # no pure ACK before it
        assert bytes(seg.payload) == b"reply" and seg.ack == D0 + 2 * MSS
        assert c.stats.tcp_acks_sent == acks

    def test_delayed_ack_timer_fires(self, established: Script) -> None:
        assert established.push(ACK, payload=b"a" * 100) == []
        assert established.advance(0.039) == []
        (ack,) = established.advance(0.041)
        assert ack.ack == D0 + 100
        assert established.conn.stats.tcp_delayed_acks == 1

    def test_delayed_ack_configurable(self) -> None:
        s = kit.established(TcpConfig(delayed_ack=0.2))
        s.push(ACK, payload=b"a")
        assert s.conn.timers["delayed_ack"] == pytest.approx(0.2)
        s0 = kit.established(TcpConfig(delayed_ack=0.0))
        assert len(s0.push(ACK, payload=b"a")) == 1

    def test_data_piggybacks_the_ack(self, established: Script) -> None:
        established.push(ACK, payload=b"q")
        established.conn.send(b"reply")
        (seg,) = established.out()
        assert seg.ack == D0 + 1 and bytes(seg.payload) == b"reply"
        assert established.conn.timers["delayed_ack"] is None

    def test_out_of_order_acked_at_once_and_reassembled(self, established: Script) -> None:
        c = established.conn
        (dup1,) = established.push(ACK, seq=D0 + 100, payload=b"b" * 100)
        (dup2,) = established.push(ACK, seq=D0 + 300, payload=b"d" * 100)
        assert dup1.ack == dup2.ack == D0
        assert c.readable == 0 and c.ooo_pieces == 2
        (ack,) = established.push(ACK, seq=D0, payload=b"a" * 100)  # fills the first hole
        assert ack.ack == D0 + 200
        (ack,) = established.push(ACK, seq=D0 + 200, payload=b"c" * 100)
        assert ack.ack == D0 + 400
        assert c.read() == b"a" * 100 + b"b" * 100 + b"c" * 100 + b"d" * 100
        assert c.stats.tcp_ooo_queued == 2 and c.stats.tcp_quick_acks == 4

    def test_each_out_of_order_segment_gets_its_own_dup_ack(self, established: Script) -> None:
        c = established.conn
        for i in range(1, 4):
            c.receive(established.make(ACK, seq=D0 + i * 100, payload=b"x" * 100), 0.0)
        acks = established.out()
        assert [a.ack for a in acks] == [D0] * 3

    def test_duplicates_trimmed(self, established: Script) -> None:
        c = established.conn
        established.push(ACK, payload=b"0123456789")
        # fully old: answered with an ACK, dropped
        (ack,) = established.push(ACK, seq=D0, payload=b"0123456789")
        assert ack.ack == D0 + 10 and c.stats.tcp_dup_segments == 1
        # overlapping: the old front is trimmed
        established.push(ACK, seq=D0 + 5, payload=b"56789ABCDE")
        assert c.read() == b"0123456789ABCDE"
        assert c.stats.tcp_dup_bytes_trimmed == 5
        # overlapping out-of-order pieces keep the first copy
        established.push(ACK, seq=D0 + 20, payload=b"KLMNO")
        established.push(ACK, seq=D0 + 18, payload=b"IJklmnoPQ")
        established.push(ACK, seq=D0 + 15, payload=b"FGH")
        assert c.read() == b"FGHIJKLMNOPQ"
        assert c.stats.tcp_dup_bytes_trimmed == 10

    def test_out_of_order_bounded_by_window(self) -> None:
        s = kit.established(TcpConfig(recv_buffer=4096))
        c = s.conn
        wnd = c.rcv_wnd
        s.push(ACK, seq=D0 + wnd - 10, payload=b"z" * 100)
        assert c.ooo_bytes == 10
        assert c.stats.tcp_window_trimmed_bytes == 90
        (ack,) = s.push(ACK, seq=D0 + wnd + 10, payload=b"z" * 100)  # beyond the window
        assert c.ooo_bytes == 10 and ack.ack == D0
        assert c.stats.tcp_drop_out_of_window == 1

    def test_out_of_order_piece_count_bounded(self) -> None:
        s = kit.established(TcpConfig(max_ooo_segments=3))
        c = s.conn
        for i in range(5):
            s.push(ACK, seq=D0 + 10 + 20 * i, payload=b"x" * 10)
        assert c.ooo_pieces == 3 and c.stats.tcp_ooo_dropped == 2

    def test_out_of_order_fin_taken_when_hole_fills(self, established: Script) -> None:
        c = established.conn
        established.push(FIN | ACK, seq=D0 + 5, payload=b"world")
        assert c.state is State.ESTABLISHED
        (ack,) = established.push(ACK, seq=D0, payload=b"hello")
        assert ack.ack == D0 + 11 and c.state is State.CLOSE_WAIT
        assert c.read() == b"helloworld" and c.eof_received

    def test_window_shrinks_and_reopens_with_update(self) -> None:
        s = kit.established(TcpConfig(recv_buffer=8 * MSS), opts=wt.TcpOptions(mss=1460))
        c = s.conn
        windows = []
        for _ in range(8):
            acks = s.push(ACK, payload=b"d" * MSS)
            windows += [a.window for a in acks]
        # ACK after every second segment; the right edge stays put, the window shrinks
        assert windows == [6 * MSS, 4 * MSS, 2 * MSS, 0]
        assert c.rcv_wnd == 0
        # more data into a zero window is not accepted; it is answered with an ACK
        (ack,) = s.push(ACK, payload=b"x" * 100)
        assert ack.window == 0 and c.readable == 8 * MSS
        s.seq -= 100
        # 3.8.6.2.2: reading less than min(buffer/2, MSS) does not announce a window
        c.read(1000)
        assert s.out() == []
        c.read(460)
        (upd,) = s.out()
        assert upd.window == MSS and c.stats.tcp_window_updates == 1
        c.read()
        (upd,) = s.out()
        assert upd.window == 8 * MSS

    def test_small_window_increase_not_advertised(self) -> None:
        s = kit.established(TcpConfig(recv_buffer=8 * MSS), opts=wt.TcpOptions(mss=1460))
        c = s.conn
        s.push(ACK, payload=b"d" * 100)
        c.read()
        # 100 bytes freed: ACKs keep the old right edge (window 8*MSS - 100 ... 8*MSS - 200)
        s.push(ACK, payload=b"d" * 100)
        (ack,) = s.advance(1.0)
        assert ack.window == 8 * MSS - 200

    def test_urgent_data_delivered_inline(self, established: Script) -> None:
        established.push(ACK | URG, payload=b"abc!def", urgent=4)
        c = established.conn
        assert c.read() == b"abc!def"
        assert c.stats.tcp_urgent_received == 1

    def test_data_event_coalesced_until_popped(self, established: Script) -> None:
        c = established.conn
        established.push(ACK, payload=b"a")
        established.push(ACK, payload=b"b")
        assert kit.events(c) == [DataReceived(c)]
        established.push(ACK, payload=b"c")
        assert kit.events(c) == [DataReceived(c)]
        assert c.read(2) == b"ab" and c.read() == b"c"

    def test_fin_moves_to_close_wait_after_data(self, established: Script) -> None:
        c = established.conn
        (ack,) = established.push(FIN | ACK, payload=b"last")
        assert ack.ack == D0 + 5
        assert kit.events(c) == [DataReceived(c), EofReceived(c)]
        assert c.state is State.CLOSE_WAIT


# ---------------------------------------------------------------- RFC 5961 and validation


class TestAttackResistance:
    def test_rst_at_rcv_nxt_resets(self, established: Script) -> None:
        c = established.conn
        assert established.push(RST, seq=D0) == []
        assert c.state is State.CLOSED
        assert kit.events(c) == [Reset(c, False), Closed(c)]
        with pytest.raises(ConnectionResetError):
            c.send(b"x")

    def test_rst_in_window_gets_challenge_ack(self, established: Script) -> None:
        c = established.conn
        (ack,) = established.push(RST, seq=D0 + 1000)
        assert (ack.flags, ack.seq, ack.ack) == (ACK, S0, D0)
        assert c.state is State.ESTABLISHED and c.stats.tcp_challenge_acks == 1

    def test_rst_outside_window_dropped(self, established: Script) -> None:
        c = established.conn
        assert established.push(RST, seq=D0 + 10**6) == []
        assert established.push(RST, seq=D0 - 1) == []
        assert c.state is State.ESTABLISHED and c.stats.tcp_drop_rst_out_of_window == 2

    def test_syn_in_synchronized_state_gets_challenge_ack(self, established: Script) -> None:
        (ack,) = established.push(SYN, seq=D0 + 5, ack=0, options=kit.PEER_SYN_OPTS)
        assert ack.flags == ACK and ack.ack == D0
        assert established.conn.state is State.ESTABLISHED
        assert established.conn.stats.tcp_drop_syn_synchronized == 1

    def test_syn_outside_window_also_gets_rate_limited_challenge_ack(self) -> None:
        s = kit.established(TcpConfig(challenge_ack_limit=2))
        answered = [len(s.push(SYN, seq=D0 + 10**7 + i, ack=0)) for i in range(4)]
        assert answered == [1, 1, 0, 0]
        assert s.conn.stats.tcp_drop_syn_synchronized == 4
        assert s.conn.state is State.ESTABLISHED

    def test_ack_of_unsent_data_is_acked_and_dropped(self, established: Script) -> None:
        c = established.conn
        (ack,) = established.push(ACK, ack=S0 + 10, payload=b"zzz")
        assert ack.ack == D0  # the data was not taken
        assert c.readable == 0 and c.snd_una == S0
        assert c.stats.tcp_drop_ack_unsent == 1

    def test_too_old_ack_dropped(self, established: Script) -> None:
        c = established.conn
        old = S0 - c.max_snd_wnd - 1
        (ack,) = established.push(ACK, ack=old, payload=b"zzz")
        assert c.readable == 0 and ack.ack == D0
        assert c.stats.tcp_drop_ack_old == 1
        established.seq = D0
        # an old ACK within MAX.SND.WND is ignored but its data is taken
        established.push(ACK, ack=S0 - 5, payload=b"ok")
        assert c.read() == b"ok"

    def test_challenge_acks_rate_limited(self) -> None:
        s = kit.established(TcpConfig(challenge_ack_limit=3, challenge_ack_window=1.0))
        c = s.conn
        answered = sum(len(s.push(RST, seq=D0 + 10 + i)) for i in range(5))
        assert answered == 3
        assert c.stats.tcp_challenge_acks == 3 and c.stats.tcp_challenge_acks_suppressed == 2
        s.now = 1.0
        assert len(s.push(RST, seq=D0 + 50)) == 1

    def test_out_of_window_segment_answered_with_ack(self, established: Script) -> None:
        (ack,) = established.push(ACK, seq=D0 + 10**6, payload=b"x")
        assert ack.ack == D0 and established.conn.stats.tcp_drop_out_of_window == 1

    def test_segment_without_ack_dropped(self, established: Script) -> None:
        assert established.push(0, payload=b"x") == []
        assert established.conn.readable == 0
        assert established.conn.stats.tcp_drop_no_ack == 1

    def test_window_update_only_from_newer_segments(self, established: Script) -> None:
        c = established.conn
        established.push(ACK, payload=b"x", window=1000)
        assert c.snd_wnd == 8000
        # an older segment (smaller SEG.SEQ) must not change the window (3.10.7.4 SND.WL1)
        established.push(ACK, seq=D0 - 1, window=5)
        assert c.snd_wnd == 8000


def test_abort_sends_rst() -> None:
    stats = Stats()
    s = kit.established(stats=stats)
    s.conn.abort(0.0)
    (rst,) = s.out()
    assert rst.control is wt.Control.RST and rst.seq == S0
    assert s.conn.state is State.CLOSED and stats.tcp_rsts_sent == 1


def test_close_with_unread_data_sends_rst(established: Script) -> None:
    established.push(ACK, payload=b"unread")
    established.conn.close(0.0)
    (rst,) = established.out()
    assert rst.control is wt.Control.RST and rst.seq == S0 and rst.ack == D0 + 6
    assert established.conn.stats.tcp_close_unread_rst == 1


def test_fin_ack_exact(established: Script) -> None:
    established.conn.send(b"abc")
    established.conn.shutdown(0.0)
    (seg,) = established.out()
    assert seg.flags == ACK | PSH | FIN and seg.seq == S0 and bytes(seg.payload) == b"abc"
    assert established.conn.snd_nxt == S0 + 4


def test_data_after_a_silence_longer_than_the_rto_is_acked_segment_by_segment() -> None:
    """Quick-ACK mode (Receiver.in_order, as Linux's): after the sender went quiet for longer
    than an RTO -- it is probably restarting from a small window after a timeout -- each of the
    next segments gets its own ACK; in steady state only every second one does (3.8.6.3)."""
    s = kit.established_full()
    c = s.conn
    mss = 1448
    # steady state: two full segments, one ACK
    assert s.push(ACK, payload=b"a" * mss) == []
    (ack,) = s.push(ACK, payload=b"b" * mss)
    assert ack.ack == s.seq
    c.read()
    # a silence of two RTOs, then full segments: each is ACKed at once
    s.now += 2 * c.rto
    for i in range(6):
        (ack,) = s.push(ACK, payload=bytes([i]) * mss)
        assert ack.ack == s.seq and not ack.payload
    assert c.stats.tcp_quick_acks == 6
    c.read()


def test_quick_acks_end_after_their_budget() -> None:
    s = kit.established_full()
    c = s.conn
    mss = 1448
    s.push(ACK, payload=b"a" * mss)
    s.advance(s.now + 0.5)  # the delayed ACK
    s.now += 2 * c.rto
    acks = 0
    for i in range(40):
        acks += len(s.push(ACK, payload=bytes([i]) * mss))
        c.read()
    quick = c.stats.tcp_quick_acks
    assert 2 <= quick <= 16
    # after the quick ones, every second segment: (40 - quick) / 2 more
    assert acks == quick + (40 - quick) // 2
