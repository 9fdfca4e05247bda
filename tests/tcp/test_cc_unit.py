"""Congestion controllers on their own: NewReno (RFC 5681), CUBIC (RFC 9438), HyStart++ (RFC 9406).

The controllers are driven with synthetic ACKs and an explicit ``now``. Oracles are the RFC
formulas, computed here from the constants the RFCs give, not read back from the module.
"""

from __future__ import annotations

import math

import pytest

from ustack.tcp import congestion
from ustack.tcp.congestion import CongestionControl, Cubic, NewReno, initial_window
from ustack.wire import seq

MSS = 1460  # divisible by CSS_GROWTH_DIVISOR, so CSS growth is exact
# Start close to the 32-bit wrap so HyStart++ rounds cross it.
ISS = (1 << 32) - 7 * MSS

C = 0.4  # RFC 9438 5.1
BETA = 0.7  # RFC 9438 4.6
ALPHA = 3 * (1 - BETA) / (1 + BETA)  # RFC 9438 4.3

Controller = NewReno | Cubic


def ack(
    cc: CongestionControl,
    acked: int = MSS,
    now: float = 0.0,
    *,
    rtt: float | None = None,
    srtt: float | None = None,
    app_limited: bool = False,
    una: int = 0,
    nxt: int = 0,
) -> None:
    cc.on_ack(
        acked,
        now,
        flight=0,
        snd_una=una,
        snd_nxt=nxt,
        rtt=rtt,
        srtt=srtt,
        min_rtt=rtt,
        app_limited=app_limited,
    )


def phase(cc: Controller) -> str:
    assert cc.hystart is not None
    return cc.hystart.phase


def w_cubic(t: float, k: float, w_max: float) -> float:
    return C * (t - k) ** 3 + w_max  # RFC 9438 eq. 1


def in_avoidance_after_loss(w_max_segments: int, *, now: float = 0.0) -> Cubic:
    """A CUBIC controller that just finished recovering from a loss at ``w_max_segments``."""
    cc = Cubic(MSS, hystart=False)
    cc.cwnd = w_max_segments * MSS
    cc.ssthresh = 2 * MSS  # in congestion avoidance
    cc.on_congestion(now, cc.cwnd)
    cc.on_recovery_exit(now)
    return cc


class Flow:
    """An ACK-clocked, cwnd-limited sender: one ACK per SMSS, the window refilled after each.

    ``run_round`` delivers exactly one HyStart++ round: from the ACK that covers the previous
    round's windowEnd (or the very first ACK) to the last ACK before the one covering this
    round's windowEnd (SND.NXT as the round's first ACK saw it).
    """

    def __init__(self, cc: Controller) -> None:
        self.cc = cc
        self.una = ISS
        self.nxt = ISS
        self.now = 0.0
        self._fill()

    def _fill(self) -> None:
        while seq.sub(self.nxt, self.una) + MSS <= self.cc.cwnd:
            self.nxt = seq.add(self.nxt, MSS)

    def ack_one(self, rtt: float | None, acked: int = MSS) -> int:
        """Deliver one ACK; return SND.NXT as the controller saw it (before the refill)."""
        self.una = seq.add(self.una, acked)
        self.now += (rtt or 0.01) * MSS / self.cc.cwnd
        seen = self.nxt
        self.cc.on_ack(
            acked,
            self.now,
            flight=seq.sub(self.nxt, self.una),
            snd_una=self.una,
            snd_nxt=self.nxt,
            rtt=rtt,
            srtt=rtt,
            min_rtt=rtt,
            app_limited=False,
        )
        self._fill()
        return seen

    def run_round(self, rtt: float, *, samples: int | None = None) -> list[str]:
        """One round at ``rtt``; only the first ``samples`` ACKs carry an RTT sample. Returns the
        HyStart++ phase after each ACK."""
        hs = self.cc.hystart
        assert hs is not None
        phases: list[str] = []
        end: int | None = None
        while end is None or seq.lt(seq.add(self.una, MSS), end):
            with_sample = samples is None or len(phases) < samples
            seen = self.ack_one(rtt if with_sample else None)
            if end is None:
                end = seen
            phases.append(hs.phase)
        return phases


# RFC 6928 initial window, registry


@pytest.mark.parametrize(("mss", "iw"), [(1460, 14600), (536, 5360), (9000, 18000), (100, 1000)])
@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_initial_window_rfc6928(name: str, mss: int, iw: int) -> None:
    assert initial_window(mss) == iw
    cc = congestion.create(name, mss)
    assert cc.cwnd == iw and cc.mss == mss
    cc.set_mss(2000)
    assert cc.cwnd == 14600 and cc.mss == 2000  # 2*MSS < 14600 < 10*MSS
    cc.set_mss(1000, initial_window=4000)
    assert cc.cwnd == 4000


def test_registry_lists_both_and_rejects_unknown_names() -> None:
    assert {"cubic", "newreno"} <= set(congestion.available())
    assert isinstance(congestion.create("cubic", MSS), Cubic)
    assert isinstance(congestion.create("newreno", MSS), NewReno)
    assert congestion.create("cubic", MSS).name == "cubic"
    plain = congestion.create("newreno", MSS, hystart=False)
    assert isinstance(plain, NewReno) and plain.hystart is None
    default = congestion.create("cubic", MSS)
    assert isinstance(default, Cubic) and default.hystart is not None
    with pytest.raises(ValueError, match=r"unknown congestion control 'bogus'.*cubic.*newreno"):
        congestion.create("bogus", MSS)


def test_nonpositive_mss_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="MSS"):
        NewReno(0)
    with pytest.raises(ValueError, match="MSS"):
        Cubic(MSS).set_mss(-1)


# NewReno: RFC 5681 with RFC 3465 byte counting


def test_slow_start_counts_at_most_two_segments_per_ack() -> None:
    cc = NewReno(MSS, hystart=False)
    ack(cc, MSS)
    assert cc.cwnd == 14600 + MSS
    ack(cc, 5 * MSS)  # a stretch ACK: RFC 3465 2.2, L = 2*SMSS
    assert cc.cwnd == 14600 + 3 * MSS
    ack(cc, 100)  # less than an SMSS counts as what it is
    assert cc.cwnd == 14600 + 3 * MSS + 100


def test_slow_start_stops_at_ssthresh() -> None:
    cc = NewReno(MSS, hystart=False)
    cc.ssthresh = 14600 + 500
    ack(cc, 2 * MSS)
    assert cc.cwnd == 14600 + 500


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_app_limited_acks_do_not_grow_the_window_in_slow_start(name: str) -> None:
    for hystart in (False, True):
        cc = congestion.create(name, MSS, hystart=hystart)
        for _ in range(20):
            ack(cc, MSS, app_limited=True)
        assert cc.cwnd == 14600
        ack(cc, MSS)
        assert cc.cwnd == 14600 + MSS


def test_newreno_congestion_avoidance_one_mss_per_window_of_bytes() -> None:
    cc = NewReno(MSS)
    cc.cwnd = 10 * MSS
    cc.ssthresh = 5 * MSS
    for _ in range(9):
        ack(cc, MSS)
    assert cc.cwnd == 10 * MSS
    ack(cc, MSS)
    assert cc.cwnd == 11 * MSS
    for _ in range(10):
        ack(cc, MSS, app_limited=True)  # RFC 7661 spirit: not counted at all
    for _ in range(10):
        ack(cc, MSS)
    assert cc.cwnd == 11 * MSS
    ack(cc, MSS)
    assert cc.cwnd == 12 * MSS


def test_newreno_congestion_halves_flight_and_sets_cwnd_to_ssthresh() -> None:
    cc = NewReno(MSS)
    cc.cwnd = 20 * MSS
    cc.on_congestion(1.0, 10 * MSS)
    # RFC 5681 eq. (4) on FlightSize; RFC 6675 5 (4.2): no +3 SMSS inflation
    assert (cc.ssthresh, cc.cwnd) == (5 * MSS, 5 * MSS)
    cc.on_congestion(2.0, 3 * MSS)
    assert (cc.ssthresh, cc.cwnd) == (2 * MSS, 2 * MSS)  # never below 2*SMSS
    cc.cwnd = 7 * MSS
    cc.on_recovery_exit(3.0)
    assert cc.cwnd == cc.ssthresh == 2 * MSS


def test_newreno_timeout_keeps_ssthresh_on_a_repeated_timeout() -> None:
    cc = NewReno(MSS)
    cc.on_timeout(1.0, 10 * MSS, True)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 5 * MSS)
    cc.on_timeout(2.0, MSS, False)  # backed-off retransmission of the same data
    assert (cc.cwnd, cc.ssthresh) == (MSS, 5 * MSS)
    cc.on_timeout(3.0, MSS, True)
    assert cc.ssthresh == 2 * MSS


def test_newreno_undo_restores_the_saved_state_exactly() -> None:
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 30 * MSS, 20 * MSS
    for _ in range(7):
        ack(cc, MSS)  # leaves a partial byte count in congestion avoidance
    snap = cc.save()
    cc.on_congestion(1.0, 30 * MSS)
    ack(cc, MSS)
    cc.on_recovery_exit(2.0)
    cc.on_timeout(3.0, 10 * MSS, True)
    assert cc.cwnd == MSS
    cc.restore(snap)
    assert cc.save() == snap
    assert (cc.cwnd, cc.ssthresh) == (30 * MSS, 20 * MSS)
    for _ in range(23):
        ack(cc, MSS)
    assert cc.cwnd == 31 * MSS  # the 7 bytes-acked segments before the snapshot still count
    with pytest.raises(TypeError):
        cc.restore(Cubic(MSS).save())


# HyStart++ (RFC 9406)


def test_hystart_flat_rtt_is_plain_slow_start_doubling_each_round() -> None:
    flow = Flow(NewReno(MSS))
    counts = []
    for _ in range(9):
        before = flow.cc.cwnd
        phases = flow.run_round(0.050)
        assert set(phases) == {"slow_start"}
        assert flow.cc.cwnd - before == len(phases) * MSS  # every ACKed byte grows cwnd
        counts.append(len(phases))
    # Round 1 is the initial window less the ACK that opens round 2; then it doubles.
    assert counts == [9 * 2**i for i in range(9)]


@pytest.mark.parametrize(
    ("base", "rise", "enters"),
    [
        (0.100, 0.013, True),  # RttThresh = 100 ms / 8 = 12.5 ms
        (0.100, 0.012, False),
        (0.020, 0.0045, True),  # 20 ms / 8 = 2.5 ms, clamped up to MIN_RTT_THRESH = 4 ms
        (0.020, 0.0035, False),
        (0.400, 0.0165, True),  # 400 ms / 8 = 50 ms, clamped down to MAX_RTT_THRESH = 16 ms
        (0.400, 0.0155, False),
    ],
)
def test_hystart_enters_css_on_the_eighth_sample_of_the_round_whose_rtt_rose(
    base: float, rise: float, enters: bool
) -> None:
    flow = Flow(Cubic(MSS))
    for _ in range(3):
        assert set(flow.run_round(base)) == {"slow_start"}
    phases = flow.run_round(base + rise)
    if enters:
        # N_RTT_SAMPLE = 8: the 8th ACK of the round decides, not earlier.
        assert phases.index("css") == 7
        assert set(phases[8:]) == {"css"}
    else:
        assert set(phases) == {"slow_start"}


def test_hystart_needs_eight_samples_in_the_round() -> None:
    for samples, css_at in ((7, None), (8, 7)):
        flow = Flow(NewReno(MSS))
        for _ in range(3):
            flow.run_round(0.100)
        phases = flow.run_round(0.200, samples=samples)  # later ACKs carry no RTT sample
        assert (phases.index("css") if "css" in phases else None) == css_at


def _into_css(cc: NewReno | Cubic, base: float = 0.100, high: float = 0.120) -> Flow:
    flow = Flow(cc)
    for _ in range(3):
        flow.run_round(base)
    assert flow.run_round(high)[-1] == "css"
    return flow


def test_css_grows_a_quarter_as_fast() -> None:
    flow = _into_css(NewReno(MSS))
    before = flow.cc.cwnd
    phases = flow.run_round(0.120)
    assert set(phases) == {"css"}
    assert flow.cc.cwnd - before == len(phases) * MSS // 4  # CSS_GROWTH_DIVISOR = 4
    assert flow.cc.ssthresh == congestion.INITIAL_SSTHRESH  # still slow start


def test_css_returns_to_slow_start_when_the_rtt_falls_back() -> None:
    flow = _into_css(NewReno(MSS))
    phases = flow.run_round(0.100)  # below cssBaselineMinRtt (120 ms)
    assert phases.index("slow_start") == 7
    before = flow.cc.cwnd
    phases = flow.run_round(0.100)
    assert set(phases) == {"slow_start"}
    assert flow.cc.cwnd - before == len(phases) * MSS


def test_css_ends_slow_start_after_five_rounds() -> None:
    flow = _into_css(Cubic(MSS))  # the round where CSS began is CSS round 1
    for _ in range(4):
        assert set(flow.run_round(0.120)) == {"css"}
    assert flow.cc.ssthresh == congestion.INITIAL_SSTHRESH
    flow.ack_one(0.120)  # covers the 5th round's windowEnd: CSS_ROUNDS are complete
    assert phase(flow.cc) == "avoidance"
    assert flow.cc.ssthresh == flow.cc.cwnd
    # Congestion avoidance from here: an epoch starts with K = 0 and W_max = cwnd (RFC 9438 4.10).
    flow.ack_one(0.120)
    assert isinstance(flow.cc, Cubic)
    assert flow.cc.k == 0.0 and flow.cc.w_max == flow.cc.ssthresh / MSS


def test_hystart_caps_growth_at_eight_segments_per_ack() -> None:
    cc = NewReno(MSS)
    ack(cc, 20 * MSS, una=ISS, nxt=ISS + 40 * MSS)
    assert cc.cwnd == 14600 + 8 * MSS  # RFC 9406 4.3: L = 8 without pacing
    plain = NewReno(MSS, hystart=False)
    ack(plain, 20 * MSS)
    assert plain.cwnd == 14600 + 2 * MSS  # RFC 3465: L = 2


def test_a_loss_ends_hystart_for_the_connection() -> None:
    cc = NewReno(MSS)
    assert phase(cc) == "slow_start"
    cc.on_timeout(1.0, 10 * MSS, True)
    assert phase(cc) == "avoidance"
    ack(cc, 20 * MSS)
    assert cc.cwnd == 3 * MSS  # the next slow start is RFC 5681's, L = 2


# CUBIC (RFC 9438)


class AckClock:
    """A cwnd-limited CUBIC flow in congestion avoidance: one ACK per SMSS, ``now`` stepping by
    srtt/cwnd_segments, so a window of ACKs takes one RTT."""

    def __init__(self, cc: Cubic, rtt: float, now: float = 1.0) -> None:
        self.cc, self.rtt, self.now = cc, rtt, now

    def step(self, *, app_limited: bool = False, dt: float | None = None) -> None:
        self.now += dt if dt is not None else self.rtt * MSS / self.cc.cwnd
        ack(self.cc, MSS, self.now, rtt=self.rtt, srtt=self.rtt, app_limited=app_limited)

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step()


def test_beta_decrease_uses_cwnd_and_keeps_two_segments() -> None:
    cc = Cubic(MSS, hystart=False)
    cc.cwnd = 100 * MSS
    cc.on_congestion(0.0, 40 * MSS)  # flight is not the base (RFC 9438 4.6 allows cwnd)
    assert cc.ssthresh == cc.cwnd == 70 * MSS
    assert cc.w_max == 100.0
    cc.cwnd = 2 * MSS
    cc.on_congestion(1.0, 2 * MSS)
    assert cc.ssthresh == cc.cwnd == 2 * MSS  # max(1.4, 2) segments


def test_k_for_a_known_w_max() -> None:
    cc = in_avoidance_after_loss(100)
    assert cc.epoch_start is None  # the epoch starts with the first ACK of avoidance
    ack(cc, MSS, 2.5, srtt=0.1)
    assert cc.epoch_start == 2.5
    assert cc.k == pytest.approx(math.cbrt((100 - 70) / C), rel=1e-12)  # eq. 2, in segments


def test_window_follows_w_cubic_concave_then_convex() -> None:
    # 200 ms keeps the Reno-friendly estimate below W_cubic throughout 2K.
    cc = in_avoidance_after_loss(100)
    clock = AckClock(cc, rtt=0.2)
    clock.step()
    t_epoch, k = cc.epoch_start, cc.k
    assert t_epoch is not None
    seen = set()
    while clock.now - t_epoch < 2 * k:
        clock.step()
        t = clock.now - t_epoch
        w = cc.cwnd / MSS
        if t < clock.rtt:
            continue
        # Stepping towards W_cubic(t + RTT) once per RTT keeps cwnd on the curve.
        assert w == pytest.approx(w_cubic(t, k, 100.0), abs=0.25), t
        if t < k - clock.rtt:
            assert w < 100.0 and cc.region == "concave"
            seen.add("concave")
        elif t > k + clock.rtt:
            assert w > 100.0 and cc.region == "convex"
            seen.add("convex")
    assert seen == {"concave", "convex"}
    assert cc.cwnd / MSS == pytest.approx(w_cubic(2 * k, k, 100.0), abs=0.3)  # 130 segments


def test_target_is_at_most_one_and_a_half_cwnd() -> None:
    cc = in_avoidance_after_loss(100)
    ack(cc, MSS, 1.0, srtt=0.1)
    before = cc.cwnd
    ack(cc, MSS, 60.0, srtt=0.1)  # W_cubic(59 s) is astronomically high
    # One SMSS acked moves cwnd by (1.5*cwnd - cwnd)/cwnd = 0.5 segment.
    assert cc.cwnd - before == pytest.approx(MSS / 2, abs=1)


def test_reno_friendly_region_dominates_at_a_short_rtt() -> None:
    cc = in_avoidance_after_loss(20)
    clock = AckClock(cc, rtt=0.001)
    for _ in range(14):  # the first window: W_est grows by alpha_cubic per cwnd ACKed
        clock.step()
    w_est = 14.0
    for _ in range(14):
        w_est += ALPHA / w_est  # eq. 4, with cwnd = W_est in this region
    assert cc.cwnd / MSS == pytest.approx(w_est, abs=1 / MSS)
    assert cc.region == "reno_friendly"
    clock.run_for(0.2)  # 200 RTTs
    t_epoch = cc.epoch_start
    assert t_epoch is not None
    t = clock.now - t_epoch
    # W_cubic cannot explain this window: at most W_cubic(t + RTT) is reachable that way.
    assert cc.w_est > w_cubic(t, cc.k, 20.0)
    assert cc.cwnd / MSS > w_cubic(t + clock.rtt, cc.k, 20.0) + 100
    assert cc.region == "reno_friendly"
    # Past cwnd_prev (20 segments) W_est grows like Reno, 1 segment per RTT.
    start, before = clock.now, cc.cwnd
    clock.run_for(0.010)
    rtts = (clock.now - start) / clock.rtt
    assert (cc.cwnd - before) / MSS / rtts == pytest.approx(1.0, rel=0.05)


def test_fast_convergence_lowers_w_max_after_a_loss_below_it() -> None:
    cc = in_avoidance_after_loss(100)
    assert cc.w_max == 100.0
    cc.cwnd = 80 * MSS
    cc.on_congestion(5.0, 80 * MSS)
    assert cc.w_max == pytest.approx(80 * (1 + BETA) / 2)  # 68: release bandwidth
    assert cc.ssthresh == 56 * MSS
    cc.cwnd = 120 * MSS  # a loss above W_max sets it plainly
    cc.on_congestion(9.0, 120 * MSS)
    assert cc.w_max == 120.0


def test_timeout_resets_the_epoch() -> None:
    cc = in_avoidance_after_loss(100)
    clock = AckClock(cc, rtt=0.1)
    clock.run_for(1.0)
    assert cc.epoch_start is not None and cc.k > 4
    cwnd = cc.cwnd
    cc.on_timeout(clock.now, cwnd, True)
    assert cc.cwnd == MSS
    assert cc.ssthresh == round(cwnd * BETA)  # 4.8: ssthresh as in 4.6
    assert cc.epoch_start is None and cc.w_max is None
    cc.on_timeout(clock.now + 1, MSS, False)
    assert cc.ssthresh == round(cwnd * BETA)  # a repeated timeout keeps it
    while cc.cwnd < cc.ssthresh:
        clock.step()  # slow start back to ssthresh
    assert cc.cwnd == cc.ssthresh
    clock.step()
    # 4.8: the first epoch after a timeout has K = 0 and W_max = cwnd_epoch.
    assert cc.k == 0.0 and cc.w_max == cc.ssthresh / MSS
    assert cc.epoch_start == clock.now


def test_app_limited_acks_neither_grow_cwnd_nor_advance_the_cubic_clock() -> None:
    cc = in_avoidance_after_loss(100)
    clock = AckClock(cc, rtt=0.1)
    clock.run_for(1.0)
    before = cc.cwnd
    clock.step()
    growth = cc.cwnd - before
    assert growth > 0
    cwnd, w_est = cc.cwnd, cc.w_est
    for _ in range(50):  # five seconds with less data than cwnd allows
        clock.step(app_limited=True, dt=0.1)
        assert (cc.cwnd, cc.w_est) == (cwnd, w_est)
    before = cc.cwnd
    clock.step()
    # Had the 5 s counted, t would be past K and W_cubic(t + RTT) ~ 103 segments against
    # cwnd ~ 87: (103 - 87) / 87 = 0.18 segment per ACK instead of ~0.01.
    assert cc.cwnd - before < 2 * growth
    clock.step()
    assert cc.cwnd > before


def test_undo_restores_the_saved_cubic_state_exactly() -> None:
    cc = in_avoidance_after_loss(100)
    clock = AckClock(cc, rtt=0.1)
    clock.run_for(1.5)
    snap = cc.save()
    state = (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start, cc.w_est)
    cc.on_congestion(clock.now, cc.cwnd)
    cc.on_recovery_exit(clock.now + 0.1)
    clock.run_for(0.5)
    cc.on_timeout(clock.now, cc.cwnd, True)
    assert state != (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start, cc.w_est)
    cc.restore(snap)
    assert cc.save() == snap
    assert state == (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start, cc.w_est)
    with pytest.raises(TypeError):
        cc.restore(NewReno(MSS).save())


def test_undo_of_a_loss_in_slow_start_resumes_hystart() -> None:
    cc = Cubic(MSS)
    snap = cc.save()
    cc.on_congestion(0.5, 10 * MSS)
    assert phase(cc) == "avoidance"
    cc.restore(snap)
    assert phase(cc) == "slow_start"
    assert (cc.cwnd, cc.ssthresh, cc.w_max) == (14600, congestion.INITIAL_SSTHRESH, None)
