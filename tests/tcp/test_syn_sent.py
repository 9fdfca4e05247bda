"""SYN-SENT (RFC 9293 3.10.7.3): active open, options, refusals, SYN retries."""

from __future__ import annotations

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, ISS_A, ISS_B, RST, SYN, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, Established, Reset, TimedOut
from ustack.tcp.state import State
from ustack.wire import tcp as wt


def test_syn_carries_mss_and_window_scale() -> None:
    s = kit.closed(TcpConfig(mss=1400, recv_buffer=1 << 20))
    s.conn.open_active(0.0)
    (syn,) = s.out()
    assert (syn.flags, syn.seq, syn.has_ack) == (SYN, ISS_A, False)
    assert syn.options.mss == 1400
    assert syn.options.wscale == 5  # 65535 << 5 >= 1 MiB
    assert syn.window == 65535


def test_handshake_seq_ack_exact(syn_sent: Script) -> None:
    (ack,) = syn_sent.push(SYN | ACK, options=kit.PEER_SYN_OPTS, window=kit.PEER_SYN_WINDOW)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS_A + 1, ISS_B + 1)
    c = syn_sent.conn
    assert c.state is State.ESTABLISHED
    assert (c.snd_una, c.snd_nxt, c.irs, c.rcv_nxt) == (ISS_A + 1, ISS_A + 1, ISS_B, ISS_B + 1)
    assert c.snd_wnd == kit.PEER_SYN_WINDOW  # RFC 7323 2.2: a SYN's window is never scaled
    assert [type(e) for e in kit.events(c)] == [Established]


def test_unacceptable_ack_gets_rst_seq_seg_ack(syn_sent: Script) -> None:
    for bad in (ISS_A, ISS_A + 2, ISS_A - 5):
        (rst,) = syn_sent.push(SYN | ACK, ack=bad, options=kit.PEER_SYN_OPTS)
        assert (rst.control, rst.seq) == (wt.Control.RST, bad & 0xFFFFFFFF)
    assert syn_sent.conn.state is State.SYN_SENT
    assert syn_sent.conn.stats.tcp_drop_syn_sent_bad_ack == 3


def test_rst_with_bad_ack_is_dropped_silently(syn_sent: Script) -> None:
    assert syn_sent.push(RST | ACK, ack=ISS_A + 7) == []
    assert syn_sent.conn.state is State.SYN_SENT


def test_rst_without_ack_is_dropped(syn_sent: Script) -> None:
    assert syn_sent.push(RST, seq=0) == []
    assert syn_sent.conn.state is State.SYN_SENT
    assert syn_sent.conn.stats.tcp_drop_syn_sent_rst_no_ack == 1


def test_rst_acking_syn_is_refused(syn_sent: Script) -> None:
    assert syn_sent.push(RST | ACK, seq=0) == []
    c = syn_sent.conn
    assert c.state is State.CLOSED
    evs = kit.events(c)
    assert evs == [Reset(c, True), Closed(c)]
    with pytest.raises(ConnectionResetError):
        c.send(b"x")
    assert c.stats.tcp_refused == 1


def test_segment_without_syn_or_rst_is_dropped(syn_sent: Script) -> None:
    assert syn_sent.push(ACK, payload=b"hi") == []
    assert syn_sent.conn.stats.tcp_drop_syn_sent_no_syn == 1


def test_simultaneous_open(syn_sent: Script) -> None:
    (synack,) = syn_sent.push(SYN, options=kit.PEER_SYN_OPTS, ack=0)
    # SYN-SENT + SYN -> SYN-RECEIVED; our SYN goes again, now with the ACK
    assert (synack.flags, synack.seq, synack.ack) == (SYN | ACK, ISS_A, ISS_B + 1)
    assert synack.options.wscale == 3
    c = syn_sent.conn
    assert c.state is State.SYN_RECEIVED and not c.passive
    # the peer's SYN,ACK completes it
    (ack,) = syn_sent.push(SYN | ACK, seq=ISS_B, options=kit.PEER_SYN_OPTS)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS_A + 1, ISS_B + 1)
    assert c.state is State.ESTABLISHED


def test_simultaneous_open_through_plain_ack(syn_sent: Script) -> None:
    syn_sent.push(SYN, options=kit.PEER_SYN_OPTS, ack=0)
    assert syn_sent.push(ACK, seq=ISS_B + 1) == []
    assert syn_sent.conn.state is State.ESTABLISHED


def test_simultaneous_open_between_two_machines() -> None:
    p = kit.Pair()
    p.a.open_active(p.now)
    p.b.open_active(p.now)
    p.run(lambda: p.a.state is State.ESTABLISHED and p.b.state is State.ESTABLISHED)
    assert p.a.rcv_nxt == p.b.snd_nxt and p.b.rcv_nxt == p.a.snd_nxt
    p.feed_a = memoryview(b"hello" * 1000)
    p.run(lambda: len(p.got_b) == 5000)


@pytest.mark.parametrize(("peer_mss", "ours", "eff"), [(1000, 1460, 1000), (9000, 1400, 1400)])
def test_effective_mss_is_min_of_peer_and_ours(peer_mss: int, ours: int, eff: int) -> None:
    s = kit.established(
        TcpConfig(mss=ours, nagle=False), opts=wt.TcpOptions(mss=peer_mss, wscale=3)
    )
    assert s.conn.snd_mss == eff
    s.conn.send(b"z" * 5000)
    sizes = [len(x.payload) for x in s.out()]
    assert sizes == [eff] * (5000 // eff) + ([5000 % eff] if 5000 % eff else [])


def test_no_mss_option_means_536_segments() -> None:
    s = kit.established(TcpConfig(nagle=False), opts=wt.TcpOptions(wscale=3))
    s.conn.send(b"z" * 1200)
    assert [len(x.payload) for x in s.out()] == [536, 536, 128]


def test_no_window_scaling_unless_both_syns_carry_it() -> None:
    s = kit.established(opts=wt.TcpOptions(mss=1460))
    c = s.conn
    assert (c.snd_wscale, c.rcv_wscale) == (0, 0)
    s.push(ACK, payload=b"x" * 1460, window=1000)
    (ack,) = s.push(ACK, payload=b"x" * 1460, window=1000)
    assert ack.window == 65535  # unscaled, capped, although 256 KiB are free
    assert c.snd_wnd == 1000


def test_peer_window_scale_is_capped_at_14() -> None:
    raw = bytes([wt.OPT_WSCALE, 3, 20, wt.OPT_NOP])
    s = kit.syn_sent()
    s.push(SYN | ACK, options=raw)
    assert s.conn.snd_wscale == 14


def test_syn_retries_backoff_and_timeout() -> None:
    s = kit.syn_sent()
    times = []
    while s.conn.state is State.SYN_SENT:
        sent = s.fire()
        times.append(s.now)
        if sent:
            assert sent[0].flags == SYN and sent[0].seq == ISS_A
    # RFC 6298 5.5: 1, 2, 4, ... seconds, capped at rto_max = 60 s; 6 retransmissions, then
    # give up
    assert times == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0]
    c = s.conn
    assert kit.events(c) == [TimedOut(c, "syn"), Closed(c)]
    assert c.stats.tcp_syn_retransmits == 6 and c.stats.tcp_timeout_syn == 1


def test_syn_retries_configurable() -> None:
    s = kit.syn_sent(TcpConfig(syn_retries=2))
    s.run_timers(lambda: s.conn.state is State.CLOSED)
    assert s.now == 7.0


def test_rtt_sampled_from_handshake_and_3s_after_syn_timeout() -> None:
    s = kit.syn_sent()
    s.now = 0.25
    s.push(SYN | ACK, options=kit.PEER_SYN_OPTS)
    assert s.conn.srtt == pytest.approx(0.25)
    s2 = kit.syn_sent()
    s2.fire()  # SYN retransmitted: Karn, no sample
    s2.push(SYN | ACK, options=kit.PEER_SYN_OPTS)
    assert s2.conn.srtt is None
    assert s2.conn.rto == 3.0  # RFC 6298 (5.7)


def test_data_queued_before_establishment_goes_after() -> None:
    s = kit.syn_sent()
    assert s.conn.send(b"early") == 5
    (ack,) = s.push(SYN | ACK, options=kit.PEER_SYN_OPTS)
    assert bytes(ack.payload) == b"early" and ack.seq == ISS_A + 1


def test_close_in_syn_sent_sends_nothing() -> None:
    s = kit.syn_sent()
    s.conn.close(0.0)
    assert s.conn.state is State.CLOSED and s.out() == []
