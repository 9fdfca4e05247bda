"""First light on a real TUN device: the Linux kernel's TCP talks to a ustack echo server.

Everything happens inside a network namespace the test creates and removes; the root
namespace is never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

import ustack
from ustack import Stack
from ustack.link.netns import NetNamespace, have_net_admin

from .conftest import fast_config

can_tun, why_not = have_net_admin()
pytestmark = [
    pytest.mark.tun,
    pytest.mark.skipif(not can_tun, reason=f"needs /dev/net/tun and CAP_NET_ADMIN: {why_not}"),
]

STACK = "10.7.0.2"
KERNEL = "10.7.0.1"


def kernel_client(payload: bytes) -> bytes:
    """A plain blocking kernel socket: connect, send everything, half-close, read the echo."""
    with socket.create_connection((STACK, 7), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_kernel_client_to_ustack_echo_server() -> None:
    payload = os.urandom(1_000_000)
    with NetNamespace() as ns:
        stack = Stack.tun("ustk0", address=STACK, peer=KERNEL, netns=ns.name, config=fast_config())
        async with stack:
            server = await ustack.start_server(echo, port=7, stack=stack)
            loop = asyncio.get_running_loop()
            got = await asyncio.wait_for(
                loop.run_in_executor(None, ns.call, lambda: kernel_client(payload)), 30
            )
            server.close()
            await server.wait_closed()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert stack.stats.tcp_established == 1
        assert stack.stats.tcp_bytes_received == len(payload)
