"""Fault injection around any link.

``FaultyLink(inner, model_out, model_in)`` passes each packet through a seeded, pure
``FaultModel`` (``ustack.link.fault``), which decides its fate: a list of
``(deliver_at, packet)`` pairs of fresh ``bytes`` -- empty when the packet is dropped, two entries when it is
duplicated, a later time when it is delayed or reordered, altered bytes when it is corrupted.
This wrapper only carries out those decisions against the clock it is given:

* Outbound (``write``): entries due now go straight to ``inner.write``; later ones wait in a
  min-heap until ``on_deadline(now)`` releases them.
* Inbound (``read_batch``): packets from ``inner`` go through ``model_in``; entries due now are
  returned at once, later ones wait in a second heap and are returned by a later
  ``read_batch(now)`` call once due. ``next_deadline()`` reports the earliest held packet of
  either direction (and the inner link's own deadline), so the driver knows when to call.

The model decides per wire packet, so the inner link must carry plain packets: a link with the
virtio-net header (``header_len`` != 0, TUN offloads on) is refused. A 64 KB super-segment is
many wire packets, and with checksum offload nothing would verify the checksum a corruption
breaks. Open the TUN device with ``offload="off"`` to inject faults.

Ties are broken by arrival order, so with the same seed and the same sequence of ``now``
values the output is identical run after run. Held packets are copied (the caller may reuse
its buffer) and bounded by ``max_held`` per direction; overflow is a counted drop.

``stats`` counts what crosses this wrapper's own interface: ``rx_*`` packets handed up,
``tx_*`` packets handed to ``inner`` and ``*_fault`` packets the model dropped. The inner
link keeps its own counters; the model keeps its own per-fault ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ustack.link.base import Link, LinkStats, Packet
from ustack.link.fault import FaultModel

MAX_HELD = 10_000  # packets per direction; a delay model cannot grow memory without bound


_Held = list[tuple[float, int, bytes]]


class FaultyLink:
    """A link that injects the faults chosen by ``model_out`` (writes) and ``model_in`` (reads)."""

    __slots__ = ("_in", "_out", "_serial", "inner", "max_held", "model_in", "model_out", "stats")

    def __init__(
        self,
        inner: Link,
        model_out: FaultModel | None = None,
        model_in: FaultModel | None = None,
        *,
        max_held: int = MAX_HELD,
    ) -> None:
        if getattr(inner, "header_len", 0):
            raise ValueError(
                "fault injection works per wire packet: open the link with offload='off'"
            )
        self.inner = inner
        self.model_out = model_out
        self.model_in = model_in
        self.max_held = max_held
        self.stats = LinkStats()
        self._out: _Held = []
        self._in: _Held = []
        self._serial = 0

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    @property
    def header_len(self) -> int:
        return 0  # see __init__: only plain links are accepted

    @property
    def offload(self) -> bool:
        return False

    @property
    def held(self) -> tuple[int, int]:
        """Packets currently held back: (inbound, outbound)."""
        return len(self._in), len(self._out)

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def at_eof(self) -> bool:
        return self.inner.at_eof

    def _hold(self, heap: _Held, due: float, packet: Packet) -> bool:
        if len(heap) >= self.max_held:
            return False
        self._serial += 1
        heapq.heappush(heap, (due, self._serial, bytes(packet)))
        return True

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        ready: list[bytes | memoryview] = []
        held = self._in
        while held and held[0][0] <= now and len(ready) < limit:
            ready.append(heapq.heappop(held)[2])
        room = limit - len(ready)
        if room > 0:
            fresh = self.inner.read_batch(now, room)
            model = self.model_in
            if model is None:
                ready.extend(fresh)
            else:
                stats = self.stats
                for packet in fresh:
                    fates = model.apply(packet, now)
                    if not fates:
                        stats.rx_fault += 1
                        stats.rx_dropped += 1
                    for due, copy in fates:
                        # A duplicate that does not fit in this batch waits for the next call;
                        # next_deadline() reports it as due now.
                        if due <= now and len(ready) < limit:
                            ready.append(copy)
                        elif not self._hold(held, max(due, now), copy):
                            stats.rx_full += 1
                            stats.rx_dropped += 1
        if ready:
            self.stats.rx_packets += len(ready)
            self.stats.rx_bytes += sum(map(len, ready))
        return ready

    def write(self, packet: Packet, now: float) -> None:
        model = self.model_out
        if model is None:
            self._send(packet, now)
            return
        fates = model.apply(packet, now)
        if not fates:
            self.stats.tx_fault += 1
            self.stats.tx_dropped += 1
        for due, copy in fates:
            if due <= now:
                self._send(copy, now)
            elif not self._hold(self._out, due, copy):
                self.stats.tx_full += 1
                self.stats.tx_dropped += 1

    def _send(self, packet: Packet, now: float) -> None:
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)
        self.inner.write(packet, now)

    def write_batch(self, packets: Sequence[Packet], now: float) -> None:
        for packet in packets:
            self.write(packet, now)

    def next_deadline(self) -> float | None:
        deadlines = [heap[0][0] for heap in (self._in, self._out) if heap]
        inner = self.inner.next_deadline()
        if inner is not None:
            deadlines.append(inner)
        return min(deadlines) if deadlines else None

    def on_deadline(self, now: float) -> None:
        held = self._out
        while held and held[0][0] <= now:
            self._send(heapq.heappop(held)[2], now)
        self.inner.on_deadline(now)

    def close(self) -> None:
        self._in.clear()
        self._out.clear()
        self.inner.close()
