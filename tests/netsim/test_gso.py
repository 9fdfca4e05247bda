"""Software GSO is invisible on the wire (DESIGN rule 16: a fast path is proven equal).

With ``Host(gso=True)`` (the default) TCP forms super-segments of many MSS and the host cuts
them into wire segments; with ``gso=False`` TCP forms every segment itself. Without loss the two
must put exactly the same packets on the wire, byte for byte and at the same times, whatever
the application's writes, Nagle, the windows and the path; with loss both must deliver
everything intact. Over IPv4 and over IPv6 (where the host cuts at the smaller IPv6 MSS).
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.netsim.harness import PORT, hosts_addresses
from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import Network, TransferApp
from ustack.stack.host import Host, Key, OutPacket
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import OutSegment


def trace(
    gso: bool,
    *,
    family: int,
    size: int,
    nagle: bool,
    recv_buffer: int,
    bandwidth: float,
    delay: float,
    queue: int,
    fault: FaultConfig | None = None,
    seed: int = 1,
) -> tuple[list[tuple[float, str, str, bytes]], bytes, bytes, int]:
    rng = random.Random(seed)
    cfg = TcpConfig(nagle=nagle, recv_buffer=recv_buffer)
    net = Network(log=True)
    client_addrs, server_addrs, remote = hosts_addresses(family)
    client = net.add_host(Host(client_addrs, secret=rng.randbytes(16), config=cfg, gso=gso))
    server = net.add_host(Host(server_addrs, secret=rng.randbytes(16), config=cfg, gso=gso))
    net.connect(
        client,
        server,
        bandwidth=bandwidth,
        delay=delay,
        queue_limit=queue,
        fault_ab=FaultModel(fault, seed=seed) if fault else None,
        fault_ba=FaultModel(fault, seed=seed + 1) if fault else None,
    )
    payload = rng.randbytes(size)
    sink = TransferApp(server, listener=server.listen(PORT))
    source = TransferApp(client, payload)
    net.set_app(server, sink)
    net.set_app(client, source)
    source.add(client.connect(remote, PORT, 0.0))

    def done() -> bool:
        return any(r.eof_at is not None for r in sink.results.values())

    assert net.run(done, max_time=600.0)
    # every packet on the wire was of the family (the IP version nibble)
    assert {e.packet[0] >> 4 for e in net.log or ()} == {family}
    assert net.log is not None
    (result,) = sink.results.values()
    return (
        [(e.time, e.link, e.what, e.packet) for e in net.log],
        result.sha256.digest(),
        hashlib.sha256(payload).digest(),
        client.stats.tcp_data_segments_sent,
    )


@pytest.mark.parametrize("family", [4, 6])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(st.integers(1, 5000), st.integers(5000, 1_000_000)),
    nagle=st.booleans(),
    recv_buffer=st.sampled_from([4096, 20_000, 65_535, 256 * 1024]),
    bandwidth=st.sampled_from([1e6, 12.5e6, 1e9]),
    delay=st.sampled_from([0.0001, 0.005, 0.05]),
    queue=st.sampled_from([20, 1000]),
)
def test_without_loss_gso_puts_the_same_packets_on_the_wire(
    size: int,
    nagle: bool,
    recv_buffer: int,
    bandwidth: float,
    delay: float,
    queue: int,
    family: int,
) -> None:
    kw = {
        "family": family,
        "size": size,
        "nagle": nagle,
        "recv_buffer": recv_buffer,
        "bandwidth": bandwidth,
        "delay": delay,
        "queue": queue,
    }
    plain, got_plain, want, segs_plain = trace(False, **kw)  # type: ignore[arg-type]
    cut, got_cut, _, segs_cut = trace(True, **kw)  # type: ignore[arg-type]
    assert got_plain == want and got_cut == want
    assert segs_cut == segs_plain  # the counters count wire segments either way
    assert cut == plain


@pytest.mark.parametrize("family", [4, 6])
def test_gso_really_forms_super_segments(family: int) -> None:
    """The equality above is not vacuous: with GSO the sender's TCP hands the host segments
    longer than one MSS."""
    rng = random.Random(3)
    net = Network()
    client_addrs, server_addrs, remote = hosts_addresses(family)
    client = net.add_host(Host(client_addrs, secret=rng.randbytes(16)))
    server = net.add_host(Host(server_addrs, secret=rng.randbytes(16)))
    net.connect(client, server, bandwidth=1e9, delay=0.001, queue_limit=1000)
    sink = TransferApp(server, listener=server.listen(PORT))
    source = TransferApp(client, rng.randbytes(300_000))
    net.set_app(server, sink)
    net.set_app(client, source)
    source.add(client.connect(remote, PORT, 0.0))
    longest = 0
    cut = client.demux._cut_segment

    def spy(key: Key, s: OutSegment, mss: int, out: list[OutPacket]) -> None:
        nonlocal longest
        longest = max(longest, len(s.payload))
        cut(key, s, mss, out)

    client.demux._cut_segment = spy
    assert net.run(lambda: any(r.eof_at for r in sink.results.values()), max_time=60.0)
    assert longest > 2 * (client.config.mss if family == 4 else client.config6.mss)
    st = client.stats
    assert st.ip6_rx == (st.ip_rx if family == 6 else 0)  # every packet of the family


@pytest.mark.parametrize("family", [4, 6])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), drop=st.sampled_from([0.01, 0.05]))
def test_with_loss_gso_delivers_everything(seed: int, drop: float, family: int) -> None:
    fault = FaultConfig(drop=drop, reorder=0.02, duplicate=0.01, reorder_delay=0.003)
    kw = {
        "family": family,
        "size": 300_000,
        "nagle": True,
        "recv_buffer": 256 * 1024,
        "bandwidth": 12.5e6,
        "delay": 0.005,
        "queue": 100,
        "fault": fault,
        "seed": seed,
    }
    _, got, want, _ = trace(True, **kw)  # type: ignore[arg-type]
    assert got == want
