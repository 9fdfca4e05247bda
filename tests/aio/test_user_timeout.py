"""``TcpTransport.set_user_timeout``: Linux's TCP_USER_TIMEOUT for asyncio users."""

from __future__ import annotations

import asyncio

import pytest

from ustack import Stack
from ustack.tcp.state import State

from .conftest import B, until


async def test_transport_sets_the_connections_user_timeout(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(7)
    _, writer = await a.connect(B, 7)
    transport = writer.transport
    conn = transport.get_extra_info("ustack_connection")
    transport.set_user_timeout(0.5)  # type: ignore[attr-defined]
    assert conn.snd.user_timeout == 0.5
    with pytest.raises(ValueError, match="user timeout"):
        transport.set_user_timeout(-1.0)  # type: ignore[attr-defined]
    # The peer stops answering (its stack is gone without a word): the writer gives up after
    # the user timeout, with TimeoutError, long before 15 retries would.
    b.driver.stop()
    writer.write(b"x" * 1000)
    await until(lambda: conn.state is State.CLOSED, "the user timeout ended the connection")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.drain(), 5.0)
    assert conn.stats.tcp_timeout_user == 1 and conn.stats.tcp_timeout_rsts == 1
    listener.close()
