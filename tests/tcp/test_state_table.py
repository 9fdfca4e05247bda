"""The transition table: every row is driven through real segments and calls, nothing else
changes state, and each per-state fixture equals the same state reached by two real machines."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, RST, SYN, Pair, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.state import (
    NEXT,
    TRANSITIONS,
    State,
    Trigger,
    graphviz,
    markdown_table,
    mermaid,
    next_state,
)
from ustack.wire import tcp as wt

S = State


def _rst(s: Script) -> None:
    s.push(RST, seq=s.conn.rcv_nxt)


def _data_unacked_timeout(s: Script) -> None:
    s.conn.config.data_retries = 2
    if s.conn.state in (S.ESTABLISHED, S.CLOSE_WAIT):
        s.conn.send(b"x" * 10)
        s.out()
    s.run_timers(lambda: s.conn.state is S.CLOSED)


def _cookie_ack(s: Script) -> None:
    # The host answered the peer's SYN (ISN ISS_B) with a cookie SYN,ACK (ISN ISS_A) and kept no
    # state; the peer's ACK returns the cookie.
    ack = s.make(ACK, seq=kit.ISS_B + 1, ack=kit.ISS_A + 1)
    s.conn.open_from_cookie(ack, s.now, peer_mss=1460)


def _syn_received_active() -> Script:
    s = kit.syn_sent()
    s.push(SYN, options=kit.PEER_SYN_OPTS, ack=0)
    assert s.conn.state is S.SYN_RECEIVED
    return s


# (from, trigger, to) -> (fixture for `from`, the action that fires the trigger)
DRIVERS: dict[tuple[State, str, State], tuple[Callable[[], Script], Callable[[Script], object]]] = {
    (S.CLOSED, "open_active", S.SYN_SENT): (kit.closed, lambda s: s.conn.open_active(s.now)),
    (S.CLOSED, "open_passive", S.LISTEN): (kit.closed, lambda s: s.conn.open_passive(s.now)),
    (S.LISTEN, "rcv_syn", S.SYN_RECEIVED): (
        kit.listen,
        lambda s: s.push(SYN, options=kit.PEER_SYN_OPTS, ack=0),
    ),
    (S.LISTEN, "rcv_cookie_ack", S.ESTABLISHED): (kit.listen, _cookie_ack),
    (S.LISTEN, "close", S.CLOSED): (kit.listen, lambda s: s.conn.close(s.now)),
    (S.LISTEN, "abort", S.CLOSED): (kit.listen, lambda s: s.conn.abort(s.now)),
    (S.SYN_SENT, "rcv_syn_ack", S.ESTABLISHED): (
        kit.syn_sent,
        lambda s: s.push(SYN | ACK, options=kit.PEER_SYN_OPTS),
    ),
    (S.SYN_SENT, "rcv_syn", S.SYN_RECEIVED): (
        kit.syn_sent,
        lambda s: s.push(SYN, options=kit.PEER_SYN_OPTS, ack=0),
    ),
    (S.SYN_SENT, "rcv_rst", S.CLOSED): (kit.syn_sent, lambda s: s.push(RST | ACK, seq=0)),
    (S.SYN_SENT, "close", S.CLOSED): (kit.syn_sent, lambda s: s.conn.close(s.now)),
    (S.SYN_SENT, "abort", S.CLOSED): (kit.syn_sent, lambda s: s.conn.abort(s.now)),
    (S.SYN_SENT, "timeout", S.CLOSED): (
        kit.syn_sent,
        lambda s: s.run_timers(lambda: s.conn.state is S.CLOSED),
    ),
    (S.SYN_RECEIVED, "rcv_ack", S.ESTABLISHED): (kit.syn_received, lambda s: s.push(ACK)),
    (S.SYN_RECEIVED, "rcv_syn_ack", S.ESTABLISHED): (
        _syn_received_active,
        lambda s: s.push(SYN | ACK, seq=s.conn.irs, options=kit.PEER_SYN_OPTS),
    ),
    (S.SYN_RECEIVED, "rcv_rst", S.LISTEN): (kit.syn_received, _rst),
    (S.SYN_RECEIVED, "rcv_rst", S.CLOSED): (_syn_received_active, _rst),
    (S.SYN_RECEIVED, "abort", S.CLOSED): (kit.syn_received, lambda s: s.conn.abort(s.now)),
    (S.SYN_RECEIVED, "timeout", S.CLOSED): (
        kit.syn_received,
        lambda s: s.run_timers(lambda: s.conn.state is S.CLOSED),
    ),
    (S.ESTABLISHED, "close", S.FIN_WAIT_1): (kit.established, lambda s: s.conn.close(s.now)),
    (S.ESTABLISHED, "rcv_fin", S.CLOSE_WAIT): (kit.established, lambda s: s.push(FIN | ACK)),
    (S.ESTABLISHED, "rcv_rst", S.CLOSED): (kit.established, _rst),
    (S.ESTABLISHED, "abort", S.CLOSED): (kit.established, lambda s: s.conn.abort(s.now)),
    (S.ESTABLISHED, "timeout", S.CLOSED): (kit.established, _data_unacked_timeout),
    (S.FIN_WAIT_1, "rcv_ack", S.FIN_WAIT_2): (kit.fin_wait_1, lambda s: s.push(ACK)),
    (S.FIN_WAIT_1, "rcv_fin", S.CLOSING): (
        kit.fin_wait_1,
        lambda s: s.push(FIN | ACK, ack=s.conn.snd_una),
    ),
    (S.FIN_WAIT_1, "rcv_rst", S.CLOSED): (kit.fin_wait_1, _rst),
    (S.FIN_WAIT_1, "abort", S.CLOSED): (kit.fin_wait_1, lambda s: s.conn.abort(s.now)),
    (S.FIN_WAIT_1, "timeout", S.CLOSED): (kit.fin_wait_1, _data_unacked_timeout),
    (S.FIN_WAIT_2, "rcv_fin", S.TIME_WAIT): (kit.fin_wait_2, lambda s: s.push(FIN | ACK)),
    (S.FIN_WAIT_2, "rcv_rst", S.CLOSED): (kit.fin_wait_2, _rst),
    (S.FIN_WAIT_2, "abort", S.CLOSED): (kit.fin_wait_2, lambda s: s.conn.abort(s.now)),
    (S.FIN_WAIT_2, "timeout", S.CLOSED): (
        kit.fin_wait_2,
        lambda s: (s.conn.close(s.now), s.run_timers(lambda: s.conn.state is S.CLOSED)),
    ),
    (S.CLOSE_WAIT, "close", S.LAST_ACK): (kit.close_wait, lambda s: s.conn.close(s.now)),
    (S.CLOSE_WAIT, "rcv_rst", S.CLOSED): (kit.close_wait, _rst),
    (S.CLOSE_WAIT, "abort", S.CLOSED): (kit.close_wait, lambda s: s.conn.abort(s.now)),
    (S.CLOSE_WAIT, "timeout", S.CLOSED): (kit.close_wait, _data_unacked_timeout),
    (S.CLOSING, "rcv_ack", S.TIME_WAIT): (kit.closing, lambda s: s.push(ACK)),
    (S.CLOSING, "rcv_rst", S.CLOSED): (kit.closing, _rst),
    (S.CLOSING, "abort", S.CLOSED): (kit.closing, lambda s: s.conn.abort(s.now)),
    (S.CLOSING, "timeout", S.CLOSED): (kit.closing, _data_unacked_timeout),
    (S.LAST_ACK, "rcv_ack", S.CLOSED): (kit.last_ack, lambda s: s.push(ACK)),
    (S.LAST_ACK, "rcv_rst", S.CLOSED): (kit.last_ack, _rst),
    (S.LAST_ACK, "abort", S.CLOSED): (kit.last_ack, lambda s: s.conn.abort(s.now)),
    (S.LAST_ACK, "timeout", S.CLOSED): (kit.last_ack, _data_unacked_timeout),
    (S.TIME_WAIT, "timeout", S.CLOSED): (
        kit.time_wait,
        lambda s: s.run_timers(lambda: s.conn.state is S.CLOSED),
    ),
    (S.TIME_WAIT, "abort", S.CLOSED): (kit.time_wait, lambda s: s.conn.abort(s.now)),
}


def test_every_row_has_a_driver_and_rfc_section() -> None:
    rows = {(t.src, t.trigger, t.dst) for t in TRANSITIONS}
    assert rows == set(DRIVERS)
    assert len(rows) == len(TRANSITIONS), "duplicate rows"
    for t in TRANSITIONS:
        assert t.rfc and t.rfc[0].isdigit()
    assert {t.src for t in TRANSITIONS} | {t.dst for t in TRANSITIONS} == set(State)


@pytest.mark.parametrize(
    "row", TRANSITIONS, ids=[f"{t.src.name}-{t.trigger}-{t.dst.name}" for t in TRANSITIONS]
)
def test_walk_row(row: object) -> None:
    src, trigger, dst = row[0], row[1], row[2]  # type: ignore[index]
    make, act = DRIVERS[(src, trigger, dst)]
    s = make()
    assert s.conn.state is src
    seen: list[tuple[State, str, State]] = []
    s.conn.tracer = lambda c, kind, d: (
        seen.append((d["from"], d["trigger"], d["to"])) if kind == "state" else None
    )
    act(s)
    assert seen == [(src, trigger, dst)]
    assert s.conn.state is dst


def test_the_table_computes_the_next_state() -> None:
    # Every (state, trigger) of the table leads where its row says, for the opens it covers,
    # and nothing else has a row: the connection never names a destination itself.
    for t in TRANSITIONS:
        for passive in (True, False) if t.passive is None else (t.passive,):
            assert next_state(t.src, t.trigger, passive) is t.dst
    assert len(NEXT) == sum(1 if t.passive is not None else 2 for t in TRANSITIONS)
    assert next_state(State.SYN_RECEIVED, Trigger.RCV_RST, True) is State.LISTEN
    assert next_state(State.SYN_RECEIVED, Trigger.RCV_RST, False) is State.CLOSED


def test_firing_a_trigger_without_a_row_is_a_bug() -> None:
    s = kit.established()
    with pytest.raises(AssertionError, match="no transition from ESTABLISHED on rcv_syn"):
        s.conn._fire(Trigger.RCV_SYN, 0.0)
    assert s.conn.state is State.ESTABLISHED


def test_generated_table_and_diagrams_cover_every_row() -> None:
    md = markdown_table()
    assert md.count("\n") == len(TRANSITIONS) + 1
    assert "| SYN-SENT | `rcv_syn` | SYN-RECEIVED | 3.10.7.3 |" in md
    assert mermaid().count("-->") == len(TRANSITIONS)
    assert graphviz().count("->") == len(TRANSITIONS)


# ---------------------------------------------------------------- fixtures vs real machines


# The fixtures' peer is a plain RFC 9293 peer (MSS and window scale, no SACK or timestamps).
_PLAIN = TcpConfig(sack=False, timestamps=False)


def _pair_state(state: State) -> Connection:
    """Reach ``state`` on one side of two real connections talking to each other; the other
    side offers what the fixtures' scripted peer offers."""
    if state in (S.LISTEN, S.SYN_RECEIVED):
        p = Pair(delay=0.001, cfg_a=_PLAIN)
    else:
        p = Pair(delay=0.001, cfg_b=_PLAIN)
    if state is S.CLOSED:
        return p.a
    if state is S.LISTEN:
        p.b.open_passive(p.now)
        return p.b
    if state is S.SYN_SENT:
        p.open()
        p._collect()
        return p.a
    if state is S.SYN_RECEIVED:
        p.drop = lambda d, s: d == "ba"
        p.open()
        p.run(lambda: p.b.state is S.SYN_RECEIVED and p.sent["ba"] > 0)
        return p.b
    p.handshake()
    if state is S.ESTABLISHED:
        return p.a
    if state is S.FIN_WAIT_1:
        p.a.shutdown(p.now)
        p._collect()
        return p.a
    if state is S.FIN_WAIT_2:
        p.a.shutdown(p.now)
        p.run(lambda: p.a.state is S.FIN_WAIT_2)
        return p.a
    if state is S.CLOSE_WAIT:
        p.b.shutdown(p.now)
        p.run(lambda: p.a.state is S.CLOSE_WAIT and p.b.state is S.FIN_WAIT_2)
        return p.a
    if state is S.LAST_ACK:
        p.b.shutdown(p.now)
        p.run(lambda: p.a.state is S.CLOSE_WAIT and p.b.state is S.FIN_WAIT_2)
        p.a.shutdown(p.now)
        p._collect()
        return p.a
    if state is S.CLOSING:
        # both FINs cross; the ACKs for them are lost
        p.drop = lambda d, s: s.control is not wt.Control.FIN
        p.a.shutdown(p.now)
        p.b.shutdown(p.now)
        p.run(lambda: p.a.state is S.CLOSING and p.b.state is S.CLOSING and not p._wire)
        p._collect()
        return p.a
    assert state is S.TIME_WAIT
    p.a.shutdown(p.now)
    p.run(lambda: p.a.state is S.FIN_WAIT_2)
    p.b.shutdown(p.now)
    p.run(lambda: p.a.state is S.TIME_WAIT and p.b.state is S.CLOSED)
    return p.a


@pytest.mark.parametrize("state", list(State), ids=[s.name for s in State])
def test_fixture_equals_state_reached_by_real_peers(state: State) -> None:
    fixture = kit.FIXTURES[state]().conn
    real = _pair_state(state)
    assert real.state is state
    assert kit.snapshot(fixture) == kit.snapshot(real)


def test_fixtures_use_default_config() -> None:
    assert kit.established().conn.config == TcpConfig()
