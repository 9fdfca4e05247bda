"""Fixtures for the TUN tier: the Linux kernel's TCP as the peer, through a real TUN device.

Every test gets its own network namespace (``netns``) and removes it afterwards; the root
namespace is never touched. Inside it the kernel owns ``KERNEL`` (10.7.0.1) on the TUN device and
ustack answers as ``STACK`` (10.7.0.2). Kernel-side sockets are made in the namespace by a helper
thread (``ns.call``) and then driven from the test's event loop, and subprocesses (curl, ping,
``ustack serve``) run through ``ip netns exec`` as asyncio subprocesses, so the stack living on the
same loop keeps serving while they run.

Waits are for events, with ``SAFETY`` only as a bound on a broken implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ustack import Stack
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace, have_net_admin
from ustack.link.tun import TunLink
from ustack.tcp.config import TcpConfig

STACK = "10.7.0.2"
KERNEL = "10.7.0.1"
# With ``make_stack(ipv6=True)`` the device has both families: the kernel owns KERNEL6/64.
STACK6 = "fd00:7::2"
KERNEL6 = "fd00:7::1"
TUN_NAME = "ustk0"
SAFETY = 60.0  # seconds: bound on any single wait; a healthy run needs a fraction of it
REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MiB = 1 << 20

can_tun, why_not = have_net_admin()
needs_tun = pytest.mark.skipif(
    not can_tun, reason=f"needs /dev/net/tun and CAP_NET_ADMIN: {why_not}"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def tun_config(**overrides: Any) -> TcpConfig:
    """Linux-like timers: a TUN link has a sub-millisecond RTT, so WAN defaults only add stalls."""
    base: dict[str, Any] = {"rto_min": 0.05, "delayed_ack": 0.005}
    base.update(overrides)
    return TcpConfig(**base)


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    with NetNamespace(prefix="ustack-tun") as ns:
        yield ns


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(netns: NetNamespace) -> AsyncIterator[MakeStack]:
    """``await make_stack(mtu=..., config=..., wrap=...)``: a started stack on a new TUN device
    in the test's namespace; ``wrap(link)`` may put a fault injector or a pcap tap around the
    device. Every stack made is closed at teardown."""
    stacks: list[Stack] = []

    async def make(
        *,
        mtu: int = 1500,
        config: TcpConfig | None = None,
        wrap: Callable[[Any], Any] | None = None,
        name: str = TUN_NAME,
        offload: str | None = None,
        ipv6: bool = False,
    ) -> Stack:
        if offload is None:
            # Fault injection works per wire packet, so a wrapped link goes without offloads;
            # USTACK_TEST_OFFLOAD=off|on runs the rest of the tier in the other mode too.
            offload = "off" if wrap is not None else os.environ.get("USTACK_TEST_OFFLOAD", "auto")
        v6: dict[str, Any] = {"address6": f"{KERNEL6}/64", "peer6": STACK6} if ipv6 else {}
        try:
            link: Any = TunLink.open(
                name, mtu=mtu, address=KERNEL, peer=STACK, netns=netns.name, offload=offload, **v6
            )
        except LinkError as exc:
            if ipv6 and exc.errno == errno.EAFNOSUPPORT:
                pytest.skip(f"IPv6 is not available here: {exc}")
            raise
        if wrap is not None:
            try:
                link = wrap(link)
            except BaseException:
                link.close()
                raise
        stack = Stack(
            link,
            address=STACK,
            address6=STACK6 if ipv6 else None,
            config=config or tun_config(),
        )
        stacks.append(stack)
        stack.start()
        return stack

    yield make
    for stack in stacks:
        await stack.aclose(grace=1.0)


def kernel_sockets(
    ns: NetNamespace, count: int = 1, family: int = socket.AF_INET
) -> list[socket.socket]:
    """``count`` non-blocking TCP sockets that belong to ``ns`` (made in one helper thread)."""

    def make() -> list[socket.socket]:
        socks = [socket.socket(family, socket.SOCK_STREAM) for _ in range(count)]
        for sock in socks:
            sock.setblocking(False)
        return socks

    return ns.call(make)


async def startup_line(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """Read a starting ``ustack serve``'s stderr up to its "serving" line: (what came before --
    a warning such as the IPv4-only fallback where IPv6 is disabled, as under Docker -- and that
    line). Fails with everything it read if the process ends first."""
    assert proc.stderr is not None
    before = b""
    while b"serving" not in (line := await asyncio.wait_for(proc.stderr.readline(), SAFETY)):
        assert line, before + await proc.stderr.read()
        before += line
    return before, line


async def kernel_connect(
    ns: NetNamespace, port: int, host: str = STACK, sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A kernel TCP client in ``ns`` connected to ``host:port``, as asyncio streams."""
    if sock is None:
        (sock,) = kernel_sockets(ns, family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), SAFETY)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=MiB)


async def kernel_server(
    ns: NetNamespace,
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    host: str = KERNEL,
) -> tuple[asyncio.Server, int]:
    """An asyncio server on a kernel socket bound to ``host`` inside ``ns``; returns its port."""

    def make() -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, 0), family=family, backlog=128)
        sock.setblocking(False)
        return sock

    sock = ns.call(make)
    server = await asyncio.start_server(handler, sock=sock, limit=MiB)
    return server, sock.getsockname()[1]


async def run_in(
    ns: NetNamespace, *argv: str, timeout: float = SAFETY, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` inside ``ns`` without blocking the loop; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def until(cond: Callable[[], bool], what: str, timeout: float = SAFETY) -> None:
    """Let the loop run until ``cond()`` holds; the timeout only bounds a broken stack."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        await asyncio.sleep(0.005)


def states(stack: Stack) -> list[str]:
    return [row["state"] for row in stack.connections()]
