"""Two stacks over an in-memory link pair, on a real event loop (stock asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

from ustack import Stack
from ustack.link.pair import LinkPair
from ustack.tcp.config import TcpConfig

A = "10.9.0.1"
B = "10.9.0.2"
WAIT = 10.0  # seconds: the bound on any wait for a condition; normally milliseconds


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test here runs on the stock loop and on uvloop (the default ustack picks)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def fast_config(**overrides: Any) -> TcpConfig:
    """Short timers: a loopback-speed link needs no WAN-sized RTO floor or delayed ACK."""
    base: dict[str, Any] = {"rto_min": 0.05, "rto_initial": 0.2, "delayed_ack": 0.005}
    base.update(overrides)
    return TcpConfig(**base)


async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Let the loop run until ``cond()`` holds; fail saying ``what`` did not happen.

    This waits for an event, not for time: it yields to the loop and re-checks, with the
    timeout only as a bound on a broken implementation.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        await asyncio.sleep(0.001)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Stack, Stack]]:
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config())
    b = Stack(right, address=B, config=fast_config())
    async with a, b:
        yield a, b
