"""Two hosts over the virtual-time network, one bulk transfer, everything checked afterwards."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import Network, SimLink, TransferApp, TransferResult
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.wire import ipv4

A = ipv4.addr_to_int("10.9.0.1")
B = ipv4.addr_to_int("10.9.0.2")
PORT = 5001
MB = 1_000_000

# Counters a parse failure increments: a corrupted packet must end in exactly one of them.
PARSE_DROPS = (
    "ip_bad_checksum",
    "ip_truncated",
    "ip_bad_version",
    "ip_bad_ihl",
    "ip_bad_total_length",
    "ip_malformed",
    "tcp_truncated",
    "tcp_bad_data_offset",
    "tcp_bad_checksum",
    "tcp_bad_flags",
    "tcp_bad_options",
    "tcp_malformed",
)


@dataclass
class Outcome:
    net: Network
    client: Host
    server: Host
    ab: SimLink
    ba: SimLink
    to_server: bytes
    to_client: bytes
    c: TransferResult
    s: TransferResult
    finished: bool
    real_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def done_at(self) -> float:
        """When the last byte arrived (virtual seconds after the connect)."""
        times = [r.eof_at for r in (self.c, self.s) if r.eof_at is not None]
        return max(times) if times else float("inf")


def run_transfer(
    *,
    to_server: int = 0,
    to_client: int = 0,
    fault: FaultConfig | None = None,
    seed: int = 1,
    bandwidth: float | None = 12.5e6,
    delay: float = 0.005,
    queue_limit: int | None = 200,
    max_time: float = 1000.0,
    config: TcpConfig | None = None,
    server_config: TcpConfig | None = None,
    fault_ab: object | None = None,
    fault_ba: object | None = None,
    log: bool = False,
) -> Outcome:
    """One connection from a client to a server; ``fault`` builds seeded fault models for both
    directions, ``fault_ab``/``fault_ba`` give any object with FaultModel's ``apply`` instead
    (scripted faults)."""
    import time

    rng = random.Random(seed)
    up = rng.randbytes(to_server)
    down = rng.randbytes(to_client)
    net = Network(log=log)
    cfg = config if config is not None else TcpConfig()
    scfg = server_config if server_config is not None else cfg
    client = net.add_host(Host(A, config=cfg, secret=rng.randbytes(16)))
    server = net.add_host(Host(B, config=scfg, secret=rng.randbytes(16)))
    fab: Any = FaultModel(fault, seed=seed * 2) if fault is not None else fault_ab
    fba: Any = FaultModel(fault, seed=seed * 2 + 1) if fault is not None else fault_ba
    ab, ba = net.connect(
        client,
        server,
        bandwidth=bandwidth,
        delay=delay,
        queue_limit=queue_limit,
        fault_ab=fab,
        fault_ba=fba,
    )
    listener = server.listen(PORT)
    server_app = TransferApp(server, down, listener=listener)
    client_app = TransferApp(client, up)
    net.set_app(server, server_app)
    net.set_app(client, client_app)
    conn = client.connect(B, PORT, 0.0)
    c = client_app.add(conn)

    def finished() -> bool:
        if c.closed_at is None:
            return False
        return any(r.closed_at is not None for r in server_app.results.values())

    t0 = time.perf_counter()
    ok = net.run(finished, max_time=max_time)
    real = time.perf_counter() - t0
    results = list(server_app.results.values())
    s = results[0] if results else TransferResult()
    assert len(results) <= 1
    return Outcome(net, client, server, ab, ba, up, down, c, s, ok, real)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_drops(host: Host) -> int:
    d = host.stats.as_dict()
    return sum(d[name] for name in PARSE_DROPS)
