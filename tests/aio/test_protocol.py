"""The transport under plain asyncio protocols (create_connection / create_server), where the
callbacks are visible one by one instead of through the streams' buffering."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from ustack import Stack, TcpTransport
from ustack.link.pair import LinkPair
from ustack.tcp.state import State

from .conftest import A, B, fast_config, until


class Recorder(asyncio.Protocol):
    def __init__(self, keep_open_on_eof: bool = True) -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.keep_open = keep_open_on_eof
        self.transport: TcpTransport | None = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TcpTransport)
        self.transport = transport
        self.calls.append("made")

    def data_received(self, data: bytes) -> None:
        if not self.calls or self.calls[-1] != "data":
            self.calls.append("data")
        self.data += data

    def eof_received(self) -> bool:
        self.calls.append("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")
        self.lost.set_result(exc)


async def test_callbacks_in_order_and_falsy_eof_received_closes(
    pair: tuple[Stack, Stack],
) -> None:
    a, b = pair
    servers: list[Recorder] = []

    def factory() -> Recorder:
        servers.append(Recorder(keep_open_on_eof=False))
        return servers[-1]

    server = await b.create_server(factory, 9)
    transport, client = await a.create_connection(Recorder, B, 9)
    assert client.calls == ["made"]
    transport.write(b"abc")
    transport.write_eof()
    await until(lambda: bool(servers), "the server to accept")
    # The server's eof_received returns False: its transport closes by itself, which the
    # client sees as the peer's FIN after the half-close.
    assert await asyncio.wait_for(servers[0].lost, 10) is None
    assert servers[0].calls == ["made", "data", "eof", "lost"]
    assert bytes(servers[0].data) == b"abc"
    # The client's eof_received returned True: like a socket, the transport stays open
    # (the connection waits in TIME-WAIT) until the application closes it.
    await until(lambda: "eof" in client.calls, "the client to see EOF")
    conn = transport.get_extra_info("ustack_connection")
    await until(lambda: conn.state is State.TIME_WAIT, "the client in TIME-WAIT")
    assert not transport.is_closing() and not client.lost.done()
    transport.close()
    assert await asyncio.wait_for(client.lost, 10) is None
    assert client.calls == ["made", "eof", "lost"]
    server.close()
    await server.wait_closed()


async def test_close_sends_fin_after_the_overflow(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    servers: list[Recorder] = []

    def factory() -> Recorder:
        servers.append(Recorder())
        return servers[-1]

    await b.create_server(factory, 9)
    transport, client = await a.create_connection(Recorder, B, 9)
    payload = os.urandom(3 * a.config.send_buffer)
    transport.write(payload)  # far more than the send buffer takes at once
    assert transport.get_write_buffer_size() >= len(payload) - a.config.send_buffer
    transport.close()
    assert transport.is_closing()
    await until(lambda: bool(servers), "the server to accept")
    await until(lambda: "eof" in servers[0].calls, "the server to see EOF")
    assert hashlib.sha256(servers[0].data).digest() == hashlib.sha256(payload).digest()
    assert await asyncio.wait_for(client.lost, 10) is None
    assert a.stats.tcp_rsts_sent == 0


async def test_write_after_write_eof_raises_and_writes_after_close_are_dropped(
    pair: tuple[Stack, Stack],
) -> None:
    a, b = pair
    await b.create_server(Recorder, 9)
    transport, _ = await a.create_connection(Recorder, B, 9)
    transport.write_eof()
    with pytest.raises(RuntimeError):
        transport.write(b"x")
    transport2, _ = await a.create_connection(Recorder, B, 9)
    transport2.close()
    transport2.write(b"dropped")  # like asyncio: silently ignored after close()
    assert transport2.writes_after_lost == 1
    with pytest.raises(TypeError):
        transport2.write("text")  # type: ignore[arg-type]


async def test_aclose_resets_what_does_not_finish_within_grace() -> None:
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config())
    b = Stack(right, address=B, config=fast_config())
    async with b:
        await b.create_server(Recorder, 9)
        a.start()
        _, client = await a.create_connection(Recorder, B, 9)
        await until(lambda: b.stats.listen_accepted == 1, "the server to accept")
        b.driver.stop()  # the peer goes silent: our FIN is never acknowledged
        loop = asyncio.get_running_loop()
        start = loop.time()
        await a.aclose(grace=0.1)
        assert loop.time() - start >= 0.1 - 0.002  # uvloop clock: millisecond ticks
        assert a.stats.tcp_aborts == 1  # the FIN-WAIT-1 connection was reset
        assert all(c.state is State.CLOSED for c in a.host.connections)
        assert client.lost.done()
        assert a.closed


async def test_run_helper_and_loop_choice() -> None:
    import ustack
    from ustack.aio.loop import uvloop_wanted

    assert uvloop_wanted(True) and not uvloop_wanted(False)
    loop = ustack.new_event_loop(use_uvloop=False)
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    loop = ustack.new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_run_uses_uvloop_unless_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import ustack

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert ustack.run(which()).startswith("uvloop")
    assert ustack.run(which(), use_uvloop=False).startswith("asyncio")
    monkeypatch.setenv("USTACK_NO_UVLOOP", "1")
    assert ustack.run(which()).startswith("asyncio")
