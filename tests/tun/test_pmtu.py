"""Path MTU discovery against a real router: the Linux kernel itself sends "fragmentation needed".

The test's namespace holds ustack's TUN device and forwards (it is the router); behind it a
second namespace is reached over a veth pair whose router end takes only 1200 octets while the
far end takes 1500 -- so the far kernel advertises MSS 1460, ustack's 1500-octet DF datagrams
cannot be forwarded, and the router's kernel answers them with ICMP type 3 code 4, MTU 1200
(RFC 1191). The upload must complete intact with segments cut to fit.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from ustack.link.netns import NetNamespace
from ustack.tcp.connection import Connection

from .conftest import SAFETY, MakeStack, MiB, kernel_server, needs_tun

pytestmark = [pytest.mark.tun, needs_tun]

ROUTER_SIDE = "10.8.0.1"
FAR = "10.8.0.2"
NARROW = 1200  # the router's next hop
SIZE = 4 * MiB


def _wire(router: NetNamespace, far: NetNamespace) -> None:
    router.run(
        ["ip", "link", "add", "rtr0", "mtu", str(NARROW), "type", "veth",
         "peer", "name", "far0", "mtu", "1500", "netns", far.name],
        check=True,
    )  # fmt: skip
    router.run(["ip", "addr", "add", f"{ROUTER_SIDE}/24", "dev", "rtr0"], check=True)
    router.run(["ip", "link", "set", "rtr0", "up"], check=True)
    done = router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    if done.returncode != 0:
        # Docker mounts /proc/sys read-only, even for a namespace of the container's own
        pytest.skip(f"cannot turn forwarding on here: {done.stderr.strip() or 'sysctl failed'}")
    far.run(["ip", "addr", "add", f"{FAR}/24", "dev", "far0"], check=True)
    far.run(["ip", "link", "set", "far0", "up"], check=True)
    far.run(["ip", "route", "add", "default", "via", ROUTER_SIDE], check=True)


async def test_kernel_router_frag_needed_lowers_the_mss(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    with NetNamespace(prefix="ustack-far") as far:
        _wire(netns, far)
        stack = await make_stack(mtu=1500)
        digests: list[str] = []

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            while chunk := await reader.read(MiB):
                h.update(chunk)
            digests.append(h.hexdigest())
            writer.write(h.hexdigest().encode())
            await writer.drain()
            writer.close()

        server, port = await kernel_server(far, sink, host=FAR)
        try:
            reader, writer = await asyncio.wait_for(stack.connect(FAR, port), SAFETY)
            data = os.urandom(SIZE)
            writer.write(data)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), SAFETY)
            assert answer.decode() == hashlib.sha256(data).hexdigest()
            assert digests == [answer.decode()]
            stats = stack.stats
            # the kernel answered at least one too-big datagram, and it was believed
            assert stats.icmp_frag_needed >= 1
            assert stats.tcp_pmtu_lowered == 1
            (conn,) = [
                c
                for c in stack.host.connections
                if isinstance(c, Connection) and c.remote_port == port
            ]
            assert conn.path_mtu == NARROW
            assert conn.snd_mss == NARROW - 40 - (12 if conn.timestamps_ok else 0)
            writer.close()
        finally:
            server.close()
