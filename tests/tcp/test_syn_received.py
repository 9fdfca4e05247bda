"""SYN-RECEIVED (RFC 9293 3.10.7.4 with RFC 5961)."""

from __future__ import annotations

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, ISS_A, ISS_B, RST, SYN, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, DataReceived, Established, Reset, TimedOut
from ustack.tcp.state import State
from ustack.wire import tcp as wt


def test_syn_window_unscaled_then_scaled(syn_received: Script) -> None:
    c = syn_received.conn
    assert c.snd_wnd == kit.PEER_SYN_WINDOW and c.snd_wscale == 3
    syn_received.push(ACK, window=100)
    assert c.snd_wnd == 800


def test_ack_completes_handshake_with_data(syn_received: Script) -> None:
    assert syn_received.push(ACK, payload=b"hello") == []  # delayed ACK
    c = syn_received.conn
    assert c.state is State.ESTABLISHED
    assert [type(e) for e in kit.events(c)] == [Established, DataReceived]
    assert c.read() == b"hello"
    assert c.snd_wnd == kit.PEER_WINDOW << 3  # the first non-SYN window is scaled


def test_synack_retransmitted_then_half_open_dropped(syn_received: Script) -> None:
    c = syn_received.conn
    sent = syn_received.run_timers(lambda: c.state is State.CLOSED)
    assert len(sent) == 5 and all(x.flags == SYN | ACK and x.seq == ISS_A for x in sent)
    assert syn_received.now == 1 + 2 + 4 + 8 + 16 + 32
    assert kit.events(c) == [TimedOut(c, "synack"), Closed(c)]
    assert c.stats.tcp_synack_retransmits == 5 and c.stats.tcp_timeout_synack == 1


def test_synack_retries_configurable() -> None:
    s = kit.syn_received(TcpConfig(synack_retries=1))
    s.run_timers(lambda: s.conn.state is State.CLOSED)
    assert s.now == 3.0


def test_retransmitted_syn_gets_synack_again(syn_received: Script) -> None:
    (synack,) = syn_received.push(SYN, seq=ISS_B, ack=0, options=kit.PEER_SYN_OPTS)
    assert synack.flags == SYN | ACK and synack.ack == ISS_B + 1
    assert syn_received.conn.state is State.SYN_RECEIVED


def test_unacceptable_ack_gets_rst(syn_received: Script) -> None:
    (rst,) = syn_received.push(ACK, ack=ISS_A + 50)
    assert (rst.control, rst.seq) == (wt.Control.RST, ISS_A + 50)
    assert syn_received.conn.state is State.SYN_RECEIVED
    assert syn_received.conn.stats.tcp_drop_synrcvd_bad_ack == 1


def test_rst_of_passive_open_returns_to_listen(syn_received: Script) -> None:
    assert syn_received.push(RST, seq=ISS_B + 1) == []
    c = syn_received.conn
    assert c.state is State.LISTEN
    assert c.next_deadline() is None  # the host discards it; no SYN,ACK retransmissions
    assert kit.events(c) == []
    assert c.stats.tcp_synrcvd_back_to_listen == 1


def test_rst_of_active_open_is_refused() -> None:
    s = kit.syn_sent()
    s.push(SYN, options=kit.PEER_SYN_OPTS, ack=0)
    s.push(RST, seq=ISS_B + 1)
    c = s.conn
    assert c.state is State.CLOSED
    assert kit.events(c) == [Reset(c, True), Closed(c)]


def test_rst_in_window_but_not_exact_gets_challenge_ack(syn_received: Script) -> None:
    (ack,) = syn_received.push(RST, seq=ISS_B + 100)
    assert ack.flags == ACK and ack.ack == ISS_B + 1
    assert syn_received.conn.state is State.SYN_RECEIVED


def test_segment_without_ack_is_dropped(syn_received: Script) -> None:
    assert syn_received.push(0, payload=b"x") == []
    assert syn_received.conn.stats.tcp_drop_no_ack == 1


def test_close_in_syn_received_sends_fin_after_establishment(syn_received: Script) -> None:
    c = syn_received.conn
    c.send(b"abc")
    c.close(syn_received.now)
    assert c.state is State.SYN_RECEIVED
    (fin,) = syn_received.push(ACK, ack=ISS_A + 1)
    assert fin.control is wt.Control.FIN and bytes(fin.payload) == b"abc"
    assert c.state is State.FIN_WAIT_1
    assert syn_received.push(ACK) == []
    assert c.state is State.FIN_WAIT_2


def test_fin_with_the_handshake_ack(syn_received: Script) -> None:
    (ack,) = syn_received.push(FIN | ACK, payload=b"bye")
    c = syn_received.conn
    assert c.state is State.CLOSE_WAIT and c.read() == b"bye" and ack.ack == ISS_B + 5
