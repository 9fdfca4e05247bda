"""Two hosts over the virtual-time network, one bulk transfer, everything checked afterwards.

Both hosts have an IPv4 and an IPv6 address; ``family`` says which of the server's the client
connects to, so every scenario runs over either family with the same hosts."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from ustack.link.fault import Delivery, FaultConfig, FaultModel
from ustack.netsim import Network, SimLink, TransferApp, TransferResult
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.wire import addr, ipv4

A = ipv4.addr_to_int("10.9.0.1")
B = ipv4.addr_to_int("10.9.0.2")
A6 = addr.from_text("fd00:9::1")
B6 = addr.from_text("fd00:9::2")
ADDRESSES = {4: (A, B), 6: (A6, B6)}  # (client, server) of each family
PORT = 5001
MB = 1_000_000


def hosts_addresses(family: int) -> tuple[list[int], list[int], int]:
    """Both hosts' addresses (dual stack either way) and the server address to connect to."""
    if family not in ADDRESSES:
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    return [A, A6], [B, B6], ADDRESSES[family][1]


# Counters a parse failure increments: a corrupted packet must end in exactly one of them.
# IPv6 has no header checksum (RFC 8200), so a flipped bit there ends in a header sanity check
# -- a destination that is not ours, a source that cannot be one, a Next Header nobody knows --
# or in TCP's checksum, whose pseudo-header covers the addresses and the length; or nowhere:
# see :class:`WatchedFault`.
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
    "ip6_truncated",
    "ip6_bad_version",
    "ip6_ext_header_malformed",
    "ip6_option_dropped",
    "ip6_malformed",
    "ip6_not_for_us",
    "ip6_bad_source",
    "ip6_unknown_next_header",
)


def _unchecked6(octet: int, bit: int) -> bool:
    """True for a bit of the IPv6 fixed header that no check on the receive path covers: the
    Traffic Class and the Flow Label (octets 0-3 after the version nibble) and the Hop Limit
    (octet 7). A flip there is delivered as if nothing had happened."""
    return (octet == 0 and bit < 4) or octet in (1, 2, 3, 7)


class WatchedFault(FaultModel):
    """A FaultModel that also counts the corrupted copies no receiver could notice (a flipped
    bit in an unchecked IPv6 header field): ``corrupted - unchecked`` copies must end in a
    parse drop."""

    __slots__ = ("unchecked",)

    def __init__(self, config: FaultConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.unchecked = 0

    def apply(self, packet: bytes | bytearray | memoryview, now: float) -> list[Delivery]:
        before = self.stats.corrupted
        out = super().apply(packet, now)
        if self.stats.corrupted != before:
            sent = bytes(packet)
            for _, copy in out:
                diff = next(
                    (i for i, (x, y) in enumerate(zip(sent, copy, strict=True)) if x != y), None
                )
                if diff is not None and sent[0] >> 4 == 6:
                    bit = (sent[diff] ^ copy[diff]).bit_length() - 1
                    self.unchecked += _unchecked6(diff, bit)
        return out


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
    family: int = 4
    conn: Connection | None = None  # the client's connection

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
    family: int = 4,
) -> Outcome:
    """One connection from a client to a server over IPv4 or IPv6 (``family``); ``fault`` builds
    seeded fault models for both directions (:class:`WatchedFault`), ``fault_ab``/``fault_ba``
    give any object with FaultModel's ``apply`` instead (scripted faults)."""
    import time

    rng = random.Random(seed)
    up = rng.randbytes(to_server)
    down = rng.randbytes(to_client)
    net = Network(log=log)
    cfg = config if config is not None else TcpConfig()
    scfg = server_config if server_config is not None else cfg
    client_addrs, server_addrs, remote = hosts_addresses(family)
    client = net.add_host(Host(client_addrs, config=cfg, secret=rng.randbytes(16)))
    server = net.add_host(Host(server_addrs, config=scfg, secret=rng.randbytes(16)))
    fab: Any = WatchedFault(fault, seed=seed * 2) if fault is not None else fault_ab
    fba: Any = WatchedFault(fault, seed=seed * 2 + 1) if fault is not None else fault_ba
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
    conn = client.connect(remote, PORT, 0.0)
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
    return Outcome(net, client, server, ab, ba, up, down, c, s, ok, real, family=family, conn=conn)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_drops(host: Host) -> int:
    d = host.stats.as_dict()
    return sum(d[name] for name in PARSE_DROPS)
