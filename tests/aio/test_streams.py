"""Stock asyncio streams over ustack: two stacks on an in-memory link pair, a real event loop.

Each test drives real connections end to end through the driver, the transport and the
sans-IO core, and asserts both what the application sees and the TCP state underneath it
(windows, states, counters), so a test cannot pass by the streams alone doing the right thing.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

import ustack
from ustack import Stack, TcpTransport
from ustack.tcp.state import State

from .conftest import A, B, until

PORT = 7


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_open_connection_start_server_echo(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    server = await ustack.start_server(echo, port=PORT, stack=b)
    assert server.is_serving()
    reader, writer = await ustack.open_connection(B, PORT, stack=a)
    assert isinstance(reader, asyncio.StreamReader)
    assert isinstance(writer, asyncio.StreamWriter)
    writer.write(b"hello ")
    writer.write(b"world\n")
    assert await reader.readline() == b"hello world\n"
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    assert a.stats.tcp_established == 1 and b.stats.tcp_established == 1


def _blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_ten_megabytes_each_way_sha256(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    size = 10 * 1024 * 1024
    up, down = _blob(size, 1), _blob(size, 2)
    got_on_b = hashlib.sha256()
    got_on_a = hashlib.sha256()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            view = memoryview(down)
            for i in range(0, size, 100_000):
                writer.write(view[i : i + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        n = 0
        while chunk := await reader.read(1 << 20):
            got_on_b.update(chunk)
            n += len(chunk)
        await sender
        writer.close()

    server = await ustack.start_server(serve, port=PORT, stack=b)
    reader, writer = await ustack.open_connection(B, PORT, stack=a)

    async def send_up() -> None:
        view = memoryview(up)
        for i in range(0, size, 65_536):
            writer.write(view[i : i + 65_536])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send_up())
    received = 0
    while chunk := await reader.read(1 << 20):
        got_on_a.update(chunk)
        received += len(chunk)
    await sender
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    assert received == size
    assert got_on_a.hexdigest() == hashlib.sha256(down).hexdigest()
    assert got_on_b.hexdigest() == hashlib.sha256(up).hexdigest()
    assert a.stats.tcp_bytes_received == size and b.stats.tcp_bytes_received == size


async def test_drain_blocks_while_the_peer_does_not_read(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT)
    client_reader, writer = await a.connect(B, PORT)
    server_reader, server_writer = await listener.accept()
    server_reader._transport.pause_reading()  # type: ignore[attr-defined]
    transport = writer.transport
    conn = transport.get_extra_info("ustack_connection")
    high = 64 * 1024
    transport.set_write_buffer_limits(high=high)
    chunk = b"x" * 16384
    written = 0
    # Write until drain() actually blocks: the peer's window, our send buffer and then the
    # overflow above the high watermark have all filled.
    for _ in range(10_000):
        writer.write(chunk)
        written += len(chunk)
        drain = asyncio.create_task(writer.drain())
        await asyncio.sleep(0)
        if not drain.done():
            break
        await drain
    else:
        pytest.fail("drain() never blocked")
    await until(lambda: conn.snd_wnd == 0, "the peer's window to close")
    assert transport.get_write_buffer_size() > high
    assert not drain.done()
    assert written > a.config.send_buffer + b.config.recv_buffer
    # The reader starts reading: everything arrives, the overflow drains, drain() returns.
    server_reader._transport.resume_reading()  # type: ignore[attr-defined]
    got = 0
    while got < written:
        got += len(await server_reader.read(1 << 20))
        if got > written // 2:
            assert not drain.done() or transport.get_write_buffer_size() <= high // 4
    await asyncio.wait_for(drain, 10)
    assert got == written
    assert transport.get_write_buffer_size() == 0
    writer.close()
    server_writer.close()
    listener.close()
    del client_reader


async def test_pause_reading_closes_window_resume_reopens(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT)
    _, writer = await a.connect(B, PORT)
    server_reader, server_writer = await listener.accept()
    server_transport = server_writer.transport
    assert isinstance(server_transport, TcpTransport)
    server_transport.pause_reading()
    assert not server_transport.is_reading()
    server_conn = server_transport.get_extra_info("ustack_connection")
    client_conn = writer.get_extra_info("ustack_connection")
    total = 600 * 1024  # more than the receive buffer, so the window must close
    writer.write(b"y" * total)
    await until(lambda: client_conn.snd_wnd == 0, "a zero window at the sender")
    # The receiver holds a full buffer; what is left of its window is below one segment
    # (window-scale rounding), so the sender sees zero.
    assert server_conn.rcv_wnd < server_conn.snd_mss
    assert server_conn.readable > b.config.recv_buffer - server_conn.snd_mss
    stalled = client_conn.snd_una
    # Zero-window probes go out but no data is accepted while paused.
    probes = a.stats.tcp_window_probes
    await until(lambda: a.stats.tcp_window_probes > probes, "a zero-window probe")
    assert client_conn.snd_una == stalled
    assert len(server_reader._buffer) == 0  # type: ignore[attr-defined]

    updates = b.stats.tcp_window_updates
    server_transport.resume_reading()
    got = 0
    while got < total:
        got += len(await server_reader.read(1 << 20))
    assert got == total
    assert b.stats.tcp_window_updates > updates
    writer.close()
    server_writer.close()
    listener.close()


async def test_write_eof_half_close_both_directions(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT)
    reader, writer = await a.connect(B, PORT)
    s_reader, s_writer = await listener.accept()
    assert writer.can_write_eof()
    conn = writer.get_extra_info("ustack_connection")
    s_conn = s_writer.get_extra_info("ustack_connection")

    writer.write(b"request")
    writer.write_eof()
    assert await s_reader.read() == b"request"
    assert s_reader.at_eof()
    await until(lambda: conn.state is State.FIN_WAIT_2, "client in FIN-WAIT-2")
    assert s_conn.state is State.CLOSE_WAIT
    # The half-closed side still receives: the server answers after seeing EOF.
    s_writer.write(b"response")
    await s_writer.drain()
    assert await reader.readexactly(8) == b"response"
    s_writer.write_eof()
    assert await reader.read() == b""
    await until(lambda: conn.state is State.TIME_WAIT, "client in TIME-WAIT")
    await until(lambda: s_conn.state is State.CLOSED, "server CLOSED")
    with pytest.raises(RuntimeError):
        writer.write(b"more")
    writer.close()
    s_writer.close()
    await writer.wait_closed()
    await s_writer.wait_closed()
    listener.close()


async def test_close_is_eof_abort_is_reset(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT)

    _, writer = await a.connect(B, PORT)
    s_reader, s_writer = await listener.accept()
    writer.write(b"last words")
    writer.close()
    await writer.wait_closed()
    assert await s_reader.read() == b"last words"  # all data, then EOF: graceful
    s_writer.close()

    _, writer = await a.connect(B, PORT)
    s_reader, s_writer = await listener.accept()
    resets = b.stats.tcp_resets_received
    writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await s_reader.read()
    assert b.stats.tcp_resets_received == resets + 1
    await until(lambda: s_writer.transport.is_closing(), "server transport closing")
    listener.close()


async def test_connect_to_closed_port_is_refused(pair: tuple[Stack, Stack]) -> None:
    a, _ = pair
    with pytest.raises(ConnectionRefusedError):
        await a.connect(B, 9)
    assert a.stats.tcp_refused == 1
    assert not a.connections() or all(c["state"] == "CLOSED" for c in a.connections())


async def test_write_after_peer_reset_raises_on_drain(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT)
    reader, writer = await a.connect(B, PORT)
    _, s_writer = await listener.accept()
    s_writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.write(b"into the void")  # no exception, no log: like asyncio's socket transport
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        await writer.drain()
    assert writer.transport.writes_after_lost == 1  # type: ignore[attr-defined]
    listener.close()


async def test_get_extra_info(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT)
    _, writer = await a.connect(B, PORT, local_port=50_000)
    _, s_writer = await listener.accept()
    assert writer.get_extra_info("peername") == (B, PORT)
    assert writer.get_extra_info("sockname") == (A, 50_000)
    assert s_writer.get_extra_info("peername") == (A, 50_000)
    assert s_writer.get_extra_info("sockname") == (B, PORT)
    conn = writer.get_extra_info("ustack_connection")
    assert conn.state is State.ESTABLISHED and conn.local_port == 50_000
    assert writer.get_extra_info("nonexistent", "dflt") == "dflt"
    rows = a.connections()
    assert rows[0]["local"] == f"{A}:50000" and rows[0]["remote"] == f"{B}:{PORT}"
    assert rows[0]["state"] == "ESTABLISHED"
    writer.close()
    s_writer.close()
    listener.close()


async def test_server_close_wait_closed_and_async_with(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    release = asyncio.Event()

    accepted = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await release.wait()
        writer.close()

    async with await ustack.start_server(hold, port=PORT, stack=b) as server:
        assert server.is_serving()
        reader, writer = await a.connect(B, PORT)
        await accepted.wait()
        server.close()
        assert not server.is_serving()
        closed = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0)
        assert not closed.done()  # a connection it accepted is still open
        with pytest.raises(ConnectionRefusedError):
            await a.connect(B, PORT)  # nobody listens any more
        release.set()
        assert await reader.read() == b""
        await asyncio.wait_for(closed, 10)
    writer.close()


async def test_serve_forever_cancelled_closes(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    server = await ustack.start_server(echo, port=PORT, stack=b, start_serving=False)
    assert not server.is_serving()
    task = asyncio.create_task(server.serve_forever())
    await until(server.is_serving, "serving")
    reader, writer = await a.connect(B, PORT)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    task.cancel()
    writer.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server.is_serving()


async def test_listener_accept_respects_backlog(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    listener = await b.listen(PORT, backlog=1)
    first = await a.connect(B, PORT)
    # Not accepted yet: the connection waits in the host's accept queue, data and all.
    first[1].write(b"early")
    await first[1].drain()
    s_reader, s_writer = await listener.accept()
    assert await s_reader.readexactly(5) == b"early"
    listener.close()
    with pytest.raises(OSError):
        await listener.accept()
    first[1].close()
    s_writer.close()


async def test_aclose_closes_gracefully() -> None:
    from ustack.link.pair import LinkPair

    from .conftest import fast_config

    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config())
    b = Stack(right, address=B, config=fast_config())
    async with b:
        async with a:
            await ustack.start_server(echo, port=PORT, stack=b)
            reader, writer = await a.connect(B, PORT)
            writer.write(b"bye")
            assert await reader.readexactly(3) == b"bye"
            s_conn = b.host.connections
            assert s_conn
        # a.aclose() closed the connection with a FIN exchange, not a reset.
        assert a.stats.tcp_rsts_sent == 0
        assert writer.transport.is_closing()
        await until(lambda: b.stats.tcp_closed >= 1, "the server side to close")
        assert b.stats.tcp_resets_received == 0
    assert a.closed and b.closed
    with pytest.raises(RuntimeError):
        await a.connect(B, PORT)
