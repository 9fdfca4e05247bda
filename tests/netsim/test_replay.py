"""Replay is exact: the same seeds give the same packet trace, byte for byte, even with many
connections whose output the host interleaves (nothing is ordered by memory address)."""

from __future__ import annotations

import random

from tests.netsim.harness import PORT, A, B
from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import Network, TransferApp
from ustack.stack.host import Host

CONNECTIONS = 12


def trace(seed: int) -> list[tuple[float, str, str, bytes]]:
    rng = random.Random(seed)
    net = Network(log=True)
    client = net.add_host(Host(A, secret=rng.randbytes(16)))
    server = net.add_host(Host(B, secret=rng.randbytes(16)))
    fault = FaultConfig(drop=0.03, duplicate=0.01, reorder=0.02, reorder_delay=0.002)
    net.connect(
        client,
        server,
        bandwidth=12.5e6,
        delay=0.002,
        queue_limit=60,  # shared by every connection: they compete for it
        fault_ab=FaultModel(fault, seed=seed * 2),
        fault_ba=FaultModel(fault, seed=seed * 2 + 1),
    )
    sink = TransferApp(server, listener=server.listen(PORT))
    source = TransferApp(client, rng.randbytes(150_000))
    net.set_app(server, sink)
    net.set_app(client, source)
    for _ in range(CONNECTIONS):
        source.add(client.connect(B, PORT, 0.0))
        # some garbage in between, so the objects of the two runs sit at other addresses
        _ = [object() for _ in range(rng.randrange(50))]

    def done() -> bool:
        return sum(r.eof_at is not None for r in sink.results.values()) == CONNECTIONS

    assert net.run(done, max_time=600.0)
    assert net.log is not None
    return [(e.time, e.link, e.what, e.packet) for e in net.log]


def test_same_seed_same_packets_byte_for_byte() -> None:
    first = trace(5)
    second = trace(5)
    assert len(first) > 3000  # 12 connections, 150 kB each, and their faults
    assert first == second


def test_another_seed_another_trace() -> None:
    assert trace(5) != trace(6)
