"""The host's per-packet and per-timer work does not grow with the number of connections.

Proven by counting calls into connections (not by timing): with 10,000 connections open, one
packet, one deadline query and one timer run touch only the connections they concern.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.stack.helpers import PEER, SERVER_ISN, make_host, tcp_packet
from ustack.tcp.connection import Connection
from ustack.wire import tcp

N = 10_000
SPACING = 0.0001  # connection i is opened at i * SPACING, so its SYN timer fires in that order


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    counter: Counter[str] = Counter()
    for name in ("next_deadline", "on_deadline", "segments_to_send", "receive"):
        original = getattr(Connection, name)

        def wrapper(
            self: Connection, *args: object, _name: str = name, _orig: object = original
        ) -> object:
            counter[_name] += 1
            return _orig(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(Connection, name, wrapper)
    yield counter


def test_ten_thousand_connections_cost_nothing_per_packet(calls: Counter[str]) -> None:
    h = make_host()
    for i in range(N):
        h.connect(PEER, 80, i * SPACING, local_port=10000 + i)
        # Each SYN leaves at its own time, so the SYN timers expire one after another.
        assert len(h.packets_to_send(i * SPACING)) == 1
    first = h.next_deadline()
    assert first is not None
    # Building the heap looks at each new connection once.
    assert calls["next_deadline"] <= 2 * N
    calls.clear()

    # One packet for one connection, then the driver's usual questions.
    h.receive_packet(tcp_packet(80, 10000 + 4321, 777, SERVER_ISN + 1, tcp.SYN | tcp.ACK), 1.0)
    h.packets_to_send(1.0)
    for _ in range(100):
        assert h.next_deadline() == first
    assert calls["receive"] == 1
    assert calls["segments_to_send"] == 1
    assert calls["next_deadline"] <= 2
    calls.clear()

    # The earliest SYN timer fires: only that connection runs, although all have timers.
    h.on_deadline(first)
    assert calls["on_deadline"] == 1
    h.packets_to_send(first)
    assert calls["segments_to_send"] == 1
    second = h.next_deadline()
    assert second is not None and second == pytest.approx(first + SPACING)
    assert calls["next_deadline"] <= 2
    calls.clear()

    # Ten more timers due: exactly ten connections run.
    h.on_deadline(first + 10 * SPACING + SPACING / 2)
    assert calls["on_deadline"] == 10


def test_heap_does_not_grow_without_bound() -> None:
    h = make_host()
    # An early SYN timer stays at the top of the heap, so stale entries below it are not
    # popped on the way; only the rebuild keeps the heap bounded.
    h.connect(PEER, 81, 0.0)
    conn = h.connect(PEER, 80, 0.0)
    h.packets_to_send(0.0)
    h.receive_packet(tcp_packet(80, conn.local_port, 777, SERVER_ISN + 1, tcp.SYN | tcp.ACK), 0.0)
    h.packets_to_send(0.0)
    for i in range(2000):
        # Each byte sent arms the retransmission timer at a new time; its ACK disarms it.
        t = 0.001 * i
        conn.send(b"x")
        assert len(h.packets_to_send(t)) == 1
        h.next_deadline()
        h.receive_packet(tcp_packet(80, conn.local_port, 778, SERVER_ISN + 2 + i, tcp.ACK), t)
        h.packets_to_send(t)
        assert h.next_deadline() == pytest.approx(1.0)
    assert len(h.demux._heap) <= 2 * len(h.connections) + 65


def test_on_deadline_skips_connections_whose_timer_moved(calls: Counter[str]) -> None:
    h = make_host()
    a = h.connect(PEER, 80, 0.0)
    h.connect(PEER, 81, 0.0)
    h.packets_to_send(0.0)
    assert h.next_deadline() is not None  # both SYN timers are in the heap now
    # a's handshake completes, so its SYN timer is gone (the heap entry is now stale).
    h.receive_packet(tcp_packet(80, a.local_port, 777, SERVER_ISN + 1, tcp.SYN | tcp.ACK), 0.1)
    h.packets_to_send(0.1)
    calls.clear()
    h.on_deadline(5.0)
    assert calls["on_deadline"] == 1
