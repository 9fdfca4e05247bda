"""The receive side of a connection: sequence space, reassembly, ACK policy, window, SACK
blocks and the timestamps the peer sent (RFC 9293 3.3.1, 3.8.6; RFC 2018, RFC 2883, RFC 7323).

Theory of operation
-------------------
In-order bytes go to the receive buffer, out-of-order bytes are held for reassembly within the
advertised window (both in :class:`~ustack.tcp.buffers.ReceiveBuffer`, keyed by stream offset).
The advertised right edge ``rcv_adv`` never moves left and only grows by at least
min(buffer/2, MSS) (receiver SWS avoidance, 3.8.6.2.2).

ACKs are delayed (40 ms by default) unless two full-sized segments are unacknowledged, data
arrived out of order or filled a hole (RFC 5681 4.2), or a duplicate arrived. An ACK owed for
in-order data is only *noted* (``ack_now``): the connection's next output carries it, so the
segments of one batch (everything the host read before asking for output) share one cumulative
ACK, as the segments of a GRO super-segment do on Linux. An ACK that must not merge with the
next one (a duplicate ACK: out-of-order data without SACK, a duplicate segment) is *emitted* at
once by the connection.

SACK (RFC 2018 4): while data is held out of order every ACK carries blocks, the first one
holding the segment that arrived last, then the blocks of earlier arrivals, most recent first,
then the rest; up to 3 with timestamps, 4 without. A duplicate segment is reported once as a
D-SACK block in front of them (RFC 2883 4).

Timestamps (RFC 7323): ``ts_recent`` is the TSval to echo. It follows the rules of section 4.3
(taken from a segment only when SEG.TSval >= TS.Recent and SEG.SEQ <= Last.ACK.sent, so the echo
is from the segment that made us ACK, not from a later one) and it is what PAWS (section 5)
compares a new segment's TSval with; a TS.Recent older than 24 days is no longer trusted.
"""

from __future__ import annotations

from ustack.tcp.buffers import ReceiveBuffer
from ustack.tcp.config import DEFAULT_PEER_MSS, TcpConfig
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer, Timers
from ustack.wire import seq as sq
from ustack.wire.tcp import MAX_WSCALE, NO_OPTIONS, TcpOptions

# RFC 7323 2.2: the window field is 16 bits; SYN segments carry it unscaled.
MAX_WINDOW_FIELD = 0xFFFF
# RFC 7323 5.5: a TS.Recent idle for 24 days may have wrapped; PAWS no longer uses it.
PAWS_IDLE = 24 * 86400.0
# RFC 2018 3: SACK blocks in one option (3 when 12 bytes go to timestamps).
MAX_SACK_BLOCKS = 4
# Segments ACKed one by one after a silence longer than the RTO (Linux's TCP_MAX_QUICKACKS).
QUICKACKS = 16
_INF = float("inf")
_T_DELAYED_ACK = int(Timer.DELAYED_ACK)
MAX_SACK_BLOCKS_TS = 3
# How many recent out-of-order arrivals are remembered to order the blocks (RFC 2018 4).
_SACK_HISTORY = 4


def wscale_for(buffer: int) -> int:
    """The smallest shift that lets the whole receive buffer be advertised (RFC 7323 2.3)."""
    shift = 0
    while (MAX_WINDOW_FIELD << shift) < buffer and shift < MAX_WSCALE:
        shift += 1
    return shift


def acceptable(seg_seq: int, seg_len: int, rcv_nxt: int, wnd: int) -> bool:
    """3.10.7.4 first check, the four cases of its table. A segment starting exactly at RCV.NXT
    is acceptable even into a zero window, so that ACKs and window probes are processed."""
    if seg_seq == rcv_nxt:
        return True
    if seg_len == 0:
        return sq.in_window(seg_seq, rcv_nxt, wnd)
    return wnd > 0 and (
        sq.in_window(seg_seq, rcv_nxt, wnd)
        or sq.in_window(sq.add(seg_seq, seg_len - 1), rcv_nxt, wnd)
    )


class Receiver:
    __slots__ = (
        "_dsack",
        "_mss_cap",
        "_opt_cache",
        "_sack_recent",
        "_sws_threshold",
        "ack_now",
        "buf",
        "config",
        "fin_received",
        "irs",
        "last_ack_sent",
        "last_data",
        "ooo_fin",
        "quickacks",
        "rcv_adv",
        "rcv_mss",
        "rcv_nxt",
        "rcv_wscale",
        "sack_ok",
        "stats",
        "timers",
        "ts_ok",
        "ts_recent",
        "ts_recent_age",
        "ts_recent_stale",
        "unacked",
    )

    def __init__(self, config: TcpConfig, stats: Stats, timers: Timers, adv_mss: int) -> None:
        self.config = config
        self.stats = stats
        self.timers = timers
        self.buf = ReceiveBuffer(config.recv_buffer, config.max_ooo_segments)
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # RCV.NXT + RCV.WND as last advertised; never moves left
        self.rcv_wscale = 0
        self._sws_threshold = max(min(config.recv_buffer // 2, adv_mss), 1)
        # the largest segment seen from the peer (ACK every second one); 3.7.1's default first
        self.rcv_mss = min(DEFAULT_PEER_MSS, adv_mss)
        # ...but never above what we advertised: a GRO super-segment is many segments
        self._mss_cap = adv_mss
        self.unacked = 0  # payload bytes received since we last sent an ACK
        self.ack_now = False
        self.quickacks = 0  # segments still to be ACKed one by one (see in_order)
        self.last_data = _INF  # when in-order data last arrived (none yet: no silence)
        self.fin_received = False
        self.ooo_fin: int | None = None  # the peer's FIN, seen beyond a hole
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0  # RFC 7323 TS.Recent
        self.ts_recent_age = 0.0  # when TS.Recent was last set
        self.ts_recent_stale = False  # idle for 24 days: not to be compared with (RFC 7323 5.5)
        self.last_ack_sent = 0  # RFC 7323 Last.ACK.sent
        self._sack_recent: list[int] = []  # stream offsets of recent out-of-order arrivals
        self._dsack: tuple[int, int] | None = None  # sequence range to report once
        self._opt_cache: TcpOptions = NO_OPTIONS

    # -- the window --------------------------------------------------------------------------

    @property
    def rcv_wnd(self) -> int:
        """RCV.WND: how far beyond RCV.NXT the peer may send (as last advertised)."""
        return max(sq.sub(self.rcv_adv, self.rcv_nxt), 0)

    def syn_window(self) -> int:
        return min(self.buf.free(), MAX_WINDOW_FIELD)

    def window_field(self) -> int:
        """The window to advertise, honouring receiver SWS avoidance (3.8.6.2.2)."""
        free = self.buf.free()
        cur = self.rcv_wnd
        win = free if free - cur >= self._sws_threshold else cur
        shift = self.rcv_wscale
        if win > MAX_WINDOW_FIELD << shift:
            win = MAX_WINDOW_FIELD << shift
        # Round up so the scaled window does not pull the right edge back (RFC 7323 2.4), but
        # never past the free buffer space.
        field = min((win + (1 << shift) - 1) >> shift, free >> shift, MAX_WINDOW_FIELD)
        edge = sq.add(self.rcv_nxt, field << shift)
        if sq.gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        return field

    def window_opened(self) -> bool:
        """After a read: has the window opened by enough to be worth announcing?"""
        return self.buf.free() - self.rcv_wnd >= self._sws_threshold

    # -- the peer's SYN ----------------------------------------------------------------------

    def start(
        self, irs: int, wscale: int | None, sack: bool, tsval: int | None, now: float
    ) -> None:
        """The peer's SYN: IRS, the window scale we use if both sides agreed (RFC 7323 2.2),
        SACK and timestamps as negotiated (``None``/False when either side said no)."""
        self.irs = irs
        self.rcv_nxt = sq.add(irs, 1)
        self.rcv_wscale = wscale if wscale is not None else 0
        self.rcv_adv = sq.add(self.rcv_nxt, self.syn_window())
        self.sack_ok = sack
        self.ts_ok = tsval is not None
        if tsval is not None:
            self.ts_recent = tsval
            self.ts_recent_age = now
        self.last_ack_sent = self.rcv_nxt

    # -- checks on arrival -------------------------------------------------------------------

    def acceptable(self, seg_seq: int, seg_len: int) -> bool:
        """3.10.7.4 first check (see :func:`acceptable`)."""
        return acceptable(seg_seq, seg_len, self.rcv_nxt, self.rcv_wnd)

    def paws_reject(self, tsval: int, now: float) -> bool:
        """RFC 7323 5.3 R1: SEG.TSval < TS.Recent (and TS.Recent still valid) -> an old
        duplicate from an earlier wrap of the sequence space."""
        if self.ts_recent_stale or not sq.lt(tsval, self.ts_recent):
            return False
        if now - self.ts_recent_age > PAWS_IDLE:
            # 5.5: after 24 days idle TS.Recent may be from another era of the peer's clock:
            # it no longer rejects anything, and the next acceptable segment replaces it (R3)
            self.ts_recent_stale = True
            self.stats.tcp_paws_idle_reset += 1
            return False
        return True

    def update_ts_recent(self, seg_seq: int, tsval: int, now: float) -> None:
        """RFC 7323 4.3 (2) / 5.3 R3 for an acceptable segment."""
        if (self.ts_recent_stale or sq.ge(tsval, self.ts_recent)) and sq.le(
            seg_seq, self.last_ack_sent
        ):
            self.ts_recent = tsval
            self.ts_recent_age = now
            self.ts_recent_stale = False

    def note_duplicate(self, seg_seq: int, seg_end: int) -> None:
        """A segment whose data we had already (below RCV.NXT): report it once (RFC 2883)."""
        if self.sack_ok and sq.lt(seg_seq, seg_end):
            self._dsack = (seg_seq, seg_end)
            self.stats.tcp_dsack_sent += 1

    # -- text --------------------------------------------------------------------------------

    def in_order(self, payload: memoryview, now: float, rto: float) -> None:
        """Bytes at RCV.NXT: append them and pull in what they join up with, and decide the ACK
        (3.8.6.3): owed at once (``ack_now``) once two full-sized segments are unacknowledged
        or when a hole filled, else when the delayed-ACK timer fires. The ACK itself is built
        by the connection's next output, so a batch of segments gets one cumulative ACK.

        Data after a silence longer than ``rto`` (the sender's retransmission timer fired, or
        it restarts from idle) is ACKed segment by segment for a while, as Linux's quick-ACK
        mode does: the sender restarts from a small window, and an ACK per segment is what
        lets it grow again (and what keeps the ACK clock alive when ACKs are being lost)."""
        n = len(payload)
        if now - self.last_data > rto:
            self.quickacks = min(QUICKACKS, max(self.rcv_wnd // (2 * self.rcv_mss), 2))
        self.last_data = now
        buf = self.buf
        hole = buf.has_ooo
        advanced = buf.add_in_order(payload)
        self.rcv_nxt = sq.add(self.rcv_nxt, advanced)
        self.stats.tcp_bytes_received += advanced
        if n > self.rcv_mss:
            self.rcv_mss = min(n, self._mss_cap)
        if hole:
            # RFC 5681 4.2: a segment that fills (part of) a hole is ACKed at once
            self.stats.tcp_quick_acks += 1
            self.ack_now = True
            if not buf.has_ooo:
                self._sack_recent.clear()
            return
        self.unacked += n
        if self.quickacks:
            self.quickacks -= 1
            self.stats.tcp_quick_acks += 1
            self.ack_now = True
        elif self.unacked >= 2 * self.rcv_mss or self.config.delayed_ack <= 0:
            # 3.8.6.3: an ACK for at least every second full-sized segment
            self.ack_now = True
        elif not self.timers.armed(Timer.DELAYED_ACK):
            self.timers.set(Timer.DELAYED_ACK, now + self.config.delayed_ack)

    def out_of_order(self, offset: int, payload: memoryview) -> bool:
        """Bytes beyond a hole, ``offset`` after RCV.NXT: hold them and remember the arrival
        for the SACK blocks (RFC 2018 4). True when the ACK must go out at once, on its own;
        otherwise it goes with the connection's next output."""
        stats = self.stats
        buf = self.buf
        new, dup = buf.add_out_of_order(offset, payload)
        stats.tcp_dup_bytes_trimmed += dup
        if new < 0:
            stats.tcp_ooo_dropped += 1
        elif new > 0:
            stats.tcp_ooo_queued += 1
        start = buf.stream + offset
        if self.sack_ok:
            recent = self._sack_recent
            if start in recent:
                recent.remove(start)
            recent.insert(0, start)
            del recent[_SACK_HISTORY:]
            if buf.last_dup is not None:
                a, b = buf.last_dup
                self._dsack = (
                    sq.add(self.rcv_nxt, a - buf.stream),
                    sq.add(self.rcv_nxt, b - buf.stream),
                )
                stats.tcp_dsack_sent += 1
        # RFC 5681 4.2: out-of-order data is ACKed at once. Without SACK every duplicate ACK
        # counts (three make a fast retransmit), so each is its own. With SACK the blocks carry
        # the information, so segments that arrive together share an ACK -- as they would one
        # for a GRO super-segment -- but never more than two per ACK, to keep the sender's ACK
        # clock going.
        stats.tcp_quick_acks += 1
        self.ack_now = True
        if not self.sack_ok:
            return True
        n = len(payload)
        if n > self.rcv_mss:
            self.rcv_mss = min(n, self._mss_cap)
        self.unacked += n
        return self.unacked >= 2 * self.rcv_mss

    def renege(self) -> int:
        """Throw away the out-of-order data held -- what RFC 2018 8 allows a receiver short of
        memory to do even after SACKing it. ustack never does this on its own; it is here so a
        test (or a tester) can be a reneging peer. Returns the bytes dropped."""
        dropped = self.buf.drop_out_of_order()
        self._sack_recent.clear()
        self.ooo_fin = None
        return dropped

    def receive_fin(self) -> None:
        """Eighth check (3.10.7.4): the peer's FIN reached RCV.NXT."""
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self.ooo_fin = None
        self.fin_received = True
        self.ack_now = True

    def read(self, max_bytes: int = -1) -> bytes:
        return self.buf.read(max_bytes)

    # -- what our ACKs carry -----------------------------------------------------------------

    def options(self, tsval: int) -> TcpOptions:
        """The options of our next non-SYN segment: timestamps (RFC 7323 3.2: on every one once
        negotiated; ``tsval`` is our clock) and the SACK blocks to report (RFC 2018 4)."""
        blocks = self.sack_blocks() if self.sack_ok else ()
        if not self.ts_ok:
            return TcpOptions(sack_blocks=blocks) if blocks else NO_OPTIONS
        ts = (tsval, self.ts_recent)
        if blocks:
            return TcpOptions(sack_blocks=blocks, timestamps=ts)
        cached = self._opt_cache  # a burst of segments shares one options value
        if cached.timestamps != ts:
            cached = self._opt_cache = TcpOptions(timestamps=ts)
        return cached

    def sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """The SACK blocks for the next segment: a pending D-SACK first, then the block of the
        latest arrival and those of earlier ones, then the rest (RFC 2018 4, RFC 2883 4)."""
        dsack = self._dsack
        buf = self.buf
        if not buf.has_ooo and dsack is None:
            return ()
        limit = MAX_SACK_BLOCKS_TS if self.ts_ok else MAX_SACK_BLOCKS
        blocks: list[tuple[int, int]] = []
        if dsack is not None:
            blocks.append(dsack)
        if buf.has_ooo:
            base = self.rcv_nxt
            stream = buf.stream
            chosen: list[list[int]] = []
            for point in self._sack_recent:
                r = buf.ooo_range_at(point)
                if r is not None and r not in chosen:
                    chosen.append(r)
            if len(chosen) + len(blocks) < limit:
                for r in reversed(buf.ooo_ranges()):
                    if r not in chosen:
                        chosen.append(r)
                        if len(chosen) + len(blocks) >= limit:
                            break
            for a, b in chosen[: limit - len(blocks)]:
                blocks.append((sq.add(base, a - stream), sq.add(base, b - stream)))
        return tuple(blocks)

    @property
    def dsack_pending(self) -> bool:
        return self._dsack is not None

    def ack_sent(self) -> None:
        """A segment carrying our ACK (of RCV.NXT) went out."""
        self.ack_now = False
        self.timers.at[_T_DELAYED_ACK] = _INF  # Timers.clear, without the call (every ACK)
        self.unacked = 0
        self._dsack = None
        self.last_ack_sent = self.rcv_nxt
