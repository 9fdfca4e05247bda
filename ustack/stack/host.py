"""The sans-IO host: IPv4 in, demux to connections and listeners, IPv4 out.

Theory of operation. A :class:`Host` owns one or more IPv4 addresses, the connections and
listeners on them, and one :class:`~ustack.tcp.stats.Stats`. The driver feeds it packets with
``receive_packet(buf, now)``, pulls what to transmit with ``packets_to_send(now)``, asks
``next_deadline()`` and calls ``on_deadline(now)`` then, and pops events with ``next_event()``.

Input: the IPv4 header is parsed and checked (checksum, length, destination is ours, no
fragments -- ustack does not reassemble, so fragments are counted and dropped); then ICMP echo
requests are answered, other protocols get a rate-limited ICMP protocol unreachable, and TCP
segments are parsed and demultiplexed by 4-tuple in one dict lookup. A segment for no connection
goes to the listener on its port (which creates a SYN-RECEIVED connection for a SYN) or gets the
closed-port reply of RFC 9293 3.10.7.1. Every malformed packet surfaces as a
:class:`~ustack.wire.errors.ParseError`, which is counted by reason in one place; nothing
escapes ``receive_packet``.

Bookkeeping scales with activity, not with the number of connections: a connection that changed
(a segment arrived, a timer fired, or the application called into it -- which the connection
reports itself through its ``on_change`` hook) is put in two insertion-ordered dicts, one for "may
have output" and one for "deadline may have moved". ``packets_to_send`` walks the first,
``next_deadline`` refreshes the second into a heap of ``(deadline, seq, entry)``; an entry whose
deadline moved is not removed but invalidated (its ``seq`` no longer matches), and the heap is
rebuilt when stale entries outnumber live ones. Nothing is ever iterated in an order that depends
on memory addresses, so the same inputs give the same packets, byte for byte.

Whoever drives the host (the asyncio driver, the simulator) sets ``on_wakeup``: the host calls it
when an application call left something to send or a new deadline, so the driver can flush.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from ustack.stack.config import HostConfig
from ustack.stack.events import ConnectionAccepted, HostEvent
from ustack.stack.isn import IsnSource, Rfc6528Isn
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection, OutSegment, Tracer
from ustack.tcp.events import Closed, Established, Event
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.wire import icmp, ipv4, seq, tcp
from ustack.wire.errors import ParseError
from ustack.wire.tcp import NO_OPTIONS, Control

log = logging.getLogger(__name__)

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
}
_PARSE_FALLBACK: Final = (
    ("tcp_option", "tcp_bad_options"),
    ("tcp", "tcp_malformed"),
    ("icmp", "icmp_malformed"),
    ("ipv4", "ip_malformed"),
)

_IP_MAX_ID = 0xFFFF
_LOOPBACK_NET = 127
_BROADCAST = 0xFFFFFFFF
_MULTICAST_PREFIX = 0xE  # 224.0.0.0/4


class _Entry:
    """The host's record of one connection: where it is filed and its registered deadline."""

    __slots__ = ("alive", "conn", "deadline", "heap_seq", "host", "key", "listener")

    def __init__(self, host: Host, conn: Connection, key: Key, listener: Listener | None) -> None:
        self.host = host
        self.conn = conn
        self.key = key
        # The listener whose SYN or accept queue holds this connection, until accept().
        self.listener = listener
        self.deadline: float | None = None
        self.heap_seq = -1
        self.alive = True

    def changed(self) -> None:
        """The connection's ``on_change`` hook: the application called into it."""
        host = self.host
        host._touched(self)
        if host.on_wakeup is not None:
            host.on_wakeup()


class Listener:
    """A passive open on one port: a bounded SYN-RECEIVED queue and a bounded accept queue.

    ``backlog`` bounds the accept queue (established, not yet accepted) and ``syn_backlog`` the
    half-open connections. A SYN arriving while the SYN queue is full is dropped and counted
    (``listen_syn_queue_overflow``; there are no SYN cookies); the ACK completing a handshake
    while the accept queue is full is dropped and counted (``listen_accept_queue_overflow``), so
    the peer retransmits it -- Linux's behaviour without ``tcp_abort_on_overflow``.
    """

    __slots__ = ("_accept_queue", "_host", "_syn_queue", "backlog", "closed", "port", "syn_backlog")

    def __init__(self, host: Host, port: int, backlog: int, syn_backlog: int) -> None:
        self._host = host
        self.port = port
        self.backlog = backlog
        self.syn_backlog = syn_backlog
        self._syn_queue: dict[_Entry, None] = {}  # insertion-ordered, never hash-ordered
        self._accept_queue: deque[_Entry] = deque()
        self.closed = False

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
        tracer: Tracer | None = None,
        now: float = 0.0,
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
            base, mss=min(base.mss, link_mss) if base.mss else link_mss
        )
        self.host_config = host_config if host_config is not None else HostConfig()
        self._hasher: Rfc6528Isn | None = Rfc6528Isn(secret) if secret is not None else None
        if isn is not None:
            self._isn: IsnSource = isn
        elif self._hasher is not None:
            self._isn = self._hasher
        else:
            raise ValueError("Host needs secret= (e.g. os.urandom(16)) or an isn= source")
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
        self._out: list[bytearray] = []
        self._ip_id = 0
        self._icmp_tokens = float(self.host_config.icmp_error_burst)
        self._icmp_refill = now
        self._internal_error_logged = False
        # Given to every connection at birth, so a trace starts at its first transition.
        self.tracer = tracer
        # Set by the driver: called when an application call left work to do (see the module
        # docstring).
        self.on_wakeup: Callable[[], None] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        """Every connection the host still tracks (TIME-WAIT included)."""
        return [e.conn for e in self._conns.values()]

    def lookup(
        self, remote_addr: int, remote_port: int, local_addr: int, local_port: int
    ) -> Connection | None:
        entry = self._conns.get((remote_addr, remote_port, local_addr, local_port))
        return entry.conn if entry is not None else None

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
        if key in self._conns:
            raise OSError(errno.EADDRINUSE, "a connection with this 4-tuple exists")
        conn = self._new_connection(key, now)
        self._add(key, conn, None)
        conn.open_active(now)
        return conn

    def receive_packet(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        """Take one IPv4 datagram from the link. Never raises for bad input."""
        self.stats.ip_rx += 1
        try:
            self._receive(buf, now)
        except ParseError as exc:
            self._count_parse(exc)
        except Exception:
            # Last resort: a bug must not take the driver down with it. Logged once, counted.
            self.stats.host_internal_error += 1
            if not self._internal_error_logged:
                self._internal_error_logged = True
                log.exception("internal error handling a received packet (logged once)")

    def packets_to_send(self, now: float) -> list[bytearray]:
        """Every IPv4 datagram ready to go, each in its own buffer."""
        out = self._out
        self._out = []
        if self._want_output:
            pending = self._want_output
            self._want_output = {}
            for entry in pending:
                conn = entry.conn
                segments = conn.segments_to_send(now)
                if segments:
                    for s in segments:
                        out.append(self._build_segment(entry.key, s))
                    self._drain_events(entry)
                    if entry.alive:
                        # Sending arms the retransmission timer.
                        self._want_timer[entry] = None
        self.stats.ip_tx += len(out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time any connection needs ``on_deadline``."""
        if self._want_timer:
            self._refresh_deadlines()
        heap = self._heap
        while heap:
            t, s, entry = heap[0]
            if entry.heap_seq == s and entry.alive:
                return t
            heapq.heappop(heap)
        return None

    def on_deadline(self, now: float) -> None:
        """Run the timers of the connections that are due (and only those)."""
        if self._want_timer:
            self._refresh_deadlines()
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

    def next_event(self) -> Event | HostEvent | None:
        return self._events.popleft() if self._events else None

    # -- input ------------------------------------------------------------------------------

    def _receive(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        stats = self.stats
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
            # No reassembly in ustack: TCP never sends fragments (DF and MSS from the MTU).
            stats.ip_fragment += 1
            return
        proto = pkt.proto
        if proto == ipv4.PROTO_TCP:
            self._receive_tcp(pkt, now)
        elif proto == ipv4.PROTO_ICMP:
            self._receive_icmp(pkt)
        else:
            stats.ip_unknown_protocol += 1
            original = buf if len(buf) == pkt.total_length else memoryview(buf)[: pkt.total_length]
            self._send_unreachable(pkt, icmp.PROTO_UNREACH, original, now)

    def _receive_icmp(self, pkt: ipv4.IPv4Packet) -> None:
        stats = self.stats
        stats.icmp_rx += 1
        msg = icmp.parse(pkt.payload)
        if msg.type != icmp.ECHO_REQUEST:
            # Echo replies, and errors: soft errors for TCP (RFC 5927) are not acted on yet.
            stats.icmp_ignored += 1
            return
        # RFC 1122 3.2.2.6: the reply carries the request's identifier, sequence and data.
        length = icmp.HEADER_LEN + len(msg.payload)
        buf = bytearray(ipv4.HEADER_LEN + length)
        self._emit_ip(buf, src=pkt.dst, dst=pkt.src, proto=ipv4.PROTO_ICMP, payload_len=length)
        icmp.emit_echo(
            buf,
            ipv4.HEADER_LEN,
            type=icmp.ECHO_REPLY,
            ident=msg.ident,
            sequence=msg.sequence,
            payload=msg.payload,
        )
        self._out.append(buf)
        stats.icmp_echo_replies += 1

    def _receive_tcp(self, pkt: ipv4.IPv4Packet, now: float) -> None:
        stats = self.stats
        stats.tcp_rx += 1
        seg = tcp.parse(pkt.payload, pkt.src, pkt.dst)
        if seg.src_port == 0 or seg.dst_port == 0:
            stats.tcp_bad_port += 1
            return
        key = (pkt.src, seg.src_port, pkt.dst, seg.dst_port)
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

    def _receive_listen(
        self, listener: Listener, key: Key, seg: tcp.TcpSegment, now: float
    ) -> None:
        """RFC 9293 3.10.7.2, SEGMENT ARRIVES in LISTEN, for a port with no connection yet."""
        stats = self.stats
        if seg.control is Control.RST:
            # First check: "An incoming RST segment could not be valid ... it should be ignored."
            stats.listen_drop_rst += 1
            return
        if seg.has_ack:
            # Second check: "Any acknowledgment is bad if it arrives on a connection still in
            # the LISTEN state. An acceptable reset segment should be formed."
            stats.listen_rst_for_ack += 1
            self._emit_rst(key, seg.ack, 0, tcp.RST)
            return
        if seg.control is not Control.SYN:
            # Fourth check: "Any other control or text-bearing segment ... drop it."
            stats.listen_drop_no_syn += 1
            return
        if len(listener._syn_queue) >= listener.syn_backlog:
            stats.listen_syn_queue_overflow += 1
            return
        stats.listen_syn += 1
        conn = self._new_connection(key, now)
        entry = self._add(key, conn, listener)
        listener._syn_queue[entry] = None
        conn.open_passive(now)
        conn.receive(seg, now)
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

    def _new_connection(self, key: Key, now: float) -> Connection:
        remote_addr, remote_port, local_addr, local_port = key
        iss = self._isn(local_addr, local_port, remote_addr, remote_port, now) & 0xFFFFFFFF
        # RFC 7323 5.4: a per-connection offset for the timestamp clock, from the same keyed
        # hash as the ISN (with the ports swapped, so it is not the ISN's offset).
        hasher = self._hasher
        ts_offset = hasher.hash(local_addr, remote_port, remote_addr, local_port) if hasher else 0
        conn = Connection(
            self.config,
            self.stats,
            local_addr=local_addr,
            local_port=local_port,
            remote_addr=remote_addr,
            remote_port=remote_port,
            iss=iss,
            now=now,
            ts_offset=ts_offset,
        )
        conn.tracer = self.tracer
        return conn

    def _add(self, key: Key, conn: Connection, listener: Listener | None) -> _Entry:
        entry = _Entry(self, conn, key, listener)
        conn.on_change = entry.changed
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

    def _touched(self, entry: _Entry) -> None:
        self._want_output[entry] = None
        self._want_timer[entry] = None
        self._drain_events(entry)

    def _drain_events(self, entry: _Entry) -> None:
        conn = entry.conn
        events = self._events
        while (ev := conn.next_event()) is not None:
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
            if d == entry.deadline and entry.heap_seq >= 0:
                continue
            entry.deadline = d
            if d is None:
                entry.heap_seq = -1
                continue
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

    def _emit_ip(self, buf: bytearray, *, src: int, dst: int, proto: int, payload_len: int) -> None:
        self._ip_id = (self._ip_id + 1) & _IP_MAX_ID
        ipv4.emit(
            buf,
            0,
            src=src,
            dst=dst,
            proto=proto,
            payload_len=payload_len,
            ident=self._ip_id,
            ttl=self.host_config.ttl,
        )

    def _build_segment(self, key: Key, s: OutSegment) -> bytearray:
        remote_addr, remote_port, local_addr, local_port = key
        options = tcp.encode_options(s.options)
        length = tcp.HEADER_LEN + len(options) + len(s.payload)
        buf = bytearray(ipv4.HEADER_LEN + length)
        self._emit_ip(
            buf, src=local_addr, dst=remote_addr, proto=ipv4.PROTO_TCP, payload_len=length
        )
        tcp.emit(
            buf,
            ipv4.HEADER_LEN,
            local_addr,
            remote_addr,
            src_port=local_port,
            dst_port=remote_port,
            seq=s.seq,
            ack=s.ack,
            flags=s.flags,
            window=s.window,
            options=options,
            payload=s.payload,
        )
        return buf

    def _emit_rst(self, key: Key, seq_: int, ack: int, flags: int) -> None:
        self._out.append(self._build_segment(key, OutSegment(seq_, ack, flags, 0, NO_OPTIONS, b"")))

    def _send_unreachable(
        self,
        pkt: ipv4.IPv4Packet,
        code: int,
        original: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
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
        buf = bytearray(ipv4.HEADER_LEN + length)
        self._emit_ip(buf, src=pkt.dst, dst=pkt.src, proto=ipv4.PROTO_ICMP, payload_len=length)
        icmp.emit_unreachable(buf, ipv4.HEADER_LEN, code=code, original=original)
        self._out.append(buf)
        self.stats.icmp_unreach_sent += 1
