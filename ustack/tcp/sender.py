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
"""

from __future__ import annotations

from ustack.tcp.buffers import SendBuffer
from ustack.tcp.config import TcpConfig
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer, Timers
from ustack.wire import seq as sq

# Why the last call to next_new sent nothing (or less than asked).
LIMIT_NONE = 0
LIMIT_RWND = 1  # the peer's window
LIMIT_CWND = 2  # the congestion budget
LIMIT_APP = 3  # no data, or Nagle holding a short segment


class Sender:
    __slots__ = (
        "buf",
        "buf_u",
        "config",
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
        "snd_mss",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "stats",
        "timers",
        "una",
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
        self.write_blocked = False
        self.limit = LIMIT_NONE

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

    def next_new(self, budget: int, mss: int) -> tuple[int, bool]:
        """The next new segment, as ``(length, fin)`` (``(0, False)`` for none): what the MSS,
        the peer's window, ``budget`` (the congestion window's room), Nagle and sender SWS
        avoidance allow. Records why it stopped in :attr:`limit`."""
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
