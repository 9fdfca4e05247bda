"""Congestion control: NewReno, CUBIC and HyStart++ behind one small interface.

Theory of operation: the connection owns loss *detection* and recovery -- the SACK scoreboard,
RACK, the recovery point, pipe accounting (RFC 6675) and the RTO timer -- and tells a controller
what happened through the five methods of :class:`CongestionControl`:

* ``on_ack``: bytes were newly delivered by an ACK outside recovery; grow ``cwnd``.
* ``on_congestion``: fast recovery starts (once per episode); multiplicative decrease, and
  ``cwnd = ssthresh`` with no RFC 5681 "+3 SMSS" inflation, because the connection's pipe
  accounting already lets the right amount of data out during recovery.
* ``on_recovery_exit``: the recovery point was ACKed; ``cwnd = ssthresh``.
* ``on_timeout``: the RTO fired; ``cwnd`` = the loss window of 1 SMSS.
* ``save``/``restore``: the connection snapshots the controller just before each congestion
  response and puts the snapshot back if the response proves spurious (RFC 3522, RFC 4015,
  RFC 9438 4.9); a snapshot covers every variable, so an undo is exact.

A controller owns ``cwnd`` and ``ssthresh`` (whole bytes; ``cwnd`` never below 1 SMSS) and nothing
else. Algorithms that think in segments (CUBIC) convert at the edge and keep the fraction of a
byte they could not add yet (``_carry``), so thousands of tiny increments are not lost to
rounding.

Slow start is shared by both controllers: RFC 5681 with RFC 3465 byte counting (at most 2*SMSS per
ACK), or, when built with ``hystart=True``, RFC 9406 HyStart++ for the connection's first slow
start: the same growth with an 8*SMSS cap, watching the per-round minimum RTT and slowing down
("Conservative Slow Start", CSS) when it rises. Any loss or timeout ends HyStart++ for good; later
slow starts (after an RTO) are plain RFC 5681 ones up to the ssthresh the loss produced.

Application-limited ACKs (the sender had less data than cwnd allowed) never grow ``cwnd``: growth
would only certify a window the path was never shown to carry (RFC 7661's concern, RFC 9438 5.8).
CUBIC also keeps its clock from running during those periods.

No clock is ever read: every method that depends on time takes ``now`` (seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from ustack.wire import seq

# RFC 5681 3.1: the initial ssthresh "SHOULD be set arbitrarily high"; the peer's window limits us.
INITIAL_SSTHRESH: Final = 1 << 30
# RFC 3465 2.2 (with RFC 5681 3.1): slow start counts at most L = 2*SMSS bytes per ACK. L limits
# the burst one ACK may release; with TSO the sender's unit of burst is its super-segment, and
# a receiver ACKs one of those with one (stretch) ACK, so the limit is L super-segments then
# (``segment``, set by the connection); without TSO it is the RFC's L*SMSS.
ABC_L: Final = 2

# RFC 9406 4.3, the RECOMMENDED HyStart++ constants (times in seconds).
MIN_RTT_THRESH: Final = 0.004
MAX_RTT_THRESH: Final = 0.016
MIN_RTT_DIVISOR: Final = 8
N_RTT_SAMPLE: Final = 8
CSS_GROWTH_DIVISOR: Final = 4
CSS_ROUNDS: Final = 5
# RFC 9406 4.3: L = 8 for a sender that does not pace (ustack does not); infinity if paced.
HYSTART_L: Final = 8

# RFC 9438 5.1 and 4.6: the cubic scaling constant (segments/s^3) and the decrease factor.
CUBIC_C: Final = 0.4
BETA_CUBIC: Final = 0.7
# RFC 9438 4.3: the additive increase that makes AIMD(alpha, beta_cubic) as fast as Reno.
ALPHA_CUBIC: Final = 3 * (1 - BETA_CUBIC) / (1 + BETA_CUBIC)
# RFC 9438 4.2 wants the smoothed RTT; before any sample (the handshake normally provides one)
# CUBIC looks this far ahead. Only the 1.5*cwnd clamp bounds what a wrong guess can do.
DEFAULT_RTT: Final = 0.1


def initial_window(mss: int) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600))."""
    return min(10 * mss, max(2 * mss, 14600))


_iw = initial_window  # set_mss's parameter shadows the name


class CongestionControl(Protocol):
    name: str
    mss: int
    cwnd: int
    ssthresh: int
    segment: int  # the sender's largest segment with TSO (0: one MSS); see ABC_L

    def set_mss(self, mss: int, initial_window: int | None = None) -> None:
        """Effective send MSS known (handshake done): cwnd = initial window (RFC 6928 unless given)."""

    def on_ack(
        self,
        acked: int,
        now: float,
        *,
        flight: int,
        snd_una: int,
        snd_nxt: int,
        rtt: float | None,
        srtt: float | None,
        min_rtt: float | None,
        app_limited: bool,
    ) -> None:
        """``acked`` bytes newly delivered (cumulatively ACKed or newly SACKed) by one ACK outside
        loss recovery. ``flight``: bytes in flight after the ACK; ``snd_una``/``snd_nxt``: 32-bit
        sequence numbers after the ACK; ``rtt``: this ACK's RTT sample (None if none);
        ``srtt``/``min_rtt``: the connection's estimates (None before the first sample);
        ``app_limited``: the sender was not cwnd-limited, so cwnd must not grow."""

    def on_congestion(self, now: float, flight: int) -> None:
        """Loss detected, fast (SACK) recovery starts: set ssthresh, cwnd = ssthresh (RFC 6675 5
        step 4.2). Called once per recovery episode."""

    def on_recovery_exit(self, now: float) -> None:
        """Recovery ended (the ACK passed the recovery point): cwnd = ssthresh."""

    def on_timeout(self, now: float, flight: int, first: bool) -> None:
        """RTO fired; ``first`` is False for repeated timeouts of the same data (ssthresh is then
        kept). cwnd = 1 SMSS (the loss window)."""

    def save(self) -> object:
        """A snapshot of every variable, for :meth:`restore`."""

    def restore(self, saved: object) -> None:
        """Undo a spurious congestion response: go back to a :meth:`save` snapshot exactly."""


Phase = Literal["slow_start", "css", "avoidance"]


@dataclass(frozen=True, slots=True)
class _HyStartSaved:
    phase: Phase
    window_end: int | None
    last_round_min_rtt: float
    current_round_min_rtt: float
    rtt_sample_count: int
    css_baseline_min_rtt: float
    css_rounds: int


class HyStartPlusPlus:
    """RFC 9406 HyStart++: slow start that leaves early when the round's minimum RTT rises.

    A *round* is one window of data: it starts with ``windowEnd = SND.NXT`` and ends on the ACK
    that covers ``windowEnd``. Each round keeps the minimum RTT seen in it. Once a round has
    N_RTT_SAMPLE samples and its minimum exceeds the previous round's by RttThresh (an eighth of
    that RTT, clamped to 4..16 ms), the queue is judged to be building: Conservative Slow Start
    (CSS) grows 4x slower. If the RTT falls back below the level that triggered CSS, the exit was
    a false alarm (jitter) and slow start resumes; after CSS_ROUNDS rounds in CSS it was real and
    the owner ends slow start with ``ssthresh = cwnd``.

    ``phase`` is "slow_start", "css" or "avoidance"; the last means HyStart++ has finished for
    this connection (CSS ran its course, or a loss or timeout happened) and is never used again.
    """

    __slots__ = (
        "_css_baseline_min_rtt",
        "_css_rounds",
        "_current_round_min_rtt",
        "_last_round_min_rtt",
        "_phase",
        "_rtt_sample_count",
        "_window_end",
    )

    def __init__(self) -> None:
        self._phase: Phase = "slow_start"
        self._window_end: int | None = None  # None: no round started yet
        self._last_round_min_rtt = math.inf
        self._current_round_min_rtt = math.inf
        self._rtt_sample_count = 0
        self._css_baseline_min_rtt = math.inf
        self._css_rounds = 0  # CSS rounds begun, the partial first one included

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def active(self) -> bool:
        return self._phase != "avoidance"

    def on_ack(
        self, acked: int, mss: int, *, snd_una: int, snd_nxt: int, rtt: float | None
    ) -> float:
        """Account one ACK of slow start or CSS and return the cwnd increase in bytes (RFC 9406
        4.2). If this ACK completes the last CSS round, ``phase`` becomes "avoidance" and the
        caller sets ``ssthresh = cwnd`` after adding the increase."""
        # RFC 9406 4.2: cwnd += min(N, L*SMSS), divided by CSS_GROWTH_DIVISOR in CSS; the phase
        # in force when the ACK arrives decides, before this ACK's sample can change it.
        increase: float = min(acked, HYSTART_L * mss)
        if self._phase == "css":
            increase /= CSS_GROWTH_DIVISOR
        if self._window_end is None or seq.ge(snd_una, self._window_end):
            if self._phase == "css" and self._css_rounds >= CSS_ROUNDS:
                # "If CSS_ROUNDS rounds are complete, enter congestion avoidance."
                self._phase = "avoidance"
                return increase
            self._start_round(snd_nxt)
        if rtt is not None:
            self._sample(rtt)
        return increase

    def on_congestion(self) -> None:
        # RFC 9406 4.2: a loss in slow start or CSS enters congestion avoidance (the owner sets
        # ssthresh by its own rule); 4.2 also says to use HyStart++ only for the initial slow
        # start, since later ones stop at the ssthresh the loss discovered.
        self._phase = "avoidance"

    def save(self) -> _HyStartSaved:
        return _HyStartSaved(
            self._phase,
            self._window_end,
            self._last_round_min_rtt,
            self._current_round_min_rtt,
            self._rtt_sample_count,
            self._css_baseline_min_rtt,
            self._css_rounds,
        )

    def restore(self, saved: _HyStartSaved) -> None:
        self._phase = saved.phase
        self._window_end = saved.window_end
        self._last_round_min_rtt = saved.last_round_min_rtt
        self._current_round_min_rtt = saved.current_round_min_rtt
        self._rtt_sample_count = saved.rtt_sample_count
        self._css_baseline_min_rtt = saved.css_baseline_min_rtt
        self._css_rounds = saved.css_rounds

    def _start_round(self, snd_nxt: int) -> None:
        # RFC 9406 4.2: at the start of each round (in slow start and in CSS).
        self._last_round_min_rtt = self._current_round_min_rtt
        self._current_round_min_rtt = math.inf
        self._rtt_sample_count = 0
        self._window_end = snd_nxt
        if self._phase == "css":
            self._css_rounds += 1

    def _sample(self, rtt: float) -> None:
        self._current_round_min_rtt = min(self._current_round_min_rtt, rtt)
        self._rtt_sample_count += 1
        if self._rtt_sample_count < N_RTT_SAMPLE:
            return
        if self._phase == "slow_start":
            last = self._last_round_min_rtt
            if last == math.inf:  # the previous round had no sample to compare with
                return
            rtt_thresh = max(MIN_RTT_THRESH, min(last / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
            if self._current_round_min_rtt >= last + rtt_thresh:
                self._css_baseline_min_rtt = self._current_round_min_rtt
                self._phase = "css"
                # "If the transition into CSS happens in the middle of a round, that partial
                # round counts towards the limit."
                self._css_rounds = 1
        elif self._current_round_min_rtt < self._css_baseline_min_rtt:
            # The delay fell back: the exit was spurious, resume slow start including HyStart++.
            self._css_baseline_min_rtt = math.inf
            self._css_rounds = 0
            self._phase = "slow_start"


class _Controller:
    """What NewReno and CUBIC share: the windows, the byte carry, and slow start."""

    __slots__ = ("_after_rto", "_carry", "cwnd", "hystart", "mss", "segment", "ssthresh")

    name: str = ""

    def __init__(self, mss: int, hystart: bool = True) -> None:
        _check_mss(mss)
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = INITIAL_SSTHRESH
        self.hystart = HyStartPlusPlus() if hystart else None
        self._carry = 0.0  # the fraction of a byte of growth not yet added to cwnd
        self.segment = 0  # the largest segment the sender forms (TSO), if above one MSS
        # In the slow start after a timeout ABC's L counts MSS, not super-segments: the ACKs
        # then reveal what the receiver already had, and growing by whole stretch ACKs would
        # send a burst of go-back-N retransmissions of it (RFC 3465 2.3).
        self._after_rto = False

    def set_mss(self, mss: int, initial_window: int | None = None) -> None:
        _check_mss(mss)
        self.mss = mss
        self.cwnd = initial_window if initial_window is not None else _iw(mss)
        self._carry = 0.0

    def _set_cwnd(self, exact: float) -> None:
        whole = math.floor(exact)
        if whole < self.mss:
            self.cwnd, self._carry = self.mss, 0.0
        else:
            self.cwnd, self._carry = whole, exact - whole

    def _slow_start(
        self,
        acked: int,
        *,
        snd_una: int,
        snd_nxt: int,
        rtt: float | None,
        app_limited: bool,
    ) -> None:
        hs = self.hystart
        increase: float
        unit = self.mss if self._after_rto or self.segment < self.mss else self.segment
        if hs is not None and hs.active:
            # HyStart++ keeps counting rounds and RTT samples on application-limited ACKs too:
            # the delay signal is still valid, only the growth is withheld below.
            increase = hs.on_ack(acked, unit, snd_una=snd_una, snd_nxt=snd_nxt, rtt=rtt)
            css_done = not hs.active
        else:
            increase = min(acked, ABC_L * unit)  # RFC 5681 3.1 eq. (2), RFC 3465 2.2
            css_done = False
        if not app_limited:
            # Slow start ends at ssthresh (RFC 5681 3.1), so do not jump past it.
            self._set_cwnd(min(self.cwnd + self._carry + increase, self.ssthresh))
            if self.cwnd >= self.ssthresh:
                self._after_rto = False
        if css_done:
            # RFC 9406 4.2: CSS_ROUNDS rounds are complete, enter congestion avoidance.
            self.ssthresh = self.cwnd

    def _end_hystart(self) -> None:
        if self.hystart is not None:
            self.hystart.on_congestion()


def _check_mss(mss: int) -> None:
    if mss <= 0:
        raise ValueError(f"MSS must be positive, got {mss}")


@dataclass(frozen=True, slots=True)
class _NewRenoSaved:
    cwnd: int
    ssthresh: int
    carry: float
    bytes_acked: int
    hystart: _HyStartSaved | None


class NewReno(_Controller):
    """RFC 5681 slow start and congestion avoidance; the window halves on loss.

    Fast recovery itself (RFC 6582's partial ACKs, RFC 6675's pipe) lives in the connection;
    what remains here is the AIMD arithmetic.
    """

    __slots__ = ("_bytes_acked",)

    name = "newreno"

    def __init__(self, mss: int, hystart: bool = True) -> None:
        super().__init__(mss, hystart)
        self._bytes_acked = 0  # RFC 3465 2.1: bytes ACKed since cwnd last grew in CA

    def on_ack(
        self,
        acked: int,
        now: float,
        *,
        flight: int,
        snd_una: int,
        snd_nxt: int,
        rtt: float | None,
        srtt: float | None,
        min_rtt: float | None,
        app_limited: bool,
    ) -> None:
        if self.cwnd < self.ssthresh:
            self._slow_start(
                acked, snd_una=snd_una, snd_nxt=snd_nxt, rtt=rtt, app_limited=app_limited
            )
            return
        if app_limited:
            return
        # RFC 5681 3.1 eq. (3) by RFC 3465 2.1 byte counting: one SMSS per cwnd of bytes ACKed.
        self._bytes_acked += acked
        if self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss

    def on_congestion(self, now: float, flight: int) -> None:
        # RFC 5681 3.2 eq. (4): ssthresh = max(FlightSize/2, 2*SMSS); RFC 6675 5 step 4.2:
        # cwnd = ssthresh.
        self._end_hystart()
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._carry = 0.0
        self._bytes_acked = 0

    def on_recovery_exit(self, now: float) -> None:
        self.cwnd = self.ssthresh
        self._carry = 0.0
        self._bytes_acked = 0

    def on_timeout(self, now: float, flight: int, first: bool) -> None:
        # RFC 5681 3.1 eq. (4) only when the segment has not been retransmitted by the timer
        # already (a second timeout would halve a FlightSize of one segment); then the loss
        # window, cwnd = 1 SMSS.
        self._end_hystart()
        self._after_rto = True
        if first:
            self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._carry = 0.0
        self._bytes_acked = 0

    def save(self) -> _NewRenoSaved:
        hs = self.hystart.save() if self.hystart is not None else None
        return _NewRenoSaved(self.cwnd, self.ssthresh, self._carry, self._bytes_acked, hs)

    def restore(self, saved: object) -> None:
        if not isinstance(saved, _NewRenoSaved):
            raise TypeError(f"not a NewReno snapshot: {saved!r}")
        self.cwnd, self.ssthresh = saved.cwnd, saved.ssthresh
        self._carry, self._bytes_acked = saved.carry, saved.bytes_acked
        if self.hystart is not None and saved.hystart is not None:
            self.hystart.restore(saved.hystart)


Region = Literal["reno_friendly", "concave", "convex"]


@dataclass(frozen=True, slots=True)
class _CubicSaved:
    cwnd: int
    ssthresh: int
    carry: float
    w_max: float | None
    k: float
    t_epoch: float | None
    cwnd_epoch: float
    w_est: float
    cwnd_prev: float | None
    last_ack: float
    last_app_limited: bool
    region: Region | None
    hystart: _HyStartSaved | None


class Cubic(_Controller):
    """RFC 9438 CUBIC: after a loss, the window follows a cubic function of real time.

    Internally CUBIC counts in segments (floats); t is seconds since the *epoch*, which starts at
    the first ACK of congestion avoidance after a congestion event. With W_max the window where
    the last loss happened and cwnd_epoch the window at the epoch start,

        W_cubic(t) = C*(t - K)^3 + W_max,   K = cbrt((W_max - cwnd_epoch) / C)   (eqs. 1, 2)

    so W_cubic(0) = cwnd_epoch, the curve is concave up to W_max at t = K (fast growth far from
    the last loss, a plateau near it), then convex (probing for more). Each ACK moves cwnd a
    step towards W_cubic(t + RTT), clamped to [cwnd, 1.5*cwnd] (4.2, 4.4, 4.5). Alongside runs
    W_est, the window a Reno flow with the same decrease would have (4.3); whenever it is ahead
    of W_cubic(t) (short RTTs, small windows) CUBIC is Reno-friendly and uses it instead.
    """

    __slots__ = (
        "_cwnd_epoch",
        "_cwnd_prev",
        "_k",
        "_last_ack",
        "_last_app_limited",
        "_region",
        "_t_epoch",
        "_w_est",
        "_w_max",
    )

    name = "cubic"

    def __init__(self, mss: int, hystart: bool = True) -> None:
        super().__init__(mss, hystart)
        # None before the first congestion event and after a timeout: the next epoch then uses
        # W_max = cwnd_epoch and K = 0 (RFC 9438 4.8, 4.10).
        self._w_max: float | None = None
        self._k = 0.0
        self._t_epoch: float | None = None  # None: the next CA ACK starts an epoch
        self._cwnd_epoch = 0.0
        self._w_est = 0.0
        self._cwnd_prev: float | None = None  # cwnd before the last congestion event
        self._last_ack = 0.0  # the previous congestion-avoidance ACK ...
        self._last_app_limited = False  # ... and whether it was application-limited
        self._region: Region | None = None

    @property
    def w_max(self) -> float | None:
        """W_max in segments (None until a congestion event or epoch defines it)."""
        return self._w_max

    @property
    def k(self) -> float:
        """K in seconds, for the current epoch."""
        return self._k

    @property
    def epoch_start(self) -> float | None:
        """t_epoch, shifted forward by the application-limited time; None between epochs."""
        return self._t_epoch

    @property
    def w_est(self) -> float:
        return self._w_est

    @property
    def region(self) -> Region | None:
        """Which rule set cwnd on the last congestion-avoidance ACK that could grow it."""
        return self._region

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1, in segments, for the current epoch."""
        w_max = self._w_max if self._w_max is not None else self._cwnd_epoch
        return CUBIC_C * (t - self._k) ** 3 + w_max

    def on_ack(
        self,
        acked: int,
        now: float,
        *,
        flight: int,
        snd_una: int,
        snd_nxt: int,
        rtt: float | None,
        srtt: float | None,
        min_rtt: float | None,
        app_limited: bool,
    ) -> None:
        if self.cwnd < self.ssthresh:
            self._slow_start(
                acked, snd_una=snd_una, snd_nxt=snd_nxt, rtt=rtt, app_limited=app_limited
            )
            return
        mss = self.mss
        cwnd = (self.cwnd + self._carry) / mss
        if self._t_epoch is None:
            self._start_epoch(now, cwnd)
        elif app_limited or self._last_app_limited:
            # RFC 9438 4.2 and 5.8: t must not include application-limited periods, or W_cubic
            # would be far ahead after an idle spell. An interval between two ACKs counts only
            # if the sender was cwnd-limited at both ends; otherwise slide the epoch forward.
            self._t_epoch += now - self._last_ack
        self._last_ack = now
        self._last_app_limited = app_limited
        if app_limited:
            return
        assert self._t_epoch is not None and self._w_max is not None
        segments_acked = acked / mss
        t = now - self._t_epoch
        # RFC 9438 4.3 eq. 4. Before any decrease (HyStart++ left slow start without a loss)
        # there is no cwnd_prev and Reno's own rate, alpha = 1, applies.
        reno_pace = self._cwnd_prev is None or self._w_est >= self._cwnd_prev
        alpha = 1.0 if reno_pace else ALPHA_CUBIC
        self._w_est += alpha * segments_acked / cwnd
        if self.w_cubic(t) < self._w_est:
            # 4.3: "cwnd SHOULD be set to W_est" -- but an ACK never shrinks cwnd (cwnd may be
            # ahead of W_est after following W_cubic(t + RTT)).
            self._region = "reno_friendly"
            new = max(cwnd, self._w_est)
        else:
            # 4.4/4.5: both regions step towards the same bounded target.
            self._region = "concave" if cwnd < self._w_max else "convex"
            if srtt is not None:
                horizon = srtt
            elif min_rtt is not None:
                horizon = min_rtt
            else:
                horizon = DEFAULT_RTT
            target = min(max(self.w_cubic(t + horizon), cwnd), 1.5 * cwnd)
            # (target - cwnd)/cwnd per SMSS ACKed; a stretch ACK cannot carry it past target.
            new = min(cwnd + (target - cwnd) / cwnd * segments_acked, target)
        self._set_cwnd(new * mss)

    def on_congestion(self, now: float, flight: int) -> None:
        self._end_hystart()
        self._reduce()
        self.cwnd = self.ssthresh
        self._carry = 0.0

    def on_recovery_exit(self, now: float) -> None:
        self.cwnd = self.ssthresh
        self._carry = 0.0

    def on_timeout(self, now: float, flight: int, first: bool) -> None:
        # RFC 9438 4.8: cwnd as Reno (the loss window), ssthresh with beta_cubic as in 4.6 --
        # only on the first timeout, as RFC 5681 3.1 keeps ssthresh for a repeated one. The
        # next epoch starts with K = 0 and W_max = cwnd_epoch, so W_max is forgotten here.
        self._end_hystart()
        self._after_rto = True
        if first:
            self._reduce()
        self._w_max = None
        self._k = 0.0
        self._t_epoch = None
        self.cwnd = self.mss
        self._carry = 0.0

    def save(self) -> _CubicSaved:
        return _CubicSaved(
            self.cwnd,
            self.ssthresh,
            self._carry,
            self._w_max,
            self._k,
            self._t_epoch,
            self._cwnd_epoch,
            self._w_est,
            self._cwnd_prev,
            self._last_ack,
            self._last_app_limited,
            self._region,
            self.hystart.save() if self.hystart is not None else None,
        )

    def restore(self, saved: object) -> None:
        # RFC 9438 4.9: undo restores cwnd, ssthresh, W_max, K and the epoch (t_epoch,
        # cwnd_epoch, W_est), as if the congestion event had not happened.
        if not isinstance(saved, _CubicSaved):
            raise TypeError(f"not a Cubic snapshot: {saved!r}")
        self.cwnd, self.ssthresh, self._carry = saved.cwnd, saved.ssthresh, saved.carry
        self._w_max, self._k = saved.w_max, saved.k
        self._t_epoch, self._cwnd_epoch, self._w_est = (
            saved.t_epoch,
            saved.cwnd_epoch,
            saved.w_est,
        )
        self._cwnd_prev = saved.cwnd_prev
        self._last_ack, self._last_app_limited = saved.last_ack, saved.last_app_limited
        self._region = saved.region
        if self.hystart is not None and saved.hystart is not None:
            self.hystart.restore(saved.hystart)

    def _reduce(self) -> None:
        cwnd = self.cwnd / self.mss
        # RFC 9438 4.7 fast convergence: a loss below the previous W_max means the flow's share
        # is shrinking (a newcomer); release bandwidth by aiming lower.
        if self._w_max is not None and cwnd < self._w_max:
            self._w_max = cwnd * (1 + BETA_CUBIC) / 2
        else:
            self._w_max = cwnd
        self._cwnd_prev = cwnd
        # RFC 9438 4.6 with cwnd rather than flight_size, which the RFC allows when cwnd cannot
        # grow while less than cwnd is in flight -- on_ack's app_limited rule is exactly that.
        # cwnd is what W_max measures, so the epoch starts at beta_cubic*W_max as the curve
        # assumes; the flight at the moment a loss is detected depends on ACK timing and on
        # what the connection counts as in flight (SACKed bytes or not).
        self.ssthresh = max(round(self.cwnd * BETA_CUBIC), 2 * self.mss)
        self._t_epoch = None

    def _start_epoch(self, now: float, cwnd: float) -> None:
        self._t_epoch = now
        self._last_ack = now
        self._cwnd_epoch = cwnd
        self._w_est = cwnd  # RFC 9438 4.3: W_est starts at cwnd_epoch
        if self._w_max is None:
            # RFC 9438 4.8 (after a timeout) and 4.10 (slow start ended without a loss).
            self._w_max = cwnd
            self._k = 0.0
        else:
            self._k = _cbrt((self._w_max - cwnd) / CUBIC_C)  # eq. 2


def _cbrt(x: float) -> float:
    # A real cube root: negative when cwnd_epoch > W_max (e.g. after an undo), which keeps
    # W_cubic(0) = cwnd_epoch.
    return math.copysign(abs(x) ** (1 / 3), x)


Factory = Callable[[int, bool], CongestionControl]  # (mss, hystart)
_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make an algorithm available as ``TcpConfig.congestion = name``."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, mss: int, *, hystart: bool = True) -> CongestionControl:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r}; available: {', '.join(available())}"
        ) from None
    return factory(mss, hystart)


register("newreno", NewReno)
register("cubic", Cubic)
