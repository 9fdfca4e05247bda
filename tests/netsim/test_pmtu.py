"""Path MTU discovery end to end (RFC 1191): a bulk transfer into a link whose router takes at
most ``mtu`` octets and answers bigger datagrams with ICMP "fragmentation needed".

The packets the client put on the link and the ICMP it got back are written to a pcap (virtual
timestamps) and read back with scapy, and the checks are made on that capture: after each ICMP
no datagram is longer than the MTU it announced, the too-big segment goes again in the same
instant (not after an RTO), every TCP datagram carries DF, and the data arrives intact.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.utils import rdpcap

from tests.netsim.harness import PORT, A, B
from ustack.link.pcap import PcapWriter
from ustack.netsim import MtuLink, Network, SimLink, TransferApp
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.wire import ipv4

ROUTER = ipv4.addr_to_int("10.9.0.254")
SIZE = 400_000


def transfer(
    tmp_path: Path, *, mtu: int, next_hop_mtu: int | None, gso: bool, timestamps: bool = True
) -> tuple[list[IP], Host, bool, MtuLink]:
    rng = random.Random(7)
    cfg = TcpConfig(timestamps=timestamps)
    net = Network(log=True)
    client = net.add_host(Host(A, secret=rng.randbytes(16), config=cfg, gso=gso))
    server = net.add_host(Host(B, secret=rng.randbytes(16), config=cfg, gso=gso))
    link = MtuLink(
        net,
        "a>b",
        mtu=mtu,
        router=ROUTER,
        next_hop_mtu=next_hop_mtu,
        bandwidth=12.5e6,
        delay=0.005,
    )
    net.add_link(client, server, link)
    net.add_link(server, client, SimLink("b>a", bandwidth=12.5e6, delay=0.005))
    payload = rng.randbytes(SIZE)
    sink = TransferApp(server, listener=server.listen(PORT))
    source = TransferApp(client, payload)
    net.set_app(server, sink)
    net.set_app(client, source)
    source.add(client.connect(B, PORT, 0.0))
    finished = net.run(
        lambda: any(r.eof_at is not None for r in sink.results.values()), max_time=30.0
    )
    (result,) = sink.results.values()
    intact = result.received == SIZE and result.digest == hashlib.sha256(payload).hexdigest()
    # The capture: what the client sent on the link, and the router's answers, in time order.
    assert net.log is not None
    wanted = [
        e
        for e in net.log
        if e.link == "a>b" and (e.what in ("sent", "lost") or e.packet[9] == ipv4.PROTO_ICMP)
    ]
    wanted.sort(key=lambda e: e.time)
    path = tmp_path / "pmtu.pcap"
    with PcapWriter(path) as writer:
        for e in wanted:
            writer.write(e.packet, e.time)
    capture: list[IP] = []
    for record in rdpcap(str(path)):
        pkt = IP(bytes(record))
        pkt.time = record.time  # the virtual time written into the capture
        capture.append(pkt)
    return capture, client, finished and intact, link


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize(
    ("mtu", "next_hop_mtu", "final"),
    [
        (1200, None, 1200),  # an RFC 1191 router says its next-hop MTU
        (1100, 0, 1006),  # an old router says 0: plateaus 1492, then 1006 (RFC 1191 7)
    ],
)
def test_transfer_completes_below_a_smaller_mtu(
    tmp_path: Path, gso: bool, mtu: int, next_hop_mtu: int | None, final: int
) -> None:
    capture, client, ok, link = transfer(tmp_path, mtu=mtu, next_hop_mtu=next_hop_mtu, gso=gso)
    assert ok
    icmps = [p for p in capture if ICMP in p]
    data = [p for p in capture if ICMP not in p]
    assert icmps and link.frag_needed_sent == len(icmps)
    assert all(p[IP].flags == "DF" for p in data)  # ustack sets DF on every TCP datagram
    # After each ICMP, nothing longer than the MTU known by then (plateau or next-hop MTU).
    limit = 65535
    first_retransmit = None
    for p in sorted(capture, key=lambda p: float(p.time)):
        if ICMP in p:
            announced = p[ICMP].nexthopmtu or _plateau_below(p[IPerror].len)
            if announced < limit:
                limit = max(announced, 576)
                if first_retransmit is None:
                    first_retransmit = (float(p.time), p[TCPerror].seq, limit)
        else:
            assert p[IP].len <= limit, (float(p.time), p[IP].len, limit)
    assert limit == final
    # The quoted segment went out again, cut to the new size, the instant the ICMP arrived.
    assert first_retransmit is not None
    at, seq, size = first_retransmit
    again = [p for p in data if float(p.time) == pytest.approx(at, abs=1e-6) and p[TCP].seq == seq]
    assert again and again[0][IP].len == size
    stats = client.stats
    assert stats.tcp_rto_expired == 0  # no timeout was needed
    assert stats.tcp_recoveries == 0  # and no congestion response (RFC 1191)
    assert stats.tcp_pmtu_lowered == (1 if next_hop_mtu is None else 2)
    assert stats.icmp_frag_needed == len(icmps)


def _plateau_below(total: int) -> int:
    plateaus = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)
    return max(p for p in plateaus if p < total)


def test_router_below_576_clamps_and_still_delivers(tmp_path: Path) -> None:
    """A router claiming 400: the MSS stops at 536 (MTU 576), which this link takes."""
    capture, client, ok, _ = transfer(
        tmp_path, mtu=576, next_hop_mtu=400, gso=True, timestamps=False
    )
    assert ok
    assert client.stats.tcp_pmtu_clamped == 1
    icmp_at = min(float(p.time) for p in capture if ICMP in p)
    after = [p[IP].len for p in capture if ICMP not in p and float(p.time) >= icmp_at]
    assert max(after) == 576
