"""Sequence-number arithmetic modulo 2**32 (RFC 9293 3.4), with wrap-around near 2**32."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ustack.wire import seq

TOP = 2**32 - 1
u32 = st.integers(0, TOP)
# Distances a TCP connection can really see: well inside half the circle.
dist = st.integers(-(2**31) + 1, 2**31 - 1)


def signed_distance(a: int, b: int) -> int:
    """Reference: the distance from b to a as a signed 32-bit integer (Linux's (s32)(a - b))."""
    d = (a - b) % 2**32
    return d - 2**32 if d >= 2**31 else d


def test_add_wraps_both_ways() -> None:
    assert seq.add(TOP, 1) == 0
    assert seq.add(TOP - 9, 20) == 10
    assert seq.add(5, -10) == TOP - 4
    assert seq.add(0, 2**32) == 0


def test_sub_is_signed_across_the_wrap() -> None:
    assert seq.sub(5, TOP) == 6
    assert seq.sub(TOP, 5) == -6
    assert seq.sub(0, 2**31) == -(2**31)
    assert seq.sub(100, 100) == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [(0, 1), (TOP, 0), (TOP - 100, 50), (2**31 - 1, 2**31), (10, 2**31 + 9), (TOP, 2**31 - 2)],
)
def test_ordering_across_the_wrap(a: int, b: int) -> None:
    assert seq.lt(a, b) and seq.le(a, b)
    assert seq.gt(b, a) and seq.ge(b, a)
    assert not seq.lt(b, a) and not seq.gt(a, b)
    assert not seq.le(b, a) and not seq.ge(a, b)


def test_equal_numbers() -> None:
    for x in (0, 1, 2**31, TOP):
        assert seq.le(x, x) and seq.ge(x, x)
        assert not seq.lt(x, x) and not seq.gt(x, x)


def test_half_circle_apart_is_the_documented_ambiguity() -> None:
    # Linux's before() semantics: each is "before" the other; windows never get this large.
    assert seq.lt(0, 2**31) and seq.lt(2**31, 0)


@given(u32, dist)
def test_comparisons_match_signed_distance(a: int, d: int) -> None:
    b = seq.add(a, d)
    assert seq.sub(b, a) == d == signed_distance(b, a)
    assert seq.lt(a, b) == (d > 0)
    assert seq.gt(a, b) == (d < 0)
    assert seq.le(a, b) == (d >= 0)
    assert seq.ge(a, b) == (d <= 0)


def test_in_window_across_the_wrap() -> None:
    start = TOP - 9  # window [2**32-10, 2**32-10+20) = ... TOP, 0 .. 9
    assert seq.in_window(start, start, 20)
    assert seq.in_window(TOP, start, 20)
    assert seq.in_window(0, start, 20)
    assert seq.in_window(9, start, 20)
    assert not seq.in_window(10, start, 20)  # one past the right edge
    assert not seq.in_window(start - 1, start, 20)  # one before the left edge
    assert not seq.in_window(start, start, 0)  # an empty window holds nothing


@given(u32, st.integers(0, 2**31), st.integers(0, 2**32 + 5))
def test_in_window_agrees_with_offsets(start: int, size: int, off: int) -> None:
    x = seq.add(start, off)
    assert seq.in_window(x, start, size) == (off % 2**32 < size)
