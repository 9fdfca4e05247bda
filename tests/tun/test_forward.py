"""``ustack forward`` for real: a client namespace's traffic through ustack to kernel servers.

Three namespaces, all made here: ``inner`` gets ustack's TUN device as its default route (the
namespace being given its network); ``outer`` is where ``ustack forward --netns INNER`` runs
(its relayed sockets use outer's routes); ``server`` sits behind a veth pair from outer and holds
the kernel servers (10.9.0.2, fd09::2), driven from the test's own event loop. Clients inside are
curl, ping and ``python3 -c`` socket code run through ``ip netns exec``. Nothing is sent
anywhere but between these namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from ustack.apps.httpd import pattern_bytes
from ustack.link.netns import NetNamespace

from .conftest import (
    PYTHON,
    REPO,
    SAFETY,
    MiB,
    kernel_server,
    needs_curl,
    needs_tun,
    run_in,
    until,
)

pytestmark = [pytest.mark.tun, needs_tun]

OUTER, SERVER = "10.9.0.1", "10.9.0.2"
OUTER6, SERVER6 = "fd09::1", "fd09::2"
BIG = 50 * MiB

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _wire(outer: NetNamespace, server: NetNamespace) -> None:
    outer.run(
        ["ip", "link", "add", "fwd0", "type", "veth", "peer", "name", "srv0",
         "netns", server.name],
        check=True,
    )  # fmt: skip
    for ns, dev, v4, v6 in ((outer, "fwd0", OUTER, OUTER6), (server, "srv0", SERVER, SERVER6)):
        ns.run(["ip", "addr", "add", f"{v4}/24", "dev", dev], check=True)
        ns.run(["ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"], check=True)
        ns.run(["ip", "link", "set", dev, "up"], check=True)


class Topology:
    def __init__(self, inner: NetNamespace, outer: NetNamespace, server: NetNamespace) -> None:
        self.inner = inner
        self.outer = outer
        self.server = server
        self.proc: asyncio.subprocess.Process | None = None
        self.trace: list[str] = []


@pytest.fixture
def namespaces() -> Iterator[tuple[NetNamespace, NetNamespace, NetNamespace]]:
    with (
        NetNamespace(prefix="ustack-fwdi") as inner,
        NetNamespace(prefix="ustack-fwdo") as outer,
        NetNamespace(prefix="ustack-fwds") as server,
    ):
        _wire(outer, server)
        yield inner, outer, server


@pytest.fixture
async def topo(
    namespaces: tuple[NetNamespace, NetNamespace, NetNamespace],
) -> AsyncIterator[Topology]:
    """``ustack forward --netns INNER --trace`` running in ``outer``, ready."""
    inner, outer, server = namespaces
    t = Topology(inner, outer, server)
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", outer.name,
        PYTHON, "-m", "ustack.cli", "forward", "--netns", inner.name, "--trace",
        # USTACK_TEST_OFFLOAD=off|on runs these in the other TUN mode too (see conftest.py)
        "--offload", os.environ.get("USTACK_TEST_OFFLOAD", "auto"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    t.proc = proc
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), SAFETY)
        assert b"forwarding namespace" in line, line + await proc.stderr.read()
        reader = asyncio.ensure_future(_collect(proc.stderr, t.trace))
        yield t
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), SAFETY)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    await asyncio.wait_for(reader, SAFETY)
    assert proc.returncode == 0, t.trace


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip())


async def inside(topo: Topology, code: str, timeout: float = SAFETY) -> str:
    """Run Python ``code`` in the inner namespace; its stdout (it must exit 0)."""
    rc, out, err = await run_in(topo.inner, PYTHON, "-c", textwrap.dedent(code), timeout=timeout)
    assert rc == 0, err.decode(errors="replace")
    return out.decode()


async def serve(topo: Topology, handler: Handler, host: str = SERVER) -> tuple[asyncio.Server, int]:
    return await kernel_server(topo.server, handler, host=host)


def http_handler(size: int) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        sent = 0
        while sent < size:
            chunk = pattern_bytes(sent, min(MiB, size - sent))
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        writer.close()

    return handle


@needs_curl
async def test_curl_fetches_50_mb_through_forward(topo: Topology) -> None:
    server, port = await serve(topo, http_handler(BIG))
    async with server:
        rc, out, err = await run_in(
            topo.inner, "sh", "-c", f"curl -sS --max-time 60 http://{SERVER}:{port}/ | sha256sum"
        )
    assert rc == 0, err
    assert out.split()[0].decode() == hashlib.sha256(pattern_bytes(0, BIG)).hexdigest()
    # one trace line for the connection once both sides have closed, counting the bytes
    await until(lambda: bool(closed_lines(topo, port)), f"a trace line in {topo.trace}", 5)
    (line,) = closed_lines(topo, port)
    assert int(re.search(r"(\d+) B in", line).group(1)) > BIG  # type: ignore[union-attr]


def closed_lines(topo: Topology, port: int) -> list[str]:
    return [ln for ln in topo.trace if f"-> {SERVER}:{port} closed:" in ln]


@needs_curl
async def test_curl_over_ipv6(topo: Topology) -> None:
    size = 3 * MiB
    server, port = await serve(topo, http_handler(size), host=SERVER6)
    async with server:
        rc, out, err = await run_in(
            topo.inner,
            "sh",
            "-c",
            f"curl -gsS --max-time 30 'http://[{SERVER6}]:{port}/' | sha256sum",
        )
    assert rc == 0, err
    assert out.split()[0].decode() == hashlib.sha256(pattern_bytes(0, size)).hexdigest()


@needs_curl
async def test_a_refused_port_is_refused_inside(topo: Topology) -> None:
    # A port nobody listens on in the server namespace: the kernel there answers RST, so the
    # client must see "connection refused", not a connection that then closes.
    (probe,) = [topo.server.call(lambda: socket.create_server((SERVER, 0)))]
    port = probe.getsockname()[1]
    probe.close()
    rc, _out, err = await run_in(
        topo.inner, "curl", "-sS", "--max-time", "20", f"http://{SERVER}:{port}/"
    )
    assert rc == 7, err  # CURLE_COULDNT_CONNECT
    assert b"Couldn't connect" in err or b"refused" in err.lower()
    rc6, _out, err6 = await run_in(
        topo.inner, "curl", "-gsS", "--max-time", "20", f"http://[{SERVER6}]:{port}/"
    )
    assert rc6 == 7, err6


async def test_upload_and_half_close_from_the_client(topo: Topology) -> None:
    """The client sends, then shuts its side (FIN -> SHUT_WR on the relay's socket); the server
    reads to EOF and only then answers, on the connection that is still half open."""
    got: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        n = 0
        while chunk := await reader.read(MiB):
            h.update(chunk)
            n += len(chunk)
        got.append(n)
        writer.write(h.hexdigest().encode())
        writer.close()

    server, port = await serve(topo, handle)
    size = 20 * MiB
    async with server:
        out = await inside(
            topo,
            f"""
            import socket
            s = socket.create_connection(("{SERVER}", {port}), timeout=60)
            block = bytes(range(256)) * 4096
            for _ in range({size} // len(block)):
                s.sendall(block)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while data := s.recv(65536):
                reply += data
            print(reply.decode())
            """,
        )
    want = hashlib.sha256(bytes(range(256)) * 4096 * (size // (256 * 4096))).hexdigest()
    assert out.strip() == want
    assert got == [size]


async def test_half_close_from_the_server(topo: Topology) -> None:
    """The server says its piece and shuts its side (EOF -> FIN to the client); the client
    reads to EOF, then still sends, and the server still receives it."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"greeting, then EOF")
        writer.write_eof()
        received.set_result(await reader.read())
        writer.close()

    server, port = await serve(topo, handle)
    async with server:
        out = await inside(
            topo,
            f"""
            import socket
            s = socket.create_connection(("{SERVER}", {port}), timeout=30)
            heard = b""
            while data := s.recv(65536):
                heard += data
            s.sendall(b"sent after the server's EOF")
            s.shutdown(socket.SHUT_WR)
            print(heard.decode())
            """,
        )
        assert await asyncio.wait_for(received, SAFETY) == b"sent after the server's EOF"
    assert out.strip() == "greeting, then EOF"


async def test_resets_are_carried_both_ways(topo: Topology) -> None:
    outcome: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(5)
        if first == b"reset":
            # the server aborts: SO_LINGER 0 makes close() send a RST
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.transport.abort()
            return
        writer.write(b"k")  # the client resets only once the relay has passed bytes on
        try:
            await reader.read()
            outcome.append("eof")
        except ConnectionResetError:
            outcome.append("reset")
        writer.close()

    server, port = await serve(topo, handle)
    async with server:
        out = await inside(
            topo,
            f"""
            import socket, struct
            # 1: the server resets: the client's recv must fail with ECONNRESET
            s = socket.create_connection(("{SERVER}", {port}), timeout=30)
            s.sendall(b"reset")
            try:
                while s.recv(100):
                    pass
                print("eof")
            except ConnectionResetError:
                print("reset")
            # 2: the client resets (linger 0): the server must see ECONNRESET
            s = socket.create_connection(("{SERVER}", {port}), timeout=30)
            s.sendall(b"hello")
            assert s.recv(1) == b"k"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            """,
        )
        await until(lambda: bool(outcome), "the server to see the client's reset")
    assert out.split() == ["reset"]
    assert outcome == ["reset"]


async def test_100_concurrent_connections(topo: Topology) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server, port = await serve(topo, echo)
    async with server:
        out = await inside(
            topo,
            f"""
            import asyncio

            async def one(i):
                r, w = await asyncio.open_connection("{SERVER}", {port})
                payload = (f"connection {{i}} ".encode()) * 2000
                w.write(payload)
                await w.drain()
                w.write_eof()
                back = await r.read()
                w.close()
                return back == payload

            async def main():
                results = await asyncio.wait_for(
                    asyncio.gather(*(one(i) for i in range(100))), 60)
                print(sum(results))

            asyncio.run(main())
            """,
        )
    assert out.strip() == "100"
    await until(lambda: sum(" closed:" in ln for ln in topo.trace) >= 100, "100 trace lines")


@pytest.mark.parametrize("family", [4, 6])
async def test_udp_is_relayed_both_ways(topo: Topology, family: int) -> None:
    """A DNS-like exchange: datagrams from inside reach a responder in the server namespace,
    and its answers come back to the client's own address and port."""
    host = SERVER if family == 4 else SERVER6
    fam = socket.AF_INET if family == 4 else socket.AF_INET6

    def make() -> socket.socket:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.setblocking(False)
        return s

    sock = topo.server.call(make)
    port = sock.getsockname()[1]
    loop = asyncio.get_running_loop()
    seen: list[bytes] = []

    def answer() -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, peer = sock.recvfrom(65535)
                seen.append(data)
                sock.sendto(b"answer to " + data, peer)

    loop.add_reader(sock.fileno(), answer)
    try:
        out = await inside(
            topo,
            f"""
            import socket
            s = socket.socket(socket.{fam.name}, socket.SOCK_DGRAM)
            s.settimeout(5)
            for i in range(3):
                s.sendto(b"query %d" % i, ("{host}", {port}))
                data, peer = s.recvfrom(65535)
                print(data.decode(), peer[0], peer[1])
            """,
        )
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    assert out.splitlines() == [f"answer to query {i} {host} {port}" for i in range(3)]
    assert seen == [b"query 0", b"query 1", b"query 2"]


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping is not installed")
async def test_ping_is_answered(topo: Topology) -> None:
    for argv in (
        ["ping", "-c", "2", "-W", "5", SERVER],
        ["ping", "-6", "-c", "2", "-W", "5", SERVER6],
    ):
        rc, out, err = await run_in(topo.inner, *argv)
        assert rc == 0, out + err
        assert b"2 received" in out


async def test_a_command_runs_in_its_own_namespace_and_its_status_is_returned(
    namespaces: tuple[NetNamespace, NetNamespace, NetNamespace],
) -> None:
    """``ustack forward -- CMD``: CMD in a namespace made for it, with the default routes; the
    gateway address is the loopback of the namespace ustack runs in; the exit status is
    CMD's, and the namespace is gone afterwards."""
    _inner, outer, _server = namespaces

    async def hello(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the host's loopback")
        writer.close()

    loopback, port = await kernel_server(outer, hello, host="127.0.0.1")
    before = _forward_namespaces()
    fetch = (
        f"import socket; s = socket.create_connection(('10.0.2.2', {port}), timeout=10); "
        "print(s.recv(100).decode())"
    )
    script = f'ip -4 route show default; ip -6 route show default; {PYTHON} -c "{fetch}"; exit 3'
    async with loopback:
        rc, out, err = await run_in(
            outer, PYTHON, "-m", "ustack.cli", "forward", "--", "sh", "-c", script
        )
    assert rc == 3, err
    assert b"default via 10.0.2.2 dev ustack0" in out
    assert b"default via fd00::2 dev ustack0" in out
    assert b"hello from the host's loopback" in out
    assert _forward_namespaces() == before


def _forward_namespaces() -> set[str]:
    """The namespaces ``ustack forward -- CMD`` makes (others' tests make their own)."""
    return {n for n in os.listdir("/var/run/netns") if n.startswith("ustack-fwd-")}
