"""Ladders and trace lines of a running daemon's connections, as they happen.

Theory of operation: ``ustack serve --ladder`` and ``ustack trace`` watch a stack that serves
real clients for hours, so unlike ``ustack demo`` (one :class:`~ustack.ladder.Ladder` for the
whole run, drawn at the end) they draw each connection on its own, once it is over, and then
forget it. A :class:`LadderRecorder` is fed what the stack's two observers report -- every
packet that crossed the link (the driver's ``on_packet``) and every state change of ustack's
connections (the tracer) -- and keeps one small ladder per connection it tracks:

* A connection is tracked from its opening SYN (either way) to a watched local port, if fewer
  than ``max_connections`` are tracked; otherwise it is not drawn, and ``ladder_untracked``
  counts the SYN (each retransmission too: remembering who was left out would cost memory). Segments of 4-tuples not tracked are ignored (a connection older than the
  recorder, or one that was not drawn).
* Each connection's ladder folds runs of plain data/ACK segments as they arrive (as the demo
  does) and keeps at most ``max_rows`` rows: the first half and the latest half, with a marker
  for what fell out between (``ladder_rows_elided``).
* When ustack reports the connection CLOSED (after TIME-WAIT, or at once for a passive close or
  a reset) its ladder is finished ``LINGER`` later, so the segment that closed it -- which the
  host sends after reporting the transition -- is on it. A SYN that got a RST from no
  connection (a closed port) makes a short ladder of its own; a SYN that led to nothing at all
  (a SYN cookie never returned, a SYN dropped) is forgotten after ``EMBRYO_TIMEOUT``
  (``ladder_abandoned``).
* Finished ladders are pulled with :meth:`LadderRecorder.collect`, each with a header line
  (the 4-tuple, how long it lasted, the bytes each way, how it ended); the record is freed.

Like the core, the recorder reads no clock: ``now`` is an argument everywhere, and
:meth:`LadderRecorder.next_deadline` says when ``collect`` has something to do.

The JSON trace lines (:func:`trace_record`, :func:`segment_record`) are the machine-readable
form of the same events: documented in docs/trace-schema.md and versioned by
``TRACE_SCHEMA_VERSION`` in every line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ustack.ladder import INBOUND, Ladder
from ustack.tcp.stats import Stats
from ustack.wire import addr, ipv4, ipv6, virtio
from ustack.wire import seq as sq
from ustack.wire import tcp as tcpw
from ustack.wire.errors import ParseError
from ustack.wire.tcp import Control

# The JSON trace schema (docs/trace-schema.md). Within one version fields and event kinds are
# only ever added; a consumer ignores what it does not know. Removing, renaming or changing
# the meaning of a field bumps it.
TRACE_SCHEMA_VERSION = 1

MAX_CONNECTIONS = 256  # connections drawn at once; more are counted, not drawn
MAX_ROWS = 200  # rows kept per connection: ~20 KB of text at most
FOLD = 4  # plain data/ACK segments shown per run, as ``ustack demo``
# The host reports CLOSED while it still holds the segment that closed the connection (our RST,
# our ACK of the peer's last FIN); it is sent in the same wakeup, long before this.
LINGER = 0.05
# A SYN that neither became a connection nor got a RST: a SYN cookie (RFC 4987) the client has
# not returned, or a SYN the host dropped. Longer than a client's first SYN retries (1, 2, 4 s).
EMBRYO_TIMEOUT = 10.0

_VERSION_6 = 6  # the version nibble of an IPv6 header (RFC 8200 3)

Key = tuple[int, int, int, int]  # local address, local port, peer address, peer port


def endpoint(address: int, port: int) -> str:
    """``10.7.0.2:80``, or ``[fd00:7::2]:80`` (RFC 5952 6)."""
    text = addr.to_text(address)
    return f"[{text}]:{port}" if addr.is_v6(address) else f"{text}:{port}"


def decode(
    packet: bytes | bytearray | memoryview, header_len: int = 0
) -> tuple[int, int, tcpw.TcpSegment] | None:
    """(source, destination, segment) of a TCP packet as the link carries it, or None for
    anything else (not TCP, a non-first fragment, malformed: the host counts those)."""
    try:
        if header_len:
            virtio.parse(packet)
            packet = memoryview(packet)[header_len:]
        if len(packet) and packet[0] >> 4 == _VERSION_6:
            ip6 = ipv6.parse(packet)
            if ip6.proto != ipv6.PROTO_TCP or ip6.is_fragment:
                return None
            src, dst, payload = addr.tag6(ip6.src), addr.tag6(ip6.dst), ip6.payload
        else:
            ip = ipv4.parse(packet)
            if ip.proto != ipv4.PROTO_TCP or ip.is_fragment:
                return None
            src, dst, payload = ip.src, ip.dst, ip.payload
        return src, dst, tcpw.parse(payload, src, dst, pseudo=0, verify_checksum=False)
    except ParseError:
        return None


def _key(direction: str, src: int, dst: int, seg: tcpw.TcpSegment) -> Key:
    if direction == INBOUND:
        return dst, seg.dst_port, src, seg.src_port
    return src, seg.src_port, dst, seg.dst_port


@dataclass(slots=True)
class _Side:
    """One direction's sequence space, for the header's byte count."""

    isn: int | None = None
    high: int | None = None  # one past the highest data octet seen
    payload: int = 0  # payload octets seen, resends included (when no ISN was seen)

    def segment(self, seg: tcpw.TcpSegment) -> None:
        if seg.control is Control.SYN:
            self.isn = seg.seq
        n = len(seg.payload)
        if n:
            self.payload += n
            end = sq.add(seg.seq, n)
            if self.high is None or sq.gt(end, self.high):
                self.high = end

    def octets(self) -> int:
        if self.isn is None:
            return self.payload
        if self.high is None:
            return 0
        return sq.sub(self.high, sq.add(self.isn, 1))


@dataclass(slots=True)
class _Live:
    key: Key
    ladder: Ladder
    start: float
    inbound: _Side = field(default_factory=_Side)
    outbound: _Side = field(default_factory=_Side)
    has_connection: bool = False  # ustack reported a state change for it
    ended: str = ""
    closed_at: float | None = None
    last_states: tuple[str, str] = ("", "")


def _how_it_ended(old: str, trigger: str) -> str:
    """The header's words for a connection's last transition to CLOSED (RFC 9293 3.6, 3.10.7)."""
    if old == "TIME-WAIT":
        return "closed after TIME-WAIT"
    if old == "LAST-ACK" and trigger == "rcv_ack":
        return "closed (passive close: our FIN was ACKed)"
    if trigger == "rcv_rst":
        return f"reset by the peer in {old}"
    if trigger == "abort":
        return f"reset by ustack in {old}"
    if trigger == "timeout":
        return f"timed out in {old}"
    return f"closed from {old}" + (f" ({trigger})" if trigger else "")


class LadderRecorder:
    """Bounded per-connection ladders of a live stack (see the module docstring).

    ``ports``: the local ports to draw (None: all). ``stats``: where the recorder's counters
    go (the stack's, so they show with the rest). ``header_len``: the link's virtio-net header
    length, as for :class:`~ustack.ladder.Ladder`."""

    def __init__(
        self,
        *,
        ports: Collection[int] | None = None,
        stats: Stats | None = None,
        header_len: int = 0,
        max_connections: int = MAX_CONNECTIONS,
        max_rows: int = MAX_ROWS,
        fold: int = FOLD,
    ) -> None:
        if max_connections < 1 or max_rows < 4:
            raise ValueError("max_connections must be at least 1 and max_rows at least 4")
        self.ports = frozenset(ports) if ports is not None else None
        self.stats = stats if stats is not None else Stats()
        self.header_len = header_len
        self.max_connections = max_connections
        self.max_rows = max_rows
        self.fold = fold
        self._live: dict[Key, _Live] = {}
        # Both expire in arrival order (one constant delay each), so each is a FIFO; entries
        # made stale by a later event are skipped when they reach the front.
        self._closing: deque[tuple[float, _Live]] = deque()
        self._embryos: deque[tuple[float, _Live]] = deque()
        self._done: list[str] = []

    def __len__(self) -> int:
        """Connections being tracked now."""
        return len(self._live)

    def packet(self, now: float, direction: str, packet: bytes | bytearray | memoryview) -> None:
        """A packet crossed the link (``"in"``: from the peer, ``"out"``: from ustack)."""
        decoded = decode(packet, self.header_len)
        if decoded is None:
            return
        src, dst, seg = decoded
        key = _key(direction, src, dst, seg)
        live = self._live.get(key)
        opening = seg.control is Control.SYN and not seg.has_ack
        if opening and (live is None or live.closed_at is not None):
            if live is not None:
                self._finish(live)  # a new incarnation of a 4-tuple in its LINGER
            live = self._track(now, key)
        if live is None:
            return
        live.ladder.packet(now, direction, packet)
        (live.inbound if direction == INBOUND else live.outbound).segment(seg)
        if seg.control is Control.RST and not live.has_connection and live.closed_at is None:
            # A RST answering a SYN for which no connection was made: a closed port (RFC 9293
            # 3.10.7.1), or a peer refusing ours.
            live.ended = "refused: RST, no connection"
            self._close(now, live)

    def state(
        self,
        now: float,
        local: tuple[int, int],
        peer: tuple[int, int],
        old: str,
        new: str,
        trigger: str = "",
    ) -> None:
        """A state change of ustack's connection ``local`` <-> ``peer``, each an
        ``(address, port)`` with the address as the core's int; ``trigger`` is the transition
        table's (``rcv_rst``, ``timeout``...), which says how a connection ended."""
        live = self._live.get((local[0], local[1], peer[0], peer[1]))
        if live is None or live.closed_at is not None:
            return
        live.has_connection = True
        live.ladder.state(now, local, peer, old, new)
        if new == "CLOSED":
            live.ended = _how_it_ended(old, trigger)
            self._close(now, live)

    def next_deadline(self) -> float | None:
        """When :meth:`collect` has a ladder to finish or a record to free, if ever."""
        deadline: float | None = None
        if self._closing:
            deadline = self._closing[0][0]
        if self._embryos:
            when = self._embryos[0][0]
            deadline = when if deadline is None else min(deadline, when)
        return deadline

    def collect(self, now: float) -> list[str]:
        """The ladders finished by ``now``, oldest first, each with its header line; their
        records are freed."""
        while self._closing and self._closing[0][0] <= now:
            _, live = self._closing.popleft()
            if self._live.get(live.key) is live:
                self._finish(live)
        while self._embryos and self._embryos[0][0] <= now:
            _, live = self._embryos.popleft()
            current = self._live.get(live.key) is live
            if current and not live.has_connection and live.closed_at is None:
                del self._live[live.key]
                self.stats.ladder_abandoned += 1
        done, self._done = self._done, []
        return done

    def flush(self) -> list[str]:
        """Every tracked connection's ladder as it stands (the daemon is stopping), marked
        unfinished where it is; the recorder is empty afterwards."""
        for live in list(self._live.values()):
            if not live.ended:
                live.ended = "still open when the trace ended"
            self._finish(live)
        self._closing.clear()
        self._embryos.clear()
        done, self._done = self._done, []
        return done

    def _track(self, now: float, key: Key) -> _Live | None:
        if self.ports is not None and key[1] not in self.ports:
            return None
        if len(self._live) >= self.max_connections:
            self.stats.ladder_untracked += 1
            return None
        ladder = Ladder(max_run=self.fold, header_len=self.header_len, max_rows=self.max_rows)
        live = self._live[key] = _Live(key, ladder, now)
        self._embryos.append((now + EMBRYO_TIMEOUT, live))
        return live

    def _close(self, now: float, live: _Live) -> None:
        live.closed_at = now
        self._closing.append((now + LINGER, live))

    def _finish(self, live: _Live) -> None:
        del self._live[live.key]
        elided = live.ladder.elided()
        self.stats.ladder_rows_elided += elided
        local_addr, local_port, peer_addr, peer_port = live.key
        end = live.closed_at if live.closed_at is not None else live.start
        header = (
            f"=== {endpoint(peer_addr, peer_port)} <-> {endpoint(local_addr, local_port)}: "
            f"{end - live.start:.3f} s, {live.inbound.octets()} bytes in, "
            f"{live.outbound.octets()} bytes out, {live.ended} ==="
        )
        self._done.append(header + "\n" + live.ladder.render())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return getattr(value, "value", value)


def trace_record(
    when: float, local: str, remote: str, kind: str, detail: dict[str, Any]
) -> dict[str, Any]:
    """One JSON trace line's object for an event a connection reported (see
    docs/trace-schema.md): the detail as the connection gave it, enums as their values; a
    detail key that would overwrite a common field is renamed ``<event>_<key>``."""
    record: dict[str, Any] = {
        "v": TRACE_SCHEMA_VERSION,
        "time": round(when, 6),
        "event": kind,
        "local": local,
        "remote": remote,
    }
    for key, value in detail.items():
        record[f"{kind}_{key}" if key in record else key] = _jsonable(value)
    return record


def segment_record(
    when: float, direction: str, src: int, dst: int, seg: tcpw.TcpSegment
) -> dict[str, Any]:
    """One JSON trace line's object for a segment that crossed the link (``direction``: ``in``
    from the peer, ``out`` from ustack); numbers absolute, as on the wire."""
    local, remote = (
        (endpoint(dst, seg.dst_port), endpoint(src, seg.src_port))
        if direction == INBOUND
        else (endpoint(src, seg.src_port), endpoint(dst, seg.dst_port))
    )
    record: dict[str, Any] = {
        "v": TRACE_SCHEMA_VERSION,
        "time": round(when, 6),
        "event": "segment",
        "local": local,
        "remote": remote,
        "dir": direction,
        "flags": tcpw.flag_string(seg.flags),
        "seq": seg.seq,
        "ack": seg.ack if seg.has_ack else None,
        "win": seg.window,
        "len": len(seg.payload),
    }
    if seg.options.sack_blocks:
        record["sack"] = [list(block) for block in seg.options.sack_blocks]
    return record
