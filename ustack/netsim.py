"""A virtual-time network simulator for sans-IO hosts.

Theory of operation: a :class:`Network` holds hosts, one :class:`SimLink` per direction between
two hosts, and a heap of ``(time, seq, kind, host, packet)`` actions. Nothing waits for real
time: the loop pops the earliest action, sets ``now`` to its time, and either delivers a packet
(``host.receive_packet``) or runs a host's timers (``host.on_deadline``). After every action the
host is *serviced*: its events go to the application callback registered for it (which may call
into connections), its packets go onto the links, and its ``next_deadline()`` is scheduled. A
connection the application calls into from outside ``run`` (a test connecting or sending) wakes
its host through ``Host.on_wakeup``, which schedules a service at the current time. A host has at
most one live deadline entry; a moved deadline leaves the old entry in the heap, recognised as
stale when it is popped.

A link models a bottleneck: packets are serialised at ``bandwidth`` bytes/s behind the ones
already queued, a packet finding ``queue_limit`` packets waiting is dropped (drop-tail,
counted), and each packet then travels for ``delay`` seconds; an optional seeded
:class:`~ustack.link.fault.FaultModel` decides losses, duplicates, reordering and corruption on
arrival. Everything is deterministic for given seeds, so a failing run can be replayed exactly;
``log=True`` keeps a packet log that :meth:`Network.format_log` prints tcpdump-style.
An :class:`MtuLink` puts a router with a smaller next-hop MTU on the path: it drops a longer
DF datagram and answers it with ICMP "fragmentation needed" (RFC 1191), for path MTU tests.

The module also holds :class:`TransferApp`, a small bulk-transfer application used by the tests
and ``bench/netsim.py``.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ustack.link.fault import FaultModel
from ustack.stack.events import (
    ConnectionAccepted,
    ConnectionRequested,
    DatagramReceived,
    HostEvent,
)
from ustack.stack.host import Host, Listener
from ustack.tcp.connection import Connection
from ustack.tcp.events import (
    Closed,
    DataReceived,
    EofReceived,
    Established,
    Event,
    Reset,
    TimedOut,
    WriteSpace,
)
from ustack.wire import icmp, icmpv6, ipv4, ipv6
from ustack.wire.addr import V6
from ustack.wire.fmt import format_packet

App = Callable[[Event | HostEvent, float], None]

_DELIVER = 0
_DEADLINE = 1
_WAKE = 2
# A host whose deadline does not move forward after on_deadline would spin forever at one
# instant; this many actions at the same virtual time is treated as that bug.
_MAX_ACTIONS_PER_INSTANT = 100_000


def destination(packet: bytes | bytearray) -> int:
    """A datagram's destination as the core's int: IPv4 octets 16-20; IPv6 octets 24-40,
    tagged (see :mod:`ustack.wire.addr`); 0 for a packet too short to say."""
    if len(packet) >= ipv6.HEADER_LEN and packet[0] >> 4 == 6:
        return int.from_bytes(packet[ipv6.OFF_DST : ipv6.HEADER_LEN], "big") | V6
    return int.from_bytes(packet[16:20], "big") if len(packet) >= ipv4.HEADER_LEN else 0


@dataclass(slots=True)
class SimLinkStats:
    packets: int = 0  # offered to the link
    bytes: int = 0
    queue_drops: int = 0  # drop-tail: the queue already held queue_limit packets
    fault_lost: int = 0  # the fault model delivered no copy
    delivered: int = 0  # copies delivered to the far host (duplicates included)
    no_route: int = 0  # counted on the Network's loopback stats only
    # Of the dropped packets (queue drops and fault-model losses), those that carried TCP
    # payload and how many payload bytes: what a sender had to retransmit, at the least.
    lost_payload_packets: int = 0
    lost_payload_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SimLink:
    """One direction of a simulated link."""

    __slots__ = (
        "_busy_until",
        "_queue",
        "bandwidth",
        "delay",
        "fault",
        "name",
        "queue_limit",
        "stats",
    )

    def __init__(
        self,
        name: str = "link",
        *,
        bandwidth: float | None = None,
        delay: float = 0.0,
        queue_limit: int | None = 1000,
        fault: FaultModel | None = None,
    ) -> None:
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError("bandwidth must be positive (bytes/s) or None for unlimited")
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.name = name
        self.bandwidth = bandwidth
        self.delay = delay
        self.queue_limit = queue_limit
        self.fault = fault
        self.stats = SimLinkStats()
        self._busy_until = 0.0
        self._queue: deque[float] = deque()  # departure times of packets not yet on the wire

    def transmit(self, packet: bytes | bytearray, now: float) -> list[tuple[float, bytes]]:
        """Queue ``packet`` at ``now``; return its arrivals at the far end as (time, bytes)."""
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(packet)
        queue = self._queue
        while queue and queue[0] <= now:
            queue.popleft()
        if self.queue_limit is not None and len(queue) >= self.queue_limit:
            stats.queue_drops += 1
            self._count_lost(packet)
            return []
        start = max(now, self._busy_until)
        done = start + (len(packet) / self.bandwidth if self.bandwidth else 0.0)
        self._busy_until = done
        queue.append(done)
        arrive = done + self.delay
        if self.fault is None:
            arrivals = [(arrive, bytes(packet))]
        else:
            arrivals = self.fault.apply(packet, arrive)
            if not arrivals:
                stats.fault_lost += 1
                self._count_lost(packet)
        stats.delivered += len(arrivals)
        return arrivals

    def _count_lost(self, packet: bytes | bytearray) -> None:
        # Only the two header lengths are read (no checksum, no options): a drop is rare next
        # to a send, and a packet too short for its own headers simply does not count.
        n = len(packet)
        if n >= 60 and packet[0] >> 4 == 6 and packet[ipv6.OFF_NEXT_HEADER] == ipv6.PROTO_TCP:
            # IPv6 carrying TCP right behind the fixed header (ustack sends no extension headers)
            ihl = ipv6.HEADER_LEN
            total = min(n, ihl + int.from_bytes(packet[4:6], "big"))
        elif n < 40 or packet[0] >> 4 != 4 or packet[9] != 6:  # IPv4 carrying TCP
            return
        else:
            ihl = (packet[0] & 0x0F) * 4
            total = min(n, int.from_bytes(packet[2:4], "big"))
        if ihl < 20 or total < ihl + 20:
            return
        data_offset = (packet[ihl + 12] >> 4) * 4
        payload = total - ihl - data_offset
        if data_offset >= 20 and payload > 0:
            self.stats.lost_payload_packets += 1
            self.stats.lost_payload_bytes += payload


class MtuLink(SimLink):
    """A link whose far side is a router onto a next hop that takes at most ``mtu`` octets.

    A datagram longer than that with DF set is dropped, and the router answers it as RFC 1191 4
    says: ICMP "fragmentation needed" from ``router`` to the datagram's source, quoting it, with
    ``next_hop_mtu`` in the MTU field (``mtu`` unless given; 0 plays a router from before RFC
    1191). An IPv6 packet (routers never fragment one) is answered with an ICMPv6 Packet Too
    Big (RFC 4443 3.2, RFC 8201 4) from ``router6`` (a tagged address). The answer arrives ``delay`` after the datagram was offered (the way back). A long
    datagram without DF is dropped too (this router does not fragment), counted apart. Put it
    in with :meth:`Network.add_link`; ``network`` is where the answers are delivered.
    """

    __slots__ = (
        "frag_needed_sent",
        "mtu",
        "network",
        "next_hop_mtu",
        "no_df_drops",
        "router",
        "router6",
    )

    def __init__(
        self,
        network: Network,
        name: str = "link",
        *,
        mtu: int,
        router: int,
        router6: int = 0,
        next_hop_mtu: int | None = None,
        bandwidth: float | None = None,
        delay: float = 0.0,
        queue_limit: int | None = 1000,
        fault: FaultModel | None = None,
    ) -> None:
        super().__init__(
            name, bandwidth=bandwidth, delay=delay, queue_limit=queue_limit, fault=fault
        )
        if not ipv4.HEADER_LEN < mtu <= ipv4.MAX_TOTAL_LEN:
            raise ValueError(f"bad MTU {mtu}")
        self.network = network
        self.mtu = mtu
        self.router = router
        self.router6 = router6
        self.next_hop_mtu = mtu if next_hop_mtu is None else next_hop_mtu
        self.frag_needed_sent = 0
        self.no_df_drops = 0

    def transmit(self, packet: bytes | bytearray, now: float) -> list[tuple[float, bytes]]:
        if len(packet) <= self.mtu or len(packet) < ipv4.HEADER_LEN:
            return super().transmit(packet, now)
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(packet)
        self._count_lost(packet)
        if packet[0] >> 4 == 6:
            self._packet_too_big(packet, now)
            return []
        if not packet[6] & 0x40:  # DF (RFC 791): without it a router would fragment
            self.no_df_drops += 1
            return []
        self.frag_needed_sent += 1
        length = icmp.HEADER_LEN + icmp.quote_length(packet)
        answer = bytearray(ipv4.HEADER_LEN + length)
        source = int.from_bytes(packet[12:16], "big")
        ipv4.emit(
            answer,
            0,
            src=self.router,
            dst=source,
            proto=ipv4.PROTO_ICMP,
            payload_len=length,
            ident=self.frag_needed_sent & 0xFFFF,
        )
        icmp.emit_unreachable(
            answer, ipv4.HEADER_LEN, code=icmp.FRAG_NEEDED, original=packet, mtu=self.next_hop_mtu
        )
        self.network.inject(bytes(answer), now + self.delay, self.name)
        return []

    def _packet_too_big(self, packet: bytes | bytearray, now: float) -> None:
        self.frag_needed_sent += 1
        length = icmpv6.HEADER_LEN + icmpv6.quote_length(packet)
        answer = bytearray(ipv6.HEADER_LEN + length)
        src = self.router6 & (V6 - 1)
        dst = int.from_bytes(packet[ipv6.OFF_SRC : ipv6.OFF_DST], "big")
        ipv6.emit(answer, 0, src=src, dst=dst, next_header=ipv6.PROTO_ICMPV6, payload_len=length)
        icmpv6.emit_error(
            answer,
            ipv6.HEADER_LEN,
            type=icmpv6.PACKET_TOO_BIG,
            code=0,
            value=self.next_hop_mtu,
            original=packet,
            src=src,
            dst=dst,
        )
        self.network.inject(bytes(answer), now + self.delay, self.name)


@dataclass(slots=True)
class LogEntry:
    time: float
    link: str
    what: str  # "sent", "queue_drop", "lost", "delivered"
    packet: bytes

    def format(self) -> str:
        return f"{self.time:12.6f} {self.link} {self.what:10} {format_packet(self.packet)}"


class Network:
    """Hosts, links between them, and the virtual clock."""

    def __init__(self, *, start: float = 0.0, log: bool = False) -> None:
        self.now = start
        self.log: list[LogEntry] | None = [] if log else None
        self._heap: list[tuple[float, int, int, Host, bytes]] = []
        self._seq = 0
        self._routes: dict[int, Host] = {}
        self._links: dict[tuple[int, int], SimLink] = {}
        self._apps: dict[int, App] = {}
        self._deadline: dict[int, float | None] = {}
        self._woken: dict[int, bool] = {}
        self.no_route = 0
        self.actions = 0

    def add_host(self, host: Host, app: App | None = None) -> Host:
        for addr in host.addresses:
            if addr in self._routes and self._routes[addr] is not host:
                raise ValueError("address already used by another host")
            self._routes[addr] = host
        if app is not None:
            self._apps[id(host)] = app

        def wake() -> None:
            if not self._woken.get(id(host)):
                self._woken[id(host)] = True
                self._push(self.now, _WAKE, host, b"")

        host.on_wakeup = wake
        return host

    def set_app(self, host: Host, app: App) -> None:
        self._apps[id(host)] = app

    def add_link(self, src: Host, dst: Host, link: SimLink) -> SimLink:
        self._links[(id(src), id(dst))] = link
        return link

    def connect(
        self,
        a: Host,
        b: Host,
        *,
        bandwidth: float | None = None,
        delay: float = 0.0,
        queue_limit: int | None = 1000,
        fault_ab: FaultModel | None = None,
        fault_ba: FaultModel | None = None,
    ) -> tuple[SimLink, SimLink]:
        """Join ``a`` and ``b`` with a link in each direction; return (a->b, b->a)."""
        ab = SimLink(
            "a>b", bandwidth=bandwidth, delay=delay, queue_limit=queue_limit, fault=fault_ab
        )
        ba = SimLink(
            "b>a", bandwidth=bandwidth, delay=delay, queue_limit=queue_limit, fault=fault_ba
        )
        return self.add_link(a, b, ab), self.add_link(b, a, ba)

    def transmit(self, src: Host, packet: bytes | bytearray) -> None:
        """Put a raw datagram on the link from ``src`` to its destination, as if ``src`` sent it."""
        self._send(src, packet, self.now)

    def inject(self, packet: bytes, at: float, link: str = "inject") -> None:
        """Deliver ``packet`` at time ``at`` to the host owning its destination address, from
        outside any host (an :class:`MtuLink`'s router answering)."""
        dst = self._routes.get(destination(packet))
        if dst is None:
            self.no_route += 1
            return
        if self.log is not None:
            self.log.append(LogEntry(at, link, "delivered", packet))
        self._push(at, _DELIVER, dst, packet)

    def run(
        self,
        until: Callable[[], bool] | None = None,
        *,
        max_time: float,
        max_actions: int | None = None,
    ) -> bool:
        """Run actions in time order until ``until()`` holds (return True), nothing is left to
        do, or the next action is later than ``max_time`` (return ``until()``)."""
        heap = self._heap
        same_instant = 0
        budget = max_actions
        if until is not None and until():
            return True
        while heap:
            t, _, kind, host, packet = heap[0]
            if t > max_time:
                # Everything up to max_time has happened.
                self.now = max(self.now, max_time)
                break
            heapq.heappop(heap)
            if t == self.now:
                same_instant += 1
                if same_instant > _MAX_ACTIONS_PER_INSTANT:
                    raise RuntimeError(f"livelock: {same_instant} actions at t={t}")
            else:
                same_instant = 0
            self.now = t
            self.actions += 1
            if budget is not None:
                budget -= 1
                if budget < 0:
                    raise RuntimeError("netsim action budget exhausted")
            if kind == _DELIVER:
                host.receive_packet(packet, t)
            elif kind == _WAKE:
                self._woken[id(host)] = False
            else:
                if self._deadline.get(id(host)) != t:
                    continue  # stale: the host's deadline moved after this entry was pushed
                self._deadline[id(host)] = None
                host.on_deadline(t)
            self._service(host)
            if until is not None and until():
                return True
        return until() if until is not None else False

    def format_log(self) -> str:
        return "\n".join(e.format() for e in self.log or ())

    def _push(self, t: float, kind: int, host: Host, packet: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, host, packet))

    def _service(self, host: Host) -> None:
        now = self.now
        app = self._apps.get(id(host))
        while True:
            progressed = False
            while (ev := host.next_event()) is not None:
                progressed = True
                if app is not None:
                    app(ev, now)
            packets = host.packets_to_send(now)
            for p in packets:
                # simulated hosts never scatter (that is for links with writev)
                assert not isinstance(p, tuple)
                self._send(host, p, now)
            if not packets and not progressed:
                break
        d = host.next_deadline()
        key = id(host)
        if d is not None and self._deadline.get(key) != d:
            d = max(d, now)
            self._deadline[key] = d
            self._push(d, _DEADLINE, host, b"")

    def _send(self, src: Host, packet: bytes | bytearray, now: float) -> None:
        dst = self._routes.get(destination(packet))
        link = self._links.get((id(src), id(dst))) if dst is not None else None
        if dst is None or link is None:
            self.no_route += 1
            return
        log = self.log
        before = link.stats.queue_drops
        arrivals = link.transmit(packet, now)
        if log is not None:
            data = bytes(packet)
            if link.stats.queue_drops != before:
                log.append(LogEntry(now, link.name, "queue_drop", data))
            elif not arrivals:
                log.append(LogEntry(now, link.name, "lost", data))
            else:
                log.append(LogEntry(now, link.name, "sent", data))
        for t, copy in arrivals:
            if log is not None:
                log.append(LogEntry(t, link.name, "delivered", copy))
            self._push(t, _DELIVER, dst, copy)


@dataclass(slots=True)
class TransferResult:
    """What one side of one connection saw."""

    sent: int = 0
    received: int = 0
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    established_at: float | None = None
    eof_at: float | None = None
    closed_at: float | None = None
    reset: bool = False
    timed_out: str | None = None

    @property
    def digest(self) -> str:
        return self.sha256.hexdigest()


class TransferApp:
    """Bulk transfer on every connection of one host: send ``payload``, read everything.

    With a payload, the send side is shut down (FIN) once all of it is queued; without one, the
    side shuts down after the peer's EOF, so the payload's sender is the active closer and ends
    in TIME-WAIT. Pass ``listener`` to serve connections accepted there.
    """

    def __init__(
        self, host: Host, payload: bytes = b"", *, listener: Listener | None = None
    ) -> None:
        self.host = host
        self.payload = memoryview(payload)
        self.listener = listener
        self.results: dict[int, TransferResult] = {}
        self._offset: dict[int, int] = {}
        self._conns: dict[int, Connection] = {}
        self._shut: set[int] = set()

    def add(self, conn: Connection) -> TransferResult:
        """Adopt ``conn`` (an active open, or one taken from the listener)."""
        key = id(conn)
        self._conns[key] = conn
        self._offset[key] = 0
        return self.results.setdefault(key, TransferResult())

    def result(self, conn: Connection) -> TransferResult:
        return self.results[id(conn)]

    @property
    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    def __call__(self, event: Event | HostEvent, now: float) -> None:
        if isinstance(event, ConnectionAccepted):
            conn = event.listener.accept()
            while conn is not None:
                self.add(conn).established_at = now
                self._push(conn, now)
                conn = event.listener.accept()
            return
        if isinstance(event, ConnectionRequested | DatagramReceived):
            return  # forward mode's host events: no simulated application asks for them
        conn = event.conn
        key = id(conn)
        result = self.results.get(key)
        if result is None:
            return  # a passive connection not accepted yet
        if isinstance(event, Established):
            result.established_at = now
            self._push(conn, now)
        elif isinstance(event, WriteSpace):
            self._push(conn, now)
        elif isinstance(event, DataReceived):
            data = conn.read()
            result.received += len(data)
            result.sha256.update(data)
        elif isinstance(event, EofReceived):
            data = conn.read()
            if data:
                result.received += len(data)
                result.sha256.update(data)
            result.eof_at = now
            if not self.payload and key not in self._shut:
                self._shut.add(key)
                conn.shutdown(now)
        elif isinstance(event, Reset):
            result.reset = True
        elif isinstance(event, TimedOut):
            result.timed_out = event.reason
        elif isinstance(event, Closed):
            result.closed_at = now

    def _push(self, conn: Connection, now: float) -> None:
        key = id(conn)
        if key in self._shut or not self.payload:
            return
        offset = self._offset[key]
        total = len(self.payload)
        while offset < total:
            n = conn.send(self.payload[offset:])
            if n <= 0:
                break
            offset += n
        self._offset[key] = offset
        self.results[key].sent = offset
        if offset == total:
            self._shut.add(key)
            conn.shutdown(now)
