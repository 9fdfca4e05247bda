"""TIME-WAIT as a compact record (ustack/tcp/timewait.py) and the host's swap to it.

The record must answer every segment exactly as the full Connection in TIME-WAIT does -- same
segments out, same counters, same 2*MSL deadline -- so the first test is a property test that
feeds both the same random segments and times. The rest drive a host with raw packets: a
connection the application released becomes a record when it reaches TIME-WAIT, the record
answers FIN retransmissions, RSTs and SYNs as RFC 9293 / RFC 1337 / RFC 6191 say, and its end
leaves counters identical to those of a host that kept the whole connection -- over IPv4 and
IPv6 alike.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stack.helpers import (
    SERVER_ISN,
    addresses,
    both_families,
    make_host,
    segments,
    tcp_packet,
)
from tests.stack.helpers import tcp_packet as make_packet
from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, PSH, RST, SYN, URG
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.events import Closed
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.tcp.timewait import TimeWait, pack_key, unpack_key
from ustack.wire import seq as sq
from ustack.wire import tcp

CLIENT_ISN = 1000
DAY = 86400.0


@both_families
def test_key_packing_round_trips(family: int) -> None:
    host, peer = addresses(family)
    top = (1 << 32) - 2 if family == 4 else peer | ((1 << 128) - 2)  # all bits but the last
    for key in ((top, 65535, host, 1), (peer, 1, top, 65535), (peer, 40000, host, 80)):
        assert unpack_key(pack_key(*key)) == key
    assert pack_key(peer, 2, host, 4) != pack_key(peer, 2, host, 5)
    assert pack_key(peer, 2, host, 4) != pack_key(host, 2, peer, 4)
    # an IPv6 key never equals the IPv4 key of its addresses' low 32 bits
    low = 0xFFFFFFFF
    assert (pack_key(peer, 2, host, 4) == pack_key(peer & low, 2, host & low, 4)) == (family == 4)


# -- the record against the Connection --------------------------------------------------------


def _pair_in_time_wait(config: TcpConfig, data: int) -> kit.Pair:
    """A and B exchange ``data`` bytes each way, A closes first; A ends in TIME-WAIT with its
    last ACK sent, B in CLOSED."""
    p = kit.Pair(cfg_a=config, cfg_b=config)
    p.handshake()
    p.feed_a = memoryview(bytes(data))
    p.feed_b = memoryview(bytes(range(256)) * (data // 256))
    p.run(lambda: len(p.got_b) == data and len(p.got_a) == len(p.feed_b.obj))  # type: ignore[arg-type]
    p.a.shutdown(p.now)
    p.run(lambda: p.b.eof_received)
    p.b.shutdown(p.now)
    p.run(lambda: p.a.state is State.TIME_WAIT and p.b.state is State.CLOSED)
    p.run(lambda: p.a.segments_to_send(p.now) == [] and not p._wire)
    return p


CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no-timestamps": {"timestamps": False},
    "no-sack": {"sack": False},
    "nothing": {"timestamps": False, "sack": False, "window_scale": False},
    "long-msl": {"msl": 15 * DAY},  # TIME-WAIT outlasts RFC 7323 5.5's 24 days of PAWS
    "few-challenges": {"challenge_ack_limit": 2},
}

near = st.one_of(
    st.sampled_from([0, 1, -1, 2, 100, -100, 1000, -1000, 65535, -65535, 300_000, -300_000]),
    st.integers(-(2**31), 2**31 - 1),
)


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    control = draw(st.sampled_from([0, 0, FIN, FIN, RST, SYN]))
    return {
        "dt": draw(st.sampled_from([0.0, 0.0, 0.001, 0.5, 1.0, 30.0, 59.0, 61.0, 25 * DAY])),
        "flags": control
        | draw(st.sampled_from([ACK, ACK, ACK, ACK | PSH, ACK | URG, 0]))
        & ~(ACK if control == SYN and draw(st.booleans()) else 0),
        "seq": draw(st.one_of(st.sampled_from([0, -1, 1, -5, 5]), near)),
        "ack": draw(st.one_of(st.sampled_from([0, 0, -1, 1]), near)),
        "payload": draw(st.sampled_from([0, 0, 0, 1, 5, 1000])),
        "window": draw(st.sampled_from([0, 1, 1000, 65535])),
        "ts": draw(st.one_of(st.none(), st.sampled_from([0, 1, -1, 1000, -1000]), near)),
        "sack": draw(
            st.lists(st.tuples(near, st.integers(-3000, 3000)), max_size=3)
            | st.sampled_from(
                [[(-100, 100)], [(-100, 101)], [(-2000, 1000)], [(5, 10)], [(-300_000, 10)]]
            )
        ),
    }


def _segment(conn: Connection, ts_recent: int, step: dict[str, Any]) -> tcp.TcpSegment:
    """A segment from B to A, its numbers relative to A's TCB as it stood at the swap."""
    rcv_nxt, snd_nxt = conn.rcv_nxt, conn.snd_nxt
    ts = step["ts"]
    blocks = tuple(
        (sq.add(snd_nxt, left), sq.add(snd_nxt, left + width)) for left, width in step["sack"]
    )
    options = tcp.TcpOptions(
        sack_blocks=blocks, timestamps=None if ts is None else (sq.add(ts_recent, ts), 12345)
    )
    return kit.seg(
        seq=sq.add(rcv_nxt, step["seq"]),
        ack=sq.add(snd_nxt, step["ack"]),
        flags=step["flags"],
        window=step["window"],
        options=options if options != tcp.TcpOptions() else b"",
        payload=bytes(step["payload"]),
    )


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(steps(), min_size=1, max_size=25))
def test_record_answers_exactly_as_the_connection(name: str, script: list[dict[str, Any]]) -> None:
    config = TcpConfig(**CONFIGS[name])
    full = _pair_in_time_wait(config, 5000)
    twin = _pair_in_time_wait(config, 5000)
    conn, stats = full.a, full.stats_a
    rec = TimeWait.from_connection(twin.a, pack_key(1, 2, 3, 4))
    assert rec is not None and rec.deadline == conn.timers["time_wait"]
    rec_stats = twin.stats_a
    assert rec_stats.as_dict() == stats.as_dict()
    ts_recent = conn.rcv.ts_recent
    now = full.now
    for step in script:
        now += step["dt"]
        deadline = conn.next_deadline()
        assert deadline == rec.deadline
        if deadline is not None and deadline <= now:
            conn.on_deadline(now)
            rec.expire(rec_stats)
            assert conn.state is State.CLOSED
            assert rec_stats.as_dict() == stats.as_dict()
            return
        s = _segment(conn, ts_recent, step)
        conn.receive(s, now)
        expected = conn.segments_to_send(now)
        got = rec.receive(s, now, config, rec_stats)
        assert got == expected, (step, s)
        assert conn.state is State.TIME_WAIT
        assert rec_stats.as_dict() == stats.as_dict(), step
        assert (rec.rcv_nxt, rec.snd_nxt, rec.rcv_wnd) == (conn.rcv_nxt, conn.snd_nxt, conn.rcv_wnd)


def test_record_is_refused_while_an_ack_is_owed() -> None:
    p = _pair_in_time_wait(TcpConfig(), 100)
    s = kit.seg(
        seq=sq.add(p.a.rcv_nxt, -1),
        ack=p.a.snd_nxt,
        flags=FIN | ACK,
        options=tcp.TcpOptions(timestamps=(p.a.rcv.ts_recent, 0)),
    )
    p.a.receive(s, p.now)  # a retransmitted FIN: its ACK is queued, not yet taken
    assert TimeWait.from_connection(p.a, 1) is None
    p.a.segments_to_send(p.now)
    assert TimeWait.from_connection(p.a, 1) is not None


# -- the host ---------------------------------------------------------------------------------


def _established(h: Host, family: int, sport: int = 40000, now: float = 0.0) -> Connection:
    listener = h.demux._listeners.get(80) or h.listen(80)
    h.receive_packet(tcp_packet(sport, 80, CLIENT_ISN, family=family), now)
    segments(h, now)
    h.receive_packet(
        tcp_packet(sport, 80, CLIENT_ISN + 1, SERVER_ISN + 1, tcp.ACK, family=family), now
    )
    conn = listener.accept()
    assert conn is not None
    while h.next_event() is not None:
        pass
    return conn


def _close_to_time_wait(
    h: Host, conn: Connection, family: int, sport: int = 40000, now: float = 1.0
) -> None:
    conn.close(now)
    [fin] = segments(h, now)
    assert fin.control is tcp.Control.FIN
    h.receive_packet(
        tcp_packet(sport, 80, CLIENT_ISN + 1, SERVER_ISN + 2, tcp.FIN | tcp.ACK, family=family),
        now + 0.01,
    )
    assert [type(e).__name__ for e in iter(h.next_event, None)] == ["EofReceived"]


@both_families
def test_released_connection_becomes_a_record_in_time_wait(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    h.release(conn, 0.5)  # the application is done with it; it is still ESTABLISHED
    assert h.lookup(peer, 40000, host, 80) is conn
    _close_to_time_wait(h, conn, family)
    [ack] = segments(h, 1.01)  # the ACK of the peer's FIN still goes out
    assert ack.flags == tcp.ACK and ack.ack == CLIENT_ISN + 2
    rec = h.lookup(peer, 40000, host, 80)
    assert isinstance(rec, TimeWait) and rec.state is State.TIME_WAIT
    assert h.connections == [rec]
    assert (rec.local_port, rec.remote_port, rec.rcv_nxt) == (80, 40000, CLIENT_ISN + 2)
    assert h.next_deadline() == pytest.approx(1.01 + 2 * h.config.msl)
    assert conn.on_change is None  # the host no longer listens to the Connection


@both_families
def test_release_in_time_wait_swaps_at_once(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    assert h.lookup(peer, 40000, host, 80) is conn
    h.release(conn, 2.0)
    assert isinstance(h.lookup(peer, 40000, host, 80), TimeWait)
    assert segments(h, 2.0) == []


@both_families
def test_record_re_acks_a_retransmitted_fin_and_restarts_2msl(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    h.release(conn, 0.5)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    h.receive_packet(
        tcp_packet(40000, 80, CLIENT_ISN + 1, SERVER_ISN + 2, tcp.FIN | tcp.ACK, family=family),
        50.0,
    )
    [ack] = segments(h, 50.0)
    assert ack.flags == tcp.ACK and (ack.seq, ack.ack) == (SERVER_ISN + 2, CLIENT_ISN + 2)
    assert h.stats.tcp_time_wait_restarted == 1
    assert h.next_deadline() == pytest.approx(50.0 + 2 * h.config.msl)
    h.on_deadline(1.01 + 2 * h.config.msl)  # the old deadline passes: still there
    assert isinstance(h.lookup(peer, 40000, host, 80), TimeWait)


@both_families
def test_record_ignores_rst_rfc_1337(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    h.release(conn, 0.5)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    h.receive_packet(tcp_packet(40000, 80, CLIENT_ISN + 2, 0, tcp.RST, family=family), 2.0)
    assert segments(h, 2.0) == [] and h.stats.tcp_drop_rst_time_wait == 1
    assert isinstance(h.lookup(peer, 40000, host, 80), TimeWait)


@both_families
def test_syn_above_rcv_nxt_reuses_the_record_quietly(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    h.release(conn, 0.5)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    h.receive_packet(tcp_packet(40000, 80, CLIENT_ISN + 100_000, family=family), 2.0)
    [synack] = segments(h, 2.0)
    assert synack.control is tcp.Control.SYN and synack.ack == CLIENT_ISN + 100_001
    assert h.stats.time_wait_reused == 1 and h.next_event() is None  # nobody to tell
    new = h.lookup(peer, 40000, host, 80)
    assert isinstance(new, Connection) and new.state is State.SYN_RECEIVED


@both_families
def test_syn_at_rcv_nxt_gets_a_challenge_ack_from_the_record(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    h.release(conn, 0.5)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    h.receive_packet(tcp_packet(40000, 80, CLIENT_ISN, family=family), 2.0)
    [ack] = segments(h, 2.0)
    assert ack.flags == tcp.ACK and h.stats.tcp_challenge_acks == 1
    assert isinstance(h.lookup(peer, 40000, host, 80), TimeWait)


@both_families
def test_record_expires_after_2msl_without_an_event_and_frees_the_port(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = h.connect(peer, 80, 0.0, local_port=50000)
    h.release(conn, 0.0)
    [syn] = segments(h)
    h.receive_packet(
        tcp_packet(80, 50000, 7000, syn.seq + 1, tcp.SYN | tcp.ACK, family=family), 0.0
    )
    segments(h)
    conn.close(0.0)
    segments(h)
    h.receive_packet(
        tcp_packet(80, 50000, 7001, syn.seq + 2, tcp.FIN | tcp.ACK, family=family), 0.1
    )
    segments(h, 0.1)
    assert isinstance(h.lookup(peer, 80, host, 50000), TimeWait)
    with pytest.raises(OSError):
        h.connect(peer, 80, 1.0, local_port=50000)  # the 4-tuple is still taken
    while h.next_event() is not None:
        pass
    deadline = h.next_deadline()
    assert deadline is not None and deadline == pytest.approx(0.1 + 2 * h.config.msl)
    h.on_deadline(deadline)
    assert h.connections == [] and h.next_event() is None and h.next_deadline() is None
    assert h.stats.tcp_time_wait_expired == 1 and h.demux._ports_in_use == {}
    assert h.connect(peer, 80, deadline, local_port=50000).state is State.SYN_SENT


@both_families
def test_records_expire_in_deadline_order_whenever_released(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    early = _established(h, family, 40001)
    later = _established(h, family, 40002)
    h.release(later, 0.0)
    _close_to_time_wait(h, early, family, 40001, now=1.0)  # TIME-WAIT at 1.01, released only at 5
    segments(h, 1.01)
    _close_to_time_wait(h, later, family, 40002, now=2.0)  # TIME-WAIT at 2.01, a record at once
    segments(h, 2.01)
    h.release(early, 5.0)
    msl2 = 2 * h.config.msl
    assert h.next_deadline() == pytest.approx(1.01 + msl2)
    h.on_deadline(1.01 + msl2)
    assert [c.local_port for c in h.connections] == [80]
    assert h.lookup(peer, 40001, host, 80) is None
    assert h.next_deadline() == pytest.approx(2.01 + msl2)


@both_families
def test_a_traced_host_keeps_time_wait_whole(family: int) -> None:
    host, peer = addresses(family)
    seen: list[tuple[str, str]] = []

    def tracer(conn: Any, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state":
            seen.append((str(detail["from"]), str(detail["to"])))

    h = make_host(family, tracer=tracer)
    conn = _established(h, family)
    h.release(conn, 0.5)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    assert h.lookup(peer, 40000, host, 80) is conn
    h.on_deadline(1.01 + 2 * h.config.msl)
    assert seen[-1] == ("TIME-WAIT", "CLOSED")


@both_families
def test_unreleased_time_wait_is_unchanged(family: int) -> None:
    host, peer = addresses(family)
    h = make_host(family)
    conn = _established(h, family)
    _close_to_time_wait(h, conn, family)
    segments(h, 1.01)
    assert h.lookup(peer, 40000, host, 80) is conn and h.connections == [conn]
    h.on_deadline(1.01 + 2 * h.config.msl)
    assert [type(e) for e in iter(h.next_event, None)] == [Closed]


def _peer_packets(rcv_nxt: int, snd: int, family: int) -> list[tuple[float, bytearray]]:
    """What a peer may send a TIME-WAIT connection: its FIN again, old data, RSTs, SYNs below
    RCV.NXT, ACKs of the future and of the past, garbage sequence numbers."""
    f, a, r, s, p = tcp.FIN, tcp.ACK, tcp.RST, tcp.SYN, tcp.PSH

    def tcp_packet(sport: int, dport: int, seq: int, ack: int, flags: int, **kw: Any) -> bytearray:
        return make_packet(sport, dport, seq & sq.MASK, ack & sq.MASK, flags, family=family, **kw)

    return [
        (2.0, tcp_packet(40000, 80, rcv_nxt - 1, snd, f | a)),
        (2.0, tcp_packet(40000, 80, rcv_nxt - 1, snd, f | a)),
        (3.0, tcp_packet(40000, 80, rcv_nxt - 5, snd, a | p, payload=b"old!!")),
        (3.5, tcp_packet(40000, 80, rcv_nxt, snd, a | p, payload=b"after the FIN")),
        (4.0, tcp_packet(40000, 80, rcv_nxt, 0, r)),
        (4.0, tcp_packet(40000, 80, rcv_nxt + 5, 0, r)),
        (4.0, tcp_packet(40000, 80, rcv_nxt + 10**6, 0, r)),
        (5.0, tcp_packet(40000, 80, rcv_nxt - 10, 0, s)),
        (5.0, tcp_packet(40000, 80, rcv_nxt, snd + 100, a)),
        (5.0, tcp_packet(40000, 80, rcv_nxt, snd - 10**6, a)),
        (6.0, tcp_packet(40000, 80, rcv_nxt + 10**6, snd, a)),
        (6.0, tcp_packet(40000, 80, rcv_nxt, snd, 0)),
        (50.0, tcp_packet(40000, 80, rcv_nxt - 1, snd, f | a)),
        (70.0, tcp_packet(40000, 80, rcv_nxt - 1, snd, a)),
        (109.0, tcp_packet(40000, 80, rcv_nxt, snd, a)),
    ]


@both_families
def test_host_with_records_sends_and_counts_what_a_host_without_them_does(family: int) -> None:
    host, peer = addresses(family)
    """Two hosts, the same packets; one releases the connection (a record answers), the other
    does not (the Connection answers): byte-identical output and identical counters, except
    the Closed event that only the unreleased connection reports."""
    lean, whole = make_host(family), make_host(family)
    conns = [_established(h, family) for h in (lean, whole)]
    lean.release(conns[0], 0.5)
    for h, conn in zip((lean, whole), conns, strict=True):
        _close_to_time_wait(h, conn, family)
    assert lean.packets_to_send(1.01) == whole.packets_to_send(1.01)
    assert isinstance(lean.lookup(peer, 40000, host, 80), TimeWait)
    for now, pkt in _peer_packets(CLIENT_ISN + 2, SERVER_ISN + 2, family):
        for h in (lean, whole):
            for d in iter(h.next_deadline, None):
                if d > now:
                    break
                h.on_deadline(d)
            h.receive_packet(bytearray(pkt), now)
        assert lean.packets_to_send(now) == whole.packets_to_send(now), now
        assert lean.stats.as_dict() == whole.stats.as_dict(), now
        assert lean.next_deadline() == whole.next_deadline()
    assert lean.next_deadline() == pytest.approx(50.0 + 2 * lean.config.msl)
    for h in (lean, whole):
        h.on_deadline(200.0)
    assert lean.stats.as_dict() == whole.stats.as_dict()
    assert lean.connections == whole.connections == []
    assert [type(e).__name__ for e in iter(whole.next_event, None)][-1] == "Closed"
    assert lean.next_event() is None
    assert lean.stats.tcp_time_wait_expired == 1 and lean.stats.tcp_time_wait_restarted == 3
    assert Stats().as_dict().keys() == lean.stats.as_dict().keys()
