"""The ``arp`` scenario: the ARP exchange beneath the first SYN, live over a TAP link.

:func:`run_arp_scenario` makes a private network namespace with a TAP device in it (the kernel
owns 10.7.0.1, ustack answers as 10.7.0.2 with a MAC of its own), starts ustack's HTTP service,
and has the kernel fetch a page from it with a TCP client socket made in the namespace. The
kernel has never heard of 10.7.0.2's MAC address (ustack's gratuitous ARP at start does not
make Linux create an entry: ``arp_accept`` is off), so before its SYN can leave it broadcasts
an ARP request, which ustack answers; the ladder draws that exchange, then the handshake, the
transfer and the close. It runs the way ``ustack.scenarios`` runners do: ``await
run_arp_scenario(options)`` returns a :class:`~ustack.scenarios.Report`; ``ustack demo arp``
runs it. Needs
CAP_NET_ADMIN; every wait is bounded by ``SAFETY``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from ustack.scenarios import Options, Report

ADDRESS = "10.7.0.2"  # ustack
KERNEL = "10.7.0.1"
PORT = 80
SAFETY = 20.0  # seconds: the bound on any wait; a healthy run needs a fraction of it
MSL = 0.5  # TIME-WAIT (2*MSL) ends while you watch; the time scale stretches it
DESCRIPTION = "ARP (RFC 826) resolves ustack's MAC before the kernel's first SYN, over TAP"

_STATE_NAMES = {"SYN_SENT": "SYN-SENT", "SYN_RECEIVED": "SYN-RECEIVED"}


def _state_name(state: Any) -> str:
    name = str(getattr(state, "name", state))
    return _STATE_NAMES.get(name, name.replace("_", "-"))


async def _kernel_get(ns: Any, path: str) -> bytes:
    """GET ``path`` from ustack with a TCP socket of the kernel's, made inside ``ns``."""
    loop = asyncio.get_running_loop()
    sock = ns.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ADDRESS, PORT)), SAFETY)
        request = f"GET {path} HTTP/1.1\r\nHost: {ADDRESS}\r\nConnection: close\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        chunks = []
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), SAFETY):
            chunks.append(chunk)
    finally:
        sock.close()
    return b"".join(chunks)


async def run_arp_scenario(options: Options | None = None) -> Report:
    """Run the scenario (see the module docstring); the report's ``ok`` says whether the ARP
    exchange came before the first SYN and the page arrived whole."""
    import ustack
    from ustack.apps import HttpApp
    from ustack.ladder import Ladder
    from ustack.link.netns import NetNamespace
    from ustack.tcp.config import TcpConfig

    opts = options if options is not None else Options()
    msl = MSL * opts.time_scale
    ladder = Ladder(max_run=opts.fold, timestamps=opts.timestamps)

    # One fine-grained clock for frames, packets and state changes, so rows never run backwards.
    def on_packet(direction: str, packet: bytes | bytearray | memoryview, _now: float) -> None:
        ladder.packet(time.monotonic(), direction, packet)

    def tracer(conn: Any, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state":
            ladder.state(
                time.monotonic(),
                (conn.local_addr, conn.local_port),
                (conn.remote_addr, conn.remote_port),
                _state_name(detail["from"]),
                _state_name(detail["to"]),
            )

    loop = asyncio.get_running_loop()
    with NetNamespace(prefix="ustack-arp") as ns:
        stack = ustack.Stack.tap(
            "ustack0",
            address=ADDRESS,
            peer=KERNEL,
            netns=ns.name,
            on_packet=on_packet,
            tracer=tracer,
            # Linux-like timers: the TAP link's round trip is well under a millisecond.
            config=TcpConfig(rto_min=0.05, delayed_ack=0.005, msl=msl),
        )
        async with stack:
            link: Any = stack.link
            mac = link.arp.mac
            server = await ustack.start_server(HttpApp(), port=PORT, stack=stack)
            reply = await _kernel_get(ns, "/")
            # Let TIME-WAIT run out, so the ladder ends in CLOSED.
            deadline = loop.time() + 2 * msl + SAFETY
            while stack.connections() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            counters = stack.stats.nonzero()
            server.close()
    text = ladder.render()
    from ustack.wire.ethernet import mac_to_text

    lines = text.splitlines()
    who_has = next((i for i, line in enumerate(lines) if f"who-has {ADDRESS}?" in line), None)
    is_at = next((i for i, line in enumerate(lines) if f"ARP {ADDRESS} is-at" in line), None)
    syn = next((i for i, line in enumerate(lines) if "-- S " in line), None)
    ok = (
        reply.startswith(b"HTTP/1.1 200")
        and who_has is not None
        and is_at is not None
        and syn is not None
        and who_has < is_at < syn
    )
    scale = f" (times {opts.time_scale:g}: the time scale option)" if opts.time_scale != 1 else ""
    explanation = f"""\
ARP (RFC 826) over a TAP link: the kernel (10.7.0.1) wants to send its SYN to 10.7.0.2 but knows
no Ethernet address for it, so it holds the SYN and broadcasts an ARP request, "who-has
10.7.0.2? tell 10.7.0.1". ustack runs RFC 826's packet reception algorithm: it is the target, so
it adds the requester to its neighbour cache (the merge rule: an entry it already had would have
been updated instead) and answers with a reply sent straight to the requester, "10.7.0.2 is-at
{mac_to_text(mac)}". Only then does the SYN go (RFC 9293 3.5, the three-way handshake), and
ustack's answers reach the kernel without an ARP request of its own, because it learned the
kernel's address from the request. The first row is ustack's gratuitous ARP at start (RFC 5227
2.3, an announcement); Linux does not create a neighbour entry from it (arp_accept is off), which
is why it still asks.

After the page, ustack closes first (RFC 9293 3.6) and waits in TIME-WAIT for 2*MSL, with MSL set
to {msl:g} s{scale} so the ladder ends in CLOSED. ARP counters: requests answered
{counters.get("arp_requests_answered", 0)}, neighbours learned {counters.get("arp_learned", 0)},
announcements sent {counters.get("arp_announcements_sent", 0)}. The neighbour entries age as
RFC 4861 7.3's states (REACHABLE for 30 s, then STALE and re-confirmed by unicast probes), which
is what Linux does for ARP too."""
    return Report(text, explanation, ok)


def main() -> None:
    """``python -m ustack.scenarios.arp``: run it once and print the report."""
    print(asyncio.run(run_arp_scenario()).text(), end="")


if __name__ == "__main__":
    main()
