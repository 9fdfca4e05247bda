"""TCP connection states and the transition table (RFC 9293 section 3.3.2).

Theory of operation
-------------------
A :class:`~ustack.tcp.connection.Connection` is one TCB. It is driven by exactly three kinds of
input -- a segment the host demultiplexed to it (``receive``), a call from the application
(``open_*``, ``send``, ``shutdown``, ``close``, ``abort``) and the passage of time
(``on_deadline``) -- and it answers with pulled output (``segments_to_send``) and event values
(``next_event``). It never reads a clock: every entry point that may depend on time takes ``now``.

The state changes it may make are the rows of :data:`TRANSITIONS` below, each with the RFC 9293
section that asks for it. Every change goes through ``Connection._set_state(to, trigger)``, which
refuses a change that is not a row of this table, so the table is the whole truth about the
machine's shape; a test drives real segments and calls through every row, and the README's table
and diagram are generated from it (:func:`markdown_table`, :func:`mermaid`).

Triggers name the input, not the detail: ``rcv_syn`` is a SYN without ACK, ``rcv_syn_ack`` a SYN
with an acceptable ACK, ``rcv_ack`` an ACK that acknowledges our SYN or FIN, ``rcv_fin`` the peer's
FIN reaching RCV.NXT, ``rcv_rst`` an acceptable reset, ``close`` the application's shutdown or
close, ``abort`` an abort (or a close with unread data, or data for an orphan), ``timeout`` any
timer that gives up (SYN/SYN-ACK/data retries, user timeout, keep-alive, FIN-WAIT-2, 2*MSL).

A FIN that also acknowledges our FIN in FIN-WAIT-1 is two rows (``rcv_ack`` to FIN-WAIT-2, then
``rcv_fin`` to TIME-WAIT) because the ACK is processed before the FIN (RFC 9293 3.10.7.4, fifth
and eighth checks); a close in SYN-RECEIVED is queued until ESTABLISHED (3.10.4) and then taken
as the ESTABLISHED row.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class State(Enum):
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

    def __str__(self) -> str:
        return self.value


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


class Transition(NamedTuple):
    src: State
    trigger: str
    dst: State
    rfc: str
    why: str


S = State
TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.CLOSED, "open_active", S.SYN_SENT, "3.10.1", "active OPEN sends SYN"),
    Transition(S.CLOSED, "open_passive", S.LISTEN, "3.10.1", "passive OPEN waits for a SYN"),
    Transition(S.LISTEN, "rcv_syn", S.SYN_RECEIVED, "3.10.7.2", "SYN arrives; send SYN,ACK"),
    Transition(S.LISTEN, "close", S.CLOSED, "3.10.4", "CLOSE of a listening TCB"),
    Transition(S.LISTEN, "abort", S.CLOSED, "3.10.5", "ABORT of a listening TCB"),
    Transition(S.SYN_SENT, "rcv_syn_ack", S.ESTABLISHED, "3.10.7.3", "SYN,ACK acks our SYN"),
    Transition(S.SYN_SENT, "rcv_syn", S.SYN_RECEIVED, "3.10.7.3", "simultaneous open"),
    Transition(S.SYN_SENT, "rcv_rst", S.CLOSED, "3.10.7.3", "RST acking our SYN: refused"),
    Transition(S.SYN_SENT, "close", S.CLOSED, "3.10.4", "CLOSE before the handshake"),
    Transition(S.SYN_SENT, "abort", S.CLOSED, "3.10.5", "ABORT before the handshake"),
    Transition(S.SYN_SENT, "timeout", S.CLOSED, "3.8.3", "SYN retries exhausted"),
    Transition(S.SYN_RECEIVED, "rcv_ack", S.ESTABLISHED, "3.10.7.4", "ACK of our SYN"),
    Transition(
        S.SYN_RECEIVED, "rcv_syn_ack", S.ESTABLISHED, "3.5", "simultaneous open: peer's SYN,ACK"
    ),
    Transition(S.SYN_RECEIVED, "rcv_rst", S.LISTEN, "3.10.7.4", "RST of a passive open"),
    Transition(S.SYN_RECEIVED, "rcv_rst", S.CLOSED, "3.10.7.4", "RST of an active open: refused"),
    Transition(S.SYN_RECEIVED, "abort", S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.SYN_RECEIVED, "timeout", S.CLOSED, "3.8.3", "SYN,ACK retries exhausted"),
    Transition(S.ESTABLISHED, "close", S.FIN_WAIT_1, "3.10.4", "CLOSE queues our FIN"),
    Transition(S.ESTABLISHED, "rcv_fin", S.CLOSE_WAIT, "3.10.7.4", "peer's FIN"),
    Transition(S.ESTABLISHED, "rcv_rst", S.CLOSED, "3.10.7.4", "RST at RCV.NXT (RFC 5961 3)"),
    Transition(S.ESTABLISHED, "abort", S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.ESTABLISHED, "timeout", S.CLOSED, "3.8.3", "retransmission/keep-alive limit"),
    Transition(S.FIN_WAIT_1, "rcv_ack", S.FIN_WAIT_2, "3.10.7.4", "our FIN is acknowledged"),
    Transition(S.FIN_WAIT_1, "rcv_fin", S.CLOSING, "3.10.7.4", "simultaneous close"),
    Transition(S.FIN_WAIT_1, "rcv_rst", S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.FIN_WAIT_1, "abort", S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.FIN_WAIT_1, "timeout", S.CLOSED, "3.8.3", "FIN/data retransmission limit"),
    Transition(S.FIN_WAIT_2, "rcv_fin", S.TIME_WAIT, "3.10.7.4", "peer's FIN after ours"),
    Transition(S.FIN_WAIT_2, "rcv_rst", S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.FIN_WAIT_2, "abort", S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.FIN_WAIT_2, "timeout", S.CLOSED, "3.10.7.4", "orphan FIN-WAIT-2 timeout"),
    Transition(S.CLOSE_WAIT, "close", S.LAST_ACK, "3.10.4", "CLOSE sends our FIN"),
    Transition(S.CLOSE_WAIT, "rcv_rst", S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.CLOSE_WAIT, "abort", S.CLOSED, "3.10.5", "ABORT sends RST"),
    Transition(S.CLOSE_WAIT, "timeout", S.CLOSED, "3.8.3", "retransmission/keep-alive limit"),
    Transition(S.CLOSING, "rcv_ack", S.TIME_WAIT, "3.10.7.4", "our FIN is acknowledged"),
    Transition(S.CLOSING, "rcv_rst", S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.CLOSING, "abort", S.CLOSED, "3.10.5", "ABORT deletes the TCB"),
    Transition(S.CLOSING, "timeout", S.CLOSED, "3.8.3", "FIN retransmission limit"),
    Transition(S.LAST_ACK, "rcv_ack", S.CLOSED, "3.10.7.4", "our FIN is acknowledged"),
    Transition(S.LAST_ACK, "rcv_rst", S.CLOSED, "3.10.7.4", "RST at RCV.NXT"),
    Transition(S.LAST_ACK, "abort", S.CLOSED, "3.10.5", "ABORT deletes the TCB"),
    Transition(S.LAST_ACK, "timeout", S.CLOSED, "3.8.3", "FIN retransmission limit"),
    Transition(S.TIME_WAIT, "timeout", S.CLOSED, "3.10.8", "2*MSL elapsed"),
    Transition(S.TIME_WAIT, "abort", S.CLOSED, "3.10.5", "ABORT deletes the TCB"),
)
del S

ALLOWED: frozenset[tuple[State, str, State]] = frozenset(
    (t.src, t.trigger, t.dst) for t in TRANSITIONS
)


def markdown_table() -> str:
    """The transition table as Markdown, for the README."""
    lines = ["| from | trigger | to | RFC 9293 | why |", "| --- | --- | --- | --- | --- |"]
    for t in TRANSITIONS:
        lines.append(f"| {t.src} | `{t.trigger}` | {t.dst} | {t.rfc} | {t.why} |")
    return "\n".join(lines)


def mermaid() -> str:
    """A Mermaid state diagram of the table."""
    lines = ["stateDiagram-v2"]
    for t in TRANSITIONS:
        src = "[*]" if t.src is State.CLOSED else t.src.name
        dst = "[*]" if t.dst is State.CLOSED else t.dst.name
        lines.append(f"    {src} --> {dst}: {t.trigger}")
    return "\n".join(lines)


def graphviz() -> str:
    """A Graphviz ``dot`` digraph of the table."""
    lines = ["digraph tcp {", "    rankdir=TB;", "    node [shape=box];"]
    for t in TRANSITIONS:
        lines.append(f'    "{t.src}" -> "{t.dst}" [label="{t.trigger} ({t.rfc})"];')
    lines.append("}")
    return "\n".join(lines)
