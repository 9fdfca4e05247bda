"""The sans-IO host: IPv4 in, demux to connections and listeners, IPv4 out.

Theory of operation. A :class:`Host` owns one or more IPv4 addresses, the connections and
listeners on them, and one :class:`~ustack.tcp.stats.Stats`. The driver feeds it packets with
``receive_packet(buf, now)``, pulls what to transmit with ``packets_to_send(now)``, asks
``next_deadline()`` and calls ``on_deadline(now)`` then, and pops events with ``next_event()``.

Input: the IPv4 header is parsed and checked (checksum, length, destination is ours); fragments
go to the bounded :class:`~ustack.stack.reassembly.Reassembler`, and a datagram it completes comes
back through this same input as if it had arrived whole; then ICMP echo requests are answered,
ICMP errors go to the connection they quote once RFC 5927's checks pass (see
:mod:`~ustack.stack.icmp_errors`), other protocols get a rate-limited ICMP protocol unreachable, and TCP segments are parsed and
demultiplexed by 4-tuple in one dict lookup. A segment for no connection goes to the listener on
its port (which creates a SYN-RECEIVED connection for a SYN) or gets the closed-port reply of
RFC 9293 3.10.7.1. Every malformed packet surfaces as a :class:`~ustack.wire.errors.ParseError`,
which is counted by reason in one place; nothing escapes ``receive_packet``.

Offload (``Host(offload=True)``, for a TUN device opened with ``IFF_VNET_HDR``): every packet
in and out starts with a :mod:`~ustack.wire.virtio` header. In, a NEEDS_CSUM or DATA_VALID packet
skips TCP checksum verification (the kernel made it or checked it), and a GSO super-segment is
just a long TCP segment. Out, TCP packets are NEEDS_CSUM with only the pseudo-header sum in the
checksum field, and connections send segments of up to ``TSO_MAX`` bytes, marked GSO with the
connection's MSS so the kernel cuts them for the wire (or delivers them whole).

Bookkeeping scales with activity, not with the number of connections: a connection that changed
(a segment arrived, a timer fired, or the application called into it -- which the connection
reports itself through its ``on_change`` hook) is put in two insertion-ordered dicts, one for "may
have output" and one for "deadline may have moved". ``packets_to_send`` walks the first,
``next_deadline`` refreshes the second into a heap of ``(deadline, seq, entry)``; an entry whose
deadline moved is not removed but invalidated (its ``seq`` no longer matches), and the heap is
rebuilt when stale entries outnumber live ones. Nothing is ever iterated in an order that depends
on memory addresses, so the same inputs give the same packets, byte for byte.

TIME-WAIT is cheap for connections the application has released (``release()``; the asyncio
transport does it after ``connection_lost``): once such a connection is in TIME-WAIT the host
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

Whoever drives the host (the asyncio driver, the simulator) sets ``on_wakeup``: the host calls it
when an application call left something to send or a new deadline, so the driver can flush.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from ustack.stack import icmp_errors
from ustack.stack.config import HostConfig
from ustack.stack.events import ConnectionAccepted, HostEvent
from ustack.stack.isn import IsnSource, Rfc6528Isn
from ustack.stack.reassembly import Reassembler
from ustack.stack.syncookie import LIFETIME as COOKIE_LIFETIME
from ustack.stack.syncookie import SynCookies, decode_tsecr, encode_tsval
from ustack.tcp.config import DEFAULT_PEER_MSS, TcpConfig
from ustack.tcp.connection import TS_HZ, Connection, OutSegment, Tracer, negotiate, syn_ack_options
from ustack.tcp.events import Closed, Established, Event
from ustack.tcp.receiver import MAX_WINDOW_FIELD
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.tcp.timewait import TimeWait, pack_key
from ustack.wire import checksum, icmp, ipv4, seq, tcp, virtio
from ustack.wire.errors import ParseError
from ustack.wire.tcp import NO_OPTIONS, Control

log = logging.getLogger(__name__)

OutPacket = bytearray | tuple[bytearray, bytes | memoryview]
"""A datagram to send: one buffer, or (with ``scatter``) headers and payload for writev(2)."""

Key = tuple[int, int, int, int]
"""``(remote_addr, remote_port, local_addr, local_port)``."""

# ParseError reasons -> Stats fields. Reasons not listed fall back by prefix (see _count_parse).
_PARSE_COUNTERS: Final = {
    "ipv4_truncated": "ip_truncated",
    "ipv4_bad_checksum": "ip_bad_checksum",
    "ipv4_bad_version": "ip_bad_version",
    "ipv4_bad_ihl": "ip_bad_ihl",
    "ipv4_bad_total_length": "ip_bad_total_length",
    "icmp_truncated": "icmp_truncated",
    "icmp_bad_checksum": "icmp_bad_checksum",
    "tcp_truncated": "tcp_truncated",
    "tcp_bad_data_offset": "tcp_bad_data_offset",
    "tcp_bad_checksum": "tcp_bad_checksum",
    "tcp_bad_flags": "tcp_bad_flags",
    "virtio_truncated": "offload_malformed",
}
_PARSE_FALLBACK: Final = (
    ("tcp_option", "tcp_bad_options"),
    ("tcp", "tcp_malformed"),
    ("icmp_quote", "icmp_quote_malformed"),
    ("icmp", "icmp_malformed"),
    ("ipv4", "ip_malformed"),
)

_IP_MAX_ID = 0xFFFF
_COOKIE_KEY_LABEL = b"ustack syn cookie key"  # derives the cookie key from the ISN secret
# The largest TCP payload of a super-segment: an IPv4 datagram is at most 65,535 bytes, less the
# IPv4 header and the longest TCP header.
TSO_MAX = ipv4.MAX_TOTAL_LEN - ipv4.HEADER_LEN - tcp.MAX_HEADER_LEN
_MIN_MSS = 536  # RFC 9293 3.7.1: no segment this short can be a super-segment
_LOOPBACK_NET = 127
_BROADCAST = 0xFFFFFFFF
_MULTICAST_PREFIX = 0xE  # 224.0.0.0/4


class _Entry:
    """The host's record of one connection: where it is filed and its registered deadline."""

    __slots__ = ("alive", "conn", "deadline", "heap_seq", "host", "key", "listener", "released")

    def __init__(self, host: Host, conn: Connection, key: Key, listener: Listener | None) -> None:
        self.host = host
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
        host = self.host
        host._touched(self)
        if host.on_wakeup is not None:
            host.on_wakeup()

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
    """

    __slots__ = (
        "_accept_queue",
        "_host",
        "_syn_queue",
        "backlog",
        "closed",
        "cookie_at",
        "port",
        "syn_backlog",
    )

    def __init__(self, host: Host, port: int, backlog: int, syn_backlog: int) -> None:
        self._host = host
        self.port = port
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
        self._host.stats.listen_accepted += 1
        return entry.conn

    def close(self, now: float) -> None:
        """Stop listening; connections not yet accepted are reset (RFC 9293 3.10.4 ABORT)."""
        self._host._close_listener(self, now)

    def __repr__(self) -> str:
        return f"<Listener port={self.port} half_open={self.half_open} pending={self.pending}>"


class Host:
    """One IP host with TCP; see the module docstring."""

    def __init__(
        self,
        addresses: Iterable[int] | int,
        *,
        config: TcpConfig | None = None,
        host_config: HostConfig | None = None,
        mtu: int = 1500,
        secret: bytes | None = None,
        isn: IsnSource | None = None,
        cookie_secret: bytes | None = None,
        tracer: Tracer | None = None,
        now: float = 0.0,
        offload: bool = False,
        gso: bool = True,
        scatter: bool = False,
    ) -> None:
        addrs = [addresses] if isinstance(addresses, int) else list(addresses)
        if not addrs or not all(isinstance(a, int) and 0 < a < _BROADCAST for a in addrs):
            raise ValueError("a host needs at least one IPv4 address (host-order int)")
        if not ipv4.HEADER_LEN + tcp.HEADER_LEN < mtu <= ipv4.MAX_TOTAL_LEN:
            raise ValueError(f"bad MTU {mtu}")
        self.addresses: tuple[int, ...] = tuple(addrs)
        self._address_set = frozenset(addrs)
        self.mtu = mtu
        base = config if config is not None else TcpConfig()
        # RFC 9293 3.7.1: the MSS we advertise is what fits the link without fragmenting;
        # a configured MSS can only lower it.
        link_mss = mtu - ipv4.HEADER_LEN - tcp.HEADER_LEN
        self.config = dataclasses.replace(
            base,
            mss=min(base.mss, link_mss) if base.mss else link_mss,
            tso_max=TSO_MAX if offload or gso else 0,
        )
        self.host_config = host_config if host_config is not None else HostConfig()
        # Offload: every packet in and out starts with a virtio-net header (see the module
        # docstring); TCP then sends super-segments of up to TSO_MAX bytes, checksummed by
        # the kernel, and takes the kernel's coalesced ones.
        self.offload = offload
        self._hdr = virtio.HEADER_LEN if offload else 0
        self._ttl = self.host_config.ttl
        # Super-segments leave as (headers, payload) pairs the link writes with writev(2):
        # only for a link that can (``gather``), and only with offload (see _build_segment).
        self._scatter = scatter and offload
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
        self._cookie_mode = self.config.syn_cookies if self._cookies is not None else "never"
        if self.config.syn_cookies == "always" and self._cookies is None:
            raise ValueError('syn_cookies="always" needs secret= or cookie_secret=')
        self.stats = Stats()
        self._conns: dict[Key, _Entry] = {}
        self._listeners: dict[int, Listener] = {}
        self._ports_in_use: dict[int, int] = {}
        self._next_ephemeral = 0
        self._events: deque[Event | HostEvent] = deque()
        # Insertion-ordered (dicts, not sets): same inputs, same order of output.
        self._want_output: dict[_Entry, None] = {}
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
        self._out: list[OutPacket] = []
        self._ip_id = 0
        self._icmp_tokens = float(self.host_config.icmp_error_burst)
        self._icmp_refill = now
        # IPv4 fragments in reassembly; its one deadline is not in _next (see next_deadline).
        self._reasm = Reassembler(self.host_config, self.stats)
        self._internal_error_logged = False
        # Given to every connection at birth, so a trace starts at its first transition.
        self.tracer = tracer
        # Set by the driver: called when an application call left work to do (see the module
        # docstring).
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
            if self._out and self.on_wakeup is not None:
                self.on_wakeup()

    def listen(self, port: int, backlog: int = 128, *, syn_backlog: int | None = None) -> Listener:
        """Accept connections on ``port`` at every address of this host."""
        if not 1 <= port <= 65535:
            raise ValueError(f"bad port {port}")
        if backlog < 1 or (syn_backlog is not None and syn_backlog < 1):
            raise ValueError("backlog must be at least 1")
        if port in self._listeners:
            raise OSError(errno.EADDRINUSE, f"port {port} is already listening")
        listener = Listener(self, port, backlog, syn_backlog if syn_backlog else backlog)
        self._listeners[port] = listener
        return listener

    def connect(
        self,
        remote_addr: int,
        remote_port: int,
        now: float,
        local_port: int | None = None,
        local_addr: int | None = None,
    ) -> Connection:
        """Active open: a connection in SYN-SENT whose SYN the next ``packets_to_send`` carries."""
        if not 0 < remote_addr < _BROADCAST or not 1 <= remote_port <= 65535:
            raise ValueError("bad remote address or port")
        if local_addr is None:
            local_addr = self.addresses[0]
        elif local_addr not in self._address_set:
            raise OSError(errno.EADDRNOTAVAIL, "local address is not one of this host's")
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

    def receive_packet(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        """Take one IPv4 datagram from the link. Never raises for bad input."""
        self.stats.ip_rx += 1
        try:
            if self._hdr:
                self._receive_offloaded(buf, now)
            else:
                self._receive(buf, now, False)
        except ParseError as exc:
            self._count_parse(exc)
        except Exception:
            # Last resort: a bug must not take the driver down with it. Logged once, counted.
            self.stats.host_internal_error += 1
            if not self._internal_error_logged:
                self._internal_error_logged = True
                log.exception("internal error handling a received packet (logged once)")

    def packets_to_send(self, now: float) -> list[OutPacket]:
        """Every IPv4 datagram ready to go, each in its own buffer (or, with ``scatter``, a
        super-segment as its headers and its payload, for a gathered write)."""
        out = self._out
        self._out = []
        if self._want_output:
            pending = self._want_output
            self._want_output = {}
            for entry in pending:
                conn = entry.conn
                segments = conn.segments_to_send(now)
                if segments:
                    key = entry.key
                    for s in segments:
                        if len(s.payload) > _MIN_MSS:
                            mss = conn.snd.mss_with(s.options)
                            if len(s.payload) > mss:
                                if self._hdr:
                                    out.append(self._build_segment(key, s, mss))
                                else:
                                    self._cut_segment(key, s, mss, out)
                                continue
                        out.append(self._build_segment(key, s))
                    self._drain_events(entry)
                    if entry.alive:
                        # Sending arms the retransmission timer.
                        self._want_timer[entry] = None
        self.stats.ip_tx += len(out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time any connection, TIME-WAIT record or datagram in reassembly needs
        ``on_deadline``."""
        best = self._timers_deadline()
        # Reassembly's deadline is an O(1) look at its oldest datagram, taken here rather than
        # kept in the cache (_next), which every fragment would otherwise have to update.
        if self._reasm:
            reasm = self._reasm.next_deadline()
            if reasm is not None and (best is None or reasm < best):
                return reasm
        return best

    def _timers_deadline(self) -> float | None:
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
        """Run the timers of the connections that are due (and only those)."""
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
        if self._reasm:
            for late in self._reasm.on_deadline(now):
                # RFC 1122 3.3.2: "an ICMP Time Exceeded message sent to the source host (if
                # fragment zero has been received)".
                self._send_icmp_error(
                    icmp.TIME_EXCEEDED,
                    icmp.REASSEMBLY_TIME_EXCEEDED,
                    late.dst,
                    late.src,
                    late.first,
                    now,
                )

    def next_event(self) -> Event | HostEvent | None:
        return self._events.popleft() if self._events else None

    # -- input ------------------------------------------------------------------------------

    def _receive_offloaded(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        """A packet behind its virtio-net header. NEEDS_CSUM (the kernel built it and left the
        transport checksum to the device: the field holds only the pseudo-header sum) and
        DATA_VALID (already checked) both mean the checksum is not ours to verify; a GSO
        super-segment is simply a TCP segment up to 64 KB long."""
        trusted, gso = virtio.rx_flags(buf)
        stats = self.stats
        if trusted:
            stats.offload_rx_csum_trusted += 1
        if gso:
            stats.offload_rx_super += 1
        self._receive(memoryview(buf)[virtio.HEADER_LEN :], now, trusted)

    def _receive(self, buf: bytes | bytearray | memoryview, now: float, trusted: bool) -> None:
        stats = self.stats
        seg = tcp.parse_ipv4(buf, not trusted)
        if seg is not None:
            # The common case in one parse: a well-formed TCP/IPv4 datagram. The checks and
            # counters are the general path's, in its order.
            src = seg.src
            if seg.dst not in self._address_set:
                stats.ip_not_for_us += 1
            elif (
                src == _BROADCAST
                or src >> 28 == _MULTICAST_PREFIX
                or src >> 24 == _LOOPBACK_NET
                or src == 0
            ):
                stats.ip_bad_source += 1
            else:
                stats.tcp_rx += 1
                self._demux(seg, now)
            return
        pkt = ipv4.parse(buf)
        if pkt.dst not in self._address_set:
            stats.ip_not_for_us += 1
            return
        src = pkt.src
        if (
            src == 0
            or src == _BROADCAST
            or src >> 28 == _MULTICAST_PREFIX
            or src >> 24 == _LOOPBACK_NET
        ):
            # RFC 1122 3.2.1.3: such a source is never a host we could answer.
            stats.ip_bad_source += 1
            return
        if pkt.is_fragment:
            self._receive_fragment(pkt, buf, now)
            return
        proto = pkt.proto
        if proto == ipv4.PROTO_TCP:
            self._receive_tcp(pkt, now, trusted)
        elif proto == ipv4.PROTO_ICMP:
            self._receive_icmp(pkt, now)
        else:
            stats.ip_unknown_protocol += 1
            original = buf if len(buf) == pkt.total_length else memoryview(buf)[: pkt.total_length]
            self._send_unreachable(pkt, icmp.PROTO_UNREACH, original, now)

    def _receive_fragment(
        self, pkt: ipv4.IPv4Packet, buf: bytes | bytearray | memoryview, now: float
    ) -> None:
        """A piece of a fragmented datagram: held for reassembly; the datagram it completes
        goes through the host's input again, as if it had arrived whole (it is no fragment
        now, so this cannot recur). TCP itself never sends fragments (DF, MSS from the MTU)."""
        header = memoryview(buf)[: pkt.header_length]
        whole = self._reasm.add(pkt, header, now)
        if whole is not None:
            self._receive(whole, now, False)

    def _receive_icmp(self, pkt: ipv4.IPv4Packet, now: float) -> None:
        stats = self.stats
        stats.icmp_rx += 1
        msg = icmp.parse(pkt.payload)
        if msg.type != icmp.ECHO_REQUEST:
            if msg.type in icmp_errors.ERROR_TYPES:
                self._receive_icmp_error(msg, now)
            elif msg.type == icmp.SOURCE_QUENCH:
                # RFC 6633 2: "hosts MUST NOT send ... and SHOULD silently discard" it.
                stats.icmp_source_quench += 1
            else:
                stats.icmp_ignored += 1  # echo replies, redirects, timestamps, ...
            return
        # RFC 1122 3.2.2.6: the reply carries the request's identifier, sequence and data.
        length = icmp.HEADER_LEN + len(msg.payload)
        buf, at = self._new_ip(src=pkt.dst, dst=pkt.src, proto=ipv4.PROTO_ICMP, payload_len=length)
        icmp.emit_echo(
            buf,
            at,
            type=icmp.ECHO_REPLY,
            ident=msg.ident,
            sequence=msg.sequence,
            payload=msg.payload,
        )
        self._out.append(buf)
        stats.icmp_echo_replies += 1

    def _receive_icmp_error(self, msg: icmp.IcmpMessage, now: float) -> None:
        """An ICMP error about a segment of ours goes to its connection if RFC 5927 4.1's
        checks pass (see :mod:`ustack.stack.icmp_errors`); each failed check is a counted drop.
        A malformed quote raises the ParseError counted as ``icmp_quote_malformed``."""
        stats = self.stats
        q = icmp.parse_quoted(msg)
        if q.src not in self._address_set:
            stats.icmp_quote_not_ours += 1
            return
        if q.proto != ipv4.PROTO_TCP:
            stats.icmp_quote_not_tcp += 1
            return
        key = (q.dst, q.dst_port, q.src, q.src_port)
        entry = self._conns.get(key)
        if entry is None:
            if self._timewait and pack_key(*key) in self._timewait:
                stats.icmp_error_time_wait += 1
            else:
                stats.icmp_error_no_connection += 1
            return
        conn = entry.conn
        if conn.state is State.TIME_WAIT:
            # Everything we sent is acknowledged; nothing is left that the error could be about.
            stats.icmp_error_time_wait += 1
            return
        if not icmp_errors.sequence_acceptable(conn, q.seq):
            stats.icmp_error_out_of_window += 1
            return
        mtu = 0
        if msg.type == icmp.DEST_UNREACH and msg.code == icmp.FRAG_NEEDED:
            stats.icmp_frag_needed += 1
            mtu = msg.mtu
            if mtu == 0:
                # RFC 1191 5: a router from before RFC 1191 leaves the next-hop MTU out.
                stats.icmp_frag_needed_plateau += 1
                mtu = icmp_errors.plateau_below(q.total_length)
        else:
            stats.icmp_error_delivered += 1
        conn.icmp_error(msg.type, msg.code, mtu, now)
        self._touched(entry)

    def _receive_tcp(self, pkt: ipv4.IPv4Packet, now: float, trusted: bool) -> None:
        stats = self.stats
        stats.tcp_rx += 1
        src, dst = pkt.src, pkt.dst
        # TCP is given the IPv4 pseudo-header sum (length 0, see wire/tcp.py); it is needed only
        # to verify, and a trusted (offloaded) segment's checksum is the kernel's business.
        pseudo = 0 if trusted else checksum.ipv4_pseudo_header_sum(src, dst, ipv4.PROTO_TCP, 0)
        self._demux(
            tcp.parse(pkt.payload, src, dst, pseudo=pseudo, verify_checksum=not trusted), now
        )

    def _demux(self, seg: tcp.TcpSegment, now: float) -> None:
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
        if listener is not None:
            self._receive_listen(listener, key, seg, now)
        else:
            self._reply_closed(key, seg)

    def _reuse_time_wait(self, entry: _Entry, seg: tcp.TcpSegment) -> bool:
        """RFC 9293 3.10.7.4 / RFC 6191: a SYN to a TIME-WAIT connection may start a new
        incarnation when its sequence number is above RCV.NXT (so no old duplicate can be
        mistaken for new data) and someone listens on the port. The old connection is forgotten
        and reported Closed; the SYN then goes to the listener."""
        conn = entry.conn
        if entry.key[3] not in self._listeners or not seq.gt(seg.seq, conn.rcv_nxt):
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
            and key[3] in self._listeners
            and seq.gt(seg.seq, rec.rcv_nxt)
        ):
            stats.time_wait_reused += 1
            self._drop_time_wait(rec)
            return False
        stats.tcp_demuxed += 1
        deadline = rec.deadline
        for s in rec.receive(seg, now, self.config, stats):
            self._out.append(self._build_segment(key, s))
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

    def _send_cookie(self, listener: Listener, key: Key, seg: tcp.TcpSegment, now: float) -> None:
        """The SYN,ACK a SYN-RECEIVED connection would send (3.10.7.2), built here with no
        connection: ISN = a cookie; window scaling and SACK offered only with timestamps, whose
        TSval carries them back (see :mod:`~ustack.stack.syncookie`)."""
        assert self._cookies is not None  # _cookie_mode is "never" without a key
        remote_addr, remote_port, local_addr, local_port = key
        cfg = self.config
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
        self._out.append(self._build_segment(key, synack))
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

    def _count_parse(self, exc: ParseError) -> None:
        name = _PARSE_COUNTERS.get(exc.reason)
        if name is None:
            name = next((c for p, c in _PARSE_FALLBACK if exc.reason.startswith(p)), "ip_malformed")
        setattr(self.stats, name, getattr(self.stats, name) + 1)

    # -- connection bookkeeping -------------------------------------------------------------

    def _new_connection(self, key: Key, now: float, iss: int | None = None) -> Connection:
        """A connection on ``key``, its ISS from the ISN source (or ``iss``: a SYN cookie)."""
        remote_addr, remote_port, local_addr, local_port = key
        if iss is None:
            iss = self._isn(local_addr, local_port, remote_addr, remote_port, now) & 0xFFFFFFFF
        conn = Connection(
            self.config,
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
        are still sent: ``_want_output`` keeps the entry until ``packets_to_send``."""
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
            self._out.append(self._build_segment(key, s))
        rec = TimeWait.from_connection(conn, pack_key(*key))
        if rec is None:
            return
        self._forget(entry)
        # Its output is taken, so no queue needs the Connection any more; and a stale heap slot
        # of the entry (an old deadline) must not keep it alive until that deadline.
        self._want_output.pop(entry, None)
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
        self._want_output[entry] = None
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
                        listener._accept_queue.append(entry)
                        self.stats.listen_queued += 1
                        events.append(ConnectionAccepted(listener))
                elif type(ev) is Closed:
                    self._forget(entry)
        if entry.alive and entry.listener is not None and conn.state is State.LISTEN:
            # RFC 9293 3.10.7.4: a RST in SYN-RECEIVED of a passive open returns it to LISTEN;
            # the host's listener is that LISTEN, so the per-SYN connection just goes away.
            self._forget(entry)

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
        unaccepted = [*listener._syn_queue, *listener._accept_queue]
        for entry in unaccepted:
            self.stats.listen_close_reset += 1
            # abort() reports the change (queueing the entry for its RST) before _forget takes
            # it out of the demux.
            entry.conn.abort(now)
            self._forget(entry)
        if unaccepted and self.on_wakeup is not None:
            self.on_wakeup()

    # -- output -----------------------------------------------------------------------------

    def _new_ip(self, *, src: int, dst: int, proto: int, payload_len: int) -> tuple[bytearray, int]:
        """A zeroed buffer for one datagram with its IPv4 header written (behind an all-zero
        virtio-net header -- no offload asked -- when offload is on); returns the buffer and
        where the payload goes."""
        hdr = self._hdr
        buf = bytearray(hdr + ipv4.HEADER_LEN + payload_len)
        self._ip_id = (self._ip_id + 1) & _IP_MAX_ID
        ipv4.emit(
            buf,
            hdr,
            src=src,
            dst=dst,
            proto=proto,
            payload_len=payload_len,
            ident=self._ip_id,
            ttl=self.host_config.ttl,
        )
        return buf, hdr + ipv4.HEADER_LEN

    def _build_segment(self, key: Key, s: OutSegment, gso_size: int = 0) -> OutPacket:
        """One TCP segment as a datagram. With offload the kernel computes the checksum
        (NEEDS_CSUM), and a payload longer than ``gso_size`` (the MSS for these options) is a
        super-segment the kernel cuts into ``gso_size`` pieces (TSO); with ``scatter`` such a
        segment is returned as (headers, payload), so its payload is not copied again."""
        remote_addr, remote_port, local_addr, local_port = key
        options = tcp.encode_options(s.options)
        payload = s.payload
        hlen = tcp.HEADER_LEN + len(options)
        hdr = self._hdr
        gather = self._scatter and gso_size != 0 and len(payload) > gso_size
        buf = bytearray(hdr + ipv4.HEADER_LEN + hlen + (0 if gather else len(payload)))
        self._ip_id = ident = (self._ip_id + 1) & _IP_MAX_ID
        tcp.emit_ipv4(
            buf,
            hdr,
            local_addr,
            remote_addr,
            ident=ident,
            ttl=self._ttl,
            src_port=local_port,
            dst_port=remote_port,
            seq=s.seq,
            ack=s.ack,
            flags=s.flags,
            window=s.window,
            options=options,
            payload=payload,
            partial_checksum=hdr != 0,
            headers_only=gather,
        )
        if hdr:
            if gso_size and len(payload) > gso_size:
                self.stats.offload_tx_super += 1
                virtio.emit(
                    buf,
                    flags=virtio.F_NEEDS_CSUM,
                    gso_type=virtio.GSO_TCPV4,
                    hdr_len=ipv4.HEADER_LEN + hlen,
                    gso_size=gso_size,
                    csum_start=ipv4.HEADER_LEN,
                    csum_offset=virtio.TCP_CSUM_OFFSET,
                )
                if gather:
                    return buf, payload
            else:
                virtio.emit(
                    buf,
                    flags=virtio.F_NEEDS_CSUM,
                    csum_start=ipv4.HEADER_LEN,
                    csum_offset=virtio.TCP_CSUM_OFFSET,
                )
        return buf

    def _cut_segment(self, key: Key, s: OutSegment, mss: int, out: list[OutPacket]) -> None:
        """Software GSO: a super-segment cut into ``mss``-sized wire segments, as the kernel
        does for TSO -- the headers copied, the sequence number advanced, PSH and FIN on the
        last piece only. TCP formed the segment once; only the wire work is per packet."""
        remote_addr, remote_port, local_addr, local_port = key
        options = tcp.encode_options(s.options)
        payload = memoryview(s.payload)
        first = bytearray(ipv4.HEADER_LEN + tcp.HEADER_LEN + len(options) + mss)
        ident = (self._ip_id + 1) & _IP_MAX_ID
        tcp.emit_ipv4(
            first,
            0,
            local_addr,
            remote_addr,
            ident=ident,
            ttl=self._ttl,
            src_port=local_port,
            dst_port=remote_port,
            seq=s.seq,
            ack=s.ack,
            flags=s.flags & ~(tcp.PSH | tcp.FIN),  # PSH and FIN go on the last piece only
            window=s.window,
            options=options,
            payload=payload[:mss],
        )
        pieces = tcp.cut_ipv4(first, payload, mss, s.flags, out)  # type: ignore[arg-type]
        self._ip_id = (ident + pieces - 1) & _IP_MAX_ID
        stats = self.stats
        # the counters count wire segments, as they would without GSO
        stats.tcp_segments_sent += pieces - 1
        stats.tcp_data_segments_sent += pieces - 1

    def _emit_rst(self, key: Key, seq_: int, ack: int, flags: int) -> None:
        self._out.append(self._build_segment(key, OutSegment(seq_, ack, flags, 0, NO_OPTIONS, b"")))

    def _send_unreachable(
        self,
        pkt: ipv4.IPv4Packet,
        code: int,
        original: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        self._send_icmp_error(icmp.DEST_UNREACH, code, pkt.dst, pkt.src, original, now)

    def _send_icmp_error(
        self,
        type_: int,
        code: int,
        src: int,
        dst: int,
        original: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        """An ICMP error (destination unreachable or time exceeded) from ``src`` to ``dst``
        quoting ``original``, through the one token bucket of RFC 1812 4.3.2.8."""
        cfg = self.host_config
        self._icmp_tokens = min(
            float(cfg.icmp_error_burst),
            self._icmp_tokens + max(0.0, now - self._icmp_refill) * cfg.icmp_error_rate,
        )
        self._icmp_refill = max(now, self._icmp_refill)
        if self._icmp_tokens < 1.0:
            self.stats.icmp_rate_limited += 1
            return
        self._icmp_tokens -= 1.0
        length = icmp.HEADER_LEN + icmp.quote_length(original)
        buf, at = self._new_ip(src=src, dst=dst, proto=ipv4.PROTO_ICMP, payload_len=length)
        if type_ == icmp.TIME_EXCEEDED:
            icmp.emit_time_exceeded(buf, at, code=code, original=original)
            self.stats.icmp_time_exceeded_sent += 1
        else:
            icmp.emit_unreachable(buf, at, code=code, original=original)
            self.stats.icmp_unreach_sent += 1
        self._out.append(buf)
