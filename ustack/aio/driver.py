"""The asyncio driver: link -> host -> link, with one timer.

Theory of operation. The host and its connections are sans-IO: they take ``now`` and bytes, and
hand back packets, events and a single ``next_deadline()``. The driver is the only thing that
turns those into wakeups:

* **Input.** ``loop.add_reader(link.fileno())``. Each readiness event drains at most ``batch``
  packets (DESIGN rule 12), feeding each to ``host.receive_packet(pkt, now)`` with one ``now``
  for the whole batch. A full batch means more may be waiting, so the rest is read from a
  ``call_soon`` continuation: other callbacks get a turn, and the reader callback does nothing
  while that continuation is pending, so one loop iteration never does two batches.
* **After a batch**, host events are dispatched to their transports and listeners first
  (delivering data may read it, which can open the receive window), then ``packets_to_send`` is
  flushed once, as one ``write_batch``.
* **Application calls** (write, close, abort, resume_reading, connect) change a connection, which
  tells the host (its ``on_change`` hook), which tells the driver (``host.on_wakeup`` is
  :meth:`Driver.wakeup`); that only marks the driver dirty: a single ``call_soon`` flush serves
  every call made in the same loop iteration, so a burst of ``write()`` calls makes one flush,
  and Nagle/cwnd see the whole burst. Calls made while the driver dispatches events (a
  protocol answering in ``data_received``) need not even that: the flush that follows the
  dispatch sends their output. Nobody calls "touch".
* **Time.** Exactly one ``loop.call_at`` handle is live, armed at the earlier of
  ``host.next_deadline()`` and ``link.next_deadline()``, never polled. It is re-armed when that
  deadline moves earlier; a deadline that moves later or vanishes (an RTO cleared by an ACK,
  every round trip) keeps the armed timer, which then fires early once and re-arms. ``now`` passed to the core never goes backwards, and a timer that
  fires counts as having reached its deadline: uvloop's clock has millisecond granularity, and
  a timer seen as early would otherwise re-arm at the same instant and spin.

**Losing the link.** A link that reports ``at_eof`` with a ``failure`` (a TUN device deleted
under us: see ``ustack.link.tun``) is gone for good. The driver stops, hands every transport a
``ConnectionResetError`` (``_link_lost``), tears every connection down locally (ABORT, with
nothing sent: there is nowhere to send it), ends every listener's waits, and tells its owner
through ``on_link_lost``; ``link_error`` keeps the reason. A plain EOF (a closed pair peer)
only stops the reading, as before.

Nothing here formats a log message per packet; the packet observer hook costs one ``is None``
test when unused. The observer sees each buffer exactly as the link carries it: with TUN
offloads on that is ``link.header_len`` bytes of virtio-net header and then the IPv4 packet,
possibly a 64 KB super-segment (``ustack.ladder.Ladder(header_len=...)`` knows how to read it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ustack.tcp import events as ev
from ustack.tcp.connection import Connection
from ustack.tcp.state import State

if TYPE_CHECKING:
    from ustack.link.base import Link
    from ustack.stack.host import Host

log = logging.getLogger(__name__)

DEFAULT_BATCH = 256
MAX_BUSY_POLL = 0.01  # a busy-poll window longer than 10 ms would starve everything else

PacketObserver = Callable[[str, bytes | bytearray | memoryview, float], None]


def link_failure(link: object) -> OSError | None:
    """Why ``link`` -- or the link it wraps (fault injector, pcap tap) -- is gone for good,
    or None."""
    seen = 0
    while link is not None and seen < 16:  # wrappers nest a few deep at most
        failure = getattr(link, "failure", None)
        if isinstance(failure, OSError):
            return failure
        link = getattr(link, "inner", None)
        seen += 1
    return None


class EventSink(Protocol):
    """Whatever owns a connection (a transport) or a listener (a server) on the asyncio side."""

    def _on_event(self, event: Any) -> None: ...


class Driver:
    __slots__ = (
        "_batch",
        "_busy_poll",
        "_closed",
        "_continue_pending",
        "_flush_pending",
        "_last_now",
        "_listeners",
        "_on_progress",
        "_owners",
        "_reading",
        "_timer",
        "_timer_when",
        "host",
        "link",
        "link_error",
        "loop",
        "on_link_lost",
        "on_packet",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        link: Link,
        host: Host,
        *,
        batch: int = DEFAULT_BATCH,
        on_packet: PacketObserver | None = None,
        busy_poll: float = 0.0,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        if not 0.0 <= busy_poll <= MAX_BUSY_POLL:
            raise ValueError(f"busy_poll must be 0 to {MAX_BUSY_POLL} s, got {busy_poll}")
        self.loop = loop
        self.link = link
        self.host = host
        self.on_packet = on_packet
        self._batch = batch
        self._busy_poll = busy_poll
        self._owners: dict[int, EventSink] = {}  # id(conn) -> transport
        self._listeners: dict[int, EventSink] = {}  # id(host listener) -> server
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._flush_pending = False
        self._continue_pending = False
        self._reading = False
        self._closed = False
        self._last_now = loop.time()
        # Called after every batch, timer or flush; aclose() uses it to notice quiescence.
        self._on_progress: Callable[[], None] | None = None
        # The link went away for good (see "Losing the link"): why, and who to tell.
        self.link_error: OSError | None = None
        self.on_link_lost: Callable[[OSError], None] | None = None
        host.on_wakeup = self.wakeup

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("driver is closed")
        if not self._reading:
            self.loop.add_reader(self.link.fileno(), self._on_readable)
            self._reading = True
        self._rearm()

    def stop(self) -> None:
        """Stop reading and cancel the timer; the link and host are left to their owner."""
        self._closed = True
        if self.host.on_wakeup == self.wakeup:
            self.host.on_wakeup = None
        if self._reading:
            self.loop.remove_reader(self.link.fileno())
            self._reading = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = None

    @property
    def closed(self) -> bool:
        return self._closed

    def now(self) -> float:
        now = self.loop.time()
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    # -- registration ------------------------------------------------------------------------

    def register(self, conn: Connection, owner: EventSink) -> None:
        self._owners[id(conn)] = owner

    def unregister(self, conn: Connection) -> None:
        self._owners.pop(id(conn), None)

    def register_listener(self, listener: object, owner: EventSink) -> None:
        self._listeners[id(listener)] = owner

    def unregister_listener(self, listener: object) -> None:
        self._listeners.pop(id(listener), None)

    # -- the three wakeups -------------------------------------------------------------------

    def wakeup(self) -> None:
        """The host's ``on_wakeup`` hook: an application call changed what the host wants to
        send or when it needs its timer. Flush once, soon."""
        if not self._flush_pending and not self._closed:
            self._flush_pending = True
            self.loop.call_soon(self._flush_soon)

    def _on_readable(self) -> None:
        if self._continue_pending:
            return  # the continuation already scheduled will read; one batch per iteration
        self._read_batch()

    def _continue(self) -> None:
        self._continue_pending = False
        if not self._closed:
            self._read_batch()

    def _read_batch(self) -> None:
        now = self.now()
        packets = self.link.read_batch(now, self._batch)
        if packets:
            host = self.host
            observer = self.on_packet
            if observer is None:
                for pkt in packets:
                    host.receive_packet(pkt, now)
            else:
                for pkt in packets:
                    observer("in", pkt, now)
                    host.receive_packet(pkt, now)
            if len(packets) >= self._batch and not self._continue_pending:
                self._continue_pending = True
                self.loop.call_soon(self._continue)
        elif self._reading and self.link.at_eof:
            failure = link_failure(self.link)
            if failure is not None:
                self._link_lost(failure)
                return
            # The other end of the link is gone; its fd would wake us forever.
            log.warning("link %r reached EOF; no longer reading it", self.link)
            self.loop.remove_reader(self.link.fileno())
            self._reading = False
        self._process(now)
        if self._busy_poll and packets and not self._continue_pending:
            self._spin()

    def _spin(self) -> None:
        """Busy polling (Linux's SO_BUSY_POLL, opt-in): after a batch, keep reading the link
        for up to ``busy_poll`` seconds instead of going back to sleep in the event loop, so
        the answer to a request/response peer's next packet does not wait for a wake-up (on a
        virtual machine, tens of microseconds). Bounded: it returns after that long without a
        packet, or after a full batch (the rest is read the usual way), and other callbacks
        wait meanwhile -- which is why it is off by default."""
        clock = time.perf_counter
        link = self.link
        host = self.host
        observer = self.on_packet
        end = clock() + self._busy_poll
        while clock() < end:
            now = self.now()
            packets = link.read_batch(now, self._batch)
            if not packets:
                continue
            for pkt in packets:
                if observer is not None:
                    observer("in", pkt, now)
                host.receive_packet(pkt, now)
            self._process(now)
            if len(packets) >= self._batch:
                if not self._continue_pending:
                    self._continue_pending = True
                    self.loop.call_soon(self._continue)
                return
            end = clock() + self._busy_poll

    def _on_timer(self) -> None:
        when = self._timer_when
        self._timer = None
        self._timer_when = None
        if self._closed:
            return
        now = self.now()
        if when is not None and now < when:
            now = self._last_now = when
        host_deadline = self.host.next_deadline()
        if host_deadline is not None and host_deadline <= now:
            self.host.on_deadline(now)
        link_deadline = self.link.next_deadline()
        if link_deadline is not None and link_deadline <= now:
            self.link.on_deadline(now)
            # A delaying link may now have inbound packets due; they are read like any others.
            packets = self.link.read_batch(now, self._batch)
            observer = self.on_packet
            for pkt in packets:
                if observer is not None:
                    observer("in", pkt, now)
                self.host.receive_packet(pkt, now)
        self._process(now)

    def _flush_soon(self) -> None:
        self._flush_pending = False
        if not self._closed:
            self._process(self.now())

    def _link_lost(self, failure: OSError) -> None:
        """The link is gone for good: see "Losing the link" in the module docstring."""
        if self._closed:
            return
        self.link_error = failure
        self.stop()
        now = self.now()
        reset = ConnectionResetError(
            errno.ECONNRESET, f"{os.strerror(errno.ECONNRESET)} ({failure})"
        )
        for owner in list(self._owners.values()):
            lost = getattr(owner, "_link_lost", None)
            if lost is not None:
                lost(reset)
        host = self.host
        for conn in host.connections:
            if isinstance(conn, Connection) and conn.state is not State.CLOSED:
                conn.abort(now)
        # Their Closed events end the bookkeeping; their RSTs have nowhere to go.
        self.dispatch_events()
        host.packets_to_send(now)
        for listener in list(self._listeners.values()):
            lost = getattr(listener, "_link_lost", None)
            if lost is not None:
                lost(failure)
        if self.on_link_lost is not None:
            self.on_link_lost(failure)

    # -- the common tail: events, one flush, one timer ---------------------------------------

    def _process(self, now: float) -> None:
        # What the applications do while their events are dispatched (an echo writing back
        # what it read) goes out with this flush: their wakeups need no flush of their own,
        # which would cost a loop iteration per round trip.
        pending = self._flush_pending
        self._flush_pending = True
        try:
            self.dispatch_events()
            self.flush(now)
        finally:
            self._flush_pending = pending
        self._rearm()
        if self._on_progress is not None:
            self._on_progress()

    def dispatch_events(self) -> None:
        host = self.host
        owners = self._owners
        event = host.next_event()
        while event is not None:
            conn = getattr(event, "conn", None)
            owner: EventSink | None
            if conn is not None:
                owner = owners.get(id(conn))
                if type(event) is ev.Closed:
                    owners.pop(id(conn), None)
            else:
                owner = self._listeners.get(id(getattr(event, "listener", None)))
            if owner is not None:
                try:
                    owner._on_event(event)
                except Exception as exc:
                    # A failing protocol callback must not cost the other connections their
                    # events or this batch its flush; report it the way asyncio reports a
                    # failing callback, and reset that one connection.
                    self._owner_failed(owner, event, exc)
            event = host.next_event()

    def _owner_failed(self, owner: EventSink, event: object, exc: Exception) -> None:
        self.loop.call_exception_handler(
            {"message": f"ustack: handling {type(event).__name__} failed", "exception": exc}
        )
        abort = getattr(owner, "abort", None)
        if abort is not None:
            try:
                abort()
            except Exception:
                pass

    def flush(self, now: float) -> None:
        packets = self.host.packets_to_send(now)
        if packets:
            observer = self.on_packet
            if observer is not None:
                for pkt in packets:
                    # a packet in pieces (see link.base.Gathered) is shown whole
                    observer("out", b"".join(pkt) if isinstance(pkt, tuple) else pkt, now)
            self.link.write_batch(packets, now)

    def _rearm(self) -> None:
        deadline = self.host.next_deadline()
        link_deadline = self.link.next_deadline()
        if link_deadline is not None and (deadline is None or link_deadline < deadline):
            deadline = link_deadline
        armed = self._timer_when
        if deadline == armed:
            return
        if self._timer is not None and armed is not None and (deadline is None or armed < deadline):
            # An earlier timer is already armed: let it fire early and re-arm then. Deadlines
            # come and go on every round trip (the RTO while data is in flight, the delayed
            # ACK); paying a cancel and a call_at for each costs more than one spare wakeup.
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = deadline
        if deadline is not None and not self._closed:
            self._timer = self.loop.call_at(deadline, self._on_timer)
