"""RFC 6528 initial sequence numbers."""

from __future__ import annotations

import pytest

from ustack.stack.isn import TICKS_PER_SECOND, Rfc6528Isn, fixed_isn

A, B = 0x0A000001, 0x0A000002


def test_differs_per_four_tuple() -> None:
    isn = Rfc6528Isn(b"k" * 16)
    values = {isn(A, 80, B, port, 0.0) for port in range(40000, 41000)}
    values |= {isn(B, 80, A, 40000, 0.0), isn(A, 81, B, 40000, 0.0)}
    assert len(values) == 1002


def test_increases_with_time_at_four_microsecond_ticks() -> None:
    isn = Rfc6528Isn(b"k" * 16)
    base = isn(A, 80, B, 40000, 10.0)
    assert isn(A, 80, B, 40000, 10.0) == base
    assert (isn(A, 80, B, 40000, 11.0) - base) & 0xFFFFFFFF == TICKS_PER_SECOND
    assert (isn(A, 80, B, 40000, 10.000004) - base) & 0xFFFFFFFF == 1


def test_depends_on_the_secret() -> None:
    assert Rfc6528Isn(b"a" * 16)(A, 80, B, 1, 0.0) != Rfc6528Isn(b"b" * 16)(A, 80, B, 1, 0.0)
    # Without the time term, the value is the keyed hash F itself, not something guessable.
    assert Rfc6528Isn(b"a" * 16)(A, 80, B, 1, 0.0) == Rfc6528Isn(b"a" * 16).hash(A, 80, B, 1)


def test_fixed_source() -> None:
    src = fixed_isn(12345)
    assert src(A, 1, B, 2, 0.0) == src(B, 3, A, 4, 99.0) == 12345


@pytest.mark.parametrize("secret", [b"", b"x" * 33, "text"])
def test_bad_secret(secret: object) -> None:
    with pytest.raises(ValueError):
        Rfc6528Isn(secret)  # type: ignore[arg-type]
