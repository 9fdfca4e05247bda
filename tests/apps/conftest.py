"""Serve a handler on the kernel's loopback TCP and check it ends cleanly.

The ``serve`` fixture wraps the handler to keep its tasks; at teardown every handler must have
finished (a service that never notices its client has gone fails here) and nothing may have been
logged at ERROR level (an escaped exception is logged by asyncio as "Unhandled exception").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ustack.apps import Handler

# Generous: only reached when a handler fails to finish, which is then a test failure.
SAFETY = 10.0

Serve = Callable[[Handler], Awaitable[int]]


@pytest.fixture
async def serve(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Task[None]] = []

    async def start(handler: Handler) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            await handler(reader, writer)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    caplog.set_level(logging.WARNING)
    yield start
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=SAFETY)
        for task in pending:
            task.cancel()
        assert not pending, f"{len(pending)} handler(s) still running after the test"
    for server in servers:
        server.close()
        await server.wait_closed()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
