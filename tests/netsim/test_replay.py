"""Replay is exact: the same seeds give the same packet trace, byte for byte, even with many
connections whose output the host interleaves (nothing is ordered by memory address) -- over
IPv4 and over IPv6 (whose flow labels, too, come from the seeded secret)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.netsim.harness import PORT, hosts_addresses
from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import Network, TransferApp
from ustack.stack.events import HostEvent
from ustack.stack.host import Host
from ustack.tcp.events import Event

CONNECTIONS = 12


def busy_network(
    rng: random.Random, fault_seeds: tuple[int, int], *, log: bool
) -> tuple[Network, Host, Host]:
    """Two hosts (dual stack) over one lossy, duplicating, reordering path with a small shared
    queue."""
    net = Network(log=log)
    client_addrs, server_addrs, _ = hosts_addresses(4)
    client = net.add_host(Host(client_addrs, secret=rng.randbytes(16)))
    server = net.add_host(Host(server_addrs, secret=rng.randbytes(16)))
    fault = FaultConfig(drop=0.03, duplicate=0.01, reorder=0.02, reorder_delay=0.002)
    net.connect(
        client,
        server,
        bandwidth=12.5e6,
        delay=0.002,
        queue_limit=60,  # shared by every connection: they compete for it
        fault_ab=FaultModel(fault, seed=fault_seeds[0]),
        fault_ba=FaultModel(fault, seed=fault_seeds[1]),
    )
    return net, client, server


def trace(seed: int, family: int) -> list[tuple[float, str, str, bytes]]:
    rng = random.Random(seed)
    remote = hosts_addresses(family)[2]
    net, client, server = busy_network(rng, (seed * 2, seed * 2 + 1), log=True)
    sink = TransferApp(server, listener=server.listen(PORT))
    source = TransferApp(client, rng.randbytes(150_000))
    net.set_app(server, sink)
    net.set_app(client, source)
    for _ in range(CONNECTIONS):
        source.add(client.connect(remote, PORT, 0.0))
        # some garbage in between, so the objects of the two runs sit at other addresses
        _ = [object() for _ in range(rng.randrange(50))]

    def done() -> bool:
        return sum(r.eof_at is not None for r in sink.results.values()) == CONNECTIONS

    assert net.run(done, max_time=600.0)
    assert net.log is not None
    assert {e.packet[0] >> 4 for e in net.log} == {family}  # the IP version of every packet
    return [(e.time, e.link, e.what, e.packet) for e in net.log]


@pytest.mark.parametrize("family", [4, 6])
def test_same_seed_same_packets_byte_for_byte(family: int) -> None:
    first = trace(5, family)
    second = trace(5, family)
    assert len(first) > 3000  # 12 connections, 150 kB each, and their faults
    assert first == second


@pytest.mark.parametrize("family", [4, 6])
def test_another_seed_another_trace(family: int) -> None:
    assert trace(5, family) != trace(6, family)


@pytest.mark.parametrize("family", [4, 6])
def test_the_hosts_cached_next_deadline_is_always_the_fresh_one(family: int) -> None:
    """``Host.next_deadline`` keeps its answer between changes; after every step of a busy
    exchange (12 connections, faults, connections released into TIME-WAIT records as the
    asyncio side releases them) it must equal what a fresh computation says."""
    rng = random.Random(9)
    net, client, server = busy_network(rng, (1, 2), log=False)
    sink = TransferApp(server, listener=server.listen(PORT))
    source = TransferApp(client, rng.randbytes(60_000))
    checks = 0
    records = 0

    def checked(host: Host) -> Callable[[], float | None]:
        cached = host.next_deadline

        def next_deadline() -> float | None:
            nonlocal checks, records
            records = max(records, len(host.demux._timewait))
            answer = cached()
            host.demux._next_ok = False
            assert answer == cached(), "stale cached deadline"
            checks += 1
            return answer

        return next_deadline

    for host in (client, server):
        host.next_deadline = checked(host)  # type: ignore[method-assign]

    def releasing(app: TransferApp, host: Host) -> Callable[[Event | HostEvent, float], None]:
        def on_event(event: Event | HostEvent, now: float) -> None:
            app(event, now)
            conn = getattr(event, "conn", None)
            result = app.results.get(id(conn)) if conn is not None else None
            if conn is not None and result is not None and result.eof_at is not None:
                host.release(conn, now)  # done with it: TIME-WAIT becomes a record

        return on_event

    net.set_app(server, releasing(sink, server))
    net.set_app(client, releasing(source, client))
    for _ in range(CONNECTIONS):
        source.add(client.connect(hosts_addresses(family)[2], PORT, 0.0))

    def done() -> bool:
        return sum(r.eof_at is not None for r in sink.results.values()) == CONNECTIONS

    assert net.run(done, max_time=600.0)
    assert net.run(lambda: False, max_time=net.now + 120.0) is False  # through every TIME-WAIT
    assert checks > 1000 and records > 0
    st = server.stats
    assert st.ip6_rx == (st.ip_rx if family == 6 else 0)  # every packet of the family
    assert client.stats.tcp_time_wait_expired + server.stats.tcp_time_wait_expired == CONNECTIONS
    assert not client.demux._timewait and not server.demux._timewait
