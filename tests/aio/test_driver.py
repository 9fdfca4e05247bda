"""The driver's contract: bounded batches, one timer, coalesced flushes, hooks.

The first tests run the driver against a scripted host and link, so they see exactly which
calls it makes; the last ones check the same invariants while real stacks move real data.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest

import ustack
from ustack import Stack
from ustack.aio.driver import Driver
from ustack.link.base import LinkStats
from ustack.link.pair import LinkPair

from .conftest import A, B, fast_config, until


class ScriptedHost:
    """Records what the driver feeds it; its deadline is whatever the test sets."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.deadline: float | None = None
        self.deadline_calls: list[float] = []
        self.outbox: list[bytes] = []
        self.flushes = 0
        # The driver installs its wakeup here; the test calls it as a connection would.
        self.on_wakeup: Any = None

    def receive_packet(self, buf: Any, now: float) -> None:
        self.received.append(bytes(buf))

    def packets_to_send(self, now: float) -> list[bytes]:
        self.flushes += 1
        out, self.outbox = self.outbox, []
        return out

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_deadline(self, now: float) -> None:
        self.deadline_calls.append(now)
        self.deadline = None

    def next_event(self) -> None:
        return None


class QueueLink:
    """A link whose packets wait in a queue behind a pipe that turns readable once.

    After the first read the fd is no longer readable although packets are still queued, so
    only the driver's own continuation can get them: readiness alone would strand them.
    """

    mtu = 1500

    def __init__(self, packets: int) -> None:
        self.queue = deque(bytes([i % 256]) * 20 for i in range(packets))
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        if packets:
            os.write(self._w, b"!")
        self.reads: list[tuple[int, int]] = []
        self.written: list[list[bytes]] = []
        self.stats = LinkStats()

    def fileno(self) -> int:
        return self._r

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        try:
            os.read(self._r, 1)
        except BlockingIOError:
            pass
        batch: list[bytes | memoryview] = []
        while self.queue and len(batch) < limit:
            batch.append(self.queue.popleft())
        self.reads.append((limit, len(batch)))
        return batch

    def write(self, packet: Any, now: float) -> None:
        self.written.append([bytes(packet)])

    def write_batch(self, packets: Sequence[Any], now: float) -> None:
        self.written.append([bytes(p) for p in packets])

    def next_deadline(self) -> float | None:
        return None

    def on_deadline(self, now: float) -> None:
        pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class CountingLoop:
    """Delegates to the real loop; keeps every ``call_at`` handle the driver creates."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.handles: list[tuple[float, asyncio.TimerHandle, list[bool]]] = []
        self.max_live = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    def live(self) -> int:
        return sum(1 for _, h, fired in self.handles if not h.cancelled() and not fired[0])

    def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        fired = [False]

        def run() -> None:
            fired[0] = True
            callback(*args)

        handle = self._loop.call_at(when, run)
        self.handles.append((when, handle, fired))
        self.max_live = max(self.max_live, self.live())
        return handle


async def test_batch_bound_and_continuation() -> None:
    loop = asyncio.get_running_loop()
    link = QueueLink(1000)
    host = ScriptedHost()
    driver = Driver(loop, link, host, batch=16)  # type: ignore[arg-type]
    order: list[str] = []
    link_read = link.read_batch

    def recording_read(now: float, limit: int) -> list[bytes | memoryview]:
        order.append("batch")
        return link_read(now, limit)

    link.read_batch = recording_read  # type: ignore[method-assign]

    def other() -> None:
        order.append("other")
        if link.queue:
            loop.call_soon(other)

    driver.start()
    loop.call_soon(other)
    try:
        await until(lambda: not link.queue, "every queued packet read")
    finally:
        driver.stop()
        link.close()
    assert len(host.received) == 1000
    assert all(limit == 16 and n <= 16 for limit, n in link.reads)
    assert sum(1 for _, n in link.reads if n == 16) == 1000 // 16
    # The driver yields between batches: another callback runs between any two of them.
    assert "batch,batch" not in ",".join(order)


async def test_one_timer_rearmed_only_when_the_deadline_changes() -> None:
    real = asyncio.get_running_loop()
    loop = CountingLoop(real)
    link = QueueLink(0)
    host = ScriptedHost()
    driver = Driver(loop, link, host)  # type: ignore[arg-type]
    driver.start()
    try:
        assert loop.handles == []  # no deadline, no timer
        t0 = real.time()
        host.deadline = t0 + 100
        for _ in range(5):
            host.on_wakeup()
            await asyncio.sleep(0)
        assert [w for w, _, _ in loop.handles] == [t0 + 100]  # five flushes, one call_at
        host.deadline = t0 + 50  # moved earlier: the old handle is cancelled
        host.on_wakeup()
        await asyncio.sleep(0)
        assert len(loop.handles) == 2 and loop.handles[0][1].cancelled()
        assert loop.live() == 1
        due = host.deadline = real.time()  # due now: fires, on_deadline runs, nothing re-armed
        host.on_wakeup()
        await until(lambda: bool(host.deadline_calls), "the timer to fire")
        assert host.deadline_calls == [max(due, host.deadline_calls[0])]
        assert host.deadline_calls[0] >= due  # a fired timer never hands the core an earlier now
        assert loop.live() == 0
        assert loop.max_live == 1
    finally:
        driver.stop()
        link.close()


async def test_a_later_or_vanished_deadline_keeps_the_armed_timer() -> None:
    # Deadlines come and go every round trip (RTO while data is in flight); the driver keeps an
    # earlier timer armed instead of cancelling it, and re-arms when it fires early. The timer
    # is fired by hand, so nothing here depends on how fast the machine is.
    real = asyncio.get_running_loop()
    loop = CountingLoop(real)
    link = QueueLink(0)
    host = ScriptedHost()
    driver = Driver(loop, link, host)  # type: ignore[arg-type]
    driver.start()
    try:
        t0 = real.time()
        host.deadline = t0 + 100
        host.on_wakeup()
        await asyncio.sleep(0)
        host.deadline = None  # the RTO was cleared by an ACK
        host.on_wakeup()
        await asyncio.sleep(0)
        host.deadline = t0 + 200  # the next round trip's RTO, later than the armed timer
        host.on_wakeup()
        await asyncio.sleep(0)
        assert len(loop.handles) == 1 and not loop.handles[0][1].cancelled()
        loop.handles[0][1].cancel()
        driver._on_timer()  # the early timer fires (before its deadline's host work is due)
        assert host.deadline_calls == []  # fired early: the core was not called
        assert [w for w, _, _ in loop.handles] == [t0 + 100, t0 + 200]  # re-armed then
        assert loop.live() == 1
    finally:
        driver.stop()
        link.close()


async def test_application_calls_coalesce_into_one_flush() -> None:
    loop = asyncio.get_running_loop()
    link = QueueLink(0)
    host = ScriptedHost()
    driver = Driver(loop, link, host)  # type: ignore[arg-type]
    driver.start()
    try:
        before = host.flushes
        for _ in range(100):
            host.on_wakeup()  # what every connection's on_change ends in
        host.outbox = [b"p1", b"p2"]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert host.flushes == before + 1
        assert link.written == [[b"p1", b"p2"]]  # one write_batch
    finally:
        driver.stop()
        link.close()


async def test_one_timer_during_real_transfers() -> None:
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config())
    b = Stack(right, address=B, config=fast_config())
    async with a, b:
        counters = []
        owner: dict[int, Stack] = {}

        def stack_packets(c: CountingLoop) -> int:
            stats = owner[id(c)].link.stats
            return int(stats.rx_packets + stats.tx_packets)

        for stack in (a, b):
            counting = CountingLoop(stack.driver.loop)
            owner[id(counting)] = stack
            stack.driver.loop = counting  # type: ignore[assignment]
            counters.append(counting)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
            writer.close()

        await ustack.start_server(echo, port=7, stack=b)
        for _ in range(3):
            reader, writer = await a.connect(B, 7)
            payload = os.urandom(300_000)
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            writer.close()
            assert await reader.read() == b""
        await until(
            lambda: all(c["state"] in ("TIME-WAIT", "CLOSED") for c in a.connections()),
            "client connections to finish",
        )
        for counting in counters:
            assert counting.handles, "timers were used"
            assert counting.max_live == 1
            # Re-armed only on change: far fewer arms than packets handled.
            packets = stack_packets(counting)
            assert len(counting.handles) * 10 < packets
        # TIME-WAIT connections remain: exactly one timer stands for all of them.
        assert counters[0].live() == 1


async def test_hooks_see_packets_and_state_changes() -> None:
    left, right = LinkPair.create()
    seen: list[tuple[str, int]] = []
    trace: list[tuple[str, Any]] = []

    def on_packet(direction: str, packet: Any, now: float) -> None:
        seen.append((direction, len(packet)))

    def tracer(conn: Any, kind: str, detail: dict[str, Any]) -> None:
        trace.append((kind, detail))

    a = Stack(left, address=A, config=fast_config(), on_packet=on_packet, tracer=tracer)
    b = Stack(right, address=B, config=fast_config())
    async with a, b:
        listener = await b.listen(7)
        _, writer = await a.connect(B, 7)
        _, s_writer = await listener.accept()
        writer.write(b"x" * 100)
        writer.close()
        s_writer.close()
        await until(lambda: any(d == "in" for d, _ in seen), "an inbound packet")
    assert seen[0][0] == "out"  # our SYN went first
    assert any(d == "out" and n >= 140 for d, n in seen)  # 100 bytes + IP and TCP headers
    states = [str(d["to"]) for k, d in trace if k == "state"]
    assert "SYN-SENT" in states and "ESTABLISHED" in states


async def test_driver_stops_reading_a_link_whose_peer_is_gone() -> None:
    # A closed SEQPACKET peer leaves our fd readable at EOF forever; without the EOF check
    # the reader callback would spin the loop at 100 % CPU.
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config())
    async with a:
        a.start()
        right.close()
        await until(lambda: left.at_eof, "the link to see EOF")
        await until(lambda: not a.driver._reading, "the driver to drop its reader")
        reads_before = left.stats.rx_packets + left.stats.rx_error
        for _ in range(50):
            await asyncio.sleep(0)
        assert left.stats.rx_packets + left.stats.rx_error == reads_before


class LateLink(QueueLink):
    """A second packet turns up only on the third read: after the first read has found the
    queue empty, as an answer to what the first packet made the host send would."""

    def __init__(self) -> None:
        super().__init__(1)
        self.later = [bytes([9]) * 20]

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        batch = super().read_batch(now, limit)
        if len(self.reads) == 3 and self.later:
            batch = [self.later.pop()]
        return batch


async def test_busy_polling_takes_the_next_packet_without_sleeping() -> None:
    """With ``busy_poll`` the driver keeps reading after a batch instead of returning to the
    event loop: a packet that turns up meanwhile is taken (and answered) in the same callback.
    Without it, the callback ends after the empty read, and the packet waits for a wake-up."""
    loop = asyncio.get_running_loop()
    for busy, taken in ((0.0, 1), (0.01, 2)):
        link = LateLink()
        host = ScriptedHost()
        driver = Driver(loop, link, host, busy_poll=busy)  # type: ignore[arg-type]
        driver._read_batch()  # one readiness callback, as the event loop would make it
        driver.stop()
        link.close()
        assert len(host.received) == taken
        assert host.flushes == taken  # each packet's batch was followed by its flush


@pytest.mark.parametrize("bad", [-1e-6, 0.5])
def test_busy_poll_out_of_range_is_refused(bad: float) -> None:
    loop = asyncio.new_event_loop()
    link = QueueLink(0)
    try:
        with pytest.raises(ValueError, match="busy_poll"):
            Driver(loop, link, ScriptedHost(), busy_poll=bad)  # type: ignore[arg-type]
    finally:
        link.close()
        loop.close()
