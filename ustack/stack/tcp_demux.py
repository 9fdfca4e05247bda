"""The host's TCP demultiplexer: connections by 4-tuple, listeners, TIME-WAIT records, timers.

Theory of operation. A :class:`TcpDemux` holds a host's TCP: its connections, filed by 4-tuple
``(remote_addr, remote_port, local_addr, local_port)``, its listeners, and the compact records of
released connections in TIME-WAIT. The network layer below
(:class:`~ustack.stack.network.IpLayer`) hands it each parsed segment (``segment``) and each ICMP
error that quotes a TCP segment of ours (``icmp_error``); it knows nothing of IP beyond the
addresses, plain ints in the key (an IPv6 one tagged, see :mod:`ustack.wire.addr`, which only
picks the connection's config: the IPv6 MSS), and the pseudo-header sum that checked the
segment. A segment is demultiplexed in one dict lookup; one for no connection goes to a
TIME-WAIT record, else to the listener on its port (which creates a SYN-RECEIVED connection for
a SYN) if it takes the segment's family, else gets the closed-port reply of RFC 9293 3.10.7.1.
An ICMP error goes to the connection it quotes once RFC 5927's checks pass (see
:mod:`~ustack.stack.icmp_errors`). Segments go down through one narrow interface,
:class:`SegmentOutput`: the connections' output is appended to the network layer's
list by ``collect``, calling its builders directly; a segment sent outside a connection (a RST,
a cookie's SYN,ACK, a TIME-WAIT record's answer) is handed to ``send_segment``.

Bookkeeping scales with activity, not with the number of connections: a connection that changed
(a segment arrived, a timer fired, or the application called into it -- which the connection
reports itself through its ``on_change`` hook) is put in two insertion-ordered dicts, one for "may
have output" and one for "deadline may have moved". ``collect`` walks the first,
``next_deadline`` refreshes the second into a heap of ``(deadline, seq, entry)``; an entry whose
deadline moved is not removed but invalidated (its ``seq`` no longer matches), and the heap is
rebuilt when stale entries outnumber live ones. Nothing is ever iterated in an order that depends
on memory addresses, so the same inputs give the same packets, byte for byte.

TIME-WAIT is cheap for connections the application has released (``release()``; the asyncio
transport does it after ``connection_lost``): once such a connection is in TIME-WAIT the demux
forgets the Connection and keeps a :class:`~ustack.tcp.timewait.TimeWait` record of under 300
bytes, which answers every segment as the Connection would have, in a table of its own (looked
at only for segments no connection takes) and a FIFO of deadlines (2*MSL from now is always
the latest one, so no heap is needed). Its end is counted but not reported: no Closed event
names a Connection nobody holds. ``connections`` and ``lookup`` return the records too.

SYN cookies (RFC 4987 3.6, :mod:`~ustack.stack.syncookie`): a listener whose SYN queue is full
(``TcpConfig.syn_cookies="auto"``), or every listener (``"always"``), answers a SYN with a
SYN,ACK whose ISN is a signed cookie, and keeps nothing; an ACK that brings a valid cookie back
creates the connection straight in ESTABLISHED (``Connection.open_from_cookie``), queued for
accept like any other. The key is ``cookie_secret``, else derived from ``secret``.

Forward mode (``ustack forward``, see :mod:`ustack.forward`): ``listen_transparent`` makes a
catch-all listener, looked at only for a segment no connection, TIME-WAIT record or port
listener takes -- so the normal path pays nothing for it. There the SYN's destination, whatever
it is, becomes the connection's local address (the network layer lets such packets up only in
this mode, see ``IpLayer.enable_forwarding``). A SYN is not answered at once: it is kept, bounded
by the listener's ``syn_backlog``, and reported as a ``ConnectionRequested`` event, so that the
relay can first connect to the real destination; ``Listener.answer`` then runs the kept SYN
through LISTEN as usual (the SYN,ACK goes out and the caller owns the SYN-RECEIVED connection,
which no accept queue holds), and ``Listener.refuse`` sends the RST a closed port would have.
Retransmitted SYNs meanwhile are dropped (counted). An answered connection reset in SYN-RECEIVED
has no LISTEN to return to (RFC 9293 3.10.7.4), so it is reported ``Reset`` and ``Closed`` like
an active open's.

Whoever drives the host (the asyncio driver, the simulator) sets ``on_wakeup`` (through
``Host.on_wakeup``): the demux calls it when an application call left something to send or a new
deadline, so the driver can flush.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import heapq
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ustack.stack import icmp_errors
from ustack.stack.config import HostConfig
from ustack.stack.events import (
    ConnectionAccepted,
    ConnectionRequested,
    DatagramReceived,
    HostEvent,
)
from ustack.stack.isn import IsnSource, Rfc6528Isn
from ustack.stack.network import Key, OutPacket
from ustack.stack.syncookie import LIFETIME as COOKIE_LIFETIME
from ustack.stack.syncookie import SynCookies, decode_tsecr, encode_tsval
from ustack.tcp.config import DEFAULT_PEER_MSS, TcpConfig
from ustack.tcp.connection import TS_HZ, Connection, OutSegment, Tracer, negotiate, syn_ack_options
from ustack.tcp.events import Closed, Established, Event, Reset
from ustack.tcp.receiver import MAX_WINDOW_FIELD
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.tcp.timewait import TimeWait, pack_key
from ustack.wire import seq, tcp
from ustack.wire.tcp import NO_OPTIONS, Control

_COOKIE_KEY_LABEL = b"ustack syn cookie key"  # derives the cookie key from the ISN secret
_MIN_MSS = 536  # RFC 9293 3.7.1: no segment this short can be a super-segment
# Forward mode: datagrams waiting in the event queue for the relay at most (the driver empties
# the queue after every batch of packets, so only a host nobody drives ever reaches it).
MAX_QUEUED_DATAGRAMS = 1024


class SegmentOutput(Protocol):
    """What the demux needs of the network layer below it: a segment on a 4-tuple made into a
    datagram. ``tso``: a super-segment leaves whole, marked for the link to cut
    (``build_segment`` with the MSS as ``gso_size``); else ``cut_segment`` cuts it here."""

    tso: bool

    def build_segment(self, key: Key, s: OutSegment, gso_size: int = 0) -> OutPacket: ...

    def cut_segment(self, key: Key, s: OutSegment, mss: int, out: list[OutPacket]) -> None: ...

    def send_segment(self, key: Key, s: OutSegment) -> None: ...

    @property
    def output_pending(self) -> bool: ...


class _Entry:
    """The demux's record of one connection: where it is filed and its registered deadline."""

    __slots__ = ("alive", "conn", "deadline", "demux", "heap_seq", "key", "listener", "released")

    def __init__(
        self, demux: TcpDemux, conn: Connection, key: Key, listener: Listener | None
    ) -> None:
        self.demux = demux
        self.conn = conn
        self.key = key
        # The listener whose SYN or accept queue holds this connection, until accept().
        self.listener = listener
        self.deadline: float | None = None
        self.heap_seq = -1
        self.alive = True
        # The application let go of the connection (Host.release): in TIME-WAIT it becomes a
        # compact record.
        self.released = False

    def __call__(self) -> None:
        """The connection's ``on_change`` hook: the application called into it. (The entry
        itself is the hook: a bound method would be one more object per connection.)"""
        demux = self.demux
        demux._touched(self)
        if demux.on_wakeup is not None:
            demux.on_wakeup()

    changed = __call__


class Listener:
    """A passive open on one port: a bounded SYN-RECEIVED queue and a bounded accept queue.

    ``backlog`` bounds the accept queue (established, not yet accepted) and ``syn_backlog`` the
    half-open connections. A SYN arriving while the SYN queue is full is answered with a SYN
    cookie (RFC 4987 3.6, :mod:`~ustack.stack.syncookie`) and no state, as
    ``TcpConfig.syn_cookies`` says ("auto": only then; "always": every SYN), or else dropped and
    counted (``listen_syn_queue_overflow``). The ACK completing a handshake -- or returning a
    cookie -- while the accept queue is full is dropped and counted
    (``listen_accept_queue_overflow``), so the peer retransmits it: Linux's behaviour without
    ``tcp_abort_on_overflow``. ``cookie_at`` is when this listener last sent a cookie: in "auto"
    an ACK to it is checked as a cookie only while one may still come back.

    ``family`` is the IP version it takes: ``None`` both (a Linux AF_INET6 socket bound to
    ``::``), 4 or 6 only that one (an AF_INET socket, or AF_INET6 with IPV6_V6ONLY). A segment
    of the other family finds no socket, so it gets the closed-port reply of RFC 9293 3.10.7.1
    and is counted (``listen_wrong_family``), as the kernel answers it. The listener is still
    per port: a port takes one listener, whatever its family.
    """

    __slots__ = (
        "_accept_queue",
        "_demux",
        "_requests",
        "_syn_queue",
        "_tag",
        "backlog",
        "closed",
        "cookie_at",
        "family",
        "port",
        "syn_backlog",
        "transparent",
    )

    def __init__(
        self,
        demux: TcpDemux,
        port: int,
        backlog: int,
        syn_backlog: int,
        family: int | None = None,
        *,
        transparent: bool = False,
    ) -> None:
        self._demux = demux
        # Forward mode's catch-all listener (port 0): SYNs to any address and port that nothing
        # else takes wait in ``_requests`` until answered or refused (see the module docstring).
        self.transparent = transparent
        self._requests: dict[Key, tcp.TcpSegment] = {}
        self.port = port
        self.family = family
        # The family as the address tag it must carry (addr >> 128: 0 IPv4, 1 IPv6), or None.
        self._tag = None if family is None else int(family == 6)
        self.backlog = backlog
        self.syn_backlog = syn_backlog
        self._syn_queue: dict[_Entry, None] = {}  # insertion-ordered, never hash-ordered
        self._accept_queue: deque[_Entry] = deque()
        self.closed = False
        self.cookie_at: float | None = None

    @property
    def half_open(self) -> int:
        return len(self._syn_queue)

    @property
    def pending(self) -> int:
        return len(self._accept_queue)

    def accept(self) -> Connection | None:
        """The oldest established connection not yet accepted, or ``None``."""
        if not self._accept_queue:
            return None
        entry = self._accept_queue.popleft()
        entry.listener = None
        self._demux.stats.listen_accepted += 1
        return entry.conn

    def takes(self, local_addr: int) -> bool:
        """Whether a segment to ``local_addr`` (the core's tagged int) is of this family."""
        return self._tag is None or local_addr >> 128 == self._tag

    def close(self, now: float) -> None:
        """Stop listening; connections not yet accepted are reset (RFC 9293 3.10.4 ABORT)."""
        self._demux._close_listener(self, now)

    @property
    def requests(self) -> int:
        """Forward mode: SYNs reported (``ConnectionRequested``) and not yet answered."""
        return len(self._requests)

    def answer(self, key: Key, now: float) -> Connection | None:
        """Forward mode: answer the SYN kept for ``key`` -- its SYN,ACK goes out with the next
        output -- and return the connection, in SYN-RECEIVED, now the caller's (no accept queue
        holds it); None (counted) if no request for ``key`` is pending (the listener closed)."""
        return self._demux._answer(self, key, now)

    def refuse(self, key: Key, now: float) -> None:
        """Forward mode: answer the SYN kept for ``key`` with the RST of a closed port (RFC 9293
        3.10.7.1): the destination refused the relay, so the client is refused too."""
        self._demux._refuse(self, key)

    def __repr__(self) -> str:
        if self.transparent:
            return f"<Listener transparent requests={self.requests}>"
        family = "" if self.family is None else f" family={self.family}"
        return (
            f"<Listener port={self.port}{family} half_open={self.half_open} pending={self.pending}>"
        )


class TcpDemux:
    """The TCP layer of one host; see the module docstring."""

    def __init__(
        self,
        ip: SegmentOutput,
        *,
        config: TcpConfig,
        host_config: HostConfig,
        stats: Stats,
        secret: bytes | None,
        isn: IsnSource | None,
        cookie_secret: bytes | None,
        tracer: Tracer | None,
        config6: TcpConfig | None = None,
    ) -> None:
        self.config = config
        # Connections over IPv6 (a tagged remote address, see ustack.wire.addr) get their own
        # config: the same settings with the MSS and super-segment limit of the IPv6 header.
        self.config6 = config6 if config6 is not None else config
        self.host_config = host_config
        self.stats = stats
        self._hasher: Rfc6528Isn | None = Rfc6528Isn(secret) if secret is not None else None
        if isn is not None:
            self._isn: IsnSource = isn
        elif self._hasher is not None:
            self._isn = self._hasher
        else:
            raise ValueError("Host needs secret= (e.g. os.urandom(16)) or an isn= source")
        # RFC 4987 3.6: SYN cookies are signed with a key of their own; without one, derived
        # from the ISN secret under a distinct label (deterministic for tests, never the ISN
        # key itself). A host given neither (only an isn= source) has nothing to sign with, so
        # its listeners drop SYNs to a full queue as with "never".
        if cookie_secret is None and secret is not None:
            cookie_secret = hashlib.blake2s(_COOKIE_KEY_LABEL, key=secret).digest()
        self._cookies = SynCookies(cookie_secret) if cookie_secret is not None else None
        self._cookie_mode = config.syn_cookies if self._cookies is not None else "never"
        if config.syn_cookies == "always" and self._cookies is None:
            raise ValueError('syn_cookies="always" needs secret= or cookie_secret=')
        # The network layer's builders, bound once: collect() calls them per segment.
        self._tso = ip.tso
        self._build_segment = ip.build_segment
        self._cut_segment = ip.cut_segment
        self._send = ip.send_segment
        self._ip = ip
        self._conns: dict[Key, _Entry] = {}
        self._listeners: dict[int, Listener] = {}
        # Forward mode's catch-all listener, if any (see listen_transparent).
        self._transparent: Listener | None = None
        self._ports_in_use: dict[int, int] = {}
        self._next_ephemeral = 0
        self._events: deque[Event | HostEvent] = deque()
        # Insertion-ordered (dicts, not sets): same inputs, same order of output. The network
        # layer looks at ``want_output`` (no call) to know whether collect() has work.
        self.want_output: dict[_Entry, None] = {}
        self._want_timer: dict[_Entry, None] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._heap_seq = 0
        # next_deadline()'s answer, kept between changes (_next_ok): a change that can only
        # bring the next deadline earlier updates it in place; one that may move it later (the
        # earliest timer cleared or moved, a record or connection gone) invalidates it.
        self._next: float | None = None
        self._next_ok = False
        # Released connections in TIME-WAIT, as compact records (see release()), by packed
        # 4-tuple; and the same records in expiry order (a record queued again after a restart
        # counts its entries in ``queued``; the stale ones are skipped).
        self._timewait: dict[int, TimeWait] = {}
        self._tw_queue: deque[TimeWait] = deque()
        # Given to every connection at birth, so a trace starts at its first transition.
        self.tracer = tracer
        # Set by the driver (through Host.on_wakeup): called when an application call left work
        # to do (see the module docstring).
        self.on_wakeup: Callable[[], None] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def connections(self) -> list[Connection | TimeWait]:
        """Every connection the host still tracks, TIME-WAIT included: a released connection
        in TIME-WAIT is there as its :class:`~ustack.tcp.timewait.TimeWait` record."""
        conns: list[Connection | TimeWait] = [e.conn for e in self._conns.values()]
        conns.extend(self._timewait.values())
        return conns

    def lookup(
        self, remote_addr: int, remote_port: int, local_addr: int, local_port: int
    ) -> Connection | TimeWait | None:
        """The connection on this 4-tuple (a TIME-WAIT record once released), or None."""
        entry = self._conns.get((remote_addr, remote_port, local_addr, local_port))
        if entry is not None:
            return entry.conn
        return self._timewait.get(pack_key(remote_addr, remote_port, local_addr, local_port))

    def release(self, conn: Connection, now: float) -> None:
        """The application is done with ``conn`` and will not look at it again (the asyncio
        transport says so after ``connection_lost``). Nothing changes on the wire or in the
        counters; but once the connection is in TIME-WAIT -- now, or when it gets there -- the
        host keeps only a compact :class:`~ustack.tcp.timewait.TimeWait` record for the rest of
        the 2*MSL, and no ``Closed`` event follows (there is no Connection left to name). A
        connection the application never releases keeps its TIME-WAIT as before, ``Closed``
        included; so does every connection of a host with a tracer, whose trace ends with the
        transition to CLOSED."""
        entry = self._conns.get(
            (conn.remote_addr, conn.remote_port, conn.local_addr, conn.local_port)
        )
        if entry is None or entry.conn is not conn:
            return
        entry.released = True
        if conn.state is State.TIME_WAIT:
            self._retire(entry, now)
            if self._ip.output_pending and self.on_wakeup is not None:
                self.on_wakeup()

    def listen(
        self,
        port: int,
        backlog: int = 128,
        *,
        syn_backlog: int | None = None,
        family: int | None = None,
    ) -> Listener:
        """Accept connections on ``port`` at every address of this host of ``family`` (4 or 6;
        None: both). One listener per port, whatever its family (see :class:`Listener`)."""
        if not 1 <= port <= 65535:
            raise ValueError(f"bad port {port}")
        if backlog < 1 or (syn_backlog is not None and syn_backlog < 1):
            raise ValueError("backlog must be at least 1")
        if family not in (None, 4, 6):
            raise ValueError(f"family must be None, 4 or 6, got {family!r}")
        if port in self._listeners:
            raise OSError(errno.EADDRINUSE, f"port {port} is already listening")
        listener = Listener(self, port, backlog, syn_backlog if syn_backlog else backlog, family)
        self._listeners[port] = listener
        return listener

    def listen_transparent(self, syn_backlog: int = 128) -> Listener:
        """Forward mode: a catch-all listener for every segment to any address and port that no
        connection or port listener takes; its SYNs are reported as ``ConnectionRequested`` and
        wait for ``answer`` or ``refuse`` (at most ``syn_backlog`` of them, and connections it
        answered still in SYN-RECEIVED, at a time). One per host."""
        if syn_backlog < 1:
            raise ValueError("syn_backlog must be at least 1")
        if self._transparent is not None:
            raise OSError(errno.EADDRINUSE, "this host already has a transparent listener")
        listener = Listener(self, 0, 1, syn_backlog, None, transparent=True)
        self._transparent = listener
        return listener

    def post_datagram(self, src: int, src_port: int, dst: int, dst_port: int, data: bytes) -> None:
        """Forward mode: the network layer's UDP datagram for the relay, reported as a
        ``DatagramReceived`` event to the owner of the transparent listener (bounded: see
        ``MAX_QUEUED_DATAGRAMS``)."""
        listener = self._transparent
        stats = self.stats
        if listener is None or len(self._events) >= MAX_QUEUED_DATAGRAMS:
            stats.forward_udp_queue_full += 1
            return
        stats.forward_udp_delivered += 1
        self._events.append(DatagramReceived(listener, src, src_port, dst, dst_port, data))

    def connect(
        self,
        remote_addr: int,
        remote_port: int,
        local_addr: int,
        now: float,
        local_port: int | None = None,
    ) -> Connection:
        """Active open from ``local_addr`` (the network layer has checked both addresses and
        the caller the remote port): a connection in SYN-SENT whose SYN the next output
        carries."""
        if local_port is None:
            local_port = self._ephemeral_port(local_addr, remote_addr, remote_port)
        elif not 1 <= local_port <= 65535:
            raise ValueError(f"bad port {local_port}")
        key = (remote_addr, remote_port, local_addr, local_port)
        if key in self._conns or pack_key(*key) in self._timewait:
            raise OSError(errno.EADDRINUSE, "a connection with this 4-tuple exists")
        conn = self._new_connection(key, now)
        self._add(key, conn, None)
        conn.open_active(now)
        return conn

    def collect(self, out: list[OutPacket], now: float) -> None:
        """Append the datagrams of every connection that may have output to ``out``."""
        if not self.want_output:
            return
        pending = self.want_output
        self.want_output = {}
        for entry in pending:
            conn = entry.conn
            segments = conn.segments_to_send(now)
            if segments:
                key = entry.key
                for s in segments:
                    if len(s.payload) > _MIN_MSS:
                        mss = conn.snd.mss_with(s.options)
                        if len(s.payload) > mss:
                            if self._tso:
                                out.append(self._build_segment(key, s, mss))
                            else:
                                self._cut_segment(key, s, mss, out)
                            continue
                    out.append(self._build_segment(key, s))
                self._drain_events(entry)
                if entry.alive:
                    # Sending arms the retransmission timer.
                    self._want_timer[entry] = None

    def next_deadline(self) -> float | None:
        """The earliest deadline of the connections and TIME-WAIT records (cached in _next)."""
        if self._want_timer:
            self._refresh_deadlines()
        if self._next_ok:
            return self._next
        heap = self._heap
        best: float | None = None
        while heap:
            t, s, entry = heap[0]
            if entry.heap_seq == s and entry.alive:
                best = t
                break
            heapq.heappop(heap)
        if self._tw_queue:
            rec = self._tw_front()
            if rec is not None and (best is None or rec.deadline < best):
                best = rec.deadline
        self._next = best
        self._next_ok = True
        return best

    def on_deadline(self, now: float) -> None:
        """Run the timers of the connections and TIME-WAIT records that are due (and only
        those)."""
        if self._want_timer:
            self._refresh_deadlines()
        self._next_ok = False
        heap = self._heap
        due: list[_Entry] = []
        while heap and heap[0][0] <= now:
            _, s, entry = heapq.heappop(heap)
            if entry.heap_seq != s or not entry.alive:
                continue
            entry.heap_seq = -1
            entry.deadline = None
            due.append(entry)
        for entry in due:
            entry.conn.on_deadline(now)
            self._touched(entry)
        if self._tw_queue:
            self._expire_time_wait(now)

    def next_event(self) -> Event | HostEvent | None:
        return self._events.popleft() if self._events else None

    # -- input ------------------------------------------------------------------------------

    def icmp_error(
        self, type_: int, code: int, mtu: int, key: Key, seg_seq: int, now: float
    ) -> bool:
        """An ICMP error quoting a TCP segment we sent on ``key`` (sequence number
        ``seg_seq``), already checked by the network layer: it goes to the connection if RFC
        5927 4.1's checks pass (see :mod:`ustack.stack.icmp_errors`), and True says it did;
        each failed check is a counted drop. ``mtu`` is the path MTU a "fragmentation needed"
        reports (0 for other errors)."""
        stats = self.stats
        entry = self._conns.get(key)
        if entry is None:
            if self._timewait and pack_key(*key) in self._timewait:
                stats.icmp_error_time_wait += 1
            else:
                stats.icmp_error_no_connection += 1
            return False
        conn = entry.conn
        if conn.state is State.TIME_WAIT:
            # Everything we sent is acknowledged; nothing is left that the error could be about.
            stats.icmp_error_time_wait += 1
            return False
        if not icmp_errors.sequence_acceptable(conn, seg_seq):
            stats.icmp_error_out_of_window += 1
            return False
        conn.icmp_error(type_, code, mtu, now)
        self._touched(entry)
        return True

    def segment(self, seg: tcp.TcpSegment, now: float) -> None:
        """Demultiplex one segment from the network layer (see the module docstring)."""
        stats = self.stats
        if seg.src_port == 0 or seg.dst_port == 0:
            stats.tcp_bad_port += 1
            return
        key = (seg.src, seg.src_port, seg.dst, seg.dst_port)
        entry = self._conns.get(key)
        if entry is not None:
            conn = entry.conn
            listener = entry.listener
            if (
                listener is not None
                and conn.state is State.SYN_RECEIVED
                and seg.has_ack
                and seg.control is not Control.RST
                and len(listener._accept_queue) >= listener.backlog
            ):
                stats.listen_accept_queue_overflow += 1
                return
            if not (
                conn.state is State.TIME_WAIT
                and seg.control is Control.SYN
                and not seg.has_ack
                and self._reuse_time_wait(entry, seg)
            ):
                stats.tcp_demuxed += 1
                conn.receive(seg, now)
                self._touched(entry)
                if entry.released and conn.state is State.TIME_WAIT:
                    # Released and now in TIME-WAIT: the rest is a compact record's job.
                    self._retire(entry, now)
                return
        elif self._timewait and self._time_wait_segment(key, seg, now):
            return
        listener = self._listeners.get(seg.dst_port)
        if listener is None:
            if self._transparent is None:
                self._reply_closed(key, seg)
            else:
                self._receive_transparent(self._transparent, key, seg)
        elif not listener.takes(seg.dst):
            # A listener of the other family is no socket for this segment: closed port.
            stats.listen_wrong_family += 1
            self._reply_closed(key, seg)
        else:
            self._receive_listen(listener, key, seg, now)

    def _listening(self, key: Key) -> bool:
        """Whether a listener on ``key``'s local port takes its family: only then may a SYN
        end a TIME-WAIT (a listener of the other family would answer it with a RST)."""
        listener = self._listeners.get(key[3])
        if listener is None:
            return self._transparent is not None
        return listener.takes(key[2])

    def _reuse_time_wait(self, entry: _Entry, seg: tcp.TcpSegment) -> bool:
        """RFC 9293 3.10.7.4 / RFC 6191: a SYN to a TIME-WAIT connection may start a new
        incarnation when its sequence number is above RCV.NXT (so no old duplicate can be
        mistaken for new data) and someone listens on the port. The old connection is forgotten
        and reported Closed; the SYN then goes to the listener."""
        conn = entry.conn
        if not self._listening(entry.key) or not seq.gt(seg.seq, conn.rcv_nxt):
            return False
        self.stats.time_wait_reused += 1
        self._forget(entry)
        self._events.append(Closed(conn))
        return True

    def _time_wait_segment(self, key: Key, seg: tcp.TcpSegment, now: float) -> bool:
        """A segment for a TIME-WAIT record, if there is one: the record answers as the
        Connection would have (True), or a SYN above RCV.NXT to a listening port ends it and
        goes on to the listener (False), as in :meth:`_reuse_time_wait` -- but unreported,
        the application having released the connection long ago."""
        rec = self._timewait.get(pack_key(*key))
        if rec is None:
            return False
        stats = self.stats
        if (
            seg.control is Control.SYN
            and not seg.has_ack
            and self._listening(key)
            and seq.gt(seg.seq, rec.rcv_nxt)
        ):
            stats.time_wait_reused += 1
            self._drop_time_wait(rec)
            return False
        stats.tcp_demuxed += 1
        deadline = rec.deadline
        for s in rec.receive(seg, now, self.config, stats):
            self._send(key, s)
        if rec.deadline != deadline:
            self._tw_enqueue(rec)  # a retransmitted FIN restarted the 2*MSL
        return True

    def _receive_listen(
        self, listener: Listener, key: Key, seg: tcp.TcpSegment, now: float
    ) -> None:
        """RFC 9293 3.10.7.2, SEGMENT ARRIVES in LISTEN, for a port with no connection yet;
        with SYN cookies (RFC 4987 3.6) a SYN may be answered without state, and an ACK may be
        the return of such an answer."""
        stats = self.stats
        if seg.control is Control.RST:
            # First check: "An incoming RST segment could not be valid ... it should be ignored."
            stats.listen_drop_rst += 1
            return
        if seg.has_ack:
            mode = self._cookie_mode
            if seg.control is not Control.SYN and (
                mode == "always"
                or (
                    mode == "auto"
                    and listener.cookie_at is not None
                    and now - listener.cookie_at <= COOKIE_LIFETIME
                )
            ):
                # RFC 4987 3.6: this listener has answered SYNs with cookies (lately, in
                # "auto"), so an ACK to it may bring one back.
                self._cookie_ack(listener, key, seg, now)
                return
            # Second check: "Any acknowledgment is bad if it arrives on a connection still in
            # the LISTEN state. An acceptable reset segment should be formed."
            stats.listen_rst_for_ack += 1
            self._emit_rst(key, seg.ack, 0, tcp.RST)
            return
        if seg.control is not Control.SYN:
            # Fourth check: "Any other control or text-bearing segment ... drop it."
            stats.listen_drop_no_syn += 1
            return
        full = len(listener._syn_queue) >= listener.syn_backlog
        mode = self._cookie_mode
        if mode == "always" or (full and mode == "auto"):
            # RFC 4987 3.6: answer with a cookie and keep nothing, so a flood of SYNs that
            # never complete cannot lock real clients out.
            self._send_cookie(listener, key, seg, now)
            return
        if full:
            stats.listen_syn_queue_overflow += 1
            return
        stats.listen_syn += 1
        conn = self._new_connection(key, now)
        entry = self._add(key, conn, listener)
        listener._syn_queue[entry] = None
        conn.open_passive(now)
        conn.receive(seg, now)
        self._touched(entry)

    def _receive_transparent(self, listener: Listener, key: Key, seg: tcp.TcpSegment) -> None:
        """Forward mode: a segment for no connection, to any address. A SYN is kept and reported
        (``ConnectionRequested``) for the relay to answer once it has reached the destination;
        anything else gets the closed-port reply of RFC 9293 3.10.7.1, as no connection
        exists."""
        stats = self.stats
        if seg.control is not Control.SYN or seg.has_ack:
            self._reply_closed(key, seg)
            return
        requests = listener._requests
        if key in requests:
            # The client's SYN retransmission while the relay is still connecting.
            stats.forward_syn_pending_dropped += 1
            return
        if len(requests) + len(listener._syn_queue) >= listener.syn_backlog:
            stats.forward_request_overflow += 1
            return
        # Kept past this packet: a payload (data on a SYN) must not stay a view of the link's
        # buffer; the other fields are values already.
        requests[key] = (
            dataclasses.replace(seg, payload=memoryview(bytes(seg.payload))) if seg.payload else seg
        )
        stats.forward_syn_requested += 1
        self._events.append(ConnectionRequested(listener, key))

    def _answer(self, listener: Listener, key: Key, now: float) -> Connection | None:
        """``Listener.answer``: the kept SYN goes through LISTEN (3.10.7.2) as any SYN would."""
        seg = listener._requests.pop(key, None)
        if seg is None or listener.closed or key in self._conns:
            self.stats.forward_request_stale += 1
            return None
        self.stats.forward_request_answered += 1
        conn = self._new_connection(key, now)
        entry = self._add(key, conn, listener)
        # In the SYN queue for its handshake (that bounds the requests too); Established takes
        # it out with no accept queue to go to (see _drain_events).
        listener._syn_queue[entry] = None
        conn.open_passive(now)
        conn.receive(seg, now)
        self._touched(entry)
        if self.on_wakeup is not None:
            self.on_wakeup()
        return conn

    def _refuse(self, listener: Listener, key: Key) -> None:
        """``Listener.refuse``: "If the ACK bit is off, sequence number zero is used,
        <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>" (RFC 9293 3.10.7.1)."""
        seg = listener._requests.pop(key, None)
        if seg is None:
            self.stats.forward_request_stale += 1
            return
        self.stats.forward_request_refused += 1
        self._emit_rst(key, 0, seq.add(seg.seq, seg.seg_len), tcp.RST | tcp.ACK)
        if self.on_wakeup is not None:
            self.on_wakeup()

    def _send_cookie(self, listener: Listener, key: Key, seg: tcp.TcpSegment, now: float) -> None:
        """The SYN,ACK a SYN-RECEIVED connection would send (3.10.7.2), built here with no
        connection: ISN = a cookie; window scaling and SACK offered only with timestamps, whose
        TSval carries them back (see :mod:`~ustack.stack.syncookie`)."""
        assert self._cookies is not None  # _cookie_mode is "never" without a key
        remote_addr, remote_port, local_addr, local_port = key
        cfg = self.config6 if remote_addr >> 128 else self.config
        opts = seg.options
        wscale, sack, ts = negotiate(cfg, opts)
        timestamps = None
        if ts and opts.timestamps is not None:
            clock = (int(now * TS_HZ) + self._ts_offset(key)) & 0xFFFFFFFF
            tsval = encode_tsval(clock, opts.wscale if wscale else None, sack)
            timestamps = (tsval, opts.timestamps[0])
        else:
            wscale = sack = False
        iss = self._cookies.make(
            local_addr,
            local_port,
            remote_addr,
            remote_port,
            seg.seq,
            opts.mss if opts.mss is not None else DEFAULT_PEER_MSS,
            now,
        )
        # The window of a fresh connection's SYN,ACK (Receiver.syn_window: never scaled).
        window = min(cfg.recv_buffer, MAX_WINDOW_FIELD)
        options = syn_ack_options(cfg, cfg.mss, wscale, sack, timestamps)
        synack = OutSegment(iss, seq.add(seg.seq, 1), tcp.SYN | tcp.ACK, window, options, b"")
        self._send(key, synack)
        listener.cookie_at = now
        self.stats.syncookies_sent += 1

    def _cookie_ack(self, listener: Listener, key: Key, seg: tcp.TcpSegment, now: float) -> None:
        """An ACK to a listener using cookies: a valid cookie (RFC 4987 3.6) makes the
        connection, in ESTABLISHED, into the accept queue as any completed handshake; anything
        else gets the RST of 3.10.7.2's second check."""
        assert self._cookies is not None
        stats = self.stats
        remote_addr, remote_port, local_addr, local_port = key
        mss = self._cookies.check(
            local_addr, local_port, remote_addr, remote_port, seg.seq, seg.ack, now
        )
        agreed: tuple[int | None, bool] | None = (None, False)
        ts = seg.options.timestamps
        if mss is not None and ts is not None and self.config.timestamps:
            # our SYN,ACK had timestamps: TSecr echoes the window shift and SACK-permitted, and
            # can only say yes to what we offered
            agreed = decode_tsecr(ts[1])
            if (agreed[0] is not None and not self.config.window_scale) or (
                agreed[1] and not self.config.sack
            ):
                agreed = None
        if mss is None or agreed is None:
            stats.syncookies_failed += 1
            stats.listen_rst_for_ack += 1
            self._emit_rst(key, seg.ack, 0, tcp.RST)
            return
        if len(listener._accept_queue) >= listener.backlog:
            # As for the last ACK of a normal handshake: dropped, the peer sends it again.
            stats.listen_accept_queue_overflow += 1
            return
        stats.syncookies_accepted += 1
        conn = self._new_connection(key, now, iss=seq.add(seg.ack, -1))
        entry = self._add(key, conn, listener)
        # Through the SYN queue, for an instant: the Established event moves it on to the
        # accept queue exactly as for a handshake that had kept its state (_drain_events).
        listener._syn_queue[entry] = None
        conn.open_passive(now)
        conn.open_from_cookie(seg, now, peer_mss=mss, peer_wscale=agreed[0], sack=agreed[1])
        self._touched(entry)

    def _reply_closed(self, key: Key, seg: tcp.TcpSegment) -> None:
        """RFC 9293 3.10.7.1: "If the state is CLOSED (i.e., TCB does not exist) ... An incoming
        segment containing a RST is discarded. An incoming segment not containing a RST causes a
        RST to be sent in response."""
        if seg.control is Control.RST:
            self.stats.rst_closed_port_ignored += 1
            return
        self.stats.rst_sent_closed_port += 1
        if seg.has_ack:
            # "If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>"
            self._emit_rst(key, seg.ack, 0, tcp.RST)
        else:
            # "If the ACK bit is off, sequence number zero is used,
            #  <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"
            self._emit_rst(key, 0, seq.add(seg.seq, seg.seg_len), tcp.RST | tcp.ACK)

    # -- connection bookkeeping -------------------------------------------------------------

    def _new_connection(self, key: Key, now: float, iss: int | None = None) -> Connection:
        """A connection on ``key``, its ISS from the ISN source (or ``iss``: a SYN cookie)."""
        remote_addr, remote_port, local_addr, local_port = key
        if iss is None:
            iss = self._isn(local_addr, local_port, remote_addr, remote_port, now) & 0xFFFFFFFF
        conn = Connection(
            self.config6 if remote_addr >> 128 else self.config,
            self.stats,
            local_addr=local_addr,
            local_port=local_port,
            remote_addr=remote_addr,
            remote_port=remote_port,
            iss=iss,
            now=now,
            ts_offset=self._ts_offset(key),
        )
        conn.tracer = self.tracer
        return conn

    def _ts_offset(self, key: Key) -> int:
        """RFC 7323 5.4: a per-connection offset for the timestamp clock, from the same keyed
        hash as the ISN (with the ports swapped, so it is not the ISN's offset)."""
        remote_addr, remote_port, local_addr, local_port = key
        hasher = self._hasher
        return hasher.hash(local_addr, remote_port, remote_addr, local_port) if hasher else 0

    def _add(self, key: Key, conn: Connection, listener: Listener | None) -> _Entry:
        entry = _Entry(self, conn, key, listener)
        conn.on_change = entry
        self._conns[key] = entry
        port = key[3]
        self._ports_in_use[port] = self._ports_in_use.get(port, 0) + 1
        return entry

    def _forget(self, entry: _Entry) -> None:
        """Remove a connection from the demux and every queue. Its last segments (a RST, say)
        are still sent: ``want_output`` keeps the entry until ``packets_to_send``."""
        if not entry.alive:
            return
        entry.alive = False
        if entry.deadline is not None and entry.deadline == self._next:
            self._next_ok = False
        if self._conns.get(entry.key) is entry:
            del self._conns[entry.key]
        port = entry.key[3]
        left = self._ports_in_use[port] - 1
        if left:
            self._ports_in_use[port] = left
        else:
            del self._ports_in_use[port]
        listener = entry.listener
        if listener is not None:
            entry.listener = None
            listener._syn_queue.pop(entry, None)
            if entry in listener._accept_queue:
                listener._accept_queue.remove(entry)
        self._want_timer.pop(entry, None)
        entry.conn.on_change = None

    def _retire(self, entry: _Entry, now: float) -> None:
        """A released connection in TIME-WAIT: send what it still owes (the ACK of the FIN),
        then keep only its compact record -- unless only the Connection can answer exactly
        (see ``TimeWait.from_connection``), or a tracer wants to see it end."""
        if self.tracer is not None or not entry.alive:
            return
        conn = entry.conn
        key = entry.key
        for s in conn.segments_to_send(now):
            self._send(key, s)
        rec = TimeWait.from_connection(conn, pack_key(*key))
        if rec is None:
            return
        self._forget(entry)
        # Its output is taken, so no queue needs the Connection any more; and a stale heap slot
        # of the entry (an old deadline) must not keep it alive until that deadline.
        self.want_output.pop(entry, None)
        del entry.conn
        port = key[3]
        self._ports_in_use[port] = self._ports_in_use.get(port, 0) + 1  # still taken
        self._timewait[rec.key] = rec
        self._tw_enqueue(rec)

    def _tw_enqueue(self, rec: TimeWait) -> None:
        """File ``rec`` in the expiry queue by its deadline: at the back, nearly always (2*MSL
        from now is the latest deadline there is); a connection released some time after it
        entered TIME-WAIT goes in from the back to its place."""
        queue = self._tw_queue
        rec.queued += 1
        deadline = rec.deadline
        if rec.queued > 1:
            self._next_ok = False  # its old place in the queue may be the next deadline
        elif self._next_ok and (self._next is None or deadline < self._next):
            self._next = deadline
        if not queue or queue[-1].deadline <= deadline:
            queue.append(rec)
            return
        i = len(queue) - 1
        while i > 0 and queue[i - 1].deadline > deadline:
            i -= 1
        queue.insert(i, rec)

    def _tw_front(self) -> TimeWait | None:
        """The TIME-WAIT record that expires first, dropping stale queue entries (of records
        gone, or queued again after a restart) on the way."""
        queue = self._tw_queue
        table = self._timewait
        while queue:
            rec = queue[0]
            if rec.queued == 1 and table.get(rec.key) is rec:
                return rec
            queue.popleft()
            rec.queued -= 1
        return None

    def _drop_time_wait(self, rec: TimeWait) -> None:
        del self._timewait[rec.key]
        if rec.deadline == self._next:
            self._next_ok = False
        port = rec.local_port
        left = self._ports_in_use[port] - 1
        if left:
            self._ports_in_use[port] = left
        else:
            del self._ports_in_use[port]

    def _expire_time_wait(self, now: float) -> None:
        """3.10.8: 2*MSL over for every record due -> CLOSED (counted; nobody to tell)."""
        while (rec := self._tw_front()) is not None and rec.deadline <= now:
            self._tw_queue.popleft()
            rec.queued -= 1
            self._drop_time_wait(rec)
            rec.expire(self.stats)

    def _touched(self, entry: _Entry) -> None:
        self.want_output[entry] = None
        self._want_timer[entry] = None
        self._drain_events(entry)

    def _drain_events(self, entry: _Entry) -> None:
        conn = entry.conn
        # Most changes make no event: the connection's list is looked at before it is taken.
        if conn._events:
            events = self._events
            for ev in conn.take_events():
                events.append(ev)
                if type(ev) is Established:
                    listener = entry.listener
                    if listener is not None and entry in listener._syn_queue:
                        del listener._syn_queue[entry]
                        if listener.transparent:
                            # Answered in forward mode: its owner has it already.
                            entry.listener = None
                            continue
                        listener._accept_queue.append(entry)
                        self.stats.listen_queued += 1
                        events.append(ConnectionAccepted(listener))
                elif type(ev) is Closed:
                    self._forget(entry)
        if entry.alive and entry.listener is not None and conn.state is State.LISTEN:
            # RFC 9293 3.10.7.4: a RST in SYN-RECEIVED of a passive open returns it to LISTEN;
            # the host's listener is that LISTEN, so the per-SYN connection just goes away.
            transparent = entry.listener.transparent
            self._forget(entry)
            if transparent:
                # Forward mode: its owner holds it and is told, as for an active open.
                self.stats.forward_handshake_reset += 1
                self._events.append(Reset(conn, False))
                self._events.append(Closed(conn))

    def _refresh_deadlines(self) -> None:
        heap = self._heap
        for entry in self._want_timer:
            d = entry.conn.next_deadline()
            old = entry.deadline
            if d == old and entry.heap_seq >= 0:
                continue
            if self._next_ok and old is not None and old == self._next:
                self._next_ok = False  # the earliest deadline moved or went
            entry.deadline = d
            if d is None:
                entry.heap_seq = -1
                continue
            if self._next_ok and (self._next is None or d < self._next):
                self._next = d
            self._heap_seq += 1
            entry.heap_seq = self._heap_seq
            heapq.heappush(heap, (d, self._heap_seq, entry))
        self._want_timer.clear()
        if len(heap) > 2 * len(self._conns) + 64:
            # Too many invalidated entries: rebuild from the live ones (amortised O(1)).
            self._heap = [
                (e.deadline, e.heap_seq, e)
                for e in self._conns.values()
                if e.deadline is not None and e.heap_seq >= 0
            ]
            heapq.heapify(self._heap)

    def _ephemeral_port(self, local_addr: int, remote_addr: int, remote_port: int) -> int:
        """RFC 6056 3.3.3 (simple hash-based selection): a keyed per-destination offset plus a
        counter, skipping ports in use by any connection or listener."""
        low = self.host_config.ephemeral_low
        count = self.host_config.ephemeral_high - low + 1
        offset = self._hasher.hash(local_addr, 0, remote_addr, remote_port) if self._hasher else 0
        in_use = self._ports_in_use
        listeners = self._listeners
        for _ in range(count):
            port = low + (offset + self._next_ephemeral) % count
            self._next_ephemeral += 1
            if port not in in_use and port not in listeners:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free ephemeral port")

    def _close_listener(self, listener: Listener, now: float) -> None:
        if listener.closed:
            return
        listener.closed = True
        if self._listeners.get(listener.port) is listener:
            del self._listeners[listener.port]
        if listener is self._transparent:
            self._transparent = None
            # Requests nobody will answer now: refused, as the closed port they have become.
            for key in list(listener._requests):
                self._refuse(listener, key)
        unaccepted = [*listener._syn_queue, *listener._accept_queue]
        for entry in unaccepted:
            self.stats.listen_close_reset += 1
            # abort() reports the change (queueing the entry for its RST) before _forget takes
            # it out of the demux.
            entry.conn.abort(now)
            self._forget(entry)
        if unaccepted and self.on_wakeup is not None:
            self.on_wakeup()

    def _emit_rst(self, key: Key, seq_: int, ack: int, flags: int) -> None:
        self._send(key, OutSegment(seq_, ack, flags, 0, NO_OPTIONS, b""))
