"""Loss detection and recovery: the scoreboard, RACK-TLP, RFC 6675 and undo.

Theory of operation
-------------------
The :class:`Scoreboard` keeps one :class:`Sent` record per segment in flight -- its sequence
range, when it was last sent, how often, and whether it is SACKed, lost or retransmitted -- so
every question loss recovery asks is answered from records instead of a growing set of flags.
Sequence numbers here are *unwrapped*: plain ints counting from the ISS (the sender converts at
the edge), so there is no modular arithmetic in this module. Records are held twice: in sequence
order (a list with a moving head, for cumulative ACKs and SACK blocks) and, for those still in
the network, in transmission order (an ``OrderedDict``, for RACK, which asks "what was sent before
the newest delivered segment?"). Counters of SACKed, lost and retransmitted bytes are kept as
records change, so RFC 6675's ``pipe`` is arithmetic, not a walk:
``pipe = in flight - SACKed - lost + retransmitted``. An empty scoreboard -- an idle connection,
most of the time -- holds no containers: the transmission-order map and the SACKed ranges are
shared empty values until the first record (or SACK block) arrives, and the scoreboard drops
its own again when a cumulative ACK leaves it empty.

:class:`Recovery` decides. On each ACK the connection reports the cumulative ACK and the SACK
blocks; Recovery updates the records, takes the RTT and RACK samples, detects reordering and
D-SACKs, and marks segments lost:

* **RACK** (RFC 8985 6): a segment is lost when a segment sent after it was delivered and more
  than ``RACK.rtt + reo_wnd`` has passed since it was sent; ``reo_wnd`` is 0 until reordering has
  been seen, then ``min_rtt/4`` scaled up by D-SACKs. A segment not yet overdue arms the
  reordering timer.
* **DupThresh** (RFC 6675 ``IsLost``) when RACK is switched off, and for a peer without SACK the
  RFC 5681/6582 rules (three duplicate ACKs, partial ACKs), with each duplicate ACK counted as one
  segment that left the network, which is also RFC 3042 limited transmit.

A loss moves the connection into recovery (RFC 6675 5: ``RecoveryPoint = HighData``, one
congestion response per episode); :meth:`Recovery.next_lost` and :meth:`Recovery.next_other` are
NextSeg's rules 1, 3 and 4 (rule 2, new data, is the sender's). An RTO marks what RACK would
call lost (RFC 8985 6.3) and enters the LOSS state until the ACK passes the recovery point
(RFC 6675 5.1).

**TLP** (RFC 8985 7): with nothing else to do, a probe timer of about two round trips sends new
data or the last segment again, so a lost tail is repaired by fast recovery instead of an RTO.

**Undo** (RFC 3522, RFC 4015, RFC 2883): the congestion state is saved before each response.
With timestamps, an ACK for the first retransmission that echoes a TSval older than it proves the
original arrived (Eifel); without, D-SACKs for every retransmission of the episode prove it.
Either way cwnd and ssthresh are restored and reordering is assumed from then on.

**Reneging** (RFC 2018 8): SACKed data stays in the send buffer until cumulatively ACKed. An ACK
that stops at the start of a SACKed record, or a second RTO in a row, clears every SACK mark, so
data the receiver threw away is sent again.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

from ustack.tcp.config import TcpConfig
from ustack.tcp.congestion import CongestionControl
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer, Timers
from ustack.wire import seq as sq

# RFC 5681 3.2 / RFC 6675 2: DupThresh.
DUPTHRESH = 3
# RFC 8985 7.2: the worst-case delayed-ACK time added to the PTO when one segment is in flight.
WC_DEL_ACK = 0.200
# A floor on the PTO, as Linux has (TCP_TIMEOUT_MIN): a timer finer than the clock is noise.
PTO_MIN = 0.002
# RFC 8985 6.2: reo_wnd falls back to the base multiplier after this many D-SACK-free recoveries.
REO_WND_PERSIST = 16
# How long a min_rtt sample stays valid (Linux's tcp_min_rtt_wlen default, 300 s).
MIN_RTT_WINDOW = 300.0
# Retransmitted ranges remembered per episode for D-SACK undo; more and undo is given up.
UNDO_RANGES = 64

_INF = float("inf")
# Times are floats: a segment whose deadline is within this of now is due. Without it a timer
# set for exactly that deadline could find it a rounding error away, again and again.
_EPS = 1e-9


class LossState(IntEnum):
    OPEN = 0  # no loss being repaired
    RECOVERY = 1  # fast / SACK recovery after a loss was detected (RFC 6675 5)
    LOSS = 2  # after an RTO, until the ACK passes the recovery point (RFC 6675 5.1)


class Sent:
    """One segment in flight: ``[start, end)`` in unwrapped sequence space (a FIN counts one)."""

    __slots__ = ("end", "fin", "lost", "retrans", "sacked", "start", "time", "tsval", "xmits")

    def __init__(self, start: int, end: int, time: float, tsval: int, fin: bool) -> None:
        self.start = start
        self.end = end
        self.time = time  # when it was last (re)sent
        self.tsval = tsval  # the TSval it last carried (-1 without timestamps)
        self.xmits = 1
        self.fin = fin
        self.sacked = False
        self.lost = False  # presumed lost and not SACKed since
        self.retrans = False  # a retransmission of it is in flight (RFC 6675 pipe)

    def __repr__(self) -> str:
        flags = "".join(
            c for c, on in (("S", self.sacked), ("L", self.lost), ("R", self.retrans)) if on
        )
        return f"<Sent {self.start}-{self.end} x{self.xmits} {flags or '-'} t={self.time:g}>"


class Scoreboard:
    """The records of what is in flight, and the byte counts RFC 6675's ``pipe`` needs."""

    __slots__ = (
        "_head",
        "_recs",
        "_sacked_ivals",
        "lost_out",
        "retrans_out",
        "sacked_out",
        "tsorted",
        "waiting",
    )

    def __init__(self) -> None:
        self._recs: list[Sent] = []  # sequence order; records before _head are gone
        self._head = 0
        # Records still in the network (not SACKed, not lost-and-waiting), oldest send first.
        # The shared empty _NO_SENT while the scoreboard is empty (an OrderedDict costs 350
        # bytes once used); a real one from the first record on.
        self.tsorted: OrderedDict[Sent, None] = _NO_SENT
        self.sacked_out = 0
        self.lost_out = 0
        self.retrans_out = 0
        self.waiting = 0  # bytes presumed lost and not yet resent (NextSeg rule 1's work)
        # Merged SACKed ranges above SND.UNA, so a block repeated in every ACK costs nothing
        # (the shared empty _NO_IVALS until the first SACK block).
        self._sacked_ivals: list[list[int]] = _NO_IVALS

    def __len__(self) -> int:
        return len(self._recs) - self._head

    @property
    def head(self) -> int:
        """Index of the first record still held (indices are into the underlying list)."""
        return self._head

    def __iter__(self) -> Iterator[Sent]:
        return iter(self._recs[self._head :])

    @property
    def records(self) -> list[Sent]:
        return self._recs[self._head :]

    def first(self) -> Sent | None:
        return self._recs[self._head] if self._head < len(self._recs) else None

    def last(self) -> Sent | None:
        return self._recs[-1] if self._head < len(self._recs) else None

    def add(self, rec: Sent) -> None:
        self._recs.append(rec)
        tsorted = self.tsorted
        if tsorted is _NO_SENT:
            tsorted = self.tsorted = OrderedDict()
        tsorted[rec] = None

    def index_at(self, u: int) -> int:
        """Index of the record holding sequence number ``u`` (or the first after it)."""
        recs = self._recs
        i = bisect_right(recs, u, lo=self._head, key=_start) - 1
        if i < self._head or recs[i].end <= u:
            i += 1
        return i

    def split(self, i: int, at: int) -> Sent:
        """Cut record ``i`` at ``at``: it keeps ``[start, at)`` and a new record, returned,
        takes ``[at, end)`` with the same history. Rare (SACK blocks follow our segment
        boundaries); keeping the transmission order exact costs a walk then."""
        rec = self._recs[i]
        back = Sent(at, rec.end, rec.time, rec.tsval, rec.fin)
        back.xmits = rec.xmits
        back.lost = rec.lost
        back.retrans = rec.retrans
        back.sacked = rec.sacked
        rec.end = at
        rec.fin = False
        self._recs.insert(i + 1, back)
        tsorted = self.tsorted
        if rec in tsorted:
            later: list[Sent] = []
            seen = False
            for r in tsorted:
                if seen:
                    later.append(r)
                elif r is rec:
                    seen = True
            tsorted[back] = None
            for r in later:
                tsorted.move_to_end(r)
        return back

    def pop_acked(self, una: int) -> tuple[list[Sent], int, Sent | None]:
        """Forget every record wholly below ``una``; return those that were not SACKed, the
        bytes newly acknowledged at the front of a record ``una`` falls into, and that record
        (a super-segment the peer has partly acknowledged) if it was not SACKed."""
        recs = self._recs
        i = self._head
        n = len(recs)
        out: list[Sent] = []
        partial = 0
        part: Sent | None = None
        tsorted = self.tsorted
        while i < n:
            rec = recs[i]
            if rec.end > una:
                if rec.start < una:
                    if not rec.sacked:
                        partial = una - rec.start
                        part = rec
                    self._trim_front(rec, una)
                break
            length = rec.end - rec.start
            if rec.sacked:
                self.sacked_out -= length
            else:
                out.append(rec)
                if rec.lost:
                    self.lost_out -= length
                    if not rec.retrans:
                        self.waiting -= length
                if rec.retrans:
                    self.retrans_out -= length
                tsorted.pop(rec, None)
            i += 1
        self._head = i
        if i == n:
            # everything is acknowledged: give the containers back
            recs.clear()
            self._head = 0
            self.tsorted = _NO_SENT
        elif i > 64 and i * 2 > n:
            del recs[:i]
            self._head = 0
        ivals = self._sacked_ivals
        while ivals and ivals[0][1] <= una:
            del ivals[0]
        if not ivals:
            self._sacked_ivals = _NO_IVALS
        elif ivals[0][0] < una:
            ivals[0][0] = una
        return out, partial, part

    def _trim_front(self, rec: Sent, una: int) -> None:
        cut = una - rec.start
        if rec.sacked:
            self.sacked_out -= cut
        else:
            if rec.lost:
                self.lost_out -= cut
                if not rec.retrans:
                    self.waiting -= cut
            if rec.retrans:
                self.retrans_out -= cut
        rec.start = una

    def new_sacked_ranges(self, left: int, right: int) -> list[tuple[int, int]]:
        """The parts of ``[left, right)`` not SACKed before; records them as SACKed ranges."""
        ivals = self._sacked_ivals
        if ivals is _NO_IVALS:
            ivals = self._sacked_ivals = []
        out: list[tuple[int, int]] = []
        cur = left
        j = 0
        while j < len(ivals) and ivals[j][1] < left:
            j += 1
        k = j
        while k < len(ivals) and ivals[k][0] <= right:
            a, b = ivals[k]
            if a > cur:
                out.append((cur, min(a, right)))
            cur = max(cur, b)
            k += 1
        if cur < right:
            out.append((cur, right))
        # merge [left, right) with ivals[j:k]
        if j < k:
            left = min(left, ivals[j][0])
            right = max(right, ivals[k - 1][1])
        ivals[j:k] = [[left, right]]
        return out

    def mark_sacked(self, rec: Sent) -> None:
        length = rec.end - rec.start
        rec.sacked = True
        self.sacked_out += length
        if rec.lost:
            rec.lost = False
            self.lost_out -= length
            if not rec.retrans:
                self.waiting -= length
        if rec.retrans:
            rec.retrans = False
            self.retrans_out -= length
        self.tsorted.pop(rec, None)

    def mark_lost(self, rec: Sent) -> bool:
        """Presume ``rec`` lost; True if that is news (it now waits for a retransmission)."""
        length = rec.end - rec.start
        if rec.sacked:
            return False
        if rec.lost:
            if not rec.retrans:
                return False
            # its retransmission is lost too
            rec.retrans = False
            self.retrans_out -= length
        else:
            rec.lost = True
            self.lost_out += length
            if rec.retrans:
                # sent again before it was presumed lost (a tail loss probe): that copy is
                # presumed lost with it, or the record would count as in the network while
                # waiting to go again (the fuzzer's find: an RTO after a TLP resent nothing)
                rec.retrans = False
                self.retrans_out -= length
        self.waiting += length
        self.tsorted.pop(rec, None)
        return True

    def retransmitted(self, rec: Sent, now: float, tsval: int) -> None:
        if not rec.retrans:
            rec.retrans = True
            self.retrans_out += rec.end - rec.start
            if rec.lost:
                self.waiting -= rec.end - rec.start
        rec.xmits += 1
        rec.time = now
        rec.tsval = tsval
        tsorted = self.tsorted
        tsorted[rec] = None
        tsorted.move_to_end(rec)

    def clear_sacks(self) -> None:
        """Forget every SACK mark (the receiver may have reneged, RFC 2018 8). The records go
        back to being in the network, so back into the transmission-order list RACK walks (the
        fuzzer's find: left out of it, a record neither SACKed nor lost was never looked at
        again)."""
        unmarked = False
        for rec in self.records:
            if rec.sacked:
                rec.sacked = False
                unmarked = True
        self.sacked_out = 0
        self._sacked_ivals = _NO_IVALS
        if unmarked:
            # sorted() is stable: records sent at the same time keep their sequence order
            in_net = [r for r in self.records if not (r.lost and not r.retrans)]
            self.tsorted = OrderedDict.fromkeys(sorted(in_net, key=_time))

    def unmark_lost(self) -> None:
        """Undo: records presumed lost but not yet resent go back to being in flight."""
        for rec in self.records:
            if rec.lost and not rec.retrans:
                rec.lost = False
                self.lost_out -= rec.end - rec.start
                self.waiting -= rec.end - rec.start
                self.tsorted[rec] = None

    def check(self, una: int, high: int) -> None:
        """Consistency of records and counters (tests call this after every step)."""
        recs = self.records
        sacked = lost = retrans = 0
        prev = una
        for rec in recs:
            assert rec.start == prev and rec.end > rec.start, (rec, prev)
            prev = rec.end
            length = rec.end - rec.start
            assert not (rec.sacked and (rec.lost or rec.retrans)), rec
            sacked += length if rec.sacked else 0
            lost += length if rec.lost else 0
            retrans += length if rec.retrans else 0
            in_net = not rec.sacked and not (rec.lost and not rec.retrans)
            assert (rec in self.tsorted) == in_net, rec
        assert not recs or prev == high, (prev, high)
        assert (sacked, lost, retrans) == (self.sacked_out, self.lost_out, self.retrans_out)
        waiting = sum(r.end - r.start for r in recs if r.lost and not r.retrans)
        assert waiting == self.waiting, (waiting, self.waiting)
        assert len(self.tsorted) == sum(
            1 for r in recs if not r.sacked and not (r.lost and not r.retrans)
        )


def _start(rec: Sent) -> int:
    return rec.start


def _time(rec: Sent) -> float:
    return rec.time


# The shared empty containers of an empty scoreboard (see Scoreboard.__init__): never mutated;
# the first record, or the first SACK block, replaces them with the scoreboard's own.
_NO_SENT: OrderedDict[Sent, None] = OrderedDict()
_NO_IVALS: list[list[int]] = []


class Recovery:
    """Loss detection, the loss state and what to retransmit next; see the module docstring."""

    __slots__ = (
        "_reno_dupacks",
        "_rtx_hint",
        "_undo_eifel",
        "_undo_first_end",
        "_undo_ranges",
        "_undo_retrans",
        "_undo_saved",
        "_undo_tsval",
        "board",
        "cc",
        "config",
        "dsack_round",
        "fack",
        "force_rtx",
        "high_rxt",
        "min_rtt",
        "min_rtt_time",
        "mss",
        "rack",
        "rack_end",
        "rack_rtt",
        "rack_time",
        "recovery_point",
        "reneged",
        "reno_credit",
        "reo_wnd_mult",
        "reo_wnd_persist",
        "reordering_seen",
        "rescue_rxt",
        "rto_streak",
        "sack",
        "state",
        "stats",
        "timers",
        "tlp",
        "tlp_end",
        "tlp_retrans",
        "trace",
        "ts",
    )

    def __init__(
        self, config: TcpConfig, stats: Stats, timers: Timers, cc: CongestionControl, mss: int
    ) -> None:
        self.config = config
        self.stats = stats
        self.timers = timers
        self.cc = cc
        self.mss = mss
        self.board = Scoreboard()
        self.state = LossState.OPEN
        self.sack = False  # negotiated on the handshake
        self.rack = False
        self.tlp = False
        self.ts = False
        self.trace: Callable[[str, dict[str, Any]], None] | None = None
        self.recovery_point = 0  # RFC 6675 RecoveryPoint (HighData at entry), exclusive
        self.high_rxt = 0  # RFC 6675 HighRxt
        self.rescue_rxt: int | None = None  # RFC 6675 RescueRxt
        self.force_rtx = False  # RFC 6675 5 (4.3): the first retransmission ignores cwnd
        self._rtx_hint = 0  # no lost-and-not-resent record starts below this
        self.rto_streak = 0  # consecutive RTOs without progress
        self.reneged = False  # an ACK suggested the receiver dropped SACKed data
        # RACK (RFC 8985 6.1)
        self.rack_time = -_INF  # RACK.xmit_ts
        self.rack_end = 0  # RACK.end_seq
        self.rack_rtt = 0.0  # RACK.rtt
        self.fack = 0  # RACK.fack: highest sequence delivered
        self.min_rtt: float | None = None
        self.min_rtt_time = 0.0
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self.dsack_round: int | None = None
        # TLP (RFC 8985 7)
        self.tlp_end: int | None = None  # TLP.end_seq of the probe in flight
        self.tlp_retrans = False  # TLP.is_retrans
        # a peer without SACK: duplicate ACKs stand in for SACKed segments
        self._reno_dupacks = 0
        self.reno_credit = 0
        # undo (RFC 3522 / RFC 4015 / RFC 2883)
        self._undo_saved: object | None = None
        self._undo_tsval: int | None = None  # TSval of the episode's first retransmission
        self._undo_eifel = False  # the Eifel test is still to be made
        self._undo_first_end = 0  # end of the episode's first retransmission
        self._undo_retrans = 0  # retransmitted bytes not yet D-SACKed
        self._undo_ranges: list[tuple[int, int]] | None = None

    # -- questions ---------------------------------------------------------------------------

    def pipe(self, flight: int) -> int:
        """RFC 6675 SetPipe(): octets the sender believes are in the network."""
        b = self.board
        return max(flight - b.sacked_out - b.lost_out + b.retrans_out - self.reno_credit, 0)

    @property
    def in_recovery(self) -> bool:
        return self.state is LossState.RECOVERY

    def settled(self) -> bool:
        """Nothing in flight, no episode open, no probe out and no undo waiting for a D-SACK:
        an ACK arriving now -- even one carrying a D-SACK -- can change nothing here but the
        ``tcp_dsack_received`` count. A TIME-WAIT record relies on this to answer without us."""
        ranges = self._undo_ranges
        return (
            not len(self.board)
            and self.state is LossState.OPEN
            and self.tlp_end is None
            and (self._undo_saved is None or not ranges or self._undo_retrans <= 0)
        )

    # -- sending -----------------------------------------------------------------------------

    def sent_new(self, start: int, end: int, now: float, tsval: int, fin: bool) -> None:
        self.board.add(Sent(start, end, now, tsval, fin))

    def retransmitted(self, rec: Sent, now: float, tsval: int) -> None:
        self.board.retransmitted(rec, now, tsval)
        if rec.end > self.high_rxt:
            self.high_rxt = rec.end
        if self.rescue_rxt is None and self.state is LossState.RECOVERY:
            # RFC 6675 5 (4.3): the first retransmission of the episode sets RescueRxt
            self.rescue_rxt = rec.end
        if self._undo_saved is not None and self.state is not LossState.OPEN:
            # only an episode's own retransmissions decide whether it was spurious
            if self._undo_tsval is None and tsval >= 0:
                self._undo_tsval = tsval
                self._undo_first_end = rec.end
                self._undo_eifel = True
            self._undo_retrans += rec.end - rec.start
            ranges = self._undo_ranges
            if ranges is not None:
                if len(ranges) >= UNDO_RANGES:
                    self._undo_ranges = None  # too many to track: no D-SACK undo this time
                else:
                    ranges.append((rec.start, rec.end))

    def next_lost(self) -> tuple[int, Sent] | None:
        """NextSeg rule 1: the first segment presumed lost and not yet retransmitted, with its
        index in the scoreboard."""
        b = self.board
        if not b.waiting:
            return None
        recs = b._recs
        n = len(recs)
        for first in (b.index_at(self._rtx_hint), b.head):
            i = first
            while i < n:
                rec = recs[i]
                if rec.lost and not rec.retrans:
                    self._rtx_hint = rec.start
                    return i, rec
                i += 1
            # (the second pass from the first record cannot be needed while the hint holds)
        return None

    def next_other(self, una: int) -> tuple[int, Sent] | None:
        """NextSeg rules 3 and 4, for when rules 1 and 2 (new data) had nothing to send."""
        if self.state is not LossState.RECOVERY or not self.sack:
            return None
        b = self.board
        recs = b._recs
        if not self.rack:
            # Rule 3: an unSACKed segment above HighRxt with SACKed data above it (with RACK
            # the reordering timer covers this case by time instead).
            i = b.index_at(self.high_rxt)
            while i < len(recs):
                rec = recs[i]
                if not rec.sacked and not rec.retrans and not rec.lost:
                    if rec.end < self.fack:
                        return i, rec
                    break
                i += 1
        # Rule 4: once per recovery, after a partial ACK passed the first retransmission
        # (HighACK > RescueRxt), the highest unSACKed segment below RecoveryPoint, so a lost
        # tail does not wait for the RTO.
        if self.rescue_rxt is not None and una > self.rescue_rxt:
            i = len(recs) - 1
            while i >= b._head:
                rec = recs[i]
                if rec.end <= self.recovery_point and not rec.sacked:
                    if rec.retrans or rec.lost:
                        return None
                    self.rescue_rxt = self.recovery_point
                    self.stats.tcp_rescue_retransmits += 1
                    return i, rec
                i -= 1
        return None

    # -- ACK processing ----------------------------------------------------------------------

    def sack_info(
        self, raw: list[tuple[int, int]], ack: int, high: int, floor: int
    ) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
        """Validate the (unwrapped) SACK blocks of an ACK of ``ack`` (RFC 2018 3) and split off
        a D-SACK (RFC 2883 4: a first block below the ACK, or inside the second block).
        Blocks beyond what was sent or older than ``floor`` are ignored and counted."""
        blocks: list[tuple[int, int]] = []
        dsack: tuple[int, int] | None = None
        for i, (lo, hi) in enumerate(raw):
            if hi <= lo or hi > high or lo < floor:
                self.stats.tcp_sack_invalid += 1
                continue
            if i == 0 and (lo < ack or (len(raw) > 1 and raw[1][0] <= lo and hi <= raw[1][1])):
                dsack = (lo, hi)
                continue
            if lo < ack:
                lo = ack
            if lo < hi:
                blocks.append((lo, hi))
        return blocks, dsack

    def on_ack(
        self,
        una_old: int,
        una: int,
        high: int,
        blocks: list[tuple[int, int]],
        dsack: tuple[int, int] | None,
        now: float,
        tsecr: int | None,
    ) -> tuple[int, float | None, float | None]:
        """Take one ACK: the cumulative ACK ``una``, SACK ``blocks`` and a D-SACK block, all
        unwrapped and already validated against ``(una, high]``.

        Returns ``(delivered, rtt, ca_rtt)``: bytes newly delivered (ACKed or SACKed for the
        first time); an RTT sample for the RTO estimator from the send time of the oldest
        segment this ACK covers -- None when it covers a retransmitted one (Karn, RFC 6298 3:
        the connection then asks the echoed timestamp, RFC 7323 4.1); and the RTT of the most
        recently sent segment delivered, for RACK and the congestion controller."""
        b = self.board
        delivered = 0
        oldest = _INF
        karn = False
        # the most recently sent segment delivered, as (send time, end)
        newest_time = -_INF
        newest_end = 0
        # RFC 8985 6.2 step 3: delivered below what was delivered before, and never resent,
        # means reordering (compared with RACK.fack as it was before this ACK: the segments
        # one ACK covers may have arrived in any order)
        fack_before = fack = self.fack
        reordering = False
        if una > una_old:
            acked, delivered, part = b.pop_acked(una)
            for rec in acked:
                delivered += rec.end - rec.start
                if rec.xmits == 1:
                    if rec.time < oldest:
                        oldest = rec.time
                    if rec.end < fack_before:
                        reordering = True
                else:
                    karn = True
                if self._rack_usable(rec, now, tsecr) and _sent_after(
                    rec.time, rec.end, newest_time, newest_end
                ):
                    newest_time, newest_end = rec.time, rec.end
            if part is not None:
                # the acknowledged front of a super-segment counts as a segment delivered
                # (its send time is the record's): an RTT and a RACK sample like any other
                if part.xmits == 1:
                    if part.time < oldest:
                        oldest = part.time
                    if una < fack_before:
                        reordering = True
                else:
                    karn = True
                if self._rack_usable(part, now, tsecr) and _sent_after(
                    part.time, una, newest_time, newest_end
                ):
                    newest_time, newest_end = part.time, una
            if una > fack:
                fack = una
            if self._undo_eifel and una >= self._undo_first_end:
                self._eifel(tsecr)
            self.rto_streak = 0
            head = b.first()
            if (
                head is not None
                and head.sacked
                and head.start == una
                and not any(left <= una < right for left, right in blocks)
            ):
                # RFC 2018 8: the receiver SACKed this and now says it does not have it.
                self.reneged = True
                self.stats.tcp_sack_reneging += 1
        for left, right in blocks:
            for lo, hi in b.new_sacked_ranges(left, right):
                for rec in self._sack_range(lo, hi):
                    delivered += rec.end - rec.start
                    if rec.end > fack:
                        fack = rec.end
                    if rec.xmits == 1 and rec.end < fack_before:
                        reordering = True
                    if self._rack_usable(rec, now, tsecr) and _sent_after(
                        rec.time, rec.end, newest_time, newest_end
                    ):
                        newest_time, newest_end = rec.time, rec.end
        self.fack = fack
        if reordering and not self.reordering_seen:
            self.reordering_seen = True
            self.stats.tcp_reordering_seen += 1
        ca_rtt: float | None = None
        if newest_time != -_INF:
            ca_rtt = now - newest_time
            self._update_min_rtt(ca_rtt, now)
            if _sent_after(newest_time, newest_end, self.rack_time, self.rack_end):
                self.rack_time = newest_time
                self.rack_end = newest_end
                self.rack_rtt = ca_rtt
        if dsack is not None:
            self._on_dsack(dsack, una, high)
        rtt = now - oldest if oldest != _INF and not karn else None
        return delivered, rtt, ca_rtt

    def _sack_range(self, lo: int, hi: int) -> list[Sent]:
        """Mark the records in ``[lo, hi)`` SACKed, splitting at the edges; return them."""
        b = self.board
        recs = b._recs
        i = b.index_at(lo)
        out: list[Sent] = []
        while i < len(recs):
            rec = recs[i]
            if rec.start >= hi:
                break
            if rec.start < lo:
                b.split(i, lo)  # rec keeps [start, lo); the next record is [lo, end)
                i += 1
                continue
            if rec.end > hi:
                b.split(i, hi)
            if not rec.sacked:
                b.mark_sacked(rec)
                out.append(rec)
            i += 1
        return out

    def _rack_usable(self, rec: Sent, now: float, tsecr: int | None) -> bool:
        """RFC 8985 6.2 step 2: skip a retransmitted segment whose ACK may be for the original."""
        if rec.xmits == 1:
            return True
        if tsecr is not None and rec.tsval >= 0 and sq.lt(tsecr, rec.tsval):
            return False
        return not (self.min_rtt is not None and now - rec.time < self.min_rtt)

    def _update_min_rtt(self, rtt: float, now: float) -> None:
        if self.min_rtt is None or rtt <= self.min_rtt or now - self.min_rtt_time > MIN_RTT_WINDOW:
            self.min_rtt = rtt
            self.min_rtt_time = now

    def _on_dsack(self, dsack: tuple[int, int], una: int, high: int) -> None:
        """RFC 2883: the receiver got ``dsack`` twice."""
        stats = self.stats
        stats.tcp_dsack_received += 1
        left, right = dsack
        # RFC 8985 6.2 step 4: widen the reordering window once per round trip with D-SACKs.
        if self.dsack_round is not None and una >= self.dsack_round:
            self.dsack_round = None
        if self.dsack_round is None:
            self.dsack_round = high
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST
        # A D-SACK for the probe: the tail was not lost after all (RFC 8985 7.4.2).
        if self.tlp_end is not None and self.tlp_retrans and left < self.tlp_end <= right:
            self.tlp_end = None
            stats.tcp_tlp_spurious += 1
        ranges = self._undo_ranges
        if self._undo_saved is not None and ranges is not None and self._undo_retrans > 0:
            hit = sum(min(b, right) - max(a, left) for a, b in ranges if a < right and b > left)
            if hit > 0:
                self._undo_retrans -= hit
                if self._undo_retrans <= 0:
                    self._undo("dsack")

    # -- congestion responses and the loss state ---------------------------------------------

    def enter_recovery(self, now: float, flight: int, high: int, why: str) -> None:
        """RFC 6675 5 (4): a loss was detected -- one congestion response per episode."""
        if self.state is not LossState.OPEN:
            return
        self._begin_episode()
        cc = self.cc
        cc.on_congestion(now, flight)
        self.state = LossState.RECOVERY
        self.recovery_point = high
        self.rescue_rxt = None
        self.high_rxt = 0
        self.force_rtx = True
        self.tlp_end = None
        self.timers.clear(Timer.PROBE)
        self.stats.tcp_recoveries += 1
        if self.trace is not None:
            self._trace("enter", self.pipe(flight), why)

    def maybe_exit(self, una: int, now: float, flight: int) -> None:
        """RFC 6675 5: an ACK beyond RecoveryPoint ends recovery (or the post-RTO LOSS state)."""
        if self.state is LossState.OPEN or una < self.recovery_point:
            return
        if self.state is LossState.RECOVERY:
            self.cc.on_recovery_exit(now)
            self.stats.tcp_recoveries_completed += 1
        self.state = LossState.OPEN
        self.reno_credit = 0
        self._reno_dupacks = 0
        if self.reo_wnd_persist > 0:
            self.reo_wnd_persist -= 1
            if self.reo_wnd_persist == 0:
                self.reo_wnd_mult = 1
        if self.trace is not None:
            self._trace("exit", self.pipe(flight), "ack")

    def on_rto(self, now: float, una: int, high: int, flight: int) -> None:
        """RFC 6298 5.4-5.6 with RFC 6675 5.1 and RFC 8985 6.3: collapse cwnd, mark what RACK
        says is lost (at least the first segment), and stay in LOSS until ``high`` is ACKed."""
        b = self.board
        first = self.rto_streak == 0
        if first:
            self._begin_episode()
        self.cc.on_timeout(now, flight, first)
        self.rto_streak += 1
        if self.reneged or self.rto_streak > 1:
            # RFC 2018 8: after a timeout the receiver may have reneged; a second one in a row
            # (or an ACK that said so) and the SACK marks are no longer trusted.
            b.clear_sacks()
            self.reneged = False
        horizon = self.rack_rtt + self.reo_wnd()
        head = b.first()
        for rec in b.records:
            if rec is head or not self.sack or rec.time + horizon <= now + _EPS:
                self._mark_lost(rec)
        self._rtx_hint = una
        self.state = LossState.LOSS
        self.recovery_point = high
        self.force_rtx = False
        self.reno_credit = 0
        self._reno_dupacks = 0
        self.tlp_end = None
        self.timers.clear(Timer.PROBE)
        self.timers.clear(Timer.REORDER)

    def path_mtu_lowered(self, mss: int) -> int:
        """RFC 1191 6.5 (and Linux's tcp_simple_retransmit): the path takes no segment longer
        than ``mss`` any more, so every one still in the network that is longer was dropped by
        a router for its size. They are marked lost, to go again at once -- the sender cuts
        them to the new MSS -- and the first even if cwnd is full; there is no congestion
        response and no change of loss state, for nothing says the path is congested.
        Returns how many were marked."""
        self.mss = mss
        marked = 0
        for rec in self.board.records:
            if (
                not rec.sacked
                and not (rec.lost and not rec.retrans)  # already waiting to go again
                and rec.end - rec.start - (1 if rec.fin else 0) > mss
            ):
                self._mark_lost(rec)
                marked += 1
        if marked:
            self.force_rtx = True
        return marked

    def _trace(self, event: str, pipe: int, reason: str) -> None:
        assert self.trace is not None
        cc = self.cc
        detail = {"event": event, "cwnd": cc.cwnd, "ssthresh": cc.ssthresh, "pipe": pipe}
        self.trace("recovery", {**detail, "reason": reason})

    def _begin_episode(self) -> None:
        """Save what a congestion response is about to change, for undo."""
        self._undo_saved = self.cc.save()
        self._undo_tsval = None
        self._undo_eifel = False
        self._undo_retrans = 0
        self._undo_ranges = []

    def _eifel(self, tsecr: int | None) -> None:
        """RFC 3522 3.2: the first ACK that acknowledges the first retransmission decides: if it
        echoes a TSval older than the retransmission's, the original got there."""
        self._undo_eifel = False
        if tsecr is not None and self._undo_tsval is not None and sq.lt(tsecr, self._undo_tsval):
            self._undo("timestamps")

    def _undo(self, how: str) -> None:
        """The episode's retransmissions were spurious: restore the congestion state it
        changed (RFC 4015 3.2), take back the loss marks, and treat the cause as reordering."""
        saved = self._undo_saved
        if saved is None:
            return
        self._undo_saved = None
        self._undo_eifel = False
        self._undo_ranges = None
        cc = self.cc
        cc.restore(saved)
        self.board.unmark_lost()
        self.state = LossState.OPEN
        self.force_rtx = False
        self.reno_credit = 0
        self.rto_streak = 0
        if not self.reordering_seen:
            self.reordering_seen = True
            self.stats.tcp_reordering_seen += 1
        if how == "dsack":
            self.stats.tcp_undo_dsack += 1
        else:
            self.stats.tcp_undo_timestamps += 1
        if self.trace is not None:
            self._trace("undo", 0, how)

    # -- RACK --------------------------------------------------------------------------------

    def reo_wnd(self) -> float:
        """RFC 8985 6.2 step 4 (the value RACK_update_reo_wnd returns)."""
        if not self.reordering_seen:
            if self.state is not LossState.OPEN:
                return 0.0
            if self.board.sacked_out >= DUPTHRESH * self.mss:
                return 0.0
        if self.min_rtt is None:
            return 0.0
        return self.reo_wnd_mult * self.min_rtt / 4

    def detect_loss(self, now: float, srtt: float | None) -> int:
        """RFC 8985 6.2 step 5: mark segments lost that were sent before the most recently
        delivered one and are overdue by RACK.rtt + reo_wnd; arm the reordering timer for the
        others. Returns how many were newly marked."""
        if self.rack_time == -_INF:
            return 0
        reo = self.reo_wnd()
        if srtt is not None and reo > srtt:
            reo = srtt
        rack_time = self.rack_time
        rack_end = self.rack_end
        horizon = self.rack_rtt + reo
        timeout = 0.0
        lost: list[Sent] = []
        for rec in self.board.tsorted:
            if not _sent_after(rack_time, rack_end, rec.time, rec.end):
                break  # sent after the newest delivered segment: too early to tell
            remaining = rec.time + horizon - now
            if remaining <= _EPS:
                lost.append(rec)
            elif remaining > timeout:
                timeout = remaining
        for rec in lost:
            self._mark_lost(rec)
        if timeout > 0:
            self.timers.set(Timer.REORDER, now + timeout)
        else:
            self.timers.clear(Timer.REORDER)
        return len(lost)

    def _mark_lost(self, rec: Sent) -> None:
        again = rec.lost and rec.retrans
        if self.board.mark_lost(rec):
            if again:
                self.stats.tcp_lost_retransmits += 1
            if rec.start < self._rtx_hint:
                self._rtx_hint = rec.start

    # -- DupThresh (RACK off), and the peer without SACK -------------------------------------

    def detect_loss_dupthresh(self) -> int:
        """RFC 6675 IsLost(): DupThresh SACKed segments, or more than (DupThresh - 1) * SMSS
        SACKed bytes, above an unSACKed segment."""
        segs = 0
        nbytes = 0
        marked = 0
        for rec in reversed(self.board.records):
            if rec.sacked:
                segs += 1
                nbytes += rec.end - rec.start
            elif not rec.lost and (segs >= DUPTHRESH or nbytes > (DUPTHRESH - 1) * self.mss):
                self._mark_lost(rec)
                marked += 1
        return marked

    def reno_dupack(self, flight: int) -> bool:
        """A duplicate ACK from a peer without SACK (RFC 5681 2); True on the third (fast
        retransmit, RFC 5681 3.2). Each one counts a segment as having left the network, which
        also lets new data out on the first two (RFC 3042 limited transmit)."""
        self._reno_dupacks += 1
        if self.reno_credit + self.mss < flight:
            self.reno_credit += self.mss
        if self._reno_dupacks >= DUPTHRESH and self.state is LossState.OPEN:
            head = self._head_segment()
            if head is not None:
                self._mark_lost(head)
                return True
        return False

    def _head_segment(self) -> Sent | None:
        """The first unacknowledged segment. A super-segment's record is cut after one MSS
        first: a peer without SACK only ever tells us about the hole at SND.UNA."""
        b = self.board
        head = b.first()
        if head is not None and head.end - head.start - (1 if head.fin else 0) > self.mss:
            b.split(b.head, head.start + self.mss)
        return head

    def reno_ack(self, acked: int) -> None:
        """New data ACKed by a peer without SACK."""
        self._reno_dupacks = 0
        if self.state is LossState.RECOVERY:
            # RFC 6582 3.2 (5): a partial ACK -- the next hole is presumed lost as well
            self.reno_credit = max(self.reno_credit - acked, 0)
            head = self._head_segment()
            if head is not None and not head.lost:
                self._mark_lost(head)
                self.force_rtx = True
                self.stats.tcp_partial_ack_retransmits += 1
        else:
            self.reno_credit = 0

    # -- TLP ---------------------------------------------------------------------------------

    def arm_probe(self, now: float, srtt: float | None, flight: int, rto_at: float | None) -> None:
        """RFC 8985 7.2: schedule a loss probe about two round trips out, unless the RTO comes
        first or a probe is already in flight."""
        timers = self.timers
        if (
            not self.tlp
            or self.state is not LossState.OPEN
            or self.tlp_end is not None
            or flight <= 0
        ):
            timers.clear(Timer.PROBE)
            return
        pto = 2 * srtt if srtt is not None else 1.0
        if flight <= self.mss:
            pto += WC_DEL_ACK
        pto = max(pto, PTO_MIN)
        when = now + pto
        if rto_at is not None and when >= rto_at:
            timers.clear(Timer.PROBE)
        else:
            timers.set(Timer.PROBE, when)

    def probe_sent(self, end: int, retrans: bool) -> None:
        self.tlp_end = end
        self.tlp_retrans = retrans
        self.stats.tcp_tlp_probes += 1

    def tlp_ack(self, una: int, now: float, flight: int, dsack: bool) -> None:
        """RFC 8985 7.4: did the probe repair a loss? Then that loss gets its congestion
        response, as fast recovery would have given it (``flight``: before this ACK)."""
        end = self.tlp_end
        if end is None or una < end:
            return
        self.tlp_end = None
        if self.tlp_retrans and not dsack:
            self.stats.tcp_tlp_recoveries += 1
            if self.state is LossState.OPEN:
                self._begin_episode()
                self.cc.on_congestion(now, flight)
                self.cc.on_recovery_exit(now)


def _sent_after(t1: float, end1: int, t2: float, end2: int) -> bool:
    """RFC 8985 RACK_sent_after(): sent later, or at the same time and ending later."""
    return t1 > t2 or (t1 == t2 and end1 > end2)
