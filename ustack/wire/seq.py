"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4).

Sequence numbers live on a circle: ``a`` is "less than" ``b`` when going forward from ``a``
reaches ``b`` in fewer than 2**31 steps. Every comparison of sequence or acknowledgment numbers
in ustack goes through this module, so wrap-around is handled in exactly one place. (The TCP
core's send side and scoreboard go further: they keep sequence numbers unwrapped, as plain ints
counted from the ISS, and convert at the edge.)
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(a: int, n: int) -> int:
    """``a + n`` on the circle (``n`` may be negative)."""
    return (a + n) & MASK


def sub(a: int, b: int) -> int:
    """Signed distance from ``b`` forward to ``a``, in ``[-2**31, 2**31)``."""
    return ((a - b + HALF) & MASK) - HALF


def lt(a: int, b: int) -> bool:
    # As Linux's before(): the signed 32-bit difference is negative. Two numbers exactly 2**31
    # apart are each "before" the other; RFC 9293 leaves that case undefined and windows are
    # always far smaller.
    return ((a - b) & MASK) >= HALF


def le(a: int, b: int) -> bool:
    return a == b or lt(a, b)


def gt(a: int, b: int) -> bool:
    return lt(b, a)


def ge(a: int, b: int) -> bool:
    return a == b or lt(b, a)


def in_window(x: int, start: int, size: int) -> bool:
    """``start <= x < start + size`` on the circle; an empty window contains nothing."""
    return ((x - start) & MASK) < size
