"""The built-in byte pumps over ustack: ``start_server`` runs them as protocols, and a
connection the application has finished with leaves only a compact TIME-WAIT record behind.

Two stacks on an in-memory link pair; each test checks what the client sees and the TCP state
underneath (windows, states, counters), so the protocol path cannot pass by accident.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import ustack
from ustack import Stack, TcpTransport
from ustack.apps import chargen, chargen_line, discard, echo
from ustack.apps.simple import ChargenProtocol, DiscardProtocol, EchoProtocol
from ustack.tcp.timewait import TimeWait
from ustack.wire.ipv4 import addr_to_int

from .conftest import A, B, until


def _server_transport(b: Stack) -> TcpTransport:
    [transport] = list(b._transports)
    return transport


async def test_services_are_served_as_protocols_without_tasks(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    for port, service, kind in ((7, echo, EchoProtocol), (9, discard, DiscardProtocol)):
        await ustack.start_server(service, port=port, stack=b)
        tasks = len(asyncio.all_tasks())
        reader, writer = await a.connect(B, port)
        await until(lambda: len(b._transports) == 1, "the server to accept")
        assert isinstance(_server_transport(b).get_protocol(), kind)
        assert len(asyncio.all_tasks()) == tasks  # no task per connection on the server
        writer.write(b"ping")
        writer.write_eof()
        expected = b"ping" if service is echo else b""
        assert await asyncio.wait_for(reader.read(), 10) == expected
        writer.close()
        await writer.wait_closed()
        await until(lambda: not b._transports, "the server side to end")


async def test_echo_back_pressure_closes_the_window_then_recovers(
    pair: tuple[Stack, Stack],
) -> None:
    a, b = pair
    await ustack.start_server(echo, port=7, stack=b)
    reader, writer = await a.connect(B, 7)
    payload = os.urandom(4 * 1024 * 1024)
    writer.write(payload)  # and read nothing for now
    await until(lambda: len(b._transports) == 1, "the server to accept")
    server = _server_transport(b)
    conn = server.get_extra_info("ustack_connection")
    # The client does not read: echo's writes pile up, it stops reading, and its receive
    # window closes with the buffer full -- the client is held back, nothing is lost.
    await until(lambda: not server.is_reading(), "echo to pause reading")
    await until(lambda: conn.rcv_wnd == 0, "the server's window to close")
    assert conn.readable == b.config.recv_buffer
    assert writer.transport.get_write_buffer_size() > 0
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert server.is_reading()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_chargen_stops_at_the_client_fin_with_whole_lines(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    await ustack.start_server(chargen, port=19, stack=b)
    reader, writer = await a.connect(B, 19)
    first = await asyncio.wait_for(reader.readexactly(74 * 3), 10)
    assert first == b"".join(chargen_line(n) for n in range(3))
    await until(lambda: len(b._transports) == 1, "the server to accept")
    assert isinstance(_server_transport(b).get_protocol(), ChargenProtocol)
    writer.write_eof()
    rest = await asyncio.wait_for(reader.read(), 30)  # what was queued, then the server's FIN
    assert len(rest) % 74 == 0 and rest[:74] == chargen_line(3)
    writer.close()
    await until(lambda: not b._transports, "chargen to end")


async def test_chargen_stops_when_reset(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    await ustack.start_server(chargen, port=19, stack=b)
    reader, writer = await a.connect(B, 19)
    await asyncio.wait_for(reader.readexactly(74 * 100), 10)
    writer.transport.abort()
    await until(lambda: not b._transports, "chargen to notice the reset")
    assert b.stats.tcp_resets_received == 1


async def test_a_finished_connection_waits_out_time_wait_as_a_record(
    pair: tuple[Stack, Stack],
) -> None:
    a, b = pair
    await ustack.start_server(echo, port=7, stack=b)
    reader, writer = await a.connect(B, 7)
    port = writer.get_extra_info("sockname")[1]
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 10) == b"x"
    writer.close()  # the client closes first: its side ends in TIME-WAIT
    await writer.wait_closed()
    key = (addr_to_int(B), 7, addr_to_int(A), port)
    await until(lambda: isinstance(a.host.lookup(*key), TimeWait), "a TIME-WAIT record")
    assert [c["state"] for c in a.connections()] == ["TIME-WAIT"]
    assert not a.driver._owners  # nothing on the asyncio side remembers the connection
    await until(lambda: b.host.connections == [], "the server side to close")
    rec = a.host.lookup(*key)
    assert isinstance(rec, TimeWait) and a.host.next_deadline() == rec.deadline
    assert a.stats.tcp_time_wait_expired == 0
