"""Retransmission timeout estimation (RFC 6298).

Theory of operation: the connection feeds a round-trip measurement to
:meth:`RtoEstimator.sample` on every ACK of new data, from the send time of the segment it
acknowledges; Karn's rule (RFC 6298 3) is the connection's job -- it never samples a segment that
was retransmitted unless the echoed timestamp names the retransmission. With several samples per
round trip, alpha and beta are divided by the expected number of them (RFC 7323 appendix G), so
the estimator's memory stays about one round trip long whatever the window. The estimator keeps SRTT and RTTVAR, derives
the base RTO with the clock granularity G, and applies exponential backoff (5.5) on top of the
base until the next valid sample clears it. ``rto`` is always within ``[rto_min, rto_max]``.
"""

from __future__ import annotations

# RFC 6298 (2.3): alpha = 1/8, beta = 1/4, K = 4.
ALPHA = 0.125
BETA = 0.25
K = 4.0
# RFC 6298 (5.7): after a SYN timed out, use 3 s once the handshake completes without a sample.
RTO_AFTER_SYN_TIMEOUT = 3.0


class RtoEstimator:
    __slots__ = ("_base", "backoff", "g", "rto", "rto_max", "rto_min", "rttvar", "srtt")

    def __init__(self, initial: float, rto_min: float, rto_max: float, g: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.g = g
        self._base = min(max(initial, rto_min), rto_max)  # (2.1) before any sample
        self.backoff = 0
        self.rto = self._base

    def sample(self, r: float, per_rtt: int = 1) -> None:
        """Take one round-trip measurement R (seconds), one of ``per_rtt`` expected per round
        trip (RFC 7323 appendix G: ExpectedSamples); clears any backoff."""
        r = max(r, 0.0)
        if self.srtt is None:
            # (2.2) the first measurement
            self.srtt = r
            self.rttvar = r / 2
        else:
            # (2.3) RTTVAR is updated with the old SRTT, then SRTT
            alpha = ALPHA / per_rtt
            beta = BETA / per_rtt
            self.rttvar = (1 - beta) * self.rttvar + beta * abs(self.srtt - r)
            self.srtt = (1 - alpha) * self.srtt + alpha * r
        base = self.srtt + max(self.g, K * self.rttvar)
        # (2.4) a floor and (2.5) a ceiling
        self._base = min(max(base, self.rto_min), self.rto_max)
        self.backoff = 0
        self.rto = self._base

    def back_off(self) -> None:
        """(5.5) double the RTO after a timeout, up to the maximum."""
        self.backoff += 1
        self.rto = min(self._base * (1 << min(self.backoff, 30)), self.rto_max)

    def after_syn_timeout(self) -> None:
        """(5.7) the SYN timed out and no RTT sample was taken: start data transfer at 3 s."""
        if self.srtt is None:
            self._base = min(max(RTO_AFTER_SYN_TIMEOUT, self.rto_min), self.rto_max)
        self.backoff = 0
        self.rto = self._base
