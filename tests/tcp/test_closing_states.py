"""FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT (RFC 9293 3.6, 3.10.4,
3.10.7.4)."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, ISS_A, ISS_B, PSH, RST, Pair, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, DataReceived, EofReceived, TimedOut
from ustack.tcp.state import State
from ustack.wire import tcp as wt

S0 = ISS_A + 1
D0 = ISS_B + 1


class TestFinWait1:
    def test_fin_retransmitted_until_acked(self, fin_wait_1: Script) -> None:
        (fin,) = fin_wait_1.fire()
        assert fin.control is wt.Control.FIN and fin.seq == S0
        assert fin_wait_1.conn.stats.tcp_fin_retransmits == 1
        assert fin_wait_1.push(ACK) == []
        assert fin_wait_1.conn.state is State.FIN_WAIT_2

    def test_ack_of_data_but_not_fin_stays(self) -> None:
        s = kit.established()
        s.conn.send(b"abc")
        s.conn.shutdown(0.0)
        s.out()
        s.push(ACK, ack=S0 + 3)
        assert s.conn.state is State.FIN_WAIT_1

    def test_still_receives_data(self, fin_wait_1: Script) -> None:
        fin_wait_1.push(ACK, ack=S0, payload=b"more")
        assert fin_wait_1.conn.read() == b"more"

    def test_fin_and_ack_of_fin_together_go_to_time_wait(self, fin_wait_1: Script) -> None:
        (ack,) = fin_wait_1.push(FIN | ACK)
        assert ack.ack == D0 + 1
        assert fin_wait_1.conn.state is State.TIME_WAIT

    def test_simultaneous_close_fin_goes_to_closing(self, fin_wait_1: Script) -> None:
        (ack,) = fin_wait_1.push(FIN | ACK, ack=S0)
        assert ack.ack == D0 + 1 and ack.seq == S0 + 1
        assert fin_wait_1.conn.state is State.CLOSING

    def test_orphan_receiving_data_resets(self) -> None:
        s = kit.established()
        s.conn.close(0.0)
        s.out()
        (rst,) = s.push(ACK, ack=S0, payload=b"late")
        assert rst.control is wt.Control.RST
        assert s.conn.state is State.CLOSED
        assert s.conn.stats.tcp_rst_data_after_close == 1


class TestFinWait2:
    def test_half_close_keeps_receiving_without_a_timer(self, fin_wait_2: Script) -> None:
        c = fin_wait_2.conn
        assert c.next_deadline() is None  # not orphaned: waits for the peer as long as it takes
        fin_wait_2.push(ACK, payload=b"x" * 100)
        assert c.read() == b"x" * 100

    def test_fin_goes_to_time_wait(self, fin_wait_2: Script) -> None:
        (ack,) = fin_wait_2.push(FIN | ACK)
        assert ack.ack == D0 + 1 and fin_wait_2.conn.state is State.TIME_WAIT
        assert kit.events(fin_wait_2.conn) == [EofReceived(fin_wait_2.conn)]

    def test_orphan_times_out(self) -> None:
        s = kit.fin_wait_2(TcpConfig(fin_wait2_timeout=10.0))
        s.conn.close(s.now)
        assert s.conn.timers["fin_wait_2"] == 10.0
        s.advance(9.9)
        assert s.conn.state is State.FIN_WAIT_2
        s.advance(10.0)
        c = s.conn
        assert c.state is State.CLOSED
        assert kit.events(c) == [TimedOut(c, "fin_wait_2"), Closed(c)]
        assert c.stats.tcp_timeout_fin_wait2 == 1

    def test_orphaned_before_fin_acked_gets_timer_on_entry(self) -> None:
        s = kit.established()
        s.conn.close(0.0)
        s.out()
        s.now = 2.0
        s.push(ACK)
        assert s.conn.state is State.FIN_WAIT_2
        assert s.conn.timers["fin_wait_2"] == 2.0 + 60.0


class TestCloseWait:
    def test_half_close_keeps_sending(self, close_wait: Script) -> None:
        c = close_wait.conn
        assert c.send(b"still talking") == 13
        (seg,) = close_wait.out()
        assert bytes(seg.payload) == b"still talking"
        assert c.state is State.CLOSE_WAIT

    def test_close_sends_fin_and_last_ack_finishes(self, close_wait: Script) -> None:
        c = close_wait.conn
        c.send(b"bye")
        c.close(0.0)
        (seg,) = close_wait.out()
        assert seg.flags == ACK | PSH | FIN
        assert c.state is State.LAST_ACK
        close_wait.push(ACK)
        assert c.state is State.CLOSED
        assert kit.events(c) == [Closed(c)]

    def test_retransmitted_fin_is_acked(self, close_wait: Script) -> None:
        (ack,) = close_wait.push(FIN | ACK, seq=D0)
        assert ack.ack == D0 + 1 and close_wait.conn.state is State.CLOSE_WAIT

    def test_data_after_fin_is_dropped(self, close_wait: Script) -> None:
        (ack,) = close_wait.push(ACK, payload=b"bogus")
        assert ack.ack == D0 + 1
        assert close_wait.conn.readable == 0
        assert close_wait.conn.stats.tcp_drop_data_after_fin == 1


class TestClosing:
    def test_ack_of_fin_goes_to_time_wait(self, closing: Script) -> None:
        assert closing.push(ACK) == []
        assert closing.conn.state is State.TIME_WAIT

    def test_fin_retransmitted(self, closing: Script) -> None:
        (fin,) = closing.fire()
        assert fin.control is wt.Control.FIN and fin.seq == S0 and fin.ack == D0 + 1


class TestLastAck:
    def test_fin_retransmitted_and_ack_closes(self, last_ack: Script) -> None:
        (fin,) = last_ack.fire()
        assert fin.control is wt.Control.FIN
        last_ack.push(ACK)
        assert last_ack.conn.state is State.CLOSED

    def test_ack_not_covering_fin_keeps_waiting(self, last_ack: Script) -> None:
        last_ack.push(ACK, ack=S0)
        assert last_ack.conn.state is State.LAST_ACK


class TestTimeWait:
    def test_lasts_two_msl(self, time_wait: Script) -> None:
        c = time_wait.conn
        assert c.timers["time_wait"] == 60.0  # 2 * MSL, MSL = 30 s
        time_wait.advance(59.999)
        assert c.state is State.TIME_WAIT
        time_wait.advance(60.0)
        assert c.state is State.CLOSED
        assert kit.events(c) == [Closed(c)]
        assert c.stats.tcp_time_wait_expired == 1

    def test_msl_configurable(self) -> None:
        s = kit.time_wait(TcpConfig(msl=2.0))
        assert s.conn.timers["time_wait"] == 4.0

    def test_retransmitted_fin_reacked_and_timer_restarted(self, time_wait: Script) -> None:
        time_wait.now = 50.0
        (ack,) = time_wait.push(FIN | ACK, seq=D0)
        assert (ack.flags, ack.ack) == (ACK, D0 + 1)
        assert time_wait.conn.timers["time_wait"] == 110.0
        assert time_wait.conn.stats.tcp_time_wait_restarted == 1

    def test_rst_ignored(self, time_wait: Script) -> None:
        assert time_wait.push(RST, seq=D0 + 1) == []
        assert time_wait.conn.state is State.TIME_WAIT
        assert time_wait.conn.stats.tcp_drop_rst_time_wait == 1

    def test_syn_gets_challenge_ack(self, time_wait: Script) -> None:
        (ack,) = time_wait.push(kit.SYN, seq=D0 + 100, ack=0, options=kit.PEER_SYN_OPTS)
        assert ack.flags == ACK and time_wait.conn.state is State.TIME_WAIT


# ---------------------------------------------------------------- whole closes between peers


def test_four_way_close() -> None:
    p = Pair(record=True)
    p.handshake()
    p.feed_a = memoryview(b"request")
    p.run(lambda: bytes(p.got_b) == b"request")
    p.a.shutdown(p.now)  # half-close: A still reads the response
    p.run(lambda: p.b.state is State.CLOSE_WAIT)
    p.b.send(b"response")
    p.run(lambda: bytes(p.got_a) == b"response")
    assert p.a.state is State.FIN_WAIT_2
    p.b.close(p.now)
    p.run(lambda: p.b.state is State.CLOSED)
    assert p.a.state is State.TIME_WAIT
    start = p.now
    p.run(lambda: p.a.state is State.CLOSED)
    assert p.now - start == pytest.approx(60.0, abs=0.01)
    assert EofReceived(p.b) in p.ev_b and DataReceived(p.a) in p.ev_a
    flags = [(d, wt.flag_string(s.flags)) for _, d, s, _ in p.log if s.control is wt.Control.FIN]
    assert [d for d, _ in flags] == ["ab", "ba"]


def test_simultaneous_close_through_closing() -> None:
    p = Pair()
    p.handshake()
    seen: list[tuple[State, State]] = []
    p.a.tracer = lambda c, k, d: seen.append((d["from"], d["to"])) if k == "state" else None
    p.a.shutdown(p.now)
    p.b.shutdown(p.now)
    p.run(lambda: p.a.state is State.TIME_WAIT and p.b.state is State.TIME_WAIT)
    assert seen == [
        (State.ESTABLISHED, State.FIN_WAIT_1),
        (State.FIN_WAIT_1, State.CLOSING),
        (State.CLOSING, State.TIME_WAIT),
    ]
    p.run(lambda: p.a.state is State.CLOSED and p.b.state is State.CLOSED)


def test_lost_last_ack_is_recovered_by_time_wait() -> None:
    lost = []

    def drop(d: str, s: wt.TcpSegment) -> bool:
        # lose the final ACK (A -> B, acking B's FIN) once
        if d == "ab" and p.b.state is State.LAST_ACK and not lost and s.seg_len == 0:
            lost.append(s)
            return True
        return False

    p = Pair(drop=drop)
    p.handshake()
    p.a.close(p.now)
    p.run(lambda: p.b.state is State.CLOSE_WAIT)
    p.b.close(p.now)
    p.run(lambda: p.b.state is State.CLOSED)
    assert lost and p.a.state is State.TIME_WAIT
    assert p.stats_a.tcp_time_wait_restarted == 1 and p.stats_b.tcp_fin_retransmits == 1
