"""Listeners (bounded SYN and accept queues), connect() and ephemeral ports, demux, TIME-WAIT --
each over IPv4 and IPv6."""

from __future__ import annotations

import errno

import pytest

from tests.stack.helpers import (
    SERVER_ISN,
    addresses,
    both_families,
    make_host,
    mss,
    segments,
    tcp_packet,
)
from ustack.stack.config import HostConfig
from ustack.stack.events import ConnectionAccepted
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Closed, Established, Reset
from ustack.tcp.state import State
from ustack.wire import tcp

CLIENT_ISN = 1000


def events(host: Host) -> list[object]:
    out: list[object] = []
    while (ev := host.next_event()) is not None:
        out.append(ev)
    return out


def handshake_syn(
    host: Host, sport: int, now: float = 0.0, family: int = 4
) -> list[tcp.TcpSegment]:
    """Send a SYN and return the host's reply (the SYN-ACK must be sent before it is ACKed)."""
    host.receive_packet(tcp_packet(sport, 80, CLIENT_ISN, family=family), now)
    return segments(host, now)


def handshake_ack(host: Host, sport: int, now: float = 0.0, family: int = 4) -> None:
    host.receive_packet(
        tcp_packet(sport, 80, CLIENT_ISN + 1, SERVER_ISN + 1, tcp.ACK, family=family), now
    )


@both_families
def test_listen_answers_syn_with_syn_ack_and_queues_the_connection(family: int) -> None:
    h = make_host(family)
    listener = h.listen(80)
    [synack] = handshake_syn(h, 40000, family=family)
    assert synack.control is tcp.Control.SYN and synack.has_ack
    assert (synack.seq, synack.ack, synack.dst_port) == (SERVER_ISN, CLIENT_ISN + 1, 40000)
    assert listener.half_open == 1 and listener.accept() is None
    handshake_ack(h, 40000, family=family)
    evs = events(h)
    assert [type(e) for e in evs] == [Established, ConnectionAccepted]
    assert isinstance(evs[1], ConnectionAccepted) and evs[1].listener is listener
    conn = listener.accept()
    assert conn is not None and conn.state is State.ESTABLISHED and conn is evs[0].conn  # type: ignore[attr-defined]
    assert listener.accept() is None
    assert h.stats.listen_syn == 1 and h.stats.listen_queued == 1 and h.stats.listen_accepted == 1


@both_families
def test_syn_queue_full_drops_syn_and_counts(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family, config=TcpConfig(syn_cookies="never"), cookie_secret=b"c" * 16)
    listener = h.listen(80, backlog=8, syn_backlog=2)
    replies = [handshake_syn(h, port, family=family) for port in (40001, 40002, 40003)]
    assert [len(r) for r in replies] == [1, 1, 0]
    assert listener.half_open == 2
    assert h.stats.listen_syn_queue_overflow == 1 and h.stats.listen_syn == 2
    assert h.lookup(peer, 40003, host, 80) is None
    # Once a handshake completes there is room again.
    handshake_ack(h, 40001, family=family)
    handshake_syn(h, 40003, family=family)
    assert listener.half_open == 2 and h.stats.listen_syn_queue_overflow == 1


@both_families
def test_syn_queue_full_answers_with_a_cookie_by_default(family: int) -> None:
    host, peer = addresses(family)
    # The counterpart of the drop above with syn_cookies="auto" (the default): the SYN gets a
    # stateless SYN cookie SYN,ACK instead (tests/stack/test_syncookies.py has the details).
    h = make_host(family, cookie_secret=b"c" * 16)
    listener = h.listen(80, backlog=8, syn_backlog=2)
    replies = [handshake_syn(h, port, family=family) for port in (40001, 40002, 40003)]
    assert [len(r) for r in replies] == [1, 1, 1]
    cookie = replies[2][0]
    assert cookie.control is tcp.Control.SYN and cookie.has_ack and cookie.seq != SERVER_ISN
    assert listener.half_open == 2 and h.lookup(peer, 40003, host, 80) is None
    assert h.stats.listen_syn_queue_overflow == 0 and h.stats.syncookies_sent == 1
    h.receive_packet(
        tcp_packet(40003, 80, CLIENT_ISN + 1, cookie.seq + 1, tcp.ACK, family=family), 0.0
    )
    conn = listener.accept()
    assert conn is not None and conn.remote_port == 40003 and conn.state is State.ESTABLISHED
    assert h.stats.syncookies_accepted == 1


@both_families
def test_accept_queue_full_drops_final_ack_until_accept(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    listener = h.listen(80, backlog=1, syn_backlog=4)
    handshake_syn(h, 40001, family=family)
    handshake_syn(h, 40002, family=family)
    handshake_ack(h, 40001, family=family)
    assert listener.pending == 1
    # accept queue full: the ACK is dropped, the peer will retransmit
    handshake_ack(h, 40002, family=family)
    assert h.stats.listen_accept_queue_overflow == 1
    assert h.lookup(peer, 40002, host, 80).state is State.SYN_RECEIVED  # type: ignore[union-attr]
    assert listener.pending == 1 and listener.half_open == 1
    assert segments(h) == []
    first = listener.accept()
    assert first is not None and first.remote_port == 40001
    handshake_ack(h, 40002, 0.5, family)  # the retransmitted ACK now completes the handshake
    second = listener.accept()
    assert second is not None and second.remote_port == 40002 and second.state is State.ESTABLISHED
    assert h.stats.listen_accept_queue_overflow == 1 and h.stats.listen_queued == 2


@both_families
def test_listener_close_resets_unaccepted_connections(family: int) -> None:
    h = make_host(family)
    listener = h.listen(80)
    for port in (40001, 40002, 40003):
        handshake_syn(h, port, family=family)
    handshake_ack(h, 40001, family=family)
    handshake_ack(h, 40002, family=family)
    accepted = listener.accept()
    segments(h)
    listener.close(1.0)
    rsts = segments(h, 1.0)
    assert sorted(s.dst_port for s in rsts) == [40002, 40003]
    assert all(s.control is tcp.Control.RST for s in rsts)
    assert h.stats.listen_close_reset == 2
    assert [c.remote_port for c in h.connections] == [40001] and accepted is h.connections[0]
    # The port is closed now: a new SYN gets the closed-port RST.
    [rst] = handshake_syn(h, 40004, 1.0, family)
    assert rst.control is tcp.Control.RST and h.stats.rst_sent_closed_port == 1
    listener.close(1.0)  # idempotent


def test_duplicate_listen_raises_eaddrinuse() -> None:
    h = make_host()
    h.listen(80)
    with pytest.raises(OSError) as info:
        h.listen(80)
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(ValueError):
        h.listen(0)


@both_families
def test_listener_ignores_rst_answers_ack_with_rst_and_drops_others(family: int) -> None:
    h = make_host(family)
    h.listen(80)
    h.receive_packet(tcp_packet(40000, 80, 5, 77, tcp.RST | tcp.ACK, family=family), 0.0)
    h.receive_packet(tcp_packet(40000, 80, 5, 77, tcp.ACK, family=family), 0.0)
    h.receive_packet(tcp_packet(40000, 80, 5, 0, tcp.FIN, family=family), 0.0)
    [rst] = segments(h)
    assert (rst.seq, rst.flags) == (77, tcp.RST)
    assert h.stats.listen_drop_rst == 1 and h.stats.listen_rst_for_ack == 1
    assert h.stats.listen_drop_no_syn == 1 and h.connections == []


@both_families
def test_ephemeral_ports_from_configured_range_skip_ports_in_use(family: int) -> None:
    peer = addresses(family)[1]
    h = make_host(family, host_config=HostConfig(ephemeral_low=50000, ephemeral_high=50002))
    h.listen(50001)
    a = h.connect(peer, 80, 0.0)
    b = h.connect(peer, 81, 0.0)
    assert {a.local_port, b.local_port} == {50000, 50002}
    segments(h)
    with pytest.raises(OSError) as info:
        h.connect(peer, 82, 0.0)
    assert info.value.errno == errno.EADDRNOTAVAIL
    # A refused connection frees its port.
    h.receive_packet(
        tcp_packet(80, a.local_port, 0, SERVER_ISN + 1, tcp.RST | tcp.ACK, family=family), 0.0
    )
    assert [type(e) for e in events(h)] == [Reset, Closed]
    assert h.connect(peer, 82, 0.0).local_port == a.local_port


@both_families
def test_default_ephemeral_range_and_explicit_port_conflict(family: int) -> None:
    peer = addresses(family)[1]
    h = make_host(family, isn=None, secret=b"s" * 16)
    ports = {h.connect(peer, 80, 0.0).local_port for _ in range(50)}
    assert len(ports) == 50 and all(49152 <= p <= 65535 for p in ports)
    h.connect(peer, 80, 0.0, local_port=1234)
    with pytest.raises(OSError) as info:
        h.connect(peer, 80, 0.0, local_port=1234)
    assert info.value.errno == errno.EADDRINUSE


@both_families
def test_active_open_sends_syn_with_isn_from_source(family: int) -> None:
    peer = addresses(family)[1]
    h = make_host(family)
    conn = h.connect(peer, 80, 0.0)
    [syn] = segments(h)
    assert syn.control is tcp.Control.SYN and not syn.has_ack and syn.seq == SERVER_ISN
    # MTU - 40 over IPv4, MTU - 60 over IPv6 (RFC 9293 3.7.1, RFC 8200 8.3)
    assert syn.options.mss == mss(family) and conn.state is State.SYN_SENT
    # The advertised MSS follows the MTU (here IPv6's minimum, RFC 8200 5).
    h2 = make_host(family, mtu=1280)
    h2.connect(peer, 80, 0.0)
    assert segments(h2)[0].options.mss == mss(family, 1280)


@both_families
def test_secret_isn_differs_per_connection(family: int) -> None:
    peer = addresses(family)[1]
    h = make_host(family, isn=None, secret=b"s" * 16)
    h.connect(peer, 80, 0.0)
    h.connect(peer, 80, 0.0)
    a, b = segments(h)
    assert a.seq != b.seq


@both_families
def test_demux_many_connections(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conns = [h.connect(peer, 80, 0.0, local_port=20000 + i) for i in range(500)]
    segments(h)
    events(h)
    order = list(range(500))
    order = order[::7] + [i for i in order if i % 7]
    for i in order:
        h.receive_packet(
            tcp_packet(80, 20000 + i, 9000 + i, SERVER_ISN + 1, tcp.SYN | tcp.ACK, family=family),
            0.01,
        )
        [ev] = events(h)
        assert isinstance(ev, Established) and ev.conn is conns[i]
        assert conns[i].rcv_nxt == 9001 + i
        assert h.lookup(peer, 80, host, 20000 + i) is conns[i]
    assert h.stats.tcp_demuxed == 500
    assert all(c.state is State.ESTABLISHED for c in conns)


@both_families
def test_closed_connection_leaves_the_demux(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = h.connect(peer, 80, 0.0)
    segments(h)
    h.receive_packet(
        tcp_packet(80, conn.local_port, 0, SERVER_ISN + 1, tcp.RST | tcp.ACK, family=family), 0.0
    )
    evs = events(h)
    assert [type(e) for e in evs] == [Reset, Closed] and evs[0].refused  # type: ignore[attr-defined]
    assert h.connections == [] and h.lookup(peer, 80, host, conn.local_port) is None
    assert h.next_deadline() is None
    # Now the 4-tuple is a closed port.
    h.receive_packet(tcp_packet(80, conn.local_port, 5, 6, tcp.ACK, family=family), 0.0)
    assert h.stats.rst_sent_closed_port == 1


def _to_time_wait(h: Host, family: int) -> object:
    """Server-side active close through raw packets: ESTABLISHED, close, FIN exchange."""
    listener = h.listen(80)
    handshake_syn(h, 40000, family=family)
    handshake_ack(h, 40000, family=family)
    conn = listener.accept()
    assert conn is not None
    segments(h)
    conn.close(1.0)
    [fin] = segments(h, 1.0)
    assert fin.control is tcp.Control.FIN
    h.receive_packet(
        tcp_packet(40000, 80, CLIENT_ISN + 1, SERVER_ISN + 2, tcp.FIN | tcp.ACK, family=family),
        1.01,
    )
    segments(h, 1.01)
    assert conn.state is State.TIME_WAIT
    events(h)
    return conn


@both_families
def test_time_wait_stays_in_demux_until_2msl_then_closes(family: int) -> None:
    h = make_host(family)
    conn = _to_time_wait(h, family)
    assert h.connections == [conn]
    deadline = h.next_deadline()
    assert deadline is not None and deadline == pytest.approx(1.01 + 2 * h.config.msl)
    h.on_deadline(deadline - 0.001)
    assert h.connections == [conn]
    h.on_deadline(deadline)
    assert [type(e) for e in events(h)] == [Closed] and h.connections == []


@both_families
def test_syn_above_rcv_nxt_reopens_time_wait_connection(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    old = _to_time_wait(h, family)
    h.receive_packet(tcp_packet(40000, 80, CLIENT_ISN + 100_000, family=family), 2.0)
    [synack] = segments(h, 2.0)
    assert synack.control is tcp.Control.SYN and synack.ack == CLIENT_ISN + 100_001
    assert [type(e) for e in events(h)] == [Closed] and h.stats.time_wait_reused == 1
    new = h.lookup(peer, 40000, host, 80)
    assert new is not None and new is not old and new.state is State.SYN_RECEIVED


@both_families
def test_syn_at_or_below_rcv_nxt_goes_to_the_time_wait_connection(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    old = _to_time_wait(h, family)
    h.receive_packet(tcp_packet(40000, 80, CLIENT_ISN, family=family), 2.0)
    assert h.stats.time_wait_reused == 0 and h.lookup(peer, 40000, host, 80) is old
    assert all(s.control is not tcp.Control.SYN for s in segments(h, 2.0))
