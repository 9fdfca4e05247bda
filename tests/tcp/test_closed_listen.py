"""CLOSED (RFC 9293 3.10.7.1) and LISTEN (3.10.7.2)."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, ISS_A, ISS_B, RST, SYN, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.wire import tcp as wt


class TestClosed:
    def test_segment_with_ack_gets_rst_seq_seg_ack(self, closed: Script) -> None:
        (rst,) = closed.push(ACK, seq=7, ack=12345, payload=b"abc")
        assert (rst.control, rst.seq, rst.has_ack) == (wt.Control.RST, 12345, False)
        assert closed.conn.stats.tcp_drop_closed == 1

    def test_segment_without_ack_gets_rst_ack_seq_plus_len(self, closed: Script) -> None:
        (rst,) = closed.push(SYN, seq=100, ack=0)
        assert (rst.control, rst.seq, rst.ack, rst.has_ack) == (wt.Control.RST, 0, 101, True)
        (rst,) = closed.push(FIN, seq=200, ack=0, payload=b"xy")
        assert rst.ack == 203

    def test_rst_is_never_answered(self, closed: Script) -> None:
        assert closed.push(RST | ACK, seq=1, ack=2) == []
        assert closed.conn.stats.nonzero() == {"tcp_drop_closed": 1, "tcp_segments_received": 1}

    def test_send_and_double_open_are_refused(self, closed: Script) -> None:
        with pytest.raises(BrokenPipeError):
            closed.conn.send(b"x")
        closed.conn.open_active(0.0)
        with pytest.raises(OSError):
            closed.conn.open_active(0.0)
        with pytest.raises(OSError):
            closed.conn.open_passive(0.0)


class TestListen:
    def test_rst_is_ignored(self, listen: Script) -> None:
        assert listen.push(RST, seq=5) == []
        assert listen.conn.state is State.LISTEN
        assert listen.conn.stats.tcp_drop_listen_rst == 1

    def test_ack_gets_rst_seq_seg_ack(self, listen: Script) -> None:
        (rst,) = listen.push(ACK, seq=5, ack=777)
        assert (rst.control, rst.seq) == (wt.Control.RST, 777)
        assert listen.conn.state is State.LISTEN
        assert listen.conn.stats.tcp_drop_listen_ack == 1

    def test_no_syn_no_ack_is_dropped(self, listen: Script) -> None:
        assert listen.push(FIN, seq=5, ack=0) == []
        assert listen.conn.stats.tcp_drop_listen_no_syn == 1

    def test_syn_gets_exact_syn_ack(self, listen: Script) -> None:
        (synack,) = listen.push(SYN, options=kit.PEER_SYN_OPTS, ack=0)
        # 3.4: the SYN consumes one sequence number, so the SYN,ACK acks ISN+1
        assert synack.flags == SYN | ACK
        assert (synack.seq, synack.ack) == (ISS_A, ISS_B + 1)
        assert synack.options.mss == 1460
        assert synack.options.wscale == 3  # echoed because the SYN carried one
        assert synack.window == 65535  # RFC 7323 2.2: never scaled in a SYN
        c = listen.conn
        assert c.state is State.SYN_RECEIVED and c.passive
        assert (c.irs, c.rcv_nxt, c.snd_nxt) == (ISS_B, ISS_B + 1, ISS_A + 1)

    def test_no_window_scale_echo_without_peer_option(self, listen: Script) -> None:
        (synack,) = listen.push(SYN, options=wt.TcpOptions(mss=1000), ack=0)
        assert synack.options.wscale is None
        c = listen.conn
        assert (c.snd_wscale, c.rcv_wscale) == (0, 0)
        assert listen.push(ACK, payload=b"x" * 10) == []  # ACK of SYN,ACK with data (delayed)
        assert c.state is State.ESTABLISHED
        # without scaling the window field is capped at 65535 for a 256 KiB buffer
        c.shutdown(listen.now)
        (fin,) = listen.out()
        assert fin.window == 65535

    def test_missing_mss_option_means_536(self, listen: Script) -> None:
        listen.push(SYN, ack=0)
        assert listen.conn.peer_mss == 536 and listen.conn.snd_mss == 536

    def test_window_scale_not_offered_when_disabled(self) -> None:
        s = kit.listen(TcpConfig(window_scale=False))
        (synack,) = s.push(SYN, options=kit.PEER_SYN_OPTS, ack=0)
        assert synack.options.wscale is None
        assert s.conn.snd_wscale == 0

    def test_syn_data_is_not_accepted_before_handshake(self, listen: Script) -> None:
        (synack,) = listen.push(SYN, options=kit.PEER_SYN_OPTS, ack=0, payload=b"early")
        assert synack.ack == ISS_B + 1  # only the SYN is acknowledged; the peer resends data
        assert listen.conn.readable == 0

    def test_close_and_abort_leave_listen(self) -> None:
        stats = Stats()
        for how in ("close", "abort"):
            s = kit.listen(stats=stats)
            getattr(s.conn, how)(0.0)
            assert s.conn.state is State.CLOSED
            assert s.out() == []
            assert [type(e).__name__ for e in kit.events(s.conn)] == ["Closed"]
