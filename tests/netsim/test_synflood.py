"""A spoofed SYN flood against a listener with a small SYN queue (RFC 4987): with SYN cookies a
real client still connects at once and gets its data echoed; without them it is locked out. Over
IPv4 and over IPv6 (the flood from spoofed sources of the family)."""

from __future__ import annotations

import random

import pytest

from tests.netsim.harness import ADDRESSES, hosts_addresses
from tests.stack.helpers import mss, tcp_packet
from ustack.netsim import Network
from ustack.stack.events import ConnectionAccepted, HostEvent
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.events import DataReceived, Established, Event
from ustack.tcp.state import State
from ustack.wire import addr, ipv4, tcp

PORT = 7
FLOOD = 5000  # spoofed SYNs
FLOOD_RATE = 2000.0  # per virtual second: the flood lasts 2.5 s
CONNECT_AT = 0.5  # the real client connects in the middle of it
SYN_BACKLOG = 16
PAYLOAD = bytes(range(256)) * 40  # 10 KiB, echoed back
# where the spoofed sources come from: a prefix nothing routes back to
SPOOFED = {4: ipv4.addr_to_int("10.66.0.0"), 6: addr.from_text("fd00:66::")}

both_families = pytest.mark.parametrize("family", [4, 6])


def _spoofed_syns(net: Network, seed: int, family: int) -> None:
    """``FLOOD`` SYNs from random unrouted sources (their SYN,ACKs go nowhere, as they would
    to a spoofed address), random ports and ISNs, some with the options Linux sends."""
    rng = random.Random(seed)
    full = tcp.encode_options(
        tcp.TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(1, 0))
    )
    plain = tcp.encode_options(tcp.TcpOptions(mss=1460))
    for i in range(FLOOD):
        src = SPOOFED[family] | rng.randrange(1, 65535)
        packet = tcp_packet(
            rng.randrange(1024, 65536),
            PORT,
            rng.getrandbits(32),
            options=full if i % 2 else plain,
            src=src,
            dst=ADDRESSES[family][1],
            ident=i & 0xFFFF,
            family=family,
        )
        net.inject(bytes(packet), i / FLOOD_RATE)


def _run(
    mode: str, family: int, seed: int = 3
) -> tuple[Network, Host, Host, Connection, bytearray, float]:
    net = Network()
    rng = random.Random(seed)
    client_addrs, server_addrs, remote = hosts_addresses(family)
    client = net.add_host(Host(client_addrs, secret=rng.randbytes(16)))
    cookies = TcpConfig(syn_cookies=mode)
    server = net.add_host(Host(server_addrs, secret=rng.randbytes(16), config=cookies))
    net.connect(client, server, bandwidth=12.5e6, delay=0.005)
    listener = server.listen(PORT, backlog=64, syn_backlog=SYN_BACKLOG)

    def echo(event: Event | HostEvent, now: float) -> None:
        if isinstance(event, ConnectionAccepted):
            while (conn := event.listener.accept()) is not None:
                conn.send(conn.read())
        elif isinstance(event, DataReceived):
            event.conn.send(event.conn.read())

    echoed = bytearray()
    established: list[float] = []

    def client_app(event: Event | HostEvent, now: float) -> None:
        if isinstance(event, Established):
            established.append(now)
            event.conn.send(PAYLOAD)
        elif isinstance(event, DataReceived):
            echoed.extend(event.conn.read())

    net.set_app(server, echo)
    net.set_app(client, client_app)
    _spoofed_syns(net, seed, family)
    net.run(lambda: net.now >= CONNECT_AT, max_time=CONNECT_AT)
    conn = client.connect(remote, PORT, net.now)
    net.run(lambda: len(echoed) == len(PAYLOAD), max_time=FLOOD / FLOOD_RATE)
    assert listener.half_open == (0 if mode == "always" else SYN_BACKLOG)
    return net, client, server, conn, echoed, established[0] if established else -1.0


@both_families
@pytest.mark.parametrize("mode", ["auto", "always"])
def test_real_client_connects_and_is_echoed_through_a_syn_flood(mode: str, family: int) -> None:
    net, _client, server, conn, echoed, established_at = _run(mode, family)
    assert conn.state is State.ESTABLISHED
    # one round trip (10 ms) after the connect: the flood did not delay the handshake at all
    assert CONNECT_AT < established_at <= CONNECT_AT + 0.011
    assert bytes(echoed) == PAYLOAD and net.now < CONNECT_AT + 0.2
    stats = server.stats
    seen = round(CONNECT_AT * FLOOD_RATE)  # spoofed SYNs before the echo finished (about)
    kept = 0 if mode == "always" else SYN_BACKLOG
    assert stats.listen_syn == kept
    assert seen - kept <= stats.syncookies_sent <= seen - kept + 200
    assert stats.syncookies_accepted == 1 and stats.syncookies_failed == 0
    assert stats.listen_syn_queue_overflow == 0 and stats.listen_queued == 1
    assert stats.listen_accepted == 1 and stats.listen_accept_queue_overflow == 0
    # the cookie connection carries the options the client offered, timestamps included
    client_addr = ADDRESSES[family][0]
    [served] = [
        c for c in server.connections if isinstance(c, Connection) and c.remote_addr == client_addr
    ]
    assert served.timestamps_ok and served.sack_ok and served.snd_wscale == conn.rcv_wscale
    assert served.peer_mss == mss(family)  # the client's MSS: MTU - 40, or MTU - 60 for IPv6


@both_families
def test_without_cookies_the_flood_locks_the_client_out(family: int) -> None:
    # The control: the same flood with syn_cookies="never" -- every SYN of the client (first
    # and retransmitted, at 1 s and 3 s) finds the SYN queue full of spoofed half-open
    # connections, so it is not even established when the flood ends.
    net, _client, server, conn, echoed, established_at = _run("never", family)
    assert conn.state is State.SYN_SENT and established_at == -1.0 and echoed == b""
    stats = server.stats
    assert stats.listen_syn == SYN_BACKLOG and stats.syncookies_sent == 0
    assert stats.listen_syn_queue_overflow == FLOOD - SYN_BACKLOG + 2  # +2: the client's SYNs
    assert net.now == FLOOD / FLOOD_RATE
