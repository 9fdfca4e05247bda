"""The send side of a connection: sequence space, send buffer, segmentation, Nagle and sender
SWS avoidance, and the persist timer (RFC 9293 3.3.1, 3.7.4, 3.8.6.1, 3.8.6.2.1).

Theory of operation
-------------------
Sequence numbers are kept *unwrapped*: ``una`` and ``nxt`` count from the ISS as plain ints
(the SYN is 0, the first data byte 1), so the send buffer, the scoreboard and segmentation never
do modular arithmetic; :attr:`snd_una` and :attr:`snd_nxt` give the 32-bit values the wire and
the RFC 9293 checks use, and :meth:`unwrap` takes an acknowledgment number back. ``nxt`` is the
RFC's SND.NXT: the next *new* byte. Retransmissions never move it; they are chosen from the
scoreboard (see :mod:`ustack.tcp.recovery`) and read back from the buffer with :meth:`payload`.

The buffer holds every byte from SND.UNA on. Our FIN takes the sequence number after the last
byte (``fin_u``) once the application shuts down and rides on the last data segment when it
can. :meth:`next_new` decides the next new segment: its size is bounded by the MSS, the peer's
window and the congestion budget the connection passes in; a short segment waits under Nagle
(3.7.4) or, when only the window keeps it short, sender SWS avoidance (3.8.6.2.1) unless the
persist timer's override is due. A zero (or too small) window with nothing in flight starts the
persist timer, whose probes back off like the RTO.

The user timeout (RFC 9293 3.10.1, RFC 5482) has Linux's TCP_USER_TIMEOUT meaning (tcp(7)): the
longest that transmitted data may stay unacknowledged, or queued data untransmitted behind a zero
window. :attr:`waiting_since` is when the current such wait began -- the first byte sent into an
empty flight, the last ACK of new data, the start of a zero-window episode -- so the deadline can
be re-armed when the timeout is changed on a live connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ustack.tcp.buffers import SendBuffer
from ustack.tcp.config import TcpConfig
from ustack.tcp.congestion import CongestionControl
from ustack.tcp.receiver import Receiver
from ustack.tcp.recovery import LossState, Recovery, Sent
from ustack.tcp.rto import RtoEstimator
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer, Timers
from ustack.wire import seq as sq
from ustack.wire.tcp import ACK, FIN, PSH, TcpOptions


class OutSegment(NamedTuple):
    """One segment to transmit; ``window`` is the 16-bit wire value."""

    seq: int
    ack: int
    flags: int
    window: int
    options: TcpOptions
    payload: bytes | memoryview


# Retransmissions of segments that ACKs (not a timer) showed lost.
_FAST = frozenset({"rack", "dupthresh", "newreno"})

# Why the last call to next_new sent nothing (or less than asked).
LIMIT_NONE = 0
LIMIT_RWND = 1  # the peer's window
LIMIT_CWND = 2  # the congestion budget
LIMIT_APP = 3  # no data, or Nagle holding a short segment


class Sender:
    __slots__ = (
        "buf",
        "buf_u",
        "cc",
        "config",
        "cwnd_limited",
        "fin_queued",
        "fin_u",
        "force_send",
        "iss",
        "limit",
        "max_sent",
        "max_snd_wnd",
        "nodelay",
        "nxt",
        "peer_mss",
        "persist_backoff",
        "persist_unanswered",
        "rcv",
        "recovery",
        "rtt",
        "snd_mss",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "stats",
        "timers",
        "trace",
        "una",
        "user_timeout",
        "waiting_since",
        "write_blocked",
    )

    def __init__(self, config: TcpConfig, stats: Stats, timers: Timers, iss: int, mss: int) -> None:
        self.config = config
        self.stats = stats
        self.timers = timers
        self.iss = iss & sq.MASK
        self.una = 0  # SND.UNA, unwrapped
        self.nxt = 0  # SND.NXT, unwrapped: the next new sequence number
        self.max_sent = 0  # one past the highest sequence number sent (a window probe's too)
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0  # MAX.SND.WND of RFC 5961 5.2
        self.snd_wscale = 0
        self.peer_mss = mss
        self.snd_mss = mss  # the effective send MSS: payload bytes per segment (3.7.1)
        self.buf = SendBuffer(config.send_buffer)
        self.buf_u = 1  # the buffer's first byte (after the SYN)
        self.fin_queued = False
        self.fin_u = 0
        self.nodelay = not config.nagle
        self.force_send = False  # the persist timer's SWS override (3.8.6.2.1 (4))
        self.persist_backoff = 0
        self.persist_unanswered = 0
        self.user_timeout = config.user_timeout  # per connection: Connection.set_user_timeout
        self.waiting_since = 0.0  # see the module docstring
        self.write_blocked = False
        self.limit = LIMIT_NONE
        self.cwnd_limited = False  # the last output stopped at cwnd with data waiting
        self.trace: Callable[[str, dict[str, Any]], None] | None = None
        # the parts output works with, given by the connection (attach)
        self.rcv: Receiver
        self.recovery: Recovery
        self.cc: CongestionControl
        self.rtt: RtoEstimator

    def attach(
        self, rcv: Receiver, recovery: Recovery, cc: CongestionControl, rtt: RtoEstimator
    ) -> None:
        self.rcv = rcv
        self.recovery = recovery
        self.cc = cc
        self.rtt = rtt

    # -- the 32-bit view ---------------------------------------------------------------------

    @property
    def snd_una(self) -> int:
        return (self.iss + self.una) & sq.MASK

    @property
    def snd_nxt(self) -> int:
        return (self.iss + self.nxt) & sq.MASK

    @property
    def snd_max(self) -> int:
        """One past the highest sequence number sent: what an ACK may acknowledge."""
        return (self.iss + self.max_sent) & sq.MASK

    def wrap(self, u: int) -> int:
        return (self.iss + u) & sq.MASK

    def unwrap(self, seq: int) -> int:
        """The unwrapped value of a sequence number near SND.UNA (within 2**31 of it)."""
        return self.una + sq.sub(seq, (self.iss + self.una) & sq.MASK)

    @property
    def flight(self) -> int:
        """SND.NXT - SND.UNA: sequence space sent and not acknowledged (RFC 5681 FlightSize)."""
        return self.nxt - self.una

    # -- the application -----------------------------------------------------------------------

    def queue(self, data: bytes | bytearray | memoryview) -> int:
        n = self.buf.write(data)
        if n < len(data):
            self.write_blocked = True
        return n

    def queue_fin(self) -> None:
        self.fin_queued = True
        self.fin_u = self.buf_u + self.buf.size

    @property
    def queued(self) -> int:
        """Bytes queued and not yet acknowledged."""
        return self.buf.size

    @property
    def unsent(self) -> int:
        """Bytes queued and never sent."""
        return self.buf_u + self.buf.size - max(self.nxt, self.buf_u)

    @property
    def fin_sent(self) -> bool:
        return self.fin_queued and self.nxt > self.fin_u

    @property
    def fin_acked(self) -> bool:
        return self.fin_queued and self.una > self.fin_u

    def low_water(self) -> int:
        return min(self.config.send_low_water, self.buf.capacity // 2)

    # -- ACKs --------------------------------------------------------------------------------

    def update_window(self, seg_seq: int, ack: int, wnd: int) -> None:
        """3.10.7.4 fifth check: take the window from the newest segment (SND.WL1/WL2)."""
        wl1 = self.snd_wl1
        if sq.lt(wl1, seg_seq) or (wl1 == seg_seq and sq.le(self.snd_wl2, ack)):
            self.snd_wnd = wnd
            self.snd_wl1 = seg_seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            if wnd and self.timers.armed(Timer.PERSIST):
                self.timers.clear(Timer.PERSIST)
                self.persist_backoff = 0

    def acked(self, una: int) -> int:
        """SND.UNA advances to ``una`` (unwrapped); returns the bytes acknowledged."""
        acked = una - self.una
        self.una = una
        if una > self.nxt:
            self.nxt = una  # the peer took a window probe's byte
        n = min(una - self.buf_u, self.buf.size)
        if n > 0:
            self.buf.consume(n)
            self.buf_u += n
        return acked

    # -- segments ----------------------------------------------------------------------------

    def payload(self, start: int, end: int) -> tuple[bytes | memoryview, bool]:
        """The bytes of ``[start, end)`` and whether the range ends with our FIN."""
        fin = self.fin_queued and end == self.fin_u + 1
        stop = end - 1 if fin else end
        if stop <= start:
            return b"", fin
        return self.buf.peek(start - self.buf_u, stop - start), fin

    def next_new(self, budget: int, mss: int, tso: bool = True) -> tuple[int, bool]:
        """The next new segment, as ``(length, fin)`` (``(0, False)`` for none): what the MSS,
        the peer's window, ``budget`` (the congestion window's room), Nagle and sender SWS
        avoidance allow -- with ``tso`` and a TSO link, many MSS at once. Records why it
        stopped in :attr:`limit`."""
        nxt = self.nxt
        off = nxt - self.buf_u
        avail = self.buf.size - off
        if avail <= 0:
            self.limit = LIMIT_APP
            if self.fin_queued and nxt == self.fin_u:
                # our FIN goes out once every byte before it has (3.10.4)
                return 0, True
            return 0, False
        flight = nxt - self.una
        wnd_room = self.snd_wnd - flight
        usable = wnd_room if wnd_room < budget else budget
        big = self.config.tso_max if tso else 0
        if big > mss:
            # TSO: one super-segment of whole MSS-sized pieces (the link cuts it); a piece
            # shorter than the MSS only ever comes last, where the data or the window ends
            big -= big % mss
            n = avail if avail < big else big
            if usable < n:
                n = usable if usable < mss else usable - usable % mss
            elif n > mss and n % mss and not (self.nodelay or self.fin_queued or self.force_send):
                # the short tail would wait for Nagle (3.7.4) once the full pieces are out
                n -= n % mss
        else:
            n = avail if avail < mss else mss
            if usable < n:
                n = usable
        if n < mss and n < avail:
            # window-limited: 3.8.6.2.1 (3) sends if it is at least half the largest window
            # the peer offered (Nagle permitting); (4) the persist timer's override
            if n <= 0 or not (
                self.force_send or ((self.nodelay or flight == 0) and n >= self.max_snd_wnd // 2)
            ):
                self.limit = LIMIT_RWND if wnd_room <= budget else LIMIT_CWND
                return 0, False
        elif n < mss and not (self.nodelay or flight == 0 or self.fin_queued or self.force_send):
            # 3.7.4 Nagle: a short segment waits while data is unacknowledged
            self.limit = LIMIT_APP
            return 0, False
        self.force_send = False
        self.limit = LIMIT_NONE
        return n, n == avail and self.fin_queued

    def advance(self, end: int) -> None:
        """New sequence space up to ``end`` was sent."""
        if end > self.nxt:
            self.nxt = end
        if end > self.max_sent:
            self.max_sent = end

    # -- persist (3.8.6.1) -------------------------------------------------------------------

    def persist_interval(self, rto: float) -> float:
        cfg = self.config
        base = rto * (1 << min(self.persist_backoff, 30))
        return min(max(base, cfg.persist_min), cfg.persist_max)

    def start_wait(self, now: float) -> None:
        """A wait the user timeout bounds begins now (see the module docstring)."""
        self.waiting_since = now
        if self.user_timeout is not None:
            self.timers.set(Timer.USER_TIMEOUT, now + self.user_timeout)

    def persist_timeout(self, now: float) -> bool | None:
        """The persist timer fired: True if a one-byte probe of the zero window is due
        (3.8.6.1), False if instead the SWS override lets the small window be used
        (3.8.6.2.1 (4)), None if probes went unanswered as often as retransmissions may."""
        if self.persist_unanswered >= self.config.data_retries:
            return None
        self.persist_unanswered += 1
        self.persist_backoff += 1
        timers = self.timers
        timers.set(Timer.PERSIST, now + self.persist_interval(self.rtt.rto))
        if self.user_timeout is not None and not timers.armed(Timer.USER_TIMEOUT):
            # the peer took an earlier probe's byte (an ACK emptied the flight and with it
            # the user timeout) but the window is still shut: a new wait starts here
            self.start_wait(now)
        if self.snd_wnd == 0:
            self.stats.tcp_window_probes += 1
            return True
        self.force_send = True
        return False

    def persist_check(self, now: float, rto: float, sent_new: bool) -> None:
        """After output: data waiting behind a window that keeps it from going, with nothing in
        flight to bring an ACK, starts the persist timer (3.8.6.1)."""
        timers = self.timers
        if sent_new:
            timers.clear(Timer.PERSIST)
            self.persist_backoff = 0
        elif (
            self.limit == LIMIT_RWND
            and not timers.armed(Timer.PERSIST)
            and not timers.armed(Timer.RETRANSMIT)
            and self.nxt == self.una
        ):
            timers.set(Timer.PERSIST, now + self.persist_interval(rto))
            # tcp(7) TCP_USER_TIMEOUT: queued data held back by a zero window counts too (Linux
            # measures it from the first probe, resetting only when the window opens, so a
            # peer that answers every probe with a zero window cannot hold us forever)
            self.start_wait(now)

    # -- output (RFC 6675 NextSeg, the probes) -----------------------------------------------

    def output(
        self, now: float, out: list[OutSegment], tsval: int, window_probe: bool, tail_probe: bool
    ) -> bool:
        """Append what may go out now: RFC 6675 NextSeg while ``cwnd - pipe`` allows --
        segments presumed lost (rule 1), new data (rule 2), then the rule-3 and rescue
        retransmissions -- after the zero-window or tail loss probe a timer asked for.
        ``tsval`` is our timestamp clock (-1 without timestamps). True if anything went out."""
        rec = self.recovery
        if not (
            window_probe
            or tail_probe
            or rec.board.waiting
            or self.nxt < self.buf_u + self.buf.size
            or (self.fin_queued and self.nxt == self.fin_u)
            or rec.state is LossState.RECOVERY
        ):
            # Nothing to send (the common case on the receiving side of a transfer): skip
            # building a window and options for segments that will not exist.
            self.limit = LIMIT_APP
            self.cwnd_limited = False
            return False
        rcv = self.rcv
        cc = self.cc
        timers = self.timers
        win = rcv.window_field()
        opts = rcv.options(tsval)
        mss = self.mss_with(opts)
        start = len(out)
        sent_new = False
        cwnd_limited = False
        if window_probe:
            self._window_probe(out, opts, win)
        if tail_probe:
            sent_new = self._tail_loss_probe(now, out, opts, win, tsval, mss)
        dsack = rcv.dsack_pending
        while True:
            if dsack and len(out) > start:
                # RFC 2883 4: a duplicate is reported once -- on the first segment only
                rcv.ack_sent()
                opts = rcv.options(tsval)
                mss = self.mss_with(opts)
                dsack = False
            budget = cc.cwnd - rec.pipe(self.nxt - self.una)
            lost = rec.next_lost()
            if lost is not None:
                i, r = lost
                if budget < min(mss, r.end - r.start) and not rec.force_rtx:
                    cwnd_limited = True
                    break
                rec.force_rtx = False
                self._retransmit(i, r, now, out, opts, win, tsval, mss, self._rtx_reason())
                continue
            # a D-SACK goes on one segment only (RFC 2883 4), so not on a super-segment's pieces
            n, fin = self.next_new(budget, mss, not dsack)
            if n or fin:
                self._send_new(n, fin, now, out, opts, win, tsval)
                sent_new = True
                if fin and not n:
                    break
                continue
            if self.limit == LIMIT_CWND:
                cwnd_limited = True
            if budget >= mss:
                other = rec.next_other(self.una)
                if other is not None:
                    i, r = other
                    reason = "rescue" if r.end >= rec.recovery_point - mss else "dupthresh"
                    self._retransmit(i, r, now, out, opts, win, tsval, mss, reason)
                    continue
            break
        self.cwnd_limited = cwnd_limited
        rtt = self.rtt
        if self.flight > 0:
            # RFC 6298 (5.1): data in flight always has the retransmission timer running
            timers.set_once(Timer.RETRANSMIT, now + rtt.rto)
            if sent_new and rec.state is LossState.OPEN and rec.tlp_end is None:
                rec.arm_probe(now, rtt.srtt, self.flight, timers.get(Timer.RETRANSMIT))
        self.persist_check(now, rtt.rto, sent_new)
        return len(out) > start

    def mss_with(self, opts: TcpOptions) -> int:
        """The payload that fits with these options: SACK blocks (2 + 8 each, NOP-aligned)
        come off the effective MSS, which already counts the timestamps (RFC 9293 3.7.1)."""
        blocks = len(opts.sack_blocks)
        return max(self.snd_mss - 4 - 8 * blocks, 1) if blocks else self.snd_mss

    def _rtx_reason(self) -> str:
        rec = self.recovery
        if rec.state is LossState.LOSS:
            return "rto"
        if not rec.sack:
            return "newreno"
        return "rack" if rec.rack else "dupthresh"

    def _send_new(
        self,
        n: int,
        fin: bool,
        now: float,
        out: list[OutSegment],
        opts: TcpOptions,
        win: int,
        tsval: int,
    ) -> None:
        start = self.nxt
        end = start + n + (1 if fin else 0)
        payload = self.buf.peek(start - self.buf_u, n) if n else b""
        flags = ACK
        if n and n == self.buf_u + self.buf.size - start:
            flags |= PSH
        if fin:
            flags |= FIN
        out.append(OutSegment(self.wrap(start), self.rcv.rcv_nxt, flags, win, opts, payload))
        if self.flight == 0:
            # a wait the user timeout bounds begins (start_wait, inline: every send into an
            # empty flight passes here)
            self.waiting_since = now
            if self.user_timeout is not None:
                self.timers.set(Timer.USER_TIMEOUT, now + self.user_timeout)
        self.recovery.sent_new(start, end, now, tsval, fin)
        self.advance(end)
        if n:
            stats = self.stats
            stats.tcp_data_segments_sent += 1
            stats.tcp_bytes_sent += n

    def _retransmit(
        self,
        i: int,
        r: Sent,
        now: float,
        out: list[OutSegment],
        opts: TcpOptions,
        win: int,
        tsval: int,
        mss: int,
        reason: str,
    ) -> None:
        rec = self.recovery
        if r.end - r.start - (1 if r.fin else 0) > mss:
            rec.board.split(i, r.start + mss)  # r keeps the first MSS
        payload, fin = self.payload(r.start, r.end)
        flags = ACK | FIN if fin else ACK
        if len(payload) and r.end >= self.nxt:
            flags |= PSH
        out.append(OutSegment(self.wrap(r.start), self.rcv.rcv_nxt, flags, win, opts, payload))
        rec.retransmitted(r, now, tsval)
        stats = self.stats
        stats.tcp_retransmits += 1
        stats.tcp_retransmitted_bytes += len(payload)
        if fin:
            stats.tcp_fin_retransmits += 1
        if reason in _FAST:
            stats.tcp_fast_retransmits += 1
        if self.trace is not None:
            detail = {"seq": self.wrap(r.start), "len": len(payload), "fin": fin}
            self.trace("retransmit", {**detail, "syn": False, "reason": reason})

    def _window_probe(self, out: list[OutSegment], opts: TcpOptions, win: int) -> None:
        """3.8.6.1: one byte at SND.UNA into the zero window. It is not a retransmission and
        gets no RTO: the persist timer keeps probing, with backoff, until the window opens."""
        payload = self.buf.peek(self.una - self.buf_u, 1)
        if len(payload):
            out.append(OutSegment(self.snd_una, self.rcv.rcv_nxt, ACK, win, opts, payload))
            if self.una + 1 > self.max_sent:
                self.max_sent = self.una + 1

    def _tail_loss_probe(
        self, now: float, out: list[OutSegment], opts: TcpOptions, win: int, tsval: int, mss: int
    ) -> bool:
        """RFC 8985 7.3: new data if the peer's window allows it, else the last segment
        again; either way it ignores cwnd. Returns True if new data went out."""
        rec = self.recovery
        if rec.state is not LossState.OPEN or self.flight <= 0:
            return False
        n, fin = self.next_new(mss, mss)
        start = self.nxt
        new = bool(n or fin)
        if new:
            self._send_new(n, fin, now, out, opts, win, tsval)
        else:
            board = rec.board
            last = board.last()
            if last is None or last.sacked:
                return False
            i = len(board) - 1 + board.head
            data = last.end - last.start - (1 if last.fin else 0)
            if data > mss:
                # RFC 8985 7.3 probes with the *last* segment: a super-segment's final piece
                last = board.split(i, last.start + (data - 1) // mss * mss)
                i += 1
            start = last.start
            self._retransmit(i, last, now, out, opts, win, tsval, mss, "tlp")
        rec.probe_sent(self.nxt, not new)
        if self.trace is not None:
            self.trace("tlp", {"seq": self.wrap(start), "len": self.nxt - start, "new_data": new})
        # RFC 8985 7.3: after the probe the RTO (not another probe) watches the tail
        self.timers.set(Timer.RETRANSMIT, now + self.rtt.rto)
        return new
