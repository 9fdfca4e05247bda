"""A seeded fault model: what happens to one packet on a bad link.

Theory of operation: :meth:`FaultModel.apply` takes one packet and the time it would arrive on a
perfect link and returns the deliveries that actually happen, as ``(time, packet)`` pairs: none
(lost), one (possibly later, possibly with one bit flipped) or two (duplicated). It does no I/O
and reads no clock, so the virtual-time simulator (:mod:`ustack.netsim`) and an asyncio fault
link can share it, and the same seed always produces the same faults for the same packet
sequence. Decisions are taken in a fixed order -- size limit, rate limit, loss, corruption,
duplication, delay and reordering -- each with its own counter in :class:`FaultStats`.

Reordering is modelled as extra delay for a chosen packet, long enough for the packets behind it
to overtake it; jitter reorders too, as on a real path. Corruption flips one bit of one delivered
copy, anywhere in the packet, so the receiver's IPv4 or TCP checksum (or its header sanity
checks) must catch it. The model never reads a header field, so it treats IPv4 and IPv6 alike;
IPv6 has no header checksum, so a flipped bit there is caught by the TCP/ICMPv6 checksum (whose
pseudo-header covers the addresses), by a length or version check, or not at all (traffic class,
flow label, hop limit), as on a real path.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

Delivery = tuple[float, bytes]


@dataclass(slots=True)
class FaultConfig:
    """Probabilities are per packet, in ``[0, 1]``; times in seconds; rate in bytes/s."""

    drop: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.005  # how long a reordered packet is held back
    delay: float = 0.0  # fixed extra one-way delay for every packet
    jitter: float = 0.0  # uniform extra delay in [0, jitter)
    rate: float | None = None  # token-bucket policer; packets over the rate are dropped
    burst: int = 64 * 1024  # bucket depth in bytes
    max_size: int | None = None  # packets longer than this are dropped

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "corrupt", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {name}={p!r} is not in [0, 1]")
        for name in ("reorder_delay", "delay", "jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault time {name} must not be negative")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("fault rate must be positive (or None for no limit)")


@dataclass(slots=True)
class FaultStats:
    packets: int = 0  # packets offered to apply()
    delivered: int = 0  # copies handed back (duplicates included)
    dropped: int = 0  # lost at random
    rate_limited: int = 0  # over the token-bucket rate
    oversize: int = 0  # longer than max_size
    corrupted: int = 0  # copies with one bit flipped
    duplicated: int = 0  # extra copies
    reordered: int = 0  # held back so later packets overtake them
    delayed: int = 0  # given a fixed or jittered extra delay

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FaultModel:
    """Seeded fault decisions for one direction of one link."""

    __slots__ = ("_last_refill", "_rng", "_tokens", "config", "stats")

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        seed: int | str | bytes = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config if config is not None else FaultConfig()
        self._rng = rng if rng is not None else random.Random(seed)
        self.stats = FaultStats()
        self._tokens = float(self.config.burst)
        self._last_refill: float | None = None

    def _police(self, size: int, now: float) -> bool:
        """True when the token bucket has room for ``size`` bytes at ``now`` (and takes it)."""
        cfg = self.config
        assert cfg.rate is not None
        if self._last_refill is not None and now > self._last_refill:
            self._tokens = min(
                float(cfg.burst), self._tokens + (now - self._last_refill) * cfg.rate
            )
        self._last_refill = now if self._last_refill is None else max(now, self._last_refill)
        if self._tokens < size:
            return False
        self._tokens -= size
        return True

    def apply(self, packet: bytes | bytearray | memoryview, now: float) -> list[Delivery]:
        """The deliveries of ``packet`` that would arrive at ``now`` on a perfect link.

        The returned packets are fresh ``bytes`` objects; ``packet`` itself is never kept, so the
        caller may reuse its buffer.
        """
        cfg = self.config
        stats = self.stats
        rng = self._rng
        stats.packets += 1
        if cfg.max_size is not None and len(packet) > cfg.max_size:
            stats.oversize += 1
            return []
        if cfg.rate is not None and not self._police(len(packet), now):
            stats.rate_limited += 1
            return []
        if cfg.drop and rng.random() < cfg.drop:
            stats.dropped += 1
            return []
        data = bytes(packet)
        copies = [data]
        if cfg.duplicate and rng.random() < cfg.duplicate:
            stats.duplicated += 1
            copies.append(data)
        if cfg.corrupt and data and rng.random() < cfg.corrupt:
            # One copy only: a duplicate is a second transmission, damaged or not on its own.
            stats.corrupted += 1
            damaged = bytearray(data)
            bit = rng.randrange(len(damaged) * 8)
            damaged[bit >> 3] ^= 1 << (bit & 7)
            copies[0] = bytes(damaged)
        out: list[Delivery] = []
        for i, copy in enumerate(copies):
            t = now
            if cfg.delay or cfg.jitter:
                stats.delayed += 1
                t += cfg.delay + (rng.random() * cfg.jitter if cfg.jitter else 0.0)
            if cfg.reorder and rng.random() < cfg.reorder:
                stats.reordered += 1
                t += cfg.reorder_delay
            elif i:
                # A duplicate shows up a little after the original, as after a link-layer retry.
                t += 1e-6
            out.append((t, copy))
        stats.delivered += len(out)
        return out
