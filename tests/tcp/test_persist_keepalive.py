"""Zero-window persist (RFC 9293 3.8.6.1) and keep-alives (RFC 1122 4.2.3.6)."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, ISS_A, ISS_B, RST, Pair, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, TimedOut
from ustack.tcp.state import State

S0 = ISS_A + 1
D0 = ISS_B + 1
MSS = 1460


P0 = S0 + 2 * MSS  # the first byte that meets the closed window


def _zero_window(config: TcpConfig | None = None) -> Script:
    s = kit.established(config or TcpConfig())
    s.conn.send(b"o" * 2 * MSS)
    s.out()
    assert s.push(ACK, window=0) == []  # everything acked, window closed
    s.conn.send(b"p" * 3000)
    assert s.out() == []
    return s


class TestPersist:
    def test_zero_window_probes_with_one_byte_and_backs_off(self) -> None:
        s = _zero_window()
        c = s.conn
        assert c.timers["retransmit"] is None and c.timers["persist"] == pytest.approx(0.2)
        times = []
        for _ in range(5):
            (probe,) = s.fire()
            assert probe.seq == P0 and bytes(probe.payload) == b"p"
            times.append(round(s.now, 6))
            assert s.push(ACK, ack=P0, window=0) == []  # the peer answers: still closed
        assert times == [0.2, 0.6, 1.4, 3.0, 6.2]
        assert c.stats.tcp_window_probes == 5 and c.stats.tcp_dup_acks == 0

    def test_backoff_bounded_by_persist_max(self) -> None:
        s = _zero_window(TcpConfig(persist_max=1.0))
        gaps = []
        last = 0.0
        for _ in range(6):
            s.fire()
            s.push(ACK, ack=P0, window=0)
            gaps.append(round(s.now - last, 6))
            last = s.now
        assert gaps == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]

    def test_never_gives_up_while_the_peer_answers(self) -> None:
        s = _zero_window(TcpConfig(data_retries=3, persist_max=5.0))
        for _ in range(50):
            s.fire()
            s.push(ACK, ack=P0, window=0)
        assert s.conn.state is State.ESTABLISHED and s.now > 200

    def test_gives_up_when_probes_go_unanswered(self) -> None:
        s = _zero_window(TcpConfig(data_retries=3))
        s.run_timers(lambda: s.conn.state is State.CLOSED)
        c = s.conn
        assert c.stats.tcp_window_probes == 3
        assert kit.events(c) == [TimedOut(c, "retransmit"), Closed(c)]

    def test_window_opens_and_data_flows(self) -> None:
        s = _zero_window()
        c = s.conn
        s.fire()
        sent = s.push(ACK, ack=P0, window=1000)  # window update: 8000 bytes at shift 3
        assert [len(x.payload) for x in sent] == [MSS, MSS]  # Nagle holds the last 80
        assert c.timers["persist"] is None

    def test_probe_byte_accepted_by_peer(self) -> None:
        s = _zero_window()
        s.fire()
        s.push(ACK, ack=P0 + 1, window=0)  # the peer took the byte, window closed again
        c = s.conn
        assert c.snd_una == P0 + 1 and c.snd_nxt == P0 + 1 and c.state is State.ESTABLISHED
        (probe,) = s.fire()
        assert probe.seq == P0 + 1

    def test_small_window_override_sends_after_persist_timeout(self) -> None:
        s = kit.established()
        c = s.conn
        c.send(b"a" * 20000)
        s.out()
        assert s.push(ACK, window=10) == []  # 80 bytes: SWS avoidance holds the data
        (seg,) = s.fire()
        assert len(seg.payload) == 80  # 3.8.6.2.1 (4): the override timeout

    def test_zero_window_between_two_machines(self) -> None:
        p = Pair(cfg_b=TcpConfig(recv_buffer=16384), auto_read=False, delay=0.01)
        p.handshake()
        data = bytes(range(256)) * 200
        p.feed_a = memoryview(data)
        p.run(lambda: p.b.rcv_wnd == 0 and p.stats_a.tcp_window_probes >= 4)
        assert p.b.readable == 16384
        got = p.b.read()
        p.auto_read = True
        p.run(lambda: len(p.got_b) + len(got) == len(data))
        assert got + bytes(p.got_b) == data
        assert p.stats_b.tcp_window_updates >= 1


class TestKeepalive:
    def test_off_by_default(self, established: Script) -> None:
        assert established.conn.next_deadline() is None

    def test_probes_then_times_out(self, established: Script) -> None:
        c = established.conn
        c.set_keepalive(True, idle=10.0, interval=2.0, count=3)
        probes = []
        while c.state is State.ESTABLISHED:
            sent = established.fire()
            if sent and sent[-1].flags & RST:  # giving up sends the RST of ABORT (test_endings.py)
                assert [(seg.flags, seg.seq) for seg in sent] == [(RST | ACK, S0)]
                break
            for seg in sent:
                assert (seg.flags, seg.seq, len(seg.payload)) == (ACK, S0 - 1, 0)
                assert seg.ack == D0
                probes.append(established.now)
        assert probes == [10.0, 12.0, 14.0]
        assert established.now == 16.0
        assert kit.events(c) == [TimedOut(c, "keepalive"), Closed(c)]
        assert c.stats.tcp_keepalive_probes == 3 and c.stats.tcp_timeout_keepalive == 1

    def test_answered_probes_keep_it_alive(self, established: Script) -> None:
        c = established.conn
        c.set_keepalive(True, idle=10.0, interval=2.0, count=2)
        for _ in range(5):
            established.fire()
            assert established.push(ACK) == []
        assert c.state is State.ESTABLISHED
        assert c.timers["keepalive"] == pytest.approx(established.now + 10.0)

    def test_defaults(self) -> None:
        s = kit.established(TcpConfig(keepalive=True))
        assert s.conn.timers["keepalive"] == 7200.0
        s.fire()
        assert s.conn.timers["keepalive"] == 7200.0 + 75.0

    def test_deferred_while_data_is_in_flight(self, established: Script) -> None:
        c = established.conn
        c.set_keepalive(True, idle=10.0, interval=2.0, count=1)
        c.config.data_retries = 100
        c.config.rto_max = 1000.0
        c.send(b"x")
        established.out()
        established.advance(10.0)
        assert c.stats.tcp_keepalive_probes == 0

    def test_between_two_machines_peer_answers(self) -> None:
        p = Pair()
        p.handshake()
        p.a.set_keepalive(True, idle=100.0, interval=10.0, count=2)
        p.settle(1000.0)
        assert p.a.state is State.ESTABLISHED
        assert p.stats_a.tcp_keepalive_probes >= 9
        assert p.stats_b.tcp_drop_out_of_window >= 9  # seq = SND.NXT - 1 is old: ACKed
