"""The TUN device deleted under a running stack (``ip link del``): the stack notices, resets every
connection locally, ends its servers' waits and closes; ``ustack serve`` exits with one line."""

from __future__ import annotations

import asyncio
import errno

import pytest

from ustack import Stack
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace

from .conftest import SAFETY, STACK, TUN_NAME, MakeStack, kernel_connect, needs_tun, run_in, until
from .test_cli import serving

pytestmark = [pytest.mark.tun, needs_tun]


class _Recorder(asyncio.Protocol):
    lost: list[BaseException | None] = []

    def connection_lost(self, exc: BaseException | None) -> None:
        _Recorder.lost.append(exc)


async def _delete(ns: NetNamespace, name: str) -> None:
    rc, _, err = await run_in(ns, "ip", "link", "del", name)
    assert rc == 0, err


async def test_library_resets_connections_and_reports_the_lost_device(
    netns: NetNamespace, make_stack: MakeStack
) -> None:
    stack: Stack = await make_stack(name=TUN_NAME)
    read_errors: list[BaseException] = []
    entered = asyncio.Event()

    async def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        entered.set()
        try:
            await reader.read()
        except ConnectionResetError as exc:
            read_errors.append(exc)

    _Recorder.lost = []
    await stack.create_server(_Recorder, 9)
    streams = await stack.listen(7)  # nothing accepted: accept() stays pending
    server = await stack.create_server(asyncio.Protocol, 13)
    await _start(stack, stream_handler)
    forever = asyncio.ensure_future(server.serve_forever())
    accepting = asyncio.ensure_future(streams.accept())
    clients = [await kernel_connect(netns, port) for port in (9, 19)]
    await asyncio.wait_for(entered.wait(), SAFETY)
    await until(lambda: len(stack.connections()) >= 2, "both connections accepted")

    await _delete(netns, TUN_NAME)

    with pytest.raises(LinkError, match=f"TUN device {TUN_NAME} disappeared") as info:
        await asyncio.wait_for(stack.wait_closed(), SAFETY)
    assert info.value.errno == errno.EBADFD
    assert stack.closed and stack.link_error is info.value
    await until(lambda: bool(read_errors) and bool(_Recorder.lost), "connections reset")
    assert [type(e) for e in _Recorder.lost] == [ConnectionResetError]
    assert [type(e) for e in read_errors] == [ConnectionResetError]
    assert "disappeared" in str(read_errors[0])
    with pytest.raises(LinkError):
        await asyncio.wait_for(accepting, SAFETY)
    with pytest.raises(LinkError):
        await asyncio.wait_for(forever, SAFETY)
    assert {row["state"] for row in stack.connections()} <= {"CLOSED"}
    for _, writer in clients:
        writer.close()


async def _start(stack: Stack, handler: object) -> None:
    import ustack

    await ustack.start_server(handler, port=19, stack=stack)  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_exits_with_one_line_when_the_device_is_deleted(
    netns: NetNamespace, loop: str
) -> None:
    extra = ["--no-uvloop"] if loop == "asyncio" else []
    async with serving(netns, "--name", "tg0", "--services", "echo", *extra) as proc:
        reader, writer = await kernel_connect(netns, 7, STACK)
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), SAFETY) == b"ping\n"
        await _delete(netns, "tg0")
        await asyncio.wait_for(proc.wait(), SAFETY)
        assert proc.stderr is not None
        rest = (await proc.stderr.read()).decode()
        assert proc.returncode == 1
        assert rest.splitlines() == [
            "ustack: TUN device tg0 disappeared: File descriptor in bad state"
        ], rest
        writer.close()
