"""A deliberately small raw HTTP/1.1 client, so tests control every byte they send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

SAFETY = 10.0


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


async def read_response(
    reader: asyncio.StreamReader,
    *,
    head: bool = False,
    sink: Callable[[bytes], object] | None = None,
) -> Response:
    """One response; ``head`` for a HEAD request (no body); ``sink`` receives a streamed body."""
    async with asyncio.timeout(SAFETY):
        status_line = await reader.readuntil(b"\r\n")
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        response = Response(int(status))
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, value = line.decode("latin-1").split(":", 1)
            assert name.lower() not in response.headers, f"duplicate {name}"
            response.headers[name.lower()] = value.strip()
        if head or response.status < 200:
            return response
        remaining = int(response.headers["content-length"])
        if sink is None:
            response.body = await reader.readexactly(remaining)
            return response
        while remaining:
            data = await reader.read(min(remaining, 1 << 20))
            assert data, "EOF inside the body"
            sink(data)
            remaining -= len(data)
        return response


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange_closing(port: int, raw: bytes, *, head: bool = False) -> tuple[Response, bytes]:
    """Send ``raw`` on a fresh connection; the response and whatever follows it until EOF."""
    reader, writer = await connect(port)
    try:
        writer.write(raw)
        await writer.drain()
        response = await read_response(reader, head=head)
        async with asyncio.timeout(SAFETY):
            rest = await reader.read()
        return response, rest
    finally:
        writer.close()


async def expect_eof(reader: asyncio.StreamReader) -> None:
    """The server closed its side: the next read is EOF (bounded only as a safety net)."""
    async with asyncio.timeout(SAFETY):
        assert await reader.read() == b""


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *extra, "", ""]
    return "\r\n".join(lines).encode()
