"""Unmodified asyncio libraries over ustack through a real TUN device (``ustack.routed``).

(a) An aiohttp web application served by ustack on ``STACK``, fetched by the kernel's side of
the namespace: curl for a GET, a 20 MB streamed response checked by hash, a POST, two requests
on one kept-alive connection, and the websockets library's (synchronous, plain kernel socket)
client in a subprocess for a websocket echo. Run on asyncio's loop and on uvloop.
(b) httpx and aiohttp's client running over ustack, fetching from ``python3 -m http.server``
that the test starts on ``KERNEL`` inside the namespace.

Both would fail without routing: the kernel of the namespace owns ``KERNEL`` but not ``STACK``,
so aiohttp could not bind ``STACK``; and a client's kernel connection to ``KERNEL`` would be
local, never touching ustack -- which the stacks' counters rule out here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import uvloop
from aiohttp import web

import ustack
from ustack import Stack
from ustack.apps import pattern_bytes
from ustack.link.netns import NetNamespace
from ustack.link.tun import TunLink

from .conftest import (
    KERNEL,
    PYTHON,
    REPO,
    SAFETY,
    STACK,
    TUN_NAME,
    MiB,
    needs_curl,
    needs_tun,
    run_in,
    tun_config,
)

pytestmark = [pytest.mark.tun, needs_tun]

STREAMED = 20 * MiB
CHUNK = 256 * 1024
PORT = 8080
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}

# The kernel-side websocket client: the websockets library's synchronous client, which uses a
# plain kernel socket, run inside the namespace. It prints what it got back.
WS_CLIENT = """
import hashlib, sys
from websockets.sync.client import connect
with connect(sys.argv[1], open_timeout=30, close_timeout=10) as ws:
    ws.send("hello")
    print(ws.recv())
    ws.send(bytes(range(256)) * 4096)
    print(hashlib.sha256(ws.recv()).hexdigest())
"""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _on(loop_name: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a fresh loop of the named kind (the TUN tier's fixtures are on the stock
    loop only, so these tests make their own stack)."""
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(main, 4 * SAFETY))


def _stack(netns: NetNamespace) -> Stack:
    offload = os.environ.get("USTACK_TEST_OFFLOAD", "auto")
    link = TunLink.open(TUN_NAME, address=KERNEL, peer=STACK, netns=netns.name, offload=offload)
    return Stack(link, address=STACK, config=tun_config())


def _web_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.remote} from ustack\n")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = STREAMED
        await response.prepare(request)
        for offset in range(0, STREAMED, CHUNK):
            await response.write(pattern_bytes(offset, min(CHUNK, STREAMED - offset)))
        await response.write_eof()
        return response

    async def digest(request: web.Request) -> web.Response:
        return web.Response(text=_sha(await request.read()) + "\n")

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application(client_max_size=8 * MiB)
    app.router.add_get("/", hello)
    app.router.add_get("/stream", stream)
    app.router.add_post("/sha256", digest)
    app.router.add_get("/ws", websocket)
    return app


@needs_curl
@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_aiohttp_server_fetched_by_curl(
    loop_name: str, netns: NetNamespace, tmp_path: Path
) -> None:
    async def main() -> None:
        async with _stack(netns) as stack:
            with ustack.routed(stack):
                runner = web.AppRunner(_web_app())
                await runner.setup()
                site = web.TCPSite(runner, STACK, PORT)
                await site.start()
                try:
                    await _fetch_all(stack, netns, tmp_path)
                finally:
                    await runner.cleanup()

    _on(loop_name, main())


async def _fetch_all(stack: Stack, netns: NetNamespace, tmp_path: Path) -> None:
    base = f"http://{STACK}:{PORT}"
    curl = ["curl", "-sS", "--fail", "--max-time", str(SAFETY)]
    # GET: the kernel's address is what aiohttp sees as the peer.
    rc, out, err = await run_in(netns, *curl, f"{base}/")
    assert rc == 0, err
    assert out == f"hello {KERNEL} from ustack\n".encode()
    # 20 MB streamed by aiohttp's StreamResponse, through ustack's send buffer and window.
    body = tmp_path / "stream"
    rc, _, err = await run_in(netns, *curl, "-o", str(body), f"{base}/stream")
    assert rc == 0, err
    assert _sha(body.read_bytes()) == _sha(pattern_bytes(0, STREAMED))
    # POST of 3 MB; the server answers with its hash.
    upload = tmp_path / "upload"
    data = os.urandom(3 * MiB)
    upload.write_bytes(data)
    rc, out, err = await run_in(
        netns, *curl, "--data-binary", f"@{upload}",
        "-H", "Content-Type: application/octet-stream", f"{base}/sha256",
    )  # fmt: skip
    assert rc == 0, err
    assert out.decode().strip() == _sha(data)
    # Keep-alive: two requests, one connection (curl counts the connects it made).
    rc, out, err = await run_in(
        netns, *curl, "--write-out", "%{num_connects}\\n",
        "-o", str(tmp_path / "one"), f"{base}/", "-o", str(tmp_path / "two"), f"{base}/",
    )  # fmt: skip
    assert rc == 0, err
    assert out.decode().split() == ["1", "0"]
    # A websocket echo, from the websockets library's client on a kernel socket.
    rc, out, err = await run_in(netns, PYTHON, "-c", WS_CLIENT, f"ws://{STACK}:{PORT}/ws")
    assert rc == 0, err
    assert out.decode().split() == ["hello", _sha(bytes(range(256)) * 4096)]
    # ustack's TCP carried every one of them: five connections accepted, 20 MB sent.
    assert stack.stats.tcp_passive_opens == 5
    assert stack.stats.tcp_bytes_sent > STREAMED


@contextlib.asynccontextmanager
async def _http_server(netns: NetNamespace, root: Path) -> Any:
    """``python3 -m http.server`` on KERNEL:PORT inside the namespace, until the block ends."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns.name,
        PYTHON, "-u", "-m", "http.server", str(PORT), "--bind", KERNEL, "--directory", str(root),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), SAFETY)
        assert line.startswith(b"Serving HTTP on"), line
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def test_httpx_and_aiohttp_clients_over_ustack(netns: NetNamespace, tmp_path: Path) -> None:
    content = os.urandom(5 * MiB)
    (tmp_path / "file").write_bytes(content)
    url = f"http://{KERNEL}:{PORT}/file"
    async with _stack(netns) as stack, _http_server(netns, tmp_path):
        with ustack.routed(stack):
            async with httpx.AsyncClient(trust_env=False, timeout=SAFETY) as client:
                response = await client.get(url)
                assert response.status_code == 200
                assert _sha(response.content) == _sha(content)
            assert stack.stats.tcp_active_opens == 1
            async with aiohttp.ClientSession() as session, session.get(url) as reply:
                assert reply.status == 200
                assert _sha(await reply.read()) == _sha(content)
            assert stack.stats.tcp_active_opens == 2
        assert stack.stats.tcp_bytes_received > 2 * len(content)
