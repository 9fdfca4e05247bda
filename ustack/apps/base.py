"""What every built-in service shares: the handler type and a close that cannot hang or raise.

A service is an ordinary asyncio-streams handler, ``async def handler(reader, writer)``, so the same
code runs on ustack's ``start_server`` and on the kernel's ``asyncio.start_server``. Handlers own
their connection: they always close the writer, and a peer that resets, disappears or misbehaves
ends the connection quietly instead of reaching the event loop's "unhandled exception" log.

The byte pumps (echo, discard, chargen) are a :class:`Service`: that streams handler, and the
same service written as an asyncio protocol (``protocol_factory``, a :class:`ServiceProtocol`).
ustack's ``start_server`` serves a handler that carries a ``protocol_factory`` through it, so a
connection costs a transport and one small protocol object -- no StreamReader, StreamWriter and
Task -- which is what lets ten thousand of them fit in a few kilobytes each. A service written
only as a protocol (HTTP) is still a streams handler through :func:`serve_protocol`, which hands
the stream pair's transport over to the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

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


class Service:
    """A service in both asyncio styles: ``await service(reader, writer)`` runs the streams
    handler (on any asyncio server); ``service.protocol_factory()`` makes the protocol that does
    the same, which ustack's ``start_server`` uses. The two are tested against the same
    behaviour (tests/apps)."""

    __slots__ = ("__name__", "_handler", "protocol_factory")

    def __init__(self, handler: Handler, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self._handler = handler
        self.protocol_factory = protocol_factory
        self.__name__ = getattr(handler, "__name__", type(self).__name__).lstrip("_")

    def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Awaitable[None]:
        return self._handler(reader, writer)

    def __repr__(self) -> str:
        return f"<Service {self.__name__}>"


class ServiceProtocol(asyncio.Protocol):
    """The protocol side of a :class:`Service`: holds the transport, and closes the way
    :func:`close_quietly` does -- gracefully (FIN after what is queued), but with an abort once
    ``CLOSE_TIMEOUT`` passes with data still stuck behind a peer that stopped reading. A peer's
    reset or a timeout ends the connection quietly (``connection_lost`` with the error)."""

    __slots__ = ("_abort_timer", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size() and self._abort_timer is None:
            loop = asyncio.get_running_loop()
            self._abort_timer = loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None


class Handover(asyncio.Protocol):
    """Stands in for another protocol: passes every callback on to ``inner`` and resolves
    ``lost`` when the connection ends (the stream pair's stand-in in ``serve_protocol``)."""

    __slots__ = ("inner", "lost")

    def __init__(self, inner: asyncio.Protocol, lost: asyncio.Future[None]) -> None:
        self.inner = inner
        self.lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            if not self.lost.done():
                self.lost.set_result(None)


async def serve_protocol(
    protocol: asyncio.Protocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve a connection that a streams server (``asyncio.start_server``) handed over as a
    stream pair with ``protocol`` instead: the transport is given to the protocol, with what
    the reader had already buffered, and this returns when the protocol's connection is lost.
    So a service written as a protocol is also a streams handler, with one implementation."""
    transport = writer.transport
    if transport.is_closing():
        # Reset or failed before we got here: there is nobody to serve.
        await close_quietly(writer)
        return
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    transport.set_protocol(Handover(protocol, lost))
    protocol.connection_made(transport)
    # What the reader took before the handover. asyncio offers no way to take it without
    # awaiting, hence the reader's private fields (stable since Python 3.4).
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    paused: bool = reader._paused  # type: ignore[attr-defined]
    eof: bool = reader._eof  # type: ignore[attr-defined]
    data = bytes(buffered)
    buffered.clear()
    if paused:
        # The reader had stopped the transport for its own buffer limit; the protocol decides now.
        cast(asyncio.ReadTransport, transport).resume_reading()
    if data:
        protocol.data_received(data)
    if eof and not protocol.eof_received():
        transport.close()
    await lost
