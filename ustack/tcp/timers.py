"""A connection's timers: one small structure of deadlines.

Theory of operation: every timer of a TCB is one slot of a list of absolute deadlines (``inf``
when unarmed), indexed by :class:`Timer`. ``next()`` is the minimum of the list, the one answer
the connection gives to ``next_deadline()``; ``due(now)`` lists the expired ones in enum order,
which is also the order the connection handles them in (a TIME-WAIT that expires ends the
connection before anything else is looked at). No timer object ever calls anything: the
connection asks, at the times the host's single timer hands it.
"""

from __future__ import annotations

from enum import IntEnum

_INF = float("inf")


class Timer(IntEnum):
    """Each deadline a TCB may have, in the order they are handled when several are due."""

    TIME_WAIT = 0  # 2*MSL in TIME-WAIT (RFC 9293 3.10.8)
    FIN_WAIT_2 = 1  # an orphaned FIN-WAIT-2 gives up (Linux tcp_fin_timeout)
    USER_TIMEOUT = 2  # data unacknowledged for too long (RFC 9293 3.10.1, RFC 5482)
    RETRANSMIT = 3  # RFC 6298 RTO (also SYN and SYN,ACK retransmission)
    REORDER = 4  # RFC 8985 6.3 RACK reordering timer
    PROBE = 5  # RFC 8985 7 tail loss probe (PTO)
    PERSIST = 6  # zero-window probes and the SWS override (RFC 9293 3.8.6.1, 3.8.6.2.1)
    KEEPALIVE = 7  # RFC 1122 4.2.3.6
    DELAYED_ACK = 8  # RFC 9293 3.8.6.3


_ALL = tuple(Timer)
_NAMES = tuple(t.name.lower() for t in _ALL)


class Timers:
    __slots__ = ("at",)

    def __init__(self) -> None:
        # Plain floats, inf when unarmed: min() over the list is the next deadline.
        self.at: list[float] = [_INF] * len(_ALL)

    def set(self, timer: Timer, when: float) -> None:
        self.at[timer] = when

    def set_once(self, timer: Timer, when: float) -> None:
        """Arm ``timer`` unless it is armed already (a running timer keeps its deadline)."""
        if self.at[timer] == _INF:
            self.at[timer] = when

    def clear(self, timer: Timer) -> None:
        self.at[timer] = _INF

    def armed(self, timer: Timer) -> bool:
        return self.at[timer] != _INF

    def get(self, timer: Timer) -> float | None:
        t = self.at[timer]
        return None if t == _INF else t

    def next(self) -> float | None:
        t = min(self.at)
        return None if t == _INF else t

    def due(self, now: float) -> list[Timer]:
        return [_ALL[i] for i, t in enumerate(self.at) if t <= now]

    def clear_all(self) -> None:
        at = self.at
        for i in range(len(at)):
            at[i] = _INF

    def as_dict(self) -> dict[str, float | None]:
        """Every timer by name (``retransmit``, ``delayed_ack``, ...), for tests and tracing."""
        return {name: (None if t == _INF else t) for name, t in zip(_NAMES, self.at, strict=True)}
