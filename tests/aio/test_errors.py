"""Failures reach the application as the builtin exceptions asyncio users expect."""

from __future__ import annotations

import asyncio

import pytest

from ustack import Stack
from ustack.link.pair import LinkPair
from ustack.tcp.state import State

from .conftest import A, B, fast_config


async def test_silent_peer_syn_retries_exhausted_is_timeout_error() -> None:
    left, right = LinkPair.create()  # nobody drives ``right``: every SYN goes unanswered
    a = Stack(left, address=A, config=fast_config(syn_retries=2, rto_initial=0.02))
    try:
        async with a:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(TimeoutError):
                await a.connect(B, 80)
            elapsed = loop.time() - start
            # Three SYNs with exponential backoff (0.02 + 0.04 + 0.08), not a wall-clock guess.
            assert a.stats.tcp_syn_retransmits == 2
            assert a.stats.tcp_timeout_syn == 1
            assert elapsed >= 0.14 - 0.005
            assert right.read_batch(loop.time(), 10)  # the SYNs really went out
    finally:
        right.close()


async def test_connect_timeout_argument_is_timeout_error_and_aborts() -> None:
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config())
    try:
        async with a:
            with pytest.raises(TimeoutError):
                await a.connect(B, 80, timeout=0.01)
            # The half-open attempt is gone, not left retrying in the background.
            assert all(c.state is State.CLOSED for c in a.host.connections)
            assert a.stats.tcp_syn_retransmits == 0
    finally:
        right.close()


async def test_reset_while_established_reaches_reader(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(7)
    reader, writer = await a.connect(B, 7)
    _, s_writer = await listener.accept()
    lost: list[Exception | None] = []
    protocol = writer.transport.get_protocol()
    original = protocol.connection_lost

    def spy(exc: Exception | None) -> None:
        lost.append(exc)
        original(exc)

    protocol.connection_lost = spy  # type: ignore[method-assign]
    s_writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await reader.readexactly(1)
    assert len(lost) == 1 and isinstance(lost[0], ConnectionResetError)
    assert writer.transport.is_closing()
    listener.close()
