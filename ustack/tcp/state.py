"""TCP connection states and the transition table (RFC 9293 section 3.3.2).

Theory of operation
-------------------
A :class:`~ustack.tcp.connection.Connection` is one TCB. It is driven by exactly three kinds of
input -- a segment the host demultiplexed to it (``receive``), a call from the application
(``open_*``, ``send``, ``shutdown``, ``close``, ``abort``) and the passage of time
(``on_deadline``) -- and it answers with pulled output (``segments_to_send``) and event values
(``next_event``). It never reads a clock: every entry point that may depend on time takes ``now``.

The state changes it may make are the rows of :data:`TRANSITIONS` below, each with the RFC 9293
section that asks for it. The table *drives* the machine: the connection fires a
:class:`Trigger` and :func:`next_state` looks the destination up (as h11 does); no call site names
the state it goes to, and firing a trigger that has no row for the current state is a bug that
raises. So the table is the whole truth about the machine's shape; a test drives real segments
and calls through every row, and the README's table and diagram are generated from it
(:func:`markdown_table`, :func:`mermaid`).

Triggers name the input, not the detail: ``rcv_syn`` is a SYN without ACK, ``rcv_syn_ack`` a SYN
with an acceptable ACK, ``rcv_ack`` an ACK that acknowledges our SYN or FIN, ``rcv_fin`` the peer's
FIN reaching RCV.NXT, ``rcv_cookie_ack`` an ACK to a listener that returns a valid SYN cookie
(RFC 4987 3.6: the host answered the SYN statelessly, so the TCB is born from the ACK straight
into ESTABLISHED, where RFC 9293 3.10.7.2 alone would send a RST), ``rcv_rst`` an acceptable
reset, ``close`` the application's shutdown or close, ``abort`` an abort (or a close with
unread data, or data for an orphan), ``timeout`` any timer that gives up (SYN/SYN-ACK/data
retries, user timeout, keep-alive, FIN-WAIT-2, 2*MSL; the reason is a :class:`TimeoutReason`).
One row carries a guard: a RST in SYN-RECEIVED returns a passive open to LISTEN but refuses an
active one (3.10.7.4), so that row is keyed on how the connection was opened as well.

A FIN that also acknowledges our FIN in FIN-WAIT-1 is two rows (``rcv_ack`` to FIN-WAIT-2, then
``rcv_fin`` to TIME-WAIT) because the ACK is processed before the FIN (RFC 9293 3.10.7.4, fifth
and eighth checks); a close in SYN-RECEIVED is queued until ESTABLISHED (3.10.4) and then taken
as the ESTABLISHED row.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class State(StrEnum):
    # A StrEnum: its members hash as their (RFC-spelled) strings, in C -- the state is looked up
    # in sets and the transition table on every segment, and Enum's own __hash__ is Python.
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


# States in which both sides' sequence numbers are known (RFC 9293 3.10.7.4 "Otherwise").
SYNCHRONIZED = frozenset(
    {
        State.SYN_RECEIVED,
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
        State.TIME_WAIT,
    }
)
# States in which our data or FIN may still be (re)transmitted.
SENDING = frozenset(
    {State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK}
)
# States in which the peer's data is accepted (RFC 9293 3.10.7.4 seventh check).
RECEIVING = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})


class Trigger(StrEnum):
    """What happened to the connection; the table decides where that leads."""

    OPEN_ACTIVE = "open_active"
    OPEN_PASSIVE = "open_passive"
    RCV_SYN = "rcv_syn"
    RCV_SYN_ACK = "rcv_syn_ack"
    RCV_ACK = "rcv_ack"
    RCV_COOKIE_ACK = "rcv_cookie_ack"
    RCV_FIN = "rcv_fin"
    RCV_RST = "rcv_rst"
    CLOSE = "close"
    ABORT = "abort"
    TIMEOUT = "timeout"


class TimeoutReason(StrEnum):
    """Why a connection gave up (the ``timeout`` trigger); each has its own counter."""

    SYN = "syn"  # SYN retries exhausted (RFC 9293 3.8.3 R2 for SYN)
    SYNACK = "synack"  # SYN,ACK retries exhausted
    RETRANSMIT = "retransmit"  # data/FIN retries or unanswered window probes exhausted
    USER_TIMEOUT = "user_timeout"  # RFC 9293 3.10.1 / RFC 5482
    KEEPALIVE = "keepalive"  # RFC 1122 4.2.3.6 probes unanswered
    FIN_WAIT_2 = "fin_wait_2"  # an orphaned FIN-WAIT-2 gave up waiting for the peer's FIN


class Transition(NamedTuple):
    src: State
    trigger: Trigger
    dst: State
    rfc: str
    why: str
    # None: the row applies however the connection was opened; True/False: only to a passive
    # (or active) open.
    passive: bool | None = None


S = State
T = Trigger
TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.CLOSED, T.OPEN_ACTIVE, S.SYN_SENT, "3.10.1", "active OPEN sends SYN"),
    Transition(S.CLOSED, T.OPEN_PASSIVE, S.LISTEN, "3.10.1", "passive OPEN waits for a SYN"),
    Transition(S.LISTEN, T.RCV_SYN, S.SYN_RECEIVED, "3.10.7.2", "SYN arrives; send SYN,ACK"),
    Transition(
        S.LISTEN,
        T.RCV_COOKIE_ACK,
        S.ESTABLISHED,
        "3.10.7.2",
        "ACK returns a valid SYN cookie (RFC 4987 3.6)",
    ),
    Transition(S.LISTEN, T.CLOSE, S.CLOSED, "3.10.4", "CLOSE of a listening TCB"),
    Transition(S.LISTEN, T.ABORT, S.CLOSED, "3.10.5", "ABORT of a listening TCB"),
    Transition(S.SYN_SENT, T.RCV_SYN_ACK, S.ESTABLISHED, "3.10.7.3", "SYN,ACK acks our SYN"),
    Transition(S.SYN_SENT, T.RCV_SYN, S.SYN_RECEIVED, "3.10.7.3", "simultaneous open"),
    Transition(S.SYN_SENT, T.RCV_RST, S.CLOSED, "3.10.7.3", "RST acking our SYN: refused"),
    Transition(S.SYN_SENT, T.CLOSE, S.CLOSED, "3.10.4", "CLOSE before the handshake"),
    Transition(S.SYN_SENT, T.ABORT, S.CLOSED, "3.10.5", "ABORT before the handshake"),
    Transition(S.SYN_SENT, T.TIMEOUT, S.CLOSED, "3.8.3", "SYN retries exhausted"),
    Transition(S.SYN_RECEIVED, T.RCV_ACK, S.ESTABLISHED, "3.10.7.4", "ACK of our SYN"),
    Transition(
        S.SYN_RECEIVED, T.RCV_SYN_ACK, S.ESTABLISHED, "3.5", "simultaneous open: peer's SYN,ACK"
    ),
    Transition(
        S.SYN_RECEIVED, T.RCV_RST, S.LISTEN, "3.10.7.4", "RST of a passive open", passive=True
    ),
    Transition(
        S.SYN_RECEIVED,
        T.RCV_RST,
        S.CLOSED,
        "3.10.7.4",
        "RST of an active open: refused",
        passive=False,
    ),
    Transition(S.SYN_RECEIVED, T.ABORT, S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.SYN_RECEIVED, T.TIMEOUT, S.CLOSED, "3.8.3", "SYN,ACK retries exhausted"),
    Transition(S.ESTABLISHED, T.CLOSE, S.FIN_WAIT_1, "3.10.4", "CLOSE queues our FIN"),
    Transition(S.ESTABLISHED, T.RCV_FIN, S.CLOSE_WAIT, "3.10.7.4", "peer's FIN"),
    Transition(S.ESTABLISHED, T.RCV_RST, S.CLOSED, "3.10.7.4", "RST at RCV.NXT (RFC 5961 3)"),
    Transition(S.ESTABLISHED, T.ABORT, S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.ESTABLISHED, T.TIMEOUT, S.CLOSED, "3.8.3", "retransmission/keep-alive limit"),
    Transition(S.FIN_WAIT_1, T.RCV_ACK, S.FIN_WAIT_2, "3.10.7.4", "our FIN is acknowledged"),
    Transition(S.FIN_WAIT_1, T.RCV_FIN, S.CLOSING, "3.10.7.4", "simultaneous close"),
    Transition(S.FIN_WAIT_1, T.RCV_RST, S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.FIN_WAIT_1, T.ABORT, S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.FIN_WAIT_1, T.TIMEOUT, S.CLOSED, "3.8.3", "FIN/data retransmission limit"),
    Transition(S.FIN_WAIT_2, T.RCV_FIN, S.TIME_WAIT, "3.10.7.4", "peer's FIN after ours"),
    Transition(S.FIN_WAIT_2, T.RCV_RST, S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.FIN_WAIT_2, T.ABORT, S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.FIN_WAIT_2, T.TIMEOUT, S.CLOSED, "3.10.7.4", "orphan FIN-WAIT-2 timeout"),
    Transition(S.CLOSE_WAIT, T.CLOSE, S.LAST_ACK, "3.10.4", "CLOSE sends our FIN"),
    Transition(S.CLOSE_WAIT, T.RCV_RST, S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.CLOSE_WAIT, T.ABORT, S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.CLOSE_WAIT, T.TIMEOUT, S.CLOSED, "3.8.3", "retransmission/keep-alive limit"),
    Transition(S.CLOSING, T.RCV_ACK, S.TIME_WAIT, "3.10.7.4", "our FIN is acknowledged"),
    Transition(S.CLOSING, T.RCV_RST, S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.CLOSING, T.ABORT, S.CLOSED, "3.10.5", "ABORT deletes the TCB"),
    Transition(S.CLOSING, T.TIMEOUT, S.CLOSED, "3.8.3", "FIN retransmission limit"),
    Transition(S.LAST_ACK, T.RCV_ACK, S.CLOSED, "3.10.7.4", "our FIN is acknowledged"),
    Transition(S.LAST_ACK, T.RCV_RST, S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.LAST_ACK, T.ABORT, S.CLOSED, "3.10.5", "ABORT deletes the TCB"),
    Transition(S.LAST_ACK, T.TIMEOUT, S.CLOSED, "3.8.3", "FIN retransmission limit"),
    Transition(S.TIME_WAIT, T.TIMEOUT, S.CLOSED, "3.10.8", "2*MSL elapsed"),
    Transition(S.TIME_WAIT, T.ABORT, S.CLOSED, "3.10.5", "ABORT deletes the TCB"),
)
del S, T


def _index() -> dict[tuple[State, Trigger, bool], State]:
    table: dict[tuple[State, Trigger, bool], State] = {}
    for t in TRANSITIONS:
        for passive in (False, True) if t.passive is None else (t.passive,):
            key = (t.src, t.trigger, passive)
            if key in table:
                raise ValueError(f"two rows for {key}")
            table[key] = t.dst
    return table


# (state, trigger, passive open?) -> next state; built once, checked for ambiguity.
NEXT: dict[tuple[State, Trigger, bool], State] = _index()


def next_state(state: State, trigger: Trigger, passive: bool) -> State:
    """The state ``trigger`` leads to from ``state``; a missing row is a bug in the caller."""
    try:
        return NEXT[(state, trigger, passive)]
    except KeyError:
        raise AssertionError(f"no transition from {state} on {trigger}") from None


def markdown_table() -> str:
    """The transition table as Markdown, for the README."""
    lines = ["| from | trigger | to | RFC 9293 | why |", "| --- | --- | --- | --- | --- |"]
    for t in TRANSITIONS:
        lines.append(f"| {t.src} | `{t.trigger.value}` | {t.dst} | {t.rfc} | {t.why} |")
    return "\n".join(lines)


def mermaid() -> str:
    """A Mermaid state diagram of the table."""
    lines = ["stateDiagram-v2"]
    for t in TRANSITIONS:
        src = "[*]" if t.src is State.CLOSED else t.src.name
        dst = "[*]" if t.dst is State.CLOSED else t.dst.name
        lines.append(f"    {src} --> {dst}: {t.trigger.value}")
    return "\n".join(lines)


def graphviz() -> str:
    """A Graphviz ``dot`` digraph of the table."""
    lines = ["digraph tcp {", "    rankdir=TB;", "    node [shape=box];"]
    for t in TRANSITIONS:
        lines.append(f'    "{t.src}" -> "{t.dst}" [label="{t.trigger.value} ({t.rfc})"];')
    lines.append("}")
    return "\n".join(lines)
