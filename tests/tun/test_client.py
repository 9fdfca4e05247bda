"""ustack as the client: active opens to asyncio servers on kernel sockets in the namespace."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import ustack
from ustack.link.netns import NetNamespace

from .conftest import KERNEL, SAFETY, MakeStack, kernel_server, needs_tun, states, until

pytestmark = [pytest.mark.tun, needs_tun]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_request_response_to_kernel_server(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    """ustack sends 4 MB; the kernel server answers with their SHA-256 and its own 4 MB."""
    reply = os.urandom(4_000_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
        writer.write(digest.hexdigest().encode() + b"\n" + reply)
        await writer.drain()
        writer.close()

    stack = await make_stack()  # first: it gives the kernel its address on the TUN device
    server, port = await kernel_server(netns, handler)
    async with server:
        request = os.urandom(4_000_000)
        reader, writer = await ustack.open_connection(KERNEL, port, stack=stack, timeout=SAFETY)
        writer.write(request)
        await asyncio.wait_for(writer.drain(), SAFETY)
        writer.write_eof()
        digest = await asyncio.wait_for(reader.readline(), SAFETY)
        body = await asyncio.wait_for(reader.read(), SAFETY)
        writer.close()
        await writer.wait_closed()
    assert digest.decode().strip() == _sha(request)
    assert _sha(body) == _sha(reply)
    assert stack.stats.tcp_active_opens == 1


async def test_connection_refused(make_stack: MakeStack) -> None:
    stack = await make_stack()
    # Nothing listens on this kernel port, so the kernel answers the SYN with RST/ACK.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(ustack.open_connection(KERNEL, 9, stack=stack), SAFETY)
    assert stack.stats.tcp_refused == 1


async def test_ustack_half_closes_and_keeps_reading(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    """ustack's FIN ends only its direction: the kernel sends 3 MB after seeing it."""
    after_eof = os.urandom(3_000_000)
    saw_eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.read() == b"hello"
        saw_eof.set()
        writer.write(after_eof)
        await writer.drain()
        writer.close()

    stack = await make_stack()  # first: it gives the kernel its address on the TUN device
    server, port = await kernel_server(netns, handler)
    async with server:
        reader, writer = await ustack.open_connection(KERNEL, port, stack=stack, timeout=SAFETY)
        writer.write(b"hello")
        writer.write_eof()
        await asyncio.wait_for(saw_eof.wait(), SAFETY)
        # Our FIN is acknowledged while the kernel's direction stays open.
        await until(lambda: states(stack) == ["FIN-WAIT-2"], "ustack in FIN-WAIT-2")
        got = await asyncio.wait_for(reader.read(), SAFETY)
        writer.close()
        await writer.wait_closed()
    assert _sha(got) == _sha(after_eof)


async def test_kernel_half_closes_while_ustack_keeps_writing(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    """The kernel shuts down its sending side first; ustack then sends 3 MB, all received."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write_eof()  # shutdown(SHUT_WR): FIN to ustack, still reading
        received.set_result(await reader.read())
        writer.close()

    stack = await make_stack()  # first: it gives the kernel its address on the TUN device
    server, port = await kernel_server(netns, handler)
    async with server:
        reader, writer = await ustack.open_connection(KERNEL, port, stack=stack, timeout=SAFETY)
        assert await asyncio.wait_for(reader.read(), SAFETY) == b""
        assert states(stack) == ["CLOSE-WAIT"]
        payload = os.urandom(3_000_000)
        writer.write(payload)
        await asyncio.wait_for(writer.drain(), SAFETY)
        writer.close()
        got = await asyncio.wait_for(received, SAFETY)
        await writer.wait_closed()
    assert _sha(got) == _sha(payload)
