"""``ustack.routed``: the loop's own create_connection/create_server/getaddrinfo/sock_connect/
start_tls through a Stack, for libraries that know nothing of ustack.

Two stacks over a LinkPair (A = 10.9.0.1, B = 10.9.0.2, both also with IPv6), on the stock loop
and on uvloop (the conftest runs every test on both). Client routes name the pair's networks
explicitly, as a LinkPair has no configured prefixes. Every test would fail without routing:
the kernel owns none of these addresses, so binding or connecting to them there fails.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
import uvloop
from aiohttp import web
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

import ustack
from ustack import Stack
from ustack.aio.api import Server
from ustack.aio.routed import Route, link_networks
from ustack.aio.transport import StackSocket, TcpTransport
from ustack.link.pair import LinkPair

from .conftest import WAIT, A, B, fast_config, until

A6 = "fd00:9::1"
B6 = "fd00:9::2"
NETS = ["10.9.0.0/24", "fd00:9::/64"]
MiB = 1 << 20


@pytest.fixture
async def pair6() -> AsyncIterator[tuple[Stack, Stack]]:
    left, right = LinkPair.create()
    a = Stack(left, address=A, address6=A6, config=fast_config())
    b = Stack(right, address=B, address6=B6, config=fast_config())
    async with a, b:
        yield a, b


@pytest.fixture
async def routed_pair(pair6: tuple[Stack, Stack]) -> AsyncIterator[tuple[Stack, Stack]]:
    """A routes clients into the pair's networks; B serves on its own addresses."""
    a, b = pair6
    with ustack.routed(a, networks=NETS), ustack.routed(b):
        yield a, b


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_asyncio_streams_go_through_the_stacks(routed_pair: tuple[Stack, Stack]) -> None:
    a, b = routed_pair
    server = await asyncio.start_server(_echo, B, 0)
    assert isinstance(server, Server)
    port = server.sockets[0].getsockname()[1]
    assert server.sockets[0].getsockname() == (B, port)
    async with server:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(B, port), WAIT)
        assert isinstance(writer.transport, TcpTransport)
        assert writer.get_extra_info("peername") == (B, port)
        assert writer.get_extra_info("sockname")[0] == A
        payload = bytes(range(256)) * 4096
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == payload
        writer.close()
        await writer.wait_closed()
    # Both sides' TCP did the work: B accepted one connection, A opened one.
    assert b.stats.tcp_passive_opens == 1
    assert a.stats.tcp_active_opens == 1


async def test_ipv6_literal_and_both_families_on_one_server(
    routed_pair: tuple[Stack, Stack],
) -> None:
    server = await asyncio.start_server(_echo, [B, B6], 0)
    port = server.sockets[0].getsockname()[1]
    assert sorted(s.family for s in server.sockets) == [socket.AF_INET, socket.AF_INET6]
    async with server:
        for host in (B6, B):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)
            assert writer.get_extra_info("peername")[:2] == (host, port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"ping"
            writer.close()
            await writer.wait_closed()


async def test_everything_else_stays_with_the_kernel(routed_pair: tuple[Stack, Stack]) -> None:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    assert not isinstance(server, Server)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
        assert not isinstance(writer.transport, TcpTransport)
        writer.write(b"kernel")
        assert await asyncio.wait_for(reader.readexactly(6), WAIT) == b"kernel"
        writer.close()
        await writer.wait_closed()
    # Mixing a stack's address with the kernel's in one call is refused, clearly.
    with pytest.raises(ValueError, match="mix addresses"):
        await loop.create_server(asyncio.Protocol, [B, "127.0.0.1"], 0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        await loop.create_server(asyncio.Protocol, B, 0, bogus=1)  # type: ignore[call-overload]


async def test_leaving_the_block_restores_the_loop() -> None:
    loop = asyncio.get_running_loop()
    left, right = LinkPair.create()
    try:
        async with Stack(left, address=A, config=fast_config()) as a:
            with ustack.routed(a, networks=NETS) as routing:
                assert "create_connection" in vars(loop)
                assert repr(routing).endswith(" on>")
            for name in ("create_connection", "create_server", "getaddrinfo", "sock_connect"):
                assert name not in vars(loop), name
    finally:
        right.close()

    def outside_any_loop() -> None:
        ustack.routed(a).__enter__()

    with pytest.raises(RuntimeError, match="running event loop"):
        await asyncio.to_thread(outside_any_loop)


async def test_server_contract(routed_pair: tuple[Stack, Stack]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        asyncio.Protocol, B, 0, backlog=5, reuse_address=True, reuse_port=True, start_serving=False
    )
    assert isinstance(server, Server)
    assert server.get_loop() is loop
    assert not server.is_serving()
    await server.start_serving()
    assert server.is_serving()
    sock = server.sockets[0]
    assert isinstance(sock, StackSocket) and sock.fileno() == -1
    with pytest.raises(OSError):
        sock.getpeername()
    forever = asyncio.ensure_future(server.serve_forever())
    await asyncio.sleep(0)
    forever.cancel()
    with pytest.raises(asyncio.CancelledError):
        await forever
    assert not server.is_serving()
    assert server.sockets == ()
    await asyncio.wait_for(server.wait_closed(), WAIT)


async def test_transport_socket_stand_in(routed_pair: tuple[Stack, Stack]) -> None:
    server = await asyncio.start_server(_echo, B, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.wait_for(asyncio.open_connection(B, port), WAIT)
        sock = writer.get_extra_info("socket")
        conn = writer.get_extra_info("ustack_connection")
        assert writer.get_extra_info("socket") is sock  # one per transport: options stick
        assert (sock.family, sock.type, sock.proto) == (
            socket.AF_INET,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
        )
        assert sock.getpeername() == (B, port)
        assert sock.getsockname() == writer.get_extra_info("sockname")
        assert sock.fileno() == -1
        # What libraries do first: Nagle off. It reaches the connection.
        assert conn.nodelay is False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert conn.nodelay is True
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)
        assert conn.snd.user_timeout == 1.5
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7)
        assert conn.keepalive is True and conn._ka_idle == 7
        # Options without a meaning here are kept, without effect.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 12345)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 12345
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
        for name in ("sslcontext", "ssl_object", "peercert", "cipher"):
            assert writer.get_extra_info(name, "absent") is None
        with pytest.raises(ValueError):
            sock.setblocking(True)
        with pytest.raises(OSError):
            sock.dup()
        writer.close()
        await writer.wait_closed()


async def test_happy_eyeballs_over_a_name(pair6: tuple[Stack, Stack]) -> None:
    """A name resolving to a silent address first and B second: with happy_eyeballs_delay the
    second attempt starts while the first waits, wins, and the loser is reset. The name is
    resolved by the loop's own getaddrinfo, here a stand-in put there before routing."""
    a, b = pair6
    loop = asyncio.get_running_loop()
    silent = "10.9.0.77"  # in A's route, but nobody answers there
    asked: list[str] = []

    async def fake_getaddrinfo(host: str, port: int, **kwargs: object) -> list[object]:
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (silent, port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (B, port)),
        ]

    loop.getaddrinfo = fake_getaddrinfo  # type: ignore[assignment]
    try:
        with ustack.routed(a, networks=NETS), ustack.routed(b):
            server = await asyncio.start_server(_echo, B, 0)
            port = server.sockets[0].getsockname()[1]
            async with server:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("pair.test", port, happy_eyeballs_delay=0.05), WAIT
                )
                assert writer.get_extra_info("peername") == (B, port)
                await until(
                    lambda: all(r["state"] != "SYN-SENT" for r in a.connections()),
                    "the losing attempt reset",
                )
                writer.close()
                await writer.wait_closed()
        assert asked == ["pair.test"]
        assert a.stats.tcp_active_opens == 2
    finally:
        del loop.getaddrinfo


async def test_tls_both_ways(routed_pair: tuple[Stack, Stack]) -> None:
    """ssl= on create_server and create_connection: asyncio's TLS over ustack transports."""
    ca = trustme.CA()
    cert = ca.issue_cert(B)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server = await asyncio.start_server(_echo, B, 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(B, port, ssl=client_ctx), WAIT
        )
        assert writer.get_extra_info("sslcontext") is client_ctx
        assert writer.get_extra_info("peercert") is not None
        assert writer.get_extra_info("peername") == (B, port)
        payload = hashlib.sha256(b"tls").digest() * 40000  # 1.28 MB through TLS records
        writer.write(payload)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(payload)), WAIT) == payload
        writer.close()
        await writer.wait_closed()
        # The wrong name fails the handshake with the certificate error, as on the kernel.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.wait_for(
                asyncio.open_connection(B, port, ssl=client_ctx, server_hostname="other.test"),
                WAIT,
            )


async def test_start_tls_on_a_plain_connection(routed_pair: tuple[Stack, Stack]) -> None:
    """STARTTLS style: a plain connection upgraded with loop.start_tls on both ends."""
    loop = asyncio.get_running_loop()
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(B).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        await writer.start_tls(server_ctx)
        await _echo(reader, writer)

    server = await asyncio.start_server(upgrade, B, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(B, port), WAIT)
        writer.write(b"STARTTLS\n")
        await writer.drain()
        await asyncio.wait_for(writer.start_tls(client_ctx, server_hostname=B), WAIT)
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"secret")
        assert await asyncio.wait_for(reader.readexactly(6), WAIT) == b"secret"
        writer.close()
        await writer.wait_closed()
    assert loop is asyncio.get_running_loop()


async def test_buffered_protocol_gets_the_bytes(routed_pair: tuple[Stack, Stack]) -> None:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(_echo, B, 0)
    port = server.sockets[0].getsockname()[1]
    received = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buffer = bytearray(1000)  # smaller than a segment: several buffers per read

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            received.extend(self.buffer[:nbytes])

        def eof_received(self) -> None:
            done.set_result(None)

    async with server:
        transport, _ = await loop.create_connection(Buffered, B, port)
        payload = bytes(range(251)) * 1000
        transport.write(payload)
        transport.write_eof()
        await asyncio.wait_for(done, WAIT)
        assert bytes(received) == payload
        transport.close()


async def test_websockets_pair(routed_pair: tuple[Stack, Stack]) -> None:
    """The websockets library, unmodified, serving on B and connecting from A."""
    a, b = routed_pair

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, B, 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://{B}:{port}/", open_timeout=WAIT) as ws:
            assert ws.remote_address == (B, port)
            assert ws.local_address[0] == A
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "hello"
            big = hashlib.sha256(b"ws").digest() * (MiB // 32)
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), WAIT) == big
    assert b.stats.tcp_passive_opens == 1
    assert a.stats.tcp_active_opens == 1


async def test_aiohttp_client_and_server_pair(routed_pair: tuple[Stack, Stack]) -> None:
    """aiohttp's web server on B, its client (aiohappyeyeballs' sock_connect, then
    create_connection(sock=)) on A: the parked-connection path."""
    a, b = routed_pair

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.remote}")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, B, 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{B}:{port}/") as response:
                assert response.status == 200
                assert await response.text() == f"hello {A}"
            body = bytes(range(256)) * 1000
            async with session.post(f"http://{B}:{port}/echo", data=body) as response:
                assert await response.read() == body
    finally:
        await runner.cleanup()
    assert a.stats.tcp_active_opens == 1  # one kept-alive connection for both requests
    assert b.stats.tcp_passive_opens == 1


async def test_sendfile_falls_back_to_writes(
    routed_pair: tuple[Stack, Stack], tmp_path: Path
) -> None:
    """No kernel socket, no sendfile(2): asyncio's loop.sendfile writes the file in chunks
    under flow control; uvloop has no loop.sendfile at all (NotImplementedError, which
    aiohttp's FileResponse expects and answers by writing the file itself)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.read())
        writer.close()

    content = bytes(range(256)) * 3000
    path = tmp_path / "file"
    path.write_bytes(content)
    server = await asyncio.start_server(collect, B, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.wait_for(asyncio.open_connection(B, port), WAIT)
        with path.open("rb") as file:
            if isinstance(loop, uvloop.Loop):
                with pytest.raises(NotImplementedError):
                    await loop.sendfile(writer.transport, file)
                writer.write(content)
            else:
                sent = await asyncio.wait_for(loop.sendfile(writer.transport, file), WAIT)
                assert sent == len(content)
        writer.write_eof()
        assert await asyncio.wait_for(got, WAIT) == content
        writer.close()
        await writer.wait_closed()


async def test_refused_and_abandoned_connects(routed_pair: tuple[Stack, Stack]) -> None:
    a, _ = routed_pair
    loop = asyncio.get_running_loop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(B, 9), WAIT)
    # A routed sock_connect parks a ustack connection for create_connection(sock=); a socket
    # dropped without that has its connection reset once the socket object is collected.
    server = await asyncio.start_server(_echo, B, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (B, port)), WAIT)

        def established() -> list[dict[str, object]]:
            return [r for r in a.connections() if r["state"] == "ESTABLISHED"]

        assert len(established()) == 1
        sock.close()
        del sock
        gc.collect()
        assert established() == []


def test_default_networks_are_the_links_prefixes() -> None:
    """A TUN link knows the prefixes configured on it (the kernel's address and length per
    family); wrappers (fault injector, pcap tap) are looked through; a pair knows none."""

    class Tun:
        address, prefixlen, address6, prefixlen6 = "10.7.0.1", 24, "fd00:7::1", 64

    class Wrapper:
        inner = Tun()

    assert [str(n) for n in link_networks(Wrapper())] == ["10.7.0.0/24", "fd00:7::/64"]
    left, right = LinkPair.create()
    try:
        assert link_networks(left) == []
        stack = Stack(left, address=A)
        assert Route(stack).networks == ()
        assert [str(n) for n in Route(stack, networks="10.9.0.0/16").networks] == ["10.9.0.0/16"]
        with pytest.raises(ValueError, match="not an IPv4 or IPv6 prefix"):
            Route(stack, networks=["10.9.0.300/24"])
    finally:
        left.close()
        right.close()


async def test_bad_arguments_are_clear_errors(routed_pair: tuple[Stack, Stack]) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TypeError, match=r"takes a ustack\.Stack"):
        ustack.routed("10.9.0.2")  # type: ignore[arg-type]
    with pytest.raises(OSError, match="unknown TCP service"):
        await loop.create_connection(asyncio.Protocol, B, "no-such-service")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
        await asyncio.wait_for(asyncio.open_connection(B6, 9, server_hostname="x"), WAIT)
    with pytest.raises(OSError, match="not the routed stack's address"):
        await loop.create_connection(asyncio.Protocol, B, 9, local_addr=("10.9.0.5", 0))
    with pytest.raises(ValueError, match="Server side SSL needs a valid SSLContext"):
        await loop.create_server(asyncio.Protocol, B, 0, ssl=True)


async def test_aiohttp_https_pair(routed_pair: tuple[Stack, Stack]) -> None:
    """HTTPS with aiohttp on both ends: TLS on a parked-and-adopted connection."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(B).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def hello(request: web.Request) -> web.Response:
        assert request.transport is not None
        tls = request.transport.get_extra_info("sslcontext") is server_ctx
        return web.Response(text=f"{request.secure} {tls} {request.remote}")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, B, 0, ssl_context=server_ctx).start()
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://{B}:{port}/", ssl=client_ctx) as response,
        ):
            # The client trusts only the test CA, so a 200 means B presented its certificate.
            assert response.status == 200
            assert await response.text() == f"True True {A}"
    finally:
        await runner.cleanup()
