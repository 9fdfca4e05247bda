"""A connection in TIME-WAIT as a compact record (RFC 9293 3.6, 3.10.7.4; RFC 1337; RFC 7323).

Theory of operation
-------------------
After both FINs, a connection spends 2*MSL in TIME-WAIT so that a retransmitted FIN is still
ACKed and an old duplicate cannot be taken for a new connection's data. It sends nothing of
its own and receives nothing the application will read, so it needs a few numbers, not a TCB:
Linux swaps the full socket for a "timewait sock" of a couple of hundred bytes, and a
:class:`TimeWait` is the same idea. The host makes one (``TimeWait.from_connection``) once the
application has released a connection that reached TIME-WAIT and forgets the
:class:`~ustack.tcp.connection.Connection`; a bare Connection driven without a host keeps its
own TIME-WAIT code.

A record answers every segment exactly as the Connection it replaces would have, counter for
counter (a property test feeds both the same segments):

* a retransmitted FIN is ACKed again and restarts the 2*MSL timer (3.10.7.4, eighth check);
* a RST is ignored (RFC 1337, no TIME-WAIT assassination) -- outside the window it is dropped
  as in every synchronized state (RFC 5961 3.2);
* a SYN gets a rate-limited challenge ACK (RFC 5961 4) -- unless the host first lets a SYN above
  RCV.NXT to a listening port start a new incarnation (RFC 9293 3.10.7.4, RFC 6191), which it
  decides before asking the record;
* with timestamps, a segment without one is dropped and one older than TS.Recent is ACKed and
  dropped (PAWS, RFC 7323 5.3), and TS.Recent follows the rules of RFC 7323 4.3;
* anything else unacceptable is ACKed (with a D-SACK for a duplicate, RFC 2883), an ACK of
  something never sent or too old gets a challenge ACK (RFC 5961 5.2), and data after the FIN
  is dropped and ACKed.

The record only replaces a connection it can answer for exactly (nothing held out of order,
no ACK owed, the scoreboard settled); otherwise the host keeps the Connection. Its numbers live
in one packed ``bytes`` (``_TCB``), the way the kernel's record is one small struct: under
300 bytes a TIME-WAIT connection, everything counted (``bench/concurrency.py``). Handling a
segment unpacks them into a :class:`_Tcb` working copy and packs them back: TIME-WAIT
segments are rare, TIME-WAIT connections are not.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ustack.tcp.config import TcpConfig
from ustack.tcp.receiver import PAWS_IDLE, acceptable
from ustack.tcp.sender import OutSegment
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer
from ustack.wire import seq as sq
from ustack.wire.tcp import ACK, NO_OPTIONS, Control, TcpOptions, TcpSegment

if TYPE_CHECKING:
    from ustack.tcp.connection import Connection

# RFC 7323 5.4: the timestamp clock ticks once a millisecond (the Connection's TS_HZ).
TS_HZ = 1000
# RFC 7323 2.2: the window field is 16 bits; SACK validation looks this far back at least.
_MAX_WINDOW_FIELD = 0xFFFF

_INF = float("inf")
_TS_OK = 1  # timestamps negotiated (RFC 7323 3.2)
_SACK_OK = 2  # SACK negotiated (RFC 2018)
_TS_STALE = 4  # TS.Recent idle for 24 days, no longer compared with (RFC 7323 5.5)

# snd_nxt, max_snd_wnd, snd_wl1, snd_wl2, rcv_nxt, rcv_wnd, rcv_wnd_next, ts_recent, ts_offset,
# chal_count, window, snd_wscale, flags, ts_recent_age, chal_start
_TCB = struct.Struct("<IIIIIIIIIIHBBdd")

# The packed 4-tuple (pack_key), low bits first: local port, the low 32 bits of the local
# address, remote port, the low 32 bits of the remote address -- an IPv4 key ends there, 96
# bits, as it always has -- then the high bits of the local and the remote address, zero for
# IPv4 and holding the rest of an IPv6 address tagged ``addr | 1 << 128`` (129 bits, the family
# bit included). Splitting the addresses keeps IPv4 keys at 96 bits, the int of 40 bytes a
# TIME-WAIT record has always held, where two whole 129-bit fields would push them to 193 bits.
_KEY_PORT_BITS = 16  # RFC 9293 3.1: ports are 16 bits
_KEY_ADDR_BITS = 129  # an IPv6 address (RFC 8200: 128 bits) and its family tag bit
_KEY_LOW_BITS = 32  # an IPv4 address (RFC 791: 32 bits): the part of each address in the low key
_KEY_HIGH_BITS = _KEY_ADDR_BITS - _KEY_LOW_BITS
_KEY_LOW_END = 2 * (_KEY_PORT_BITS + _KEY_LOW_BITS)  # 96: where the high address bits start
_KEY_LOW_MASK = (1 << _KEY_LOW_BITS) - 1
_KEY_HIGH_MASK = (1 << _KEY_HIGH_BITS) - 1
_KEY_PORT_MASK = (1 << _KEY_PORT_BITS) - 1


def pack_key(remote_addr: int, remote_port: int, local_addr: int, local_port: int) -> int:
    """The 4-tuple as one int (40 bytes for IPv4, where a tuple of four ints takes about 190);
    addresses are IPv4 ints or tagged IPv6 ints (at most 129 bits)."""
    if remote_addr <= _KEY_LOW_MASK and local_addr <= _KEY_LOW_MASK:
        # IPv4, the per-segment case while records exist: no high bits to place.
        return (
            (remote_addr << _KEY_PORT_BITS | remote_port) << _KEY_LOW_BITS | local_addr
        ) << _KEY_PORT_BITS | local_port
    low = (
        ((remote_addr & _KEY_LOW_MASK) << _KEY_PORT_BITS | remote_port) << _KEY_LOW_BITS
        | local_addr & _KEY_LOW_MASK
    ) << _KEY_PORT_BITS | local_port
    high = remote_addr >> _KEY_LOW_BITS << _KEY_HIGH_BITS | local_addr >> _KEY_LOW_BITS
    return high << _KEY_LOW_END | low


def unpack_key(key: int) -> tuple[int, int, int, int]:
    """``(remote_addr, remote_port, local_addr, local_port)`` from :func:`pack_key`."""
    local_port = key & _KEY_PORT_MASK
    key >>= _KEY_PORT_BITS
    local_addr = key & _KEY_LOW_MASK
    key >>= _KEY_LOW_BITS
    remote_port = key & _KEY_PORT_MASK
    key >>= _KEY_PORT_BITS
    remote_addr = key & _KEY_LOW_MASK
    high = key >> _KEY_LOW_BITS
    if high:  # IPv6: put the high bits of each address back
        local_addr |= (high & _KEY_HIGH_MASK) << _KEY_LOW_BITS
        remote_addr |= (high >> _KEY_HIGH_BITS) << _KEY_LOW_BITS
    return remote_addr, remote_port, local_addr, local_port


class _Tcb:
    """The unpacked numbers of a record, while it handles one segment. RFC 9293 names; the
    send side is all acknowledged (SND.UNA = SND.NXT = SND.MAX: our FIN was ACKed), and
    Last.ACK.sent is RCV.NXT (every ACK from TIME-WAIT acknowledges RCV.NXT)."""

    __slots__ = (
        "acked",
        "chal_count",
        "chal_start",
        "dsack",
        "flags",
        "max_snd_wnd",
        "rcv_nxt",
        "rcv_wnd",
        "rcv_wnd_next",
        "snd_nxt",
        "snd_wl1",
        "snd_wl2",
        "snd_wscale",
        "ts_offset",
        "ts_recent",
        "ts_recent_age",
        "window",
    )

    snd_nxt: int
    max_snd_wnd: int
    snd_wl1: int
    snd_wl2: int
    rcv_nxt: int
    rcv_wnd: int
    rcv_wnd_next: int
    ts_recent: int
    ts_offset: int
    chal_count: int
    window: int
    snd_wscale: int
    flags: int
    ts_recent_age: float
    chal_start: float

    def __init__(self, packed: bytes) -> None:
        (
            self.snd_nxt,
            self.max_snd_wnd,
            self.snd_wl1,
            self.snd_wl2,
            self.rcv_nxt,
            self.rcv_wnd,
            self.rcv_wnd_next,  # RCV.WND once our next ACK has advertised ``window``
            self.ts_recent,
            self.ts_offset,
            self.chal_count,
            self.window,  # the window field of our ACKs (receiver SWS avoidance settled it)
            self.snd_wscale,
            self.flags,
            self.ts_recent_age,
            self.chal_start,
        ) = _TCB.unpack(packed)
        self.dsack: tuple[int, int] | None = None  # a D-SACK block for the next ACK
        self.acked = False  # an ACK went out for this segment

    def pack(self) -> bytes:
        return _TCB.pack(
            self.snd_nxt,
            self.max_snd_wnd,
            self.snd_wl1,
            self.snd_wl2,
            self.rcv_nxt,
            self.rcv_wnd,
            self.rcv_wnd_next,
            self.ts_recent,
            self.ts_offset,
            self.chal_count,
            self.window,
            self.snd_wscale,
            self.flags,
            self.ts_recent_age,
            self.chal_start,
        )


class TimeWait:
    """One connection in TIME-WAIT; see the module docstring. ``key`` is the host's
    :func:`pack_key` of the 4-tuple, ``deadline`` when 2*MSL runs out, and ``queued`` how many
    entries the host's expiry queue holds for it (a restart queues it again)."""

    __slots__ = ("_tcb", "deadline", "key", "queued")

    state = State.TIME_WAIT

    def __init__(self, key: int, tcb: bytes, deadline: float) -> None:
        self.key = key
        self._tcb = tcb
        self.deadline = deadline
        self.queued = 0

    @classmethod
    def from_connection(cls, conn: Connection, key: int) -> TimeWait | None:
        """The record that answers for ``conn`` (in TIME-WAIT, its output already taken), or
        None when only the Connection itself can answer exactly: data held out of order (our
        ACKs would SACK it), an ACK still owed, or a scoreboard not yet settled."""
        if conn.state is not State.TIME_WAIT:
            return None
        # Plain attribute reads, not the properties: this runs once per connection.
        rcv = conn.rcv
        snd = conn.snd
        deadline = conn._timers.at[Timer.TIME_WAIT]
        if (
            deadline == _INF
            or rcv.buf._ooo
            or conn._out
            or rcv.ack_now
            or rcv._dsack is not None
            or rcv.last_ack_sent != rcv.rcv_nxt
            or snd.nxt != snd.una
            or snd.max_sent != snd.nxt
            or not conn.recovery.settled()
        ):
            return None
        rcv_nxt = rcv.rcv_nxt
        # RCV.WND as Receiver.rcv_wnd computes it, before and after our ACKs' window field
        rcv_wnd = ((rcv.rcv_adv - rcv_nxt + sq.HALF) & sq.MASK) - sq.HALF
        # The window field every ACK from now on carries (receiver SWS avoidance makes it the
        # same each time, as nothing is read any more); advertising it may move RCV.WND.
        window = rcv.window_field()
        flags = (
            (_TS_OK if rcv.ts_ok else 0)
            | (_SACK_OK if rcv.sack_ok else 0)
            | (_TS_STALE if rcv.ts_recent_stale else 0)
        )
        tcb = _TCB.pack(
            (snd.iss + snd.nxt) & sq.MASK,  # SND.NXT
            snd.max_snd_wnd,
            snd.snd_wl1,
            snd.snd_wl2,
            rcv_nxt,
            rcv_wnd if rcv_wnd > 0 else 0,
            max(((rcv.rcv_adv - rcv_nxt + sq.HALF) & sq.MASK) - sq.HALF, 0),
            rcv.ts_recent,
            conn._ts_offset,
            conn._chal_count,
            window,
            snd.snd_wscale,
            flags,
            rcv.ts_recent_age,
            conn._chal_start,
        )
        return cls(key, tcb, deadline)

    # -- read-only views, under the names a Connection uses --------------------------------

    @property
    def remote_addr(self) -> int:
        return unpack_key(self.key)[0]

    @property
    def remote_port(self) -> int:
        return unpack_key(self.key)[1]

    @property
    def local_addr(self) -> int:
        return unpack_key(self.key)[2]

    @property
    def local_port(self) -> int:
        return unpack_key(self.key)[3]

    @property
    def snd_una(self) -> int:
        return _Tcb(self._tcb).snd_nxt

    @property
    def snd_nxt(self) -> int:
        return _Tcb(self._tcb).snd_nxt

    @property
    def rcv_nxt(self) -> int:
        return _Tcb(self._tcb).rcv_nxt

    @property
    def rcv_wnd(self) -> int:
        return _Tcb(self._tcb).rcv_wnd

    @property
    def timestamps_ok(self) -> bool:
        return bool(_Tcb(self._tcb).flags & _TS_OK)

    @property
    def sack_ok(self) -> bool:
        return bool(_Tcb(self._tcb).flags & _SACK_OK)

    def next_deadline(self) -> float:
        return self.deadline

    def __repr__(self) -> str:
        _, rp, _, lp = unpack_key(self.key)
        t = _Tcb(self._tcb)
        return f"<TimeWait {lp}->{rp} una={t.snd_nxt} rcv_nxt={t.rcv_nxt} until={self.deadline:g}>"

    # -- the one input ---------------------------------------------------------------------

    def receive(
        self, seg: TcpSegment, now: float, config: TcpConfig, stats: Stats
    ) -> list[OutSegment]:
        """SEGMENT ARRIVES in TIME-WAIT (RFC 9293 3.10.7.4): what to send back, counted as the
        Connection counts it. The host has already handled a SYN that reuses the 4-tuple."""
        stats.tcp_segments_received += 1
        t = _Tcb(self._tcb)
        out: list[OutSegment] = []
        ack_now = self._arrive(t, seg, now, config, stats, out)
        if ack_now and not t.acked:
            # 3.10.7.4 seventh check: the ACK that trimmed or dropped text owes.
            self._ack(t, now, out, stats)
        stats.tcp_segments_sent += len(out)
        self._tcb = t.pack()
        return out

    def _arrive(
        self,
        t: _Tcb,
        seg: TcpSegment,
        now: float,
        config: TcpConfig,
        stats: Stats,
        out: list[OutSegment],
    ) -> bool:
        """The checks of 3.10.7.4 in their order; True when an ACK is owed at the end."""
        ctl = seg.control
        seg_seq = seg.seq
        plen = len(seg.payload)
        fin = ctl is Control.FIN
        seg_len = plen + (1 if fin or ctl is Control.SYN else 0)
        ts = seg.options.timestamps
        ts_ok = bool(t.flags & _TS_OK)
        if ts_ok and (ctl is Control.NONE or fin):
            if ts is None:
                # RFC 7323 3.2: once negotiated, a non-RST segment without TSopt is dropped.
                stats.tcp_drop_no_timestamp += 1
                return False
            if self._paws_reject(t, ts[0], now, stats):
                # RFC 7323 5.3 R1: an old duplicate (its TSval is behind TS.Recent) -> ACK, drop.
                stats.tcp_drop_paws += 1
                self._ack(t, now, out, stats)
                return False
        # First check (3.10.7.4): is the segment acceptable?
        if not acceptable(seg_seq, seg_len, t.rcv_nxt, t.rcv_wnd):
            if ctl is Control.RST:
                # RFC 5961 3.2: a RST outside the window is dropped silently.
                stats.tcp_drop_rst_out_of_window += 1
            elif ctl is Control.SYN:
                # RFC 5961 4.2: a SYN gets a challenge ACK whatever its sequence number.
                stats.tcp_drop_syn_synchronized += 1
                self._challenge_ack(t, now, config, stats, out)
            elif fin:
                # 3.10.7.4 eighth check: a retransmitted FIN is ACKed again and restarts 2*MSL.
                self._refin(t, now, config, stats, out)
            else:
                # 3.10.7.4 first check: an unacceptable segment is answered with an ACK; a
                # duplicate is reported as a D-SACK (RFC 2883).
                end = sq.add(seg_seq, seg_len)
                if plen and sq.le(end, t.rcv_nxt):
                    stats.tcp_dup_segments += 1
                    self._note_duplicate(t, seg_seq, sq.add(seg_seq, plen), stats)
                else:
                    stats.tcp_drop_out_of_window += 1
                self._ack(t, now, out, stats)
            return False
        if ts is not None and ts_ok:
            self._update_ts_recent(t, seg_seq, ts[0], now)
        if ctl is Control.RST:
            # RFC 1337: a RST in TIME-WAIT is ignored (TIME-WAIT assassination).
            stats.tcp_drop_rst_time_wait += 1
            return False
        if ctl is Control.SYN:
            # RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK, nothing else.
            stats.tcp_drop_syn_synchronized += 1
            self._challenge_ack(t, now, config, stats, out)
            return False
        if not seg.has_ack:
            # 3.10.7.4 fifth check: a segment without ACK is dropped.
            stats.tcp_drop_no_ack += 1
            return False
        if not self._on_ack(t, seg, now, config, stats, out):
            return False
        if seg.urg:
            # 3.10.7.4 sixth check / RFC 6093: counted as the Connection counts it.
            stats.tcp_urgent_received += 1
        if not plen and not fin:
            return False
        return self._text(t, seg_seq, plen, fin, now, config, stats, out)

    def _on_ack(
        self,
        t: _Tcb,
        seg: TcpSegment,
        now: float,
        config: TcpConfig,
        stats: Stats,
        out: list[OutSegment],
    ) -> bool:
        """3.10.7.4 fifth check with nothing in flight; False if the segment is dropped."""
        ack = seg.ack
        snd_una = t.snd_nxt
        if sq.gt(ack, snd_una):
            # RFC 5961 5.2: ACK of data never sent -> challenge ACK and drop.
            stats.tcp_drop_ack_unsent += 1
            self._challenge_ack(t, now, config, stats, out)
            return False
        if sq.lt(ack, sq.add(snd_una, -t.max_snd_wnd)):
            # RFC 5961 5.2: ACK older than SND.UNA - MAX.SND.WND -> challenge ACK and drop.
            stats.tcp_drop_ack_old += 1
            self._challenge_ack(t, now, config, stats, out)
            return False
        if ack != snd_una:
            return True  # an old ACK: nothing to learn from it
        wnd = seg.window << t.snd_wscale
        # SND.WL1/WL2: the window update rule still keeps MAX.SND.WND for the check above.
        if sq.lt(t.snd_wl1, seg.seq) or (t.snd_wl1 == seg.seq and sq.le(t.snd_wl2, ack)):
            t.snd_wl1 = seg.seq
            t.snd_wl2 = ack
            if wnd > t.max_snd_wnd:
                t.max_snd_wnd = wnd
        blocks = seg.options.sack_blocks
        if blocks and t.flags & _SACK_OK:
            # RFC 2018 3 / RFC 2883 4: with everything acknowledged, a valid first block can
            # only be a D-SACK; every block beyond SND.MAX or too far back is invalid.
            floor = -max(t.max_snd_wnd, _MAX_WINDOW_FIELD)
            for i, (left, right) in enumerate(blocks):
                lo = sq.sub(left, snd_una)
                hi = sq.sub(right, snd_una)
                if hi <= lo or hi > 0 or lo < floor:
                    stats.tcp_sack_invalid += 1
                elif i == 0:
                    stats.tcp_dsack_received += 1
        return True

    def _text(
        self,
        t: _Tcb,
        seg_seq: int,
        plen: int,
        fin: bool,
        now: float,
        config: TcpConfig,
        stats: Stats,
        out: list[OutSegment],
    ) -> bool:
        """Seventh and eighth checks (3.10.7.4): after the peer's FIN no text is taken."""
        ack_now = False
        rcv_nxt = t.rcv_nxt
        front = sq.sub(rcv_nxt, seg_seq)
        if front > 0:
            # bytes before RCV.NXT are old: a duplicate, reported as a D-SACK (RFC 2883)
            if front > plen:
                fin = False  # the FIN itself is old
                front = plen
            stats.tcp_dup_bytes_trimmed += front
            if front:
                self._note_duplicate(t, seg_seq, sq.add(seg_seq, front), stats)
                ack_now = True
            plen -= front
            seg_seq = rcv_nxt
        room = t.rcv_wnd - sq.sub(seg_seq, rcv_nxt)
        if plen > room:
            # bytes beyond RCV.WND are cut off
            stats.tcp_window_trimmed_bytes += plen - max(room, 0)
            plen = max(room, 0)
            fin = False
            ack_now = True
        if plen:
            # 3.10.7.4 seventh check: after the peer's FIN there is no more text to accept.
            stats.tcp_drop_data_after_fin += 1
            return True
        if fin:
            self._refin(t, now, config, stats, out)
        return ack_now

    # -- the pieces ------------------------------------------------------------------------

    @staticmethod
    def _paws_reject(t: _Tcb, tsval: int, now: float, stats: Stats) -> bool:
        """RFC 7323 5.3 R1, with 5.5's 24-day limit on TS.Recent."""
        if t.flags & _TS_STALE or not sq.lt(tsval, t.ts_recent):
            return False
        if now - t.ts_recent_age > PAWS_IDLE:
            t.flags |= _TS_STALE
            stats.tcp_paws_idle_reset += 1
            return False
        return True

    @staticmethod
    def _update_ts_recent(t: _Tcb, seg_seq: int, tsval: int, now: float) -> None:
        """RFC 7323 4.3 (2) / 5.3 R3 (Last.ACK.sent is RCV.NXT)."""
        if (t.flags & _TS_STALE or sq.ge(tsval, t.ts_recent)) and sq.le(seg_seq, t.rcv_nxt):
            t.ts_recent = tsval
            t.ts_recent_age = now
            t.flags &= ~_TS_STALE

    @staticmethod
    def _note_duplicate(t: _Tcb, seg_seq: int, seg_end: int, stats: Stats) -> None:
        if t.flags & _SACK_OK and sq.lt(seg_seq, seg_end):
            t.dsack = (seg_seq, seg_end)
            stats.tcp_dsack_sent += 1

    def _refin(
        self, t: _Tcb, now: float, config: TcpConfig, stats: Stats, out: list[OutSegment]
    ) -> None:
        """3.10.7.4 eighth check, TIME-WAIT: ACK the FIN again and restart the 2*MSL timeout."""
        stats.tcp_time_wait_restarted += 1
        self._ack(t, now, out, stats)
        self.deadline = now + 2 * config.msl

    def _challenge_ack(
        self, t: _Tcb, now: float, config: TcpConfig, stats: Stats, out: list[OutSegment]
    ) -> None:
        """RFC 5961 7: at most ``challenge_ack_limit`` per window, per connection."""
        if now - t.chal_start >= config.challenge_ack_window:
            t.chal_start = now
            t.chal_count = 0
        if t.chal_count >= config.challenge_ack_limit:
            stats.tcp_challenge_acks_suppressed += 1
            return
        t.chal_count += 1
        stats.tcp_challenge_acks += 1
        self._ack(t, now, out, stats)

    @staticmethod
    def _ack(t: _Tcb, now: float, out: list[OutSegment], stats: Stats) -> None:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with a pending D-SACK and the timestamps."""
        blocks = (t.dsack,) if t.dsack is not None else ()
        options: TcpOptions
        if t.flags & _TS_OK:
            tsval = (int(now * TS_HZ) + t.ts_offset) & sq.MASK
            options = TcpOptions(sack_blocks=blocks, timestamps=(tsval, t.ts_recent))
        else:
            options = TcpOptions(sack_blocks=blocks) if blocks else NO_OPTIONS
        out.append(OutSegment(t.snd_nxt, t.rcv_nxt, ACK, t.window, options, b""))
        stats.tcp_acks_sent += 1
        t.dsack = None
        t.acked = True
        t.rcv_wnd = t.rcv_wnd_next

    def expire(self, stats: Stats) -> None:
        """2*MSL have passed (3.10.8 / RFC 9293 3.6): TIME-WAIT -> CLOSED, counted as the
        Connection counts it."""
        stats.tcp_time_wait_expired += 1
        stats.tcp_closed += 1
