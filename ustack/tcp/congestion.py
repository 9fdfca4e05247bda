"""Congestion control behind a small pluggable interface (RFC 5681, RFC 6582, RFC 6928).

Theory of operation: the connection owns loss *detection* -- it counts duplicate ACKs, keeps the
NewReno ``recover`` point, decides which segment to retransmit and when the RTO fires -- and tells
the congestion controller what happened through the methods of :class:`CongestionControl`. The
controller owns ``cwnd`` and ``ssthresh`` (bytes) and nothing else, so another algorithm (CUBIC)
only needs to implement these methods and :func:`register` itself; the machine does not change.
``FlightSize`` (RFC 5681 2) is always passed in by the connection: SND.MAX - SND.UNA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# RFC 5681 3.1: an initial ssthresh "arbitrarily high"; the peer's window limits us anyway.
INITIAL_SSTHRESH = 1 << 30
# RFC 3465 2.2: in slow start, count at most L = 2*SMSS bytes per ACK.
ABC_LIMIT_SEGMENTS = 2


def initial_window(mss: int) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600))."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl(Protocol):
    cwnd: int
    ssthresh: int
    in_recovery: bool

    def set_mss(self, mss: int, initial_window: int | None = None) -> None:
        """The effective send MSS became known (handshake done): size the initial window."""

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        """``acked`` new bytes were cumulatively acknowledged outside recovery."""

    def on_enter_recovery(self, flight: int) -> None:
        """Third duplicate ACK: fast retransmit is happening (RFC 5681 3.2 steps 2-3)."""

    def on_recovery_dup_ack(self) -> None:
        """Another duplicate ACK during fast recovery (RFC 5681 3.2 step 4)."""

    def on_partial_ack(self, acked: int) -> None:
        """A partial ACK during recovery (RFC 6582 3.2 step 5)."""

    def on_exit_recovery(self, flight: int) -> None:
        """A full ACK ended recovery (RFC 6582 3.2 step 4)."""

    def on_timeout(self, flight: int, first: bool) -> None:
        """The RTO fired; ``first`` is False for repeated timeouts of the same segment."""


class NewReno:
    """RFC 5681 slow start and congestion avoidance with RFC 6582 fast recovery."""

    __slots__ = ("_ca_acked", "cwnd", "in_recovery", "mss", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = INITIAL_SSTHRESH
        self.in_recovery = False
        self._ca_acked = 0  # bytes acked since cwnd last grew in congestion avoidance

    def set_mss(self, mss: int, initial_window: int | None = None) -> None:
        self.mss = mss
        self.cwnd = initial_window if initial_window is not None else _iw(mss)

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        if self.cwnd < self.ssthresh:
            # RFC 5681 3.1 (2) with RFC 3465 byte counting, L = 2*SMSS
            self.cwnd += min(acked, ABC_LIMIT_SEGMENTS * self.mss)
        else:
            # RFC 5681 3.1 (3): about one SMSS per RTT, counted in bytes
            self._ca_acked += acked
            if self._ca_acked >= self.cwnd:
                self._ca_acked -= self.cwnd
                self.cwnd += self.mss

    def on_enter_recovery(self, flight: int) -> None:
        # RFC 5681 3.2 (4) ssthresh = max(FlightSize/2, 2*SMSS); (3) cwnd = ssthresh + 3*SMSS
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss
        self.in_recovery = True

    def on_recovery_dup_ack(self) -> None:
        # RFC 5681 3.2 (4): inflate by one SMSS per further duplicate ACK
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        # RFC 6582 3.2 (5): deflate by the newly acked amount, add back one SMSS if >= SMSS
        self.cwnd -= acked
        if acked >= self.mss:
            self.cwnd += self.mss
        self.cwnd = max(self.cwnd, self.mss)

    def on_exit_recovery(self, flight: int) -> None:
        # RFC 6582 3.2 (4) option 1: min(ssthresh, max(FlightSize, SMSS) + SMSS)
        self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)
        self.in_recovery = False
        self._ca_acked = 0

    def on_timeout(self, flight: int, first: bool) -> None:
        # RFC 5681 3.1 (4): ssthresh = max(FlightSize/2, 2*SMSS) only for the first timeout of a
        # segment; then cwnd = loss window = 1 SMSS.
        if first:
            self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.in_recovery = False
        self._ca_acked = 0


_iw = initial_window

Factory = Callable[[int], CongestionControl]
_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make an algorithm available as ``TcpConfig.congestion = name``."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, mss: int) -> CongestionControl:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; have {available()}") from None
    return factory(mss)


register("newreno", NewReno)
