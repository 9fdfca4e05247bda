"""The seeded fault model: each fault happens at its configured rate, is counted, and the same
seed replays the same faults."""

from __future__ import annotations

import random

import pytest

from ustack.link.fault import FaultConfig, FaultModel

PACKET = bytes(range(256)) * 4
N = 20_000


def run(
    cfg: FaultConfig, seed: int = 1, n: int = N
) -> tuple[FaultModel, list[list[tuple[float, bytes]]]]:
    fm = FaultModel(cfg, seed=seed)
    return fm, [fm.apply(PACKET, i * 0.001) for i in range(n)]


def test_no_faults_is_identity() -> None:
    fm, out = run(FaultConfig(), n=100)
    assert all(d == [(i * 0.001, PACKET)] for i, d in enumerate(out))
    assert fm.stats.as_dict() == {
        **dict.fromkeys(fm.stats.as_dict(), 0),
        "packets": 100,
        "delivered": 100,
    }


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_drop_rate(p: float) -> None:
    fm, out = run(FaultConfig(drop=p))
    lost = sum(1 for d in out if not d)
    assert lost == fm.stats.dropped
    assert abs(lost / N - p) < 4 * (p * (1 - p) / N) ** 0.5 + 0.002
    assert fm.stats.delivered == N - lost


def test_duplicate_delivers_two_identical_copies_in_order() -> None:
    fm, out = run(FaultConfig(duplicate=0.1))
    dups = [d for d in out if len(d) == 2]
    assert len(dups) == fm.stats.duplicated and 0.08 < len(dups) / N < 0.12
    for (t1, a), (t2, b) in dups:
        assert a == b == PACKET and t2 > t1


def test_corrupt_flips_exactly_one_bit() -> None:
    fm, out = run(FaultConfig(corrupt=0.05))
    damaged = [d[0][1] for d in out if d[0][1] != PACKET]
    assert len(damaged) == fm.stats.corrupted and 0.04 < len(damaged) / N < 0.06
    for data in damaged:
        diff = int.from_bytes(data, "big") ^ int.from_bytes(PACKET, "big")
        assert diff.bit_count() == 1


def test_reorder_holds_packets_back_so_later_ones_overtake() -> None:
    fm, out = run(FaultConfig(reorder=0.1, reorder_delay=0.005))
    times = [d[0][0] for d in out]
    overtaken = sum(1 for i in range(len(times) - 1) if times[i] > times[i + 1])
    assert fm.stats.reordered > 0 and overtaken > 0
    assert all(t in (i * 0.001, i * 0.001 + 0.005) for i, t in enumerate(times))


def test_delay_and_jitter() -> None:
    fm, out = run(FaultConfig(delay=0.01, jitter=0.002), n=1000)
    extra = [d[0][0] - i * 0.001 for i, d in enumerate(out)]
    assert all(0.01 <= e < 0.012 + 1e-12 for e in extra)
    assert fm.stats.delayed == 1000


def test_rate_limit_polices_to_the_configured_rate() -> None:
    # 1024-byte packets offered at 1 MB/s against a 100 kB/s policer with a 10 kB bucket.
    fm, out = run(FaultConfig(rate=100_000, burst=10_000), n=10_000)
    passed = sum(1 for d in out if d)
    assert passed == fm.stats.delivered and fm.stats.rate_limited == 10_000 - passed
    # 10 s of offered load: the bucket plus 10 s of rate, in whole packets.
    assert abs(passed - (10_000 + 100_000 * 10) / 1024) < 3


def test_max_size() -> None:
    fm = FaultModel(FaultConfig(max_size=100))
    assert fm.apply(b"x" * 101, 0.0) == [] and fm.apply(b"x" * 100, 0.0) == [(0.0, b"x" * 100)]
    assert fm.stats.oversize == 1


def test_same_seed_same_faults_and_rng_injection() -> None:
    cfg = FaultConfig(drop=0.1, duplicate=0.1, corrupt=0.1, reorder=0.1, jitter=0.001)
    _, a = run(cfg, seed=7, n=2000)
    _, b = run(cfg, seed=7, n=2000)
    _, c = run(cfg, seed=8, n=2000)
    assert a == b and a != c
    fm = FaultModel(cfg, rng=random.Random(7))
    assert [fm.apply(PACKET, i * 0.001) for i in range(2000)] == a


def test_caller_buffer_not_kept() -> None:
    buf = bytearray(b"abcd")
    out = FaultModel(FaultConfig(duplicate=1.0)).apply(buf, 0.0)
    buf[0] = 0
    assert [p for _, p in out] == [b"abcd", b"abcd"]


@pytest.mark.parametrize("bad", [{"drop": 1.5}, {"corrupt": -0.1}, {"delay": -1.0}, {"rate": 0}])
def test_bad_config_is_a_clear_error(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(**bad)
