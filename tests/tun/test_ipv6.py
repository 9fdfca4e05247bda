"""IPv6 through a real TUN device: the kernel's ICMPv6 and TCP against ustack's, both ways.

Every test runs in its own namespace with both families on the device (``make_stack(ipv6=True)``:
the kernel owns ``fd00:7::1/64``, ustack answers as ``fd00:7::2``) and skips when IPv6 is
disabled there. The addresses are only ever given as IPv6 literals (``curl -g`` with a
bracketed URL, ``AF_INET6`` sockets, ``ping -6``), so nothing here can pass over IPv4.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import random
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ustack
from ustack.apps import HttpApp, echo, pattern_bytes
from ustack.link.fault import FaultConfig, FaultModel
from ustack.link.faulty import FaultyLink
from ustack.link.netns import NetNamespace

from .conftest import (
    KERNEL6,
    PYTHON,
    REPO,
    SAFETY,
    STACK,
    STACK6,
    MakeStack,
    MiB,
    kernel_connect,
    kernel_server,
    kernel_sockets,
    needs_curl,
    needs_tun,
    run_in,
    startup_line,
    until,
)

pytestmark = [pytest.mark.tun, needs_tun]

BASE = f"http://[{STACK6}]"
BIG = 50 * MiB
LOSSY = 20 * MiB


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(shutil.which("ping") is None, reason="iputils ping is not installed")
async def test_ping6(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack(ipv6=True)
    rc, out, err = await run_in(
        netns, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1000", "-p", "a5c3017e",
        STACK6,
    )  # fmt: skip
    text = out.decode()
    assert rc == 0, text + err.decode()
    assert "3 packets transmitted, 3 received, 0% packet loss" in text, text
    assert "wrong data byte" not in text
    assert stack.stats.icmp6_echo_replies == 3


@needs_curl
async def test_curl_get_50_mb(make_stack: MakeStack, netns: NetNamespace, tmp_path: Path) -> None:
    stack = await make_stack(ipv6=True)
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    out = tmp_path / "body"
    rc, _, err = await run_in(
        netns, "curl", "-gsS", "--fail", "-o", str(out), f"{BASE}/bytes/{BIG}"
    )
    assert rc == 0, err
    body = out.read_bytes()
    assert len(body) == BIG
    assert _sha(body) == _sha(pattern_bytes(0, BIG))
    assert stack.stats.tcp_bytes_sent > BIG


@needs_curl
async def test_curl_post_50_mb(make_stack: MakeStack, netns: NetNamespace, tmp_path: Path) -> None:
    stack = await make_stack(ipv6=True)
    await ustack.start_server(HttpApp(), port=80, stack=stack)
    data = os.urandom(BIG)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    rc, out, err = await run_in(
        netns, "curl", "-gsS", "--fail", "--data-binary", f"@{upload}",
        "-H", "Content-Type: application/octet-stream", f"{BASE}/sha256",
    )  # fmt: skip
    assert rc == 0, err
    assert out.decode().strip() == _sha(data)
    assert stack.stats.tcp_bytes_received > BIG


async def test_200_concurrent_echo_connections(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack(ipv6=True)
    await ustack.start_server(echo, host="::", port=7, stack=stack)
    socks = kernel_sockets(netns, 200, family=socket.AF_INET6)
    streams = await asyncio.gather(*(kernel_connect(netns, 7, STACK6, sock) for sock in socks))
    assert all(sock.family == socket.AF_INET6 for sock in socks)

    async def exchange(i: int) -> bool:
        reader, writer = streams[i]
        payload = random.Random(i).randbytes(20_000)
        writer.write(payload)
        writer.write_eof()
        got = await reader.read()
        writer.close()
        await writer.wait_closed()
        return _sha(got) == _sha(payload)

    results = await asyncio.wait_for(asyncio.gather(*(exchange(i) for i in range(200))), SAFETY)
    assert results == [True] * 200
    assert stack.stats.tcp_bytes_received == 200 * 20_000


async def test_peername_is_an_inet6_tuple(make_stack: MakeStack, netns: NetNamespace) -> None:
    """What the server's transport says is what the kernel's AF_INET6 socket says, mirrored."""
    stack = await make_stack(ipv6=True)
    names: asyncio.Future[tuple[object, object]] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        names.set_result((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
        writer.close()

    await ustack.start_server(handler, port=8080, stack=stack)
    _reader, writer = await kernel_connect(netns, 8080, STACK6)
    peer, local = await asyncio.wait_for(names, SAFETY)
    assert peer == writer.get_extra_info("sockname")
    assert local == writer.get_extra_info("peername") == (STACK6, 8080, 0, 0)
    writer.close()


async def test_kernel_half_closes_and_ustack_keeps_sending(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    stack = await make_stack(ipv6=True)
    after_eof = os.urandom(3_000_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # to the kernel's FIN
        writer.write(_sha(request).encode() + b"\n" + after_eof)
        await writer.drain()
        writer.close()

    await ustack.start_server(handler, port=9000, stack=stack)
    reader, writer = await kernel_connect(netns, 9000, STACK6)
    request = os.urandom(500_000)
    writer.write(request)
    await writer.drain()
    writer.write_eof()
    got = await asyncio.wait_for(reader.read(), SAFETY)
    digest, _, rest = got.partition(b"\n")
    assert digest.decode() == _sha(request)
    assert _sha(rest) == _sha(after_eof)
    writer.close()


async def test_refused_both_ways(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack(ipv6=True)
    # Nothing listens on this kernel port: the kernel answers ustack's SYN with a RST.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(ustack.open_connection(KERNEL6, 9, stack=stack), SAFETY)
    assert stack.stats.tcp_refused == 1
    # Nothing listens on this ustack port: ustack answers the kernel's SYN with a RST.
    (sock,) = kernel_sockets(netns, family=socket.AF_INET6)
    with sock, pytest.raises(ConnectionRefusedError) as info:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (STACK6, 9)), SAFETY)
    assert info.value.errno == errno.ECONNREFUSED
    assert stack.stats.rst_sent_closed_port == 1


async def test_ustack_client_to_kernel_server(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack(ipv6=True)
    payload = os.urandom(2_000_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server, port = await kernel_server(netns, handler, host=KERNEL6)
    async with server:
        reader, writer = await ustack.open_connection(KERNEL6, port, stack=stack)
        assert writer.get_extra_info("peername") == (KERNEL6, port, 0, 0)
        got = await asyncio.wait_for(reader.read(), SAFETY)
        assert _sha(got) == _sha(payload)
        writer.close()


async def test_20_mb_at_5_percent_loss(make_stack: MakeStack, netns: NetNamespace) -> None:
    """ustack sends 20 MB to a kernel client over IPv6 with 5 % of the packets dropped both
    ways (data and ACKs); the kernel checks the SHA-256."""
    config = FaultConfig(drop=0.05)

    def lossy(link: object) -> FaultyLink:
        return FaultyLink(
            link,  # type: ignore[arg-type]
            model_out=FaultModel(config, seed="v6-out"),
            model_in=FaultModel(config, seed="v6-in"),
        )

    stack = await make_stack(ipv6=True, wrap=lossy)
    data = random.Random(6).randbytes(LOSSY)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    await ustack.start_server(handler, port=5001, stack=stack)
    reader, writer = await kernel_connect(netns, 5001, STACK6)
    got = await asyncio.wait_for(reader.read(), 2 * SAFETY)
    writer.close()
    assert len(got) == LOSSY
    assert _sha(got) == _sha(data)
    assert stack.stats.tcp_retransmits > 0
    await until(lambda: stack.stats.tcp_bytes_sent >= LOSSY, "every byte accounted for")


@contextlib.asynccontextmanager
async def serving(ns: NetNamespace, *args: str) -> AsyncIterator[tuple[bytes, bytes]]:
    """``ustack serve ARGS`` inside ``ns``; yields (its lines before "serving", that line)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, PYTHON, "-m", "ustack", "serve", "--name", "ustk0",
        "--no-control", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    try:
        yield await startup_line(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@needs_curl
async def test_serve_speaks_both_families(netns: NetNamespace) -> None:
    ipv6_off = await run_in(netns, "sysctl", "-n", "net.ipv6.conf.default.disable_ipv6")
    if ipv6_off[1].strip() != b"0":
        pytest.skip("IPv6 is disabled in the namespace")
    async with serving(netns) as (before, line):
        assert before == b""
        assert f"on {STACK} and {STACK6} ".encode() in line, line
        assert f"kernel side 10.7.0.1/24 and {KERNEL6}/64,".encode() in line, line
        for url in (f"http://{STACK}/bytes/100000", f"{BASE}/bytes/100000"):
            rc, out, err = await run_in(netns, "curl", "-gsS", "--fail", url)
            assert rc == 0, err
            assert out == pattern_bytes(0, 100_000)
        rc, out, _ = await run_in(netns, "curl", "-gsS", "--fail", f"{BASE}/stats.json")
        assert rc == 0
        # The status page's table has this very request's connection, written as URLs do.
        assert f'"local": "[{STACK6}]:80"'.encode() in out, out[:2000]


@needs_curl
async def test_serve_no_ipv6(netns: NetNamespace) -> None:
    async with serving(netns, "--no-ipv6") as (_, line):
        assert f"on {STACK} (".encode() in line, line
        assert STACK6.encode() not in line
        rc, _, _ = await run_in(netns, "curl", "-gsS", "--max-time", "5", f"{BASE}/")
        assert rc != 0  # the kernel has no route to fd00:7::/64: IPv6 is off
        rc, _, err = await run_in(netns, "curl", "-sS", "--fail", f"http://{STACK}/")
        assert rc == 0, err


async def test_serve_falls_back_to_ipv4_where_ipv6_is_disabled(netns: NetNamespace) -> None:
    for knob in ("all", "default"):
        rc, _, err = await run_in(netns, "sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1")
        if rc:
            pytest.skip(f"cannot disable IPv6 in the namespace: {err.decode().strip()}")
    async with serving(netns) as (before, line):
        assert before.startswith(b"ustack: warning: IPv4 only: cannot configure IPv6"), before
        assert before.count(b"\n") == 1
        assert f"on {STACK} (".encode() in line, line
