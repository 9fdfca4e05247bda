"""The classic "simple TCP/IP services": echo (RFC 862), discard (RFC 863), chargen (RFC 864).

All three are byte pumps whose only subtlety is how a connection ends:

- echo returns every byte until the client's FIN, then sends its own FIN. A client may therefore
  half-close (``write_eof``) and still read the rest of its echo. Back-pressure is end to end: while
  the client does not read, ``drain()`` blocks, echo stops reading, and the client's window closes.
- discard reads until the client's FIN and then closes.
- chargen sends the RFC's rotating 72-character lines for as long as the client keeps the
  connection. It has no request to wait for, so anything the client can say -- a FIN, a close or a
  reset -- means "enough". A watcher reads (and throws away) the client's data; when it sees the
  end, the sender is cancelled even if it is parked in ``drain()`` behind a client that stopped
  reading.

Each is a :class:`~ustack.apps.base.Service`: the streams handler below, and the same service as
an asyncio protocol (``EchoProtocol``, ``DiscardProtocol``, ``ChargenProtocol``), which is what
ustack's ``start_server`` runs -- no task, reader or writer per connection. In protocol terms the
back-pressure is the transport's flow control: echo pauses reading while its writes are paused
(``pause_writing``), so a client that does not read gets its window closed; chargen writes until
``pause_writing`` and carries on at ``resume_writing``; a FIN arrives as ``eof_received``.
"""

from __future__ import annotations

import asyncio
import contextlib

from ustack.apps.base import (
    PEER_ERRORS,
    Handler,
    InfoProvider,
    Service,
    ServiceProtocol,
    close_quietly,
)

READ_SIZE = 65536

# RFC 864: "There are 95 printing characters in the ASCII character set ... On line N, put
# characters (0+N mod 95) through (71+N mod 95). End each line with carriage return and line feed."
CHARGEN_CHARS = bytes(range(0x20, 0x7F))
CHARGEN_LINE = 72
CHARGEN_PERIOD = len(CHARGEN_CHARS)


def chargen_line(n: int) -> bytes:
    """Line ``n`` of the RFC 864 pattern, CRLF included."""
    ring = CHARGEN_CHARS * 2
    start = n % CHARGEN_PERIOD
    return ring[start : start + CHARGEN_LINE] + b"\r\n"


# The pattern repeats every 95 lines; sending whole periods keeps every write aligned to line 0.
# Nine periods (~66 KB) per write keep the per-write overhead small without a large buffer.
_CHARGEN_BLOCK = b"".join(chargen_line(n) for n in range(CHARGEN_PERIOD)) * 9


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFC 862: send back everything received, until the client's FIN; then FIN."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except PEER_ERRORS:
        pass
    finally:
        await close_quietly(writer)


async def _discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFC 863: throw away everything received, until the client's FIN; then close."""
    try:
        while await reader.read(READ_SIZE):
            pass
    except PEER_ERRORS:
        pass
    finally:
        await close_quietly(writer)


async def _read_until_end(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(*PEER_ERRORS):
        while await reader.read(READ_SIZE):
            pass


async def _send_pattern(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*PEER_ERRORS):
        while True:
            writer.write(_CHARGEN_BLOCK)
            await writer.drain()


async def _chargen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFC 864: stream the rotating line pattern until the client closes or resets."""
    watcher = asyncio.create_task(_read_until_end(reader))
    sender = asyncio.create_task(_send_pattern(writer))
    try:
        await asyncio.wait((watcher, sender), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watcher, sender):
            task.cancel()
        await asyncio.gather(watcher, sender, return_exceptions=True)
        if reader.at_eof():
            await close_quietly(writer)
        else:
            # The sender failed (reset or broken pipe): nothing graceful is left to do.
            writer.transport.abort()


class EchoProtocol(ServiceProtocol):
    """RFC 862 as a protocol: every byte goes straight back. While the transport holds more than
    its high-water mark (the client is not reading), reading pauses too, so the client's own
    window closes; the client's FIN is answered with ours once the echo is all sent."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.close()
        return True


class DiscardProtocol(ServiceProtocol):
    """RFC 863 as a protocol: take and forget everything; close after the client's FIN."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self.close()
        return True


class ChargenProtocol(ServiceProtocol):
    """RFC 864 as a protocol: whole 95-line periods of the pattern, written until the transport
    asks to pause and again when it resumes; the client's data is read and dropped, and its FIN
    (or close, or reset) stops the pattern -- a FIN with a graceful close of our own."""

    __slots__ = ("_paused",)

    def __init__(self) -> None:
        super().__init__()
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._pump()

    def _pump(self) -> None:
        transport = self.transport
        while transport is not None and not self._paused and not transport.is_closing():
            transport.write(_CHARGEN_BLOCK)
            transport = self.transport

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self._paused = True
        self.close()
        return True


echo = Service(_echo, EchoProtocol)
discard = Service(_discard, DiscardProtocol)
chargen = Service(_chargen, ChargenProtocol)


def echo_service(info: InfoProvider | None = None) -> Handler:
    return echo


def discard_service(info: InfoProvider | None = None) -> Handler:
    return discard


def chargen_service(info: InfoProvider | None = None) -> Handler:
    return chargen
