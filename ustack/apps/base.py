"""What every built-in service shares: the handler type and a close that cannot hang or raise.

A service is an ordinary asyncio-streams handler, ``async def handler(reader, writer)``, so the same
code runs on ustack's ``start_server`` and on the kernel's ``asyncio.start_server``. Handlers own
their connection: they always close the writer, and a peer that resets, disappears or misbehaves
ends the connection quietly instead of reaching the event loop's "unhandled exception" log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Returns {"counters": {name: int}, "connections": [{"local": ..., "remote": ..., "state": ...}], ...}.
InfoProvider = Callable[[], dict[str, Any]]

# What a peer can make a stream operation raise. None of these is a bug in the service.
PEER_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    EOFError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    TimeoutError,
)

# A graceful close waits for queued data to leave; a peer that stops reading must not pin the task.
CLOSE_TIMEOUT = 5.0


class ServiceFactory(Protocol):
    """Builds a handler; services that show the stack's state use ``info``, the rest ignore it."""

    def __call__(self, info: InfoProvider | None = None) -> Handler: ...


async def close_quietly(writer: asyncio.StreamWriter, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close gracefully (FIN after queued data); fall back to an abort if that takes too long."""
    try:
        writer.close()
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except PEER_ERRORS:
        pass
