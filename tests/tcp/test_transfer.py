"""Two machines back to back on virtual time: bulk transfers, loss, wrap-around, speed."""

from __future__ import annotations

import hashlib
import random

import pytest

from tests.tcp.kit import Pair
from ustack.tcp.config import TcpConfig
from ustack.tcp.state import State
from ustack.wire import tcp as wt


def _close_both(p: Pair) -> None:
    p.a.shutdown(p.now)
    p.run(lambda: p.b.eof_received)
    p.b.close(p.now)
    p.a.close(p.now)
    p.run(lambda: p.a.state is State.CLOSED and p.b.state is State.CLOSED)


def test_ten_megabytes_intact_without_a_retransmission() -> None:
    # (How fast this runs is bench/'s business, not a test's.)
    data = random.Random(7).randbytes(10 * 1024 * 1024)
    p = Pair(delay=0.0005)
    p.handshake()
    p.feed_a = memoryview(data)
    p.run(lambda: len(p.got_b) == len(data))
    assert hashlib.sha256(p.got_b).digest() == hashlib.sha256(data).digest()
    assert p.stats_a.tcp_retransmits == 0 and p.stats_a.tcp_recoveries == 0
    _close_both(p)


@pytest.mark.parametrize(
    ("iss_a", "iss_b"), [(2**32 - 5000, 2**32 - 1), (2**32 - 1, 2**32 - 700000)]
)
def test_sequence_wrap_around_through_a_whole_transfer(iss_a: int, iss_b: int) -> None:
    rng = random.Random(iss_a)
    up = rng.randbytes(1_500_000)
    down = rng.randbytes(900_000)
    lossy = random.Random(3)
    p = Pair(iss_a=iss_a, iss_b=iss_b, delay=0.005, drop=lambda d, s: lossy.random() < 0.01)
    p.handshake()
    p.feed_a = memoryview(up)
    p.feed_b = memoryview(down)
    p.run(lambda: len(p.got_b) == len(up) and len(p.got_a) == len(down), max_time=1e5)
    assert bytes(p.got_b) == up and bytes(p.got_a) == down
    assert p.a.snd_una < iss_a and p.b.snd_una < iss_b  # both wrapped past 2**32
    _close_both(p)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("loss", [0.02, 0.1])
def test_random_loss_both_directions(seed: int, loss: float) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(300_000)
    p = Pair(delay=0.01, drop=lambda d, s: rng.random() < loss)
    p.handshake()
    p.feed_a = memoryview(data)
    p.run(lambda: len(p.got_b) == len(data), max_time=1e5)
    assert bytes(p.got_b) == data
    _close_both(p)


def test_blackhole_backs_off_then_recovers() -> None:
    p = Pair(delay=0.01)
    p.handshake()
    p.feed_a = memoryview(b"b" * 50_000)
    p.run(lambda: len(p.got_b) > 10_000)
    p.drop = lambda d, s: True
    start = p.now
    p.run(lambda: p.stats_a.tcp_rto_expired == 5)
    gaps = p.now - start
    assert gaps > 0.2 + 0.4 + 0.8 + 1.6  # exponential backoff
    p.drop = None
    p.run(lambda: len(p.got_b) == 50_000)
    assert p.a.state is State.ESTABLISHED


def test_small_mss_and_tiny_buffers() -> None:
    cfg = TcpConfig(mss=100, recv_buffer=1000, send_buffer=700)
    data = bytes(range(256)) * 100
    p = Pair(cfg_a=cfg, cfg_b=cfg, delay=0.002)
    p.handshake()
    p.feed_a = memoryview(data)
    p.run(lambda: len(p.got_b) == len(data))
    assert bytes(p.got_b) == data
    assert p.a.snd_mss == 100 - 12  # RFC 7323 timestamps take 12 bytes of every segment


def test_reordering_and_duplication() -> None:
    rng = random.Random(11)
    data = rng.randbytes(200_000)
    p = Pair(delay=0.01)
    p.handshake()
    original = p._collect

    def shuffled() -> None:
        before = p._n
        original()
        # duplicate some new segments and give each new one a random extra delay
        extra = []
        for t, n, d, s in p._wire:
            if n <= before:
                extra.append((t, n, d, s))
                continue
            extra.append((t + rng.random() * 0.02, n, d, s))
            if rng.random() < 0.05:
                extra.append((t + rng.random() * 0.02, -n, d, s))
        p._wire = sorted(extra)

    p._collect = shuffled  # type: ignore[method-assign]
    p.feed_a = memoryview(data)
    p.run(lambda: len(p.got_b) == len(data), max_time=1e5)
    assert bytes(p.got_b) == data
    assert p.stats_b.tcp_ooo_queued > 0


def test_window_scale_carries_more_than_64k_in_flight() -> None:
    p = Pair(delay=0.05)
    p.handshake()
    p.feed_a = memoryview(b"w" * 2_000_000)
    most = 0
    while len(p.got_b) < 2_000_000:
        p.step()
        most = max(most, (p.a.snd_max - p.a.snd_una) & 0xFFFFFFFF)
    assert most > 65535 * 2


def test_handshake_segments_are_exact_on_the_wire() -> None:
    p = Pair(record=True)
    p.handshake()
    (_, d0, syn, _), (_, d1, synack, _), (_, d2, ack, _) = p.log[:3]
    assert (d0, d1, d2) == ("ab", "ba", "ab")
    assert syn.flags == wt.SYN and synack.flags == wt.SYN | wt.ACK and ack.flags == wt.ACK
    assert synack.ack == (syn.seq + 1) & 0xFFFFFFFF and ack.ack == (synack.seq + 1) & 0xFFFFFFFF
    assert ack.seq == (syn.seq + 1) & 0xFFFFFFFF


def test_whole_counter_set_after_an_exchange() -> None:
    p = Pair(delay=0.01)
    p.handshake()
    p.feed_a = memoryview(b"x" * 5000)
    p.run(lambda: len(p.got_b) == 5000)
    p.b.send(b"reply")
    p.run(lambda: len(p.got_a) == 5)
    p.a.close(p.now)
    p.run(lambda: p.b.eof_received)
    p.b.close(p.now)
    p.run(lambda: p.a.state is State.CLOSED and p.b.state is State.CLOSED)
    # SYN, ACK, 3 full segments, the 656-byte tail after the first ACK (Nagle), the delayed
    # ACK of the reply, FIN
    assert p.stats_a.nonzero() == {
        "tcp_active_opens": 1,
        "tcp_established": 1,
        "tcp_closed": 1,
        "tcp_time_wait_expired": 1,
        # SYN,ACK; one ACK for the three segments that arrived together; reply; FIN
        "tcp_segments_received": 4,
        "tcp_segments_sent": 8,
        "tcp_data_segments_sent": 4,
        "tcp_bytes_sent": 5000,
        "tcp_bytes_received": 5,
        "tcp_acks_sent": 2,
        "tcp_delayed_acks": 1,
        # the handshake, then every ACK of new data (RFC 7323 appendix G weighting)
        "tcp_rtt_samples": 4,
    }
    assert p.stats_b.nonzero() == {
        "tcp_passive_opens": 1,
        "tcp_established": 1,
        "tcp_closed": 1,
        "tcp_segments_received": 8,
        # the one ACK of the three segments (it also announces the window the read opened),
        # the reply, FIN and the SYN,ACK
        "tcp_segments_sent": 4,
        "tcp_data_segments_sent": 1,
        "tcp_bytes_sent": 5,
        "tcp_bytes_received": 5000,
        "tcp_acks_sent": 1,
        "tcp_delayed_acks": 1,
        "tcp_fast_path_data": 4,  # the four data segments, in order, nothing else to do
        "tcp_rtt_samples": 3,
    }
