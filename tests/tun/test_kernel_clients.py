"""The kernel's TCP as the client of ustack's echo, discard and chargen services."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import ustack
from ustack.apps import chargen, chargen_line, discard, echo
from ustack.link.netns import NetNamespace

from .conftest import (
    SAFETY,
    MakeStack,
    kernel_connect,
    kernel_sockets,
    needs_tun,
    states,
    until,
)

pytestmark = [pytest.mark.tun, needs_tun]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> bytes:
    """Send ``payload`` and half-close while reading everything back, until the server's FIN."""

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await reader.read()
    await sender
    writer.close()
    await writer.wait_closed()
    return received


async def test_echo(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack()
    await ustack.start_server(echo, port=7, stack=stack)
    payload = os.urandom(3_000_000)
    reader, writer = await kernel_connect(netns, 7)
    got = await asyncio.wait_for(_exchange(reader, writer, payload), SAFETY)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert stack.stats.tcp_bytes_received == len(payload)
    assert stack.stats.tcp_bytes_sent == len(payload)


async def test_discard(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack()
    await ustack.start_server(discard, port=9, stack=stack)
    payload = os.urandom(3_000_000)
    reader, writer = await kernel_connect(netns, 9)
    got = await asyncio.wait_for(_exchange(reader, writer, payload), SAFETY)
    # Discard answers nothing and closes after our FIN; every byte reached the service.
    assert got == b""
    assert stack.stats.tcp_bytes_received == len(payload)
    assert stack.stats.tcp_bytes_sent == 0


async def test_chargen(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack()
    await ustack.start_server(chargen, port=19, stack=stack)
    lines = 20_000  # 1.5 MB: many windows' worth, several pattern periods
    expected = b"".join(chargen_line(n) for n in range(lines))
    reader, writer = await kernel_connect(netns, 19)
    got = await asyncio.wait_for(reader.readexactly(len(expected)), SAFETY)
    assert got == expected
    # The client's FIN means "enough": chargen stops and closes its side too.
    writer.write_eof()
    await asyncio.wait_for(_drain_to_eof(reader), SAFETY)
    writer.close()
    await writer.wait_closed()
    await until(lambda: "ESTABLISHED" not in states(stack), "chargen connection to end")


async def _drain_to_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(1 << 20):
        pass


async def test_200_concurrent_echo_connections(make_stack: MakeStack, netns: NetNamespace) -> None:
    count = 200
    stack = await make_stack()
    await ustack.start_server(echo, port=7, stack=stack, backlog=count)
    socks = kernel_sockets(netns, count)
    streams = await asyncio.wait_for(
        asyncio.gather(*(kernel_connect(netns, 7, sock=sock) for sock in socks)), SAFETY
    )
    # All of them are open at the same moment, not one after the other.
    await until(lambda: states(stack).count("ESTABLISHED") == count, f"{count} ESTABLISHED at once")
    payloads = [f"connection {i}:".encode() + os.urandom(20_000 + 97 * i) for i in range(count)]
    results = await asyncio.wait_for(
        asyncio.gather(*(_exchange(r, w, p) for (r, w), p in zip(streams, payloads, strict=True))),
        SAFETY,
    )
    for i, (got, sent) in enumerate(zip(results, payloads, strict=True)):
        assert got == sent, f"connection {i}: echo differs"
    assert stack.stats.tcp_passive_opens == count
    assert stack.stats.tcp_bytes_received == sum(map(len, payloads))
