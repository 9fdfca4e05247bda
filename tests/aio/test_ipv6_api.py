"""IPv6 in the asyncio API: dual-stack stacks on an in-memory link pair, address parsing, the
``peername``/``sockname`` tuples, the connection table's text and the CLI's IPv6 options."""

from __future__ import annotations

import asyncio
import errno
import io
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

import ustack
from ustack import Stack
from ustack.aio.transport import endpoint_text
from ustack.cli import _Tracer, build_parser
from ustack.link.pair import LinkPair
from ustack.wire import addr

from .conftest import WAIT, A, B, fast_config, until

A6 = "fd00:9::1"
B6 = "fd00:9::2"
PORT = 7


@pytest.fixture
async def pair6() -> AsyncIterator[tuple[Stack, Stack]]:
    left, right = LinkPair.create()
    a = Stack(left, address=A, address6=A6, config=fast_config())
    b = Stack(right, address=B, address6=B6, config=fast_config())
    async with a, b:
        yield a, b


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_endpoint_text_brackets_ipv6_only() -> None:
    assert endpoint_text(addr.from_text("10.7.0.2"), 80) == "10.7.0.2:80"
    assert endpoint_text(addr.from_text("fd00:7:0::2"), 80) == "[fd00:7::2]:80"


def test_stack_rejects_bad_addresses() -> None:
    link, other = LinkPair.create()
    try:
        with pytest.raises(ValueError, match="IPv4 or IPv6"):
            Stack(link, address="10.7.0.300")
        with pytest.raises(ValueError, match="address6 must be an IPv6 address"):
            Stack(link, address=A, address6="10.7.0.3")
        with pytest.raises(ValueError, match="address6 must be an IPv4 or IPv6 address"):
            Stack(link, address=A, address6="[fd00:9::1]")
        with pytest.raises(ValueError, match="give both or neither"):
            Stack.tun("ustk9", address6=A6)
        stack = Stack(link, address=A, address6="FD00:9:0::1")
        assert repr(stack).startswith(f"<Stack {A} FD00:9:0::1 new")
    finally:
        link.close()
        other.close()


async def test_open_connection_over_ipv6_with_socket_style_names(
    pair6: tuple[Stack, Stack],
) -> None:
    a, b = pair6
    seen: list[tuple[object, object]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
        await _echo(reader, writer)

    await ustack.start_server(handler, host="::", port=PORT, stack=b)
    reader, writer = await ustack.open_connection(B6, PORT, stack=a)
    writer.write(b"over six")
    assert await asyncio.wait_for(reader.readexactly(8), WAIT) == b"over six"
    local = writer.get_extra_info("sockname")
    assert writer.get_extra_info("peername") == (B6, PORT, 0, 0)
    assert local[0] == A6 and len(local) == 4 and local[2:] == (0, 0)
    assert seen == [((A6, local[1], 0, 0), (B6, PORT, 0, 0))]
    assert f"[{A6}]:{local[1]} -> [{B6}]:{PORT}" in repr(writer.transport)
    rows = [row for row in a.connections() if row["state"] == "ESTABLISHED"]
    assert [(row["local"], row["remote"]) for row in rows] == [
        (f"[{A6}]:{local[1]}", f"[{B6}]:{PORT}")
    ]
    writer.close()
    await writer.wait_closed()


async def _reaches(a: Stack, target: str) -> bool:
    """Whether a connection from ``a`` to ``target`` is accepted and echoes (True) or is
    refused by a RST (False)."""
    try:
        reader, writer = await ustack.open_connection(target, PORT, stack=a)
    except ConnectionRefusedError:
        return False
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), WAIT) == b"x"
    assert len(writer.get_extra_info("peername")) == (4 if ":" in target else 2)
    writer.close()
    await writer.wait_closed()
    return True


@pytest.mark.parametrize(
    ("host", "ipv6_only", "v4", "v6"),
    [
        (None, False, True, True),
        ("", False, True, True),
        ("0.0.0.0", False, True, False),
        ("::", False, True, True),
        ("::", True, False, True),
        (B, False, True, False),
        (B6, False, False, True),
        (B6, True, False, True),
    ],
)
async def test_host_picks_the_families_a_server_accepts(
    pair6: tuple[Stack, Stack], host: str | None, ipv6_only: bool, v4: bool, v6: bool
) -> None:
    """As a Linux socket: None/"" both, "0.0.0.0" IPv4, "::" both unless ``ipv6_only``, an
    address its family; a SYN of the other family is refused with a RST and counted."""
    a, b = pair6
    server = await ustack.start_server(_echo, host=host, port=PORT, stack=b, ipv6_only=ipv6_only)
    assert (await _reaches(a, B), await _reaches(a, B6)) == (v4, v6)
    assert b.stats.listen_wrong_family == (not v4) + (not v6)
    server.close()
    await server.wait_closed()


async def test_stack_listen_takes_host_and_ipv6_only(pair6: tuple[Stack, Stack]) -> None:
    a, b = pair6
    listener = await b.listen(PORT, host="::", ipv6_only=True)
    with pytest.raises(ConnectionRefusedError):
        await ustack.open_connection(B, PORT, stack=a)
    _, writer = await ustack.open_connection(B6, PORT, stack=a)
    _, accepted = await asyncio.wait_for(listener.accept(), WAIT)
    assert len(accepted.get_extra_info("peername")) == 4
    assert b.stats.listen_wrong_family == 1
    for w in (writer, accepted):
        w.close()
    listener.close()


async def test_bad_listening_hosts(pair6: tuple[Stack, Stack]) -> None:
    _, b = pair6
    with pytest.raises(OSError) as info:
        await ustack.start_server(_echo, host="fd00:9::9", port=PORT, stack=b)
    assert info.value.errno == errno.EADDRNOTAVAIL
    for host in (None, "", "0.0.0.0", B):
        with pytest.raises(ValueError, match="ipv6_only needs an IPv6 host"):
            await ustack.start_server(_echo, host=host, port=PORT, stack=b, ipv6_only=True)
    # One listener per port, whatever its family: a second server for the other family is
    # refused (Linux would allow an AF_INET and an IPV6_V6ONLY socket on one port).
    server = await ustack.start_server(_echo, host="0.0.0.0", port=PORT, stack=b)
    with pytest.raises(OSError) as info:
        await ustack.start_server(_echo, host="::", port=PORT, stack=b, ipv6_only=True)
    assert info.value.errno == errno.EADDRINUSE
    server.close()
    await server.wait_closed()


async def test_ipv4_only_stack_cannot_reach_ipv6() -> None:
    left, right = LinkPair.create()
    async with Stack(left, address=A, config=fast_config()) as a, Stack(right, address=B) as b:
        await ustack.start_server(_echo, port=PORT, stack=b)
        with pytest.raises(OSError) as info:
            await ustack.open_connection(B6, PORT, stack=a)
        assert info.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(ValueError, match="IPv4 or IPv6"):
            await ustack.open_connection(f"[{B6}]", PORT, stack=a)
        await until(lambda: not a.connections(), "no connection left behind")


def test_cli_tracer_brackets_ipv6() -> None:
    out = io.StringIO()
    conn = SimpleNamespace(
        local_addr=addr.from_text("fd00:7::2"),
        local_port=80,
        remote_addr=addr.from_text("fd00:7::1"),
        remote_port=40000,
    )
    _Tracer("json", out)(conn, "rto", {"rto": 1.0})
    assert '"local": "[fd00:7::2]:80"' in out.getvalue()
    assert '"remote": "[fd00:7::1]:40000"' in out.getvalue()


def test_cli_ipv6_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve"])
    assert (args.ipv6, args.address6, args.peer6, args.prefixlen6) == (
        True,
        "fd00:7::2",
        "fd00:7::1",
        64,
    )
    args = parser.parse_args(["serve", "--no-ipv6", "--address6", "FD00:8:0::2"])
    assert (args.ipv6, args.address6) == (False, "fd00:8::2")
    assert parser.parse_args(["demo", "--ipv6"]).ipv6 is True
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["serve", "--address6", "10.7.0.2"])
    assert info.value.code == 2
