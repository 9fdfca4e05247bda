"""echo (RFC 862), discard (RFC 863) and chargen (RFC 864) over the kernel's loopback TCP, each
in both of its styles: the streams handler and the asyncio protocol (``serve_service``)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct

from tests.apps.conftest import SAFETY, ServeService
from ustack.apps import SERVICES, chargen, chargen_line, discard, echo

PAYLOAD = hashlib.shake_256(b"ustack apps").digest(1 << 20)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(SAFETY):
        return await reader.read()


async def test_registry_names_ports_and_factories() -> None:
    assert {name: port for name, (port, _) in SERVICES.items()} == {
        "echo": 7,
        "discard": 9,
        "chargen": 19,
        "http": 80,
    }
    assert SERVICES["echo"][1]() is echo
    assert SERVICES["chargen"][1]() is chargen
    assert callable(SERVICES["http"][1](info=dict))


async def test_echo_round_trip_while_sending(serve_service: ServeService) -> None:
    # Reading concurrently with writing: a megabyte is more than the socket buffers hold, so
    # this only finishes if echo keeps pumping in both directions.
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(echo))

    async def send() -> None:
        for i in range(0, len(PAYLOAD), 7919):
            writer.write(PAYLOAD[i : i + 7919])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await _read_all(reader)
    await sender
    writer.close()
    assert received == PAYLOAD


async def test_echo_half_close_returns_everything_then_eof(serve_service: ServeService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(echo))
    writer.write(b"half-closed, still listening")
    writer.write_eof()
    # Our FIN must not end the echo early, and echo's FIN must follow the data.
    assert await _read_all(reader) == b"half-closed, still listening"
    writer.close()


async def test_echo_survives_client_reset(serve_service: ServeService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(echo))
    writer.write(b"x")
    async with asyncio.timeout(SAFETY):
        assert await reader.readexactly(1) == b"x"
    _reset(writer)


async def test_discard_swallows_and_closes(serve_service: ServeService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(discard))
    for i in range(0, len(PAYLOAD), 65536):
        writer.write(PAYLOAD[i : i + 65536])
        await writer.drain()
    writer.write_eof()
    assert await _read_all(reader) == b""
    writer.close()


def test_chargen_lines_match_rfc_864() -> None:
    # RFC 864 "Data Syntax": line N holds characters (0+N mod 95) .. (71+N mod 95) of the 95
    # printing ASCII characters, each line ended by CRLF.
    assert (
        chargen_line(0)
        == b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n"
    )
    assert (
        chargen_line(1)
        == b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"
    )
    for n in range(200):
        line = chargen_line(n)
        assert len(line) == 74 and line.endswith(b"\r\n")
        assert all(0x20 + (n + j) % 95 == line[j] for j in range(72))
    assert chargen_line(95) == chargen_line(0)
    # The ring wraps: line 94 starts with '~' followed by ' '.
    assert chargen_line(94)[:2] == b"~ "


async def test_chargen_streams_the_pattern_and_stops_on_close(serve_service: ServeService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(chargen))
    async with asyncio.timeout(SAFETY):
        for n in range(300):
            assert await reader.readexactly(74) == chargen_line(n), f"line {n}"
    writer.close()
    # The fixture fails the test unless the chargen handler finishes after our close.


async def test_chargen_half_close_ends_with_fin(serve_service: ServeService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(chargen))
    async with asyncio.timeout(SAFETY):
        assert await reader.readexactly(74) == chargen_line(0)
    writer.write_eof()
    # What was already queued still arrives, in pattern order, followed by a clean FIN.
    rest = await _read_all(reader)
    assert len(rest) % 74 == 0
    assert rest[:74] == chargen_line(1)
    writer.close()


async def test_chargen_stops_on_client_reset(serve_service: ServeService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", await serve_service(chargen))
    async with asyncio.timeout(SAFETY):
        await reader.readexactly(74 * 10)
    _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, which makes the kernel send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
