"""Serve a handler on the kernel's loopback TCP and check it ends cleanly.

The ``serve`` fixture wraps the handler to keep its tasks; at teardown every handler must have
finished (a service that never notices its client has gone fails here) and nothing may have been
logged at ERROR level (an escaped exception is logged by asyncio as "Unhandled exception").

``serve_service`` serves a built-in :class:`~ustack.apps.base.Service` in each of its two styles
(the test runs twice): as the streams handler, and as the asyncio protocol ustack's
``start_server`` uses -- where "finished" means the protocol got ``connection_lost``.

``stacks`` is two ustack stacks on an in-memory link pair, for what only ustack can show (the
TCP states and counters under a service).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ustack import Stack
from ustack.apps import Handler
from ustack.apps.base import Handover, Service
from ustack.link.pair import LinkPair
from ustack.tcp.config import TcpConfig

# Generous: only reached when a handler fails to finish, which is then a test failure.
SAFETY = 10.0
CLIENT = "10.9.0.1"
SERVER = "10.9.0.2"

Serve = Callable[[Handler], Awaitable[int]]
ServeService = Callable[[Service], Awaitable[int]]


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


@pytest.fixture(params=["streams", "protocol"])
async def serve_service(
    request: pytest.FixtureRequest, serve: Serve, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[ServeService]:
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    lost: list[asyncio.Future[None]] = []

    async def start(service: Service) -> int:
        if request.param == "streams":
            return await serve(service)

        def factory() -> asyncio.Protocol:
            lost.append(loop.create_future())
            return Handover(service.protocol_factory(), lost[-1])

        server = await loop.create_server(factory, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    if lost:
        _done, pending = await asyncio.wait(lost, timeout=SAFETY)
        assert not pending, f"{len(pending)} protocol(s) never saw connection_lost"
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def stacks() -> AsyncIterator[tuple[Stack, Stack]]:
    """(client, server): two stacks on an in-memory link, with loopback-speed TCP timers."""
    left, right = LinkPair.create()
    a = Stack(left, address=CLIENT, config=_fast_config())
    b = Stack(right, address=SERVER, config=_fast_config())
    async with a, b:
        yield a, b


def _fast_config() -> TcpConfig:
    return TcpConfig(rto_min=0.05, rto_initial=0.2, delayed_ack=0.005)


async def until(cond: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``cond()`` holds (an event, not a time: SAFETY only bounds a bug)."""
    try:
        async with asyncio.timeout(SAFETY):
            while not cond():
                await asyncio.sleep(0.001)
    except TimeoutError:
        pytest.fail(f"timed out waiting for: {what}")
