"""LinkPair: packets cross intact and in order, batches are bounded, every drop is counted."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from ustack.link.base import Link, LinkStats
from ustack.link.errors import LinkError
from ustack.link.pair import LinkPair, PairLink

from .packets import echo


@pytest.fixture
def pair() -> Iterator[tuple[PairLink, PairLink]]:
    a, b = LinkPair.create(mtu=1500)
    yield a, b
    a.close()
    b.close()


def stats(**counters: int) -> dict[str, int]:
    return LinkStats(**counters).as_dict()


def test_is_a_link(pair: tuple[PairLink, PairLink]) -> None:
    a, _ = pair
    assert isinstance(a, Link)
    assert a.mtu == 1500
    assert a.next_deadline() is None


def test_round_trip_both_directions(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    ping = echo("10.0.0.1", "10.0.0.2")
    pong = echo("10.0.0.2", "10.0.0.1", payload=b"x" * 1472)  # exactly 1500 bytes
    assert len(pong) == 1500
    a.write(ping, now=0.0)
    assert b.read_batch(0.0, 64) == [ping]
    b.write(pong, now=0.0)
    assert a.read_batch(0.0, 64) == [pong]
    assert a.stats.as_dict() == stats(tx_packets=1, tx_bytes=len(ping), rx_packets=1, rx_bytes=1500)
    assert b.stats.as_dict() == stats(tx_packets=1, tx_bytes=1500, rx_packets=1, rx_bytes=len(ping))


def test_boundaries_and_order_preserved(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    sent = [bytes([i]) * (20 + 97 * i) for i in range(12)]
    a.write_batch(sent, now=0.0)
    assert b.read_batch(0.0, 100) == sent


def test_read_batch_is_bounded_and_non_blocking(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    for i in range(10):
        a.write(echo("10.0.0.1", "10.0.0.2", sequence=i), now=0.0)
    sizes = [len(b.read_batch(0.0, 4)) for _ in range(4)]
    assert sizes == [4, 4, 2, 0]
    assert b.stats.rx_packets == 10


def test_fd_becomes_readable(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    assert select.select([b.fileno()], [], [], 0)[0] == []
    a.write(b"\x45" + bytes(19), now=0.0)
    assert select.select([b.fileno()], [], [], 0)[0] == [b.fileno()]


def test_written_buffer_is_not_kept(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    buf = bytearray(echo("10.0.0.1", "10.0.0.2"))
    original = bytes(buf)
    a.write(memoryview(buf)[:], now=0.0)
    buf[:] = bytes(len(buf))  # the host reuses its emit buffer straight away
    assert b.read_batch(0.0, 8) == [original]


def test_oversize_and_empty_writes_are_counted_drops(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    a.write(bytes(1501), now=0.0)
    a.write(b"", now=0.0)
    assert b.read_batch(0.0, 8) == []
    assert a.stats.as_dict() == stats(tx_dropped=2, tx_oversize=1, tx_error=1)


def test_oversize_read_is_dropped_not_truncated(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    # Bypass a's own MTU check, as a misconfigured peer would.
    os.write(a.fileno(), b"\x45" * 1600)
    good = echo("10.0.0.1", "10.0.0.2")
    a.write(good, now=0.0)
    assert b.read_batch(0.0, 8) == [good]
    assert b.stats.as_dict() == stats(rx_packets=1, rx_bytes=len(good), rx_dropped=1, rx_oversize=1)


def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    a, b = LinkPair.create(mtu=1500, buffer_size=16 * 1024)
    try:
        packet = bytes(1400)
        attempts = 500
        for _ in range(attempts):
            a.write(packet, now=0.0)
        st = a.stats
        assert st.tx_full > 0
        assert st.tx_packets + st.tx_full == attempts
        assert st.tx_dropped == st.tx_full
        received = b.read_batch(0.0, attempts)
        assert len(received) == st.tx_packets
    finally:
        a.close()
        b.close()


def test_after_close(pair: tuple[PairLink, PairLink]) -> None:
    a, b = pair
    a.close()
    a.close()  # idempotent
    assert a.fileno() == -1
    a.write(bytes(40), now=0.0)
    assert a.read_batch(0.0, 8) == []
    assert a.stats.as_dict() == stats(tx_dropped=1, tx_closed=1)
    b.write(bytes(40), now=0.0)  # peer gone: a counted error, no exception
    assert b.stats.tx_error == 1


@pytest.mark.parametrize("mtu", [575, 65536, 0, 1500.0, True])
def test_bad_mtu_is_a_one_line_error(mtu: object) -> None:
    with pytest.raises(LinkError) as info:
        LinkPair.create(mtu=mtu)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("bad MTU") and "576" in message and "65535" in message
