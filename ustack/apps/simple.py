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
"""

from __future__ import annotations

import asyncio
import contextlib

from ustack.apps.base import PEER_ERRORS, Handler, InfoProvider, close_quietly

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


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


async def chargen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


def echo_service(info: InfoProvider | None = None) -> Handler:
    return echo


def discard_service(info: InfoProvider | None = None) -> Handler:
    return discard


def chargen_service(info: InfoProvider | None = None) -> Handler:
    return chargen
