"""How a connection gives up: the RST of ABORT on a give-up (RFC 9293 3.10.5, as Linux sends on
a keep-alive timeout), and the user timeout with Linux's TCP_USER_TIMEOUT meaning (tcp(7))."""

from __future__ import annotations

import math

import pytest

from tests.stack.helpers import PEER, SERVER_ISN, make_host, segments, tcp_packet
from tests.tcp import kit
from tests.tcp.kit import ACK, ISS_A, ISS_B, RST, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, TimedOut
from ustack.tcp.state import State
from ustack.wire import tcp

S0 = ISS_A + 1
D0 = ISS_B + 1
MSS = 1460
P0 = S0 + 2 * MSS  # the first byte that meets the closed window (see _zero_window)


def _zero_window(config: TcpConfig | None = None) -> Script:
    """ESTABLISHED, 2*MSS sent and acknowledged with a zero window, 3000 bytes held back."""
    s = kit.established(config or TcpConfig())
    s.conn.send(b"o" * 2 * MSS)
    s.out()
    assert s.push(ACK, window=0) == []
    s.conn.send(b"p" * 3000)
    assert s.out() == []
    return s


def _until_closed(s: Script) -> list[tuple[float, object]]:
    """Fire timers until CLOSED; every segment sent on the way, with its time."""
    sent: list[tuple[float, object]] = []
    while s.conn.state is not State.CLOSED:
        sent += [(s.now, seg) for seg in s.fire()]
    return sent


def _rst(seq: int) -> tuple[int, int, int, int]:
    return (RST | ACK, seq, D0, 0)


def _fields(seg: object) -> tuple[int, int, int, int]:
    assert isinstance(seg, tcp.TcpSegment)
    return (seg.flags, seg.seq, seg.ack, len(seg.payload))


class TestRstOnGiveUp:
    def test_keepalive_timeout_sends_rst(self) -> None:
        s = kit.established()
        c = s.conn
        c.set_keepalive(True, idle=10.0, interval=2.0, count=2)
        sent = _until_closed(s)
        assert [(t, _fields(x)) for t, x in sent] == [
            (10.0, (ACK, S0 - 1, D0, 0)),
            (12.0, (ACK, S0 - 1, D0, 0)),
            (14.0, _rst(S0)),
        ]
        assert kit.events(c) == [TimedOut(c, "keepalive"), Closed(c)]
        assert c.stats.tcp_rsts_sent == 1 and c.stats.tcp_timeout_rsts == 1

    def test_retransmission_limit_sends_rst_at_snd_nxt(self) -> None:
        s = kit.established(TcpConfig(data_retries=2))
        c = s.conn
        c.send(b"d" * 1000)
        s.out()
        sent = _until_closed(s)
        assert [_fields(x) for _, x in sent] == [(ACK | tcp.PSH, S0, D0, 1000)] * 2 + [
            _rst(S0 + 1000)
        ]
        assert kit.events(c) == [TimedOut(c, "retransmit"), Closed(c)]
        assert c.stats.tcp_timeout_rsts == 1

    def test_unanswered_window_probes_send_rst(self) -> None:
        s = _zero_window(TcpConfig(data_retries=2))
        sent = _until_closed(s)
        assert [_fields(x) for _, x in sent] == [(ACK, P0, D0, 1)] * 2 + [_rst(P0)]
        assert s.conn.stats.tcp_timeout_rsts == 1

    def test_user_timeout_sends_rst(self) -> None:
        s = kit.established(TcpConfig(user_timeout=1.0))
        s.conn.send(b"u" * 100)
        s.out()
        sent = _until_closed(s)
        assert _fields(sent[-1][1]) == _rst(S0 + 100) and s.now == pytest.approx(1.0)
        assert s.conn.stats.tcp_timeout_rsts == 1

    def test_close_wait_give_up_sends_rst(self) -> None:
        s = kit.close_wait(TcpConfig(data_retries=1))
        c = s.conn
        c.send(b"w" * 10)
        s.out()
        sent = _until_closed(s)
        assert _fields(sent[-1][1]) == (RST | ACK, S0 + 10, D0 + 1, 0)

    def test_no_rst_when_syn_times_out(self) -> None:
        s = kit.syn_sent(TcpConfig(syn_retries=1))
        sent = _until_closed(s)
        assert [x.control for _, x in sent] == [tcp.Control.SYN]  # type: ignore[attr-defined]
        assert s.conn.stats.tcp_timeout_syn == 1 and s.conn.stats.tcp_rsts_sent == 0

    def test_no_rst_when_syn_ack_times_out(self) -> None:
        s = kit.syn_received(TcpConfig(synack_retries=1))
        sent = _until_closed(s)
        assert [x.control for _, x in sent] == [tcp.Control.SYN]  # type: ignore[attr-defined]
        assert s.conn.stats.tcp_timeout_synack == 1 and s.conn.stats.tcp_rsts_sent == 0

    def test_host_puts_the_rst_on_the_wire_after_forgetting_the_connection(self) -> None:
        cfg = TcpConfig(keepalive=True, keepalive_idle=5.0, keepalive_interval=1.0)
        cfg.keepalive_count = 1
        h = make_host(config=cfg)
        listener = h.listen(80)
        h.receive_packet(tcp_packet(40000, 80, 1000), 0.0)
        segments(h)
        h.receive_packet(tcp_packet(40000, 80, 1001, SERVER_ISN + 1, tcp.ACK), 0.0)
        conn = listener.accept()
        assert conn is not None
        wire: list[tuple[float, int, int]] = []
        now = 0.0
        while (d := h.next_deadline()) is not None:
            now = d
            h.on_deadline(now)
            wire += [(now, x.flags, x.seq) for x in segments(h, now)]
        assert wire == [(5.0, ACK, SERVER_ISN), (6.0, RST | ACK, SERVER_ISN + 1)]
        assert conn.state is State.CLOSED
        assert h.lookup(PEER, 40000, conn.local_addr, 80) is None  # forgotten, RST still sent
        assert h.stats.tcp_timeout_rsts == 1


class TestUserTimeout:
    def test_zero_window_answered_forever_still_times_out(self) -> None:
        # tcp(7): "buffered data may remain untransmitted due to a zero window" for at most
        # the user timeout, even though the peer answers every probe
        s = _zero_window(TcpConfig(user_timeout=5.0))
        c = s.conn
        for _ in range(100):  # bounded: without a user timeout this goes on forever
            if c.state is not State.ESTABLISHED:
                break
            for seg in s.fire():
                if seg.flags & RST:
                    break
                assert seg.seq == P0 and len(seg.payload) == 1
                assert s.push(ACK, ack=P0, window=0) == []
        assert s.now == pytest.approx(5.0)  # from the start of the zero-window episode
        assert kit.events(c) == [TimedOut(c, "user_timeout"), Closed(c)]

    def test_zero_window_that_opens_restarts_the_wait(self) -> None:
        s = _zero_window(TcpConfig(user_timeout=5.0))
        c = s.conn
        s.advance(4.0)
        s.push(ACK, ack=P0, window=1000)  # the window opens; the held data goes
        s.now = 8.0
        s.push(ACK, window=0)  # all acknowledged at 8 s, the window shut again
        c.send(b"q" * 100)
        assert s.out() == []
        s.advance(12.9)
        assert c.state is State.ESTABLISHED
        s.advance(13.1)
        assert kit.events(c)[-2:] == [TimedOut(c, "user_timeout"), Closed(c)]

    def test_probe_byte_taken_restarts_the_wait(self) -> None:
        s = _zero_window(TcpConfig(user_timeout=5.0))
        c = s.conn
        s.advance(3.0)
        s.push(ACK, ack=P0 + 1, window=0)  # the peer took a probe's byte: progress
        s.advance(11.1)
        assert c.state is State.ESTABLISHED
        s.run_timers(lambda: c.state is State.CLOSED)
        assert kit.events(c)[-2:] == [TimedOut(c, "user_timeout"), Closed(c)]
        # 5 s from the first probe after the progress (probes at 0.2, 0.6, 1.4, 3.0, 6.2 s),
        # as Linux counts from the first unanswered probe
        assert s.now == pytest.approx(11.2)

    def test_keepalive_gives_up_after_the_user_timeout_not_the_count(self) -> None:
        s = kit.established(TcpConfig(user_timeout=15.0))
        c = s.conn
        c.set_keepalive(True, idle=10.0, interval=2.0, count=100)
        sent = _until_closed(s)
        # probes at 10, 12, 14; at 16 the peer has been silent >= 15 s: RST, as Linux does
        assert [(t, x.flags) for t, x in sent] == [  # type: ignore[attr-defined]
            (10.0, ACK),
            (12.0, ACK),
            (14.0, ACK),
            (16.0, RST | ACK),
        ]
        assert kit.events(c) == [TimedOut(c, "keepalive"), Closed(c)]

    def test_keepalive_answered_stays_up_with_a_user_timeout(self) -> None:
        s = kit.established()
        c = s.conn
        c.set_user_timeout(3.0)
        c.set_keepalive(True, idle=10.0, interval=2.0, count=1)
        for _ in range(4):
            (probe,) = s.fire()
            assert probe.flags == ACK
            s.push(ACK)  # the peer answers
        assert c.state is State.ESTABLISHED

    def test_set_user_timeout_per_connection(self) -> None:
        s = kit.established(TcpConfig(data_retries=2))
        c = s.conn
        c.set_user_timeout(30.0)
        s.now = 100.0
        c.send(b"x" * 100)
        s.out()
        s.advance(129.9)
        assert c.state is State.ESTABLISHED  # data_retries no longer counts
        s.advance(130.0)
        assert kit.events(c)[-2:] == [TimedOut(c, "user_timeout"), Closed(c)]

    def test_set_while_waiting_counts_from_the_start_of_the_wait(self) -> None:
        s = kit.established()
        c = s.conn
        c.send(b"x" * 100)
        s.out()
        s.advance(3.0)
        c.set_user_timeout(5.0)
        assert c.timers["user_timeout"] == pytest.approx(5.0)
        s.run_timers(lambda: c.state is State.CLOSED)
        assert s.now == pytest.approx(5.0)

    def test_ack_progress_restarts_it(self) -> None:
        s = kit.established(TcpConfig(nagle=False))
        c = s.conn
        c.set_user_timeout(5.0)
        c.send(b"a" * 100)
        c.send(b"b" * 100)
        s.out()
        s.advance(4.0)
        s.push(ACK, ack=S0 + 100)
        s.run_timers(lambda: c.state is State.CLOSED)
        assert s.now == pytest.approx(9.0)

    def test_none_goes_back_to_retries(self) -> None:
        s = kit.established(TcpConfig(user_timeout=1000.0, data_retries=2))
        c = s.conn
        c.send(b"x" * 100)
        s.out()
        c.set_user_timeout(None)
        assert c.timers["user_timeout"] is None
        s.run_timers(lambda: c.state is State.CLOSED)
        assert kit.events(c) == [TimedOut(c, "retransmit"), Closed(c)]

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
    def test_bad_values_are_refused(self, bad: float) -> None:
        c = kit.established().conn
        with pytest.raises(ValueError, match="user timeout"):
            c.set_user_timeout(bad)
