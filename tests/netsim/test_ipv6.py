"""Two sans-IO hosts talking TCP over IPv6 in the virtual-time network: handshake, 1 MB each way
(SHA-256), four-way close and TIME-WAIT, SACK and timestamps, loss, SYN cookies, Packet Too
Big from a router on the path, and an IPv4 and an IPv6 connection on the same ports."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import MtuLink, Network, SimLink, TransferApp, TransferResult, destination
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.wire import addr, ipv4

A6 = addr.from_text("fd00:9::1")
B6 = addr.from_text("fd00:9::2")
ROUTER6 = addr.from_text("fd00:9::fe")
A4 = ipv4.addr_to_int("10.9.0.1")
B4 = ipv4.addr_to_int("10.9.0.2")
PORT = 5001
MB = 1_000_000


@dataclass
class Pair:
    net: Network
    client: Host
    server: Host
    ab: SimLink
    ba: SimLink
    client_app: TransferApp
    server_app: TransferApp


def pair(
    *,
    config: TcpConfig | None = None,
    fault: FaultConfig | None = None,
    seed: int = 1,
    up: bytes = b"",
    down: bytes = b"",
    mtu_link: int | None = None,
) -> Pair:
    rng = random.Random(seed)
    net = Network()
    cfg = config if config is not None else TcpConfig()
    client = net.add_host(Host([A4, A6], config=cfg, secret=rng.randbytes(16)))
    server = net.add_host(Host([B4, B6], config=cfg, secret=rng.randbytes(16)))
    fab = FaultModel(fault, seed=seed * 2) if fault is not None else None
    fba = FaultModel(fault, seed=seed * 2 + 1) if fault is not None else None
    ab: SimLink
    if mtu_link is not None:
        ab = net.add_link(
            client,
            server,
            MtuLink(net, "a>b", mtu=mtu_link, router=0, router6=ROUTER6, delay=0.005),
        )
        ba = net.add_link(server, client, SimLink("b>a", delay=0.005))
    else:
        ab, ba = net.connect(
            client, server, bandwidth=12.5e6, delay=0.005, fault_ab=fab, fault_ba=fba
        )
    listener = server.listen(PORT)
    server_app = TransferApp(server, down, listener=listener)
    client_app = TransferApp(client, up)
    net.set_app(server, server_app)
    net.set_app(client, client_app)
    return Pair(net, client, server, ab, ba, client_app, server_app)


def transfer(
    p: Pair, remote: int = B6, local_port: int | None = None
) -> tuple[Connection, TransferResult]:
    conn = p.client.connect(remote, PORT, p.net.now, local_port=local_port)
    return conn, p.client_app.add(conn)


def closed(p: Pair, results: list[TransferResult], servers: int = 1) -> bool:
    done = [r for r in p.server_app.results.values() if r.closed_at is not None]
    return all(r.closed_at is not None for r in results) and len(done) >= servers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_one_megabyte_each_way_over_ipv6() -> None:
    rng = random.Random(5)
    up, down = rng.randbytes(MB), rng.randbytes(MB)
    p = pair(up=up, down=down)
    conn, c = transfer(p)
    assert p.net.run(lambda: closed(p, [c]), max_time=300.0)
    (s,) = p.server_app.results.values()
    assert s.digest == sha(up) and s.received == MB
    assert c.digest == sha(down) and c.received == MB
    # RFC 7323 and RFC 2018 negotiated over IPv6; MSS = 1500 - 60, less the timestamps
    assert conn.rcv.ts_ok and conn.sack_ok
    assert conn.snd.snd_mss == 1440 - 12
    # both sides sent a FIN as soon as their data was queued: the client's TIME-WAIT ran its
    # 2*MSL and ended (the server's too, if the FINs crossed); both sides forgot everything
    assert p.client.stats.tcp_time_wait_expired == 1
    assert c.closed_at is not None and c.eof_at is not None
    assert c.closed_at - c.eof_at >= 2 * p.client.config.msl - 1e-6
    assert p.client.connections == [] and p.server.connections == []
    for host, inbound in ((p.client, p.ba), (p.server, p.ab)):
        st = host.stats
        # every packet was IPv6 and reached TCP
        assert st.ip_rx == st.ip6_rx == inbound.stats.delivered > 700
        assert st.host_internal_error == st.tcp_bad_checksum == st.ip6_not_for_us == 0
        assert st.tcp_established == 1 and st.tcp_closed == 1
    assert p.net.no_route == 0


def test_transfer_under_loss_over_ipv6() -> None:
    rng = random.Random(7)
    up = rng.randbytes(MB)
    p = pair(up=up, fault=FaultConfig(drop=0.05), seed=3)
    _, c = transfer(p)
    assert p.net.run(lambda: closed(p, [c]), max_time=600.0)
    (s,) = p.server_app.results.values()
    assert s.digest == sha(up) and s.received == MB
    assert p.ab.stats.fault_lost > 0 and p.client.stats.tcp_retransmits > 0
    assert p.ab.stats.lost_payload_packets > 0  # netsim reads the IPv6 payload length too
    # four-way close: the sender closed first and alone went through TIME-WAIT
    assert p.client.stats.tcp_time_wait_expired == 1
    assert p.server.stats.tcp_time_wait_expired == 0
    assert p.client.connections == [] and p.server.connections == []
    assert p.client.stats.host_internal_error == p.server.stats.host_internal_error == 0


def test_syn_cookies_always_over_ipv6() -> None:
    rng = random.Random(9)
    up = rng.randbytes(100_000)
    p = pair(up=up, config=TcpConfig(syn_cookies="always"))
    conn, c = transfer(p)
    assert p.net.run(lambda: closed(p, [c]), max_time=300.0)
    (s,) = p.server_app.results.values()
    assert s.digest == sha(up)
    st = p.server.stats
    assert st.syncookies_sent == 1 and st.syncookies_accepted == 1 and st.syncookies_failed == 0
    assert st.listen_syn == 0  # no SYN-RECEIVED state was kept
    # the server kept nothing: both came back in the cookie's TSval
    (served,) = p.server_app.connections
    assert served.rcv.ts_ok and served.sack_ok and conn.sack_ok


def test_ipv4_and_ipv6_connections_on_the_same_ports_coexist() -> None:
    rng = random.Random(11)
    up = rng.randbytes(200_000)
    p = pair(up=up)
    c4conn, r4 = transfer(p, remote=B4, local_port=40000)
    c6conn, r6 = transfer(p, remote=B6, local_port=40000)
    assert (c4conn.local_port, c6conn.local_port) == (40000, 40000)
    assert p.net.run(lambda: closed(p, [r4, r6], servers=2), max_time=300.0)
    served = {
        (conn.remote_addr, conn.local_addr): p.server_app.result(conn)
        for conn in p.server_app.connections
    }
    assert sorted(served) == sorted([(A4, B4), (A6, B6)])
    assert all(r.digest == sha(up) and r.received == len(up) for r in served.values())
    assert c4conn.snd.snd_mss == 1460 - 12 and c6conn.snd.snd_mss == 1440 - 12
    assert p.server.stats.ip6_rx > 0 and p.server.stats.ip_rx > p.server.stats.ip6_rx


def test_packet_too_big_from_a_router_lowers_the_mss_and_resends() -> None:
    rng = random.Random(13)
    up = rng.randbytes(300_000)
    p = pair(up=up, mtu_link=1400)
    conn, c = transfer(p)
    assert p.net.run(lambda: closed(p, [c]), max_time=300.0)
    (s,) = p.server_app.results.values()
    assert s.digest == sha(up)
    link = p.ab
    assert isinstance(link, MtuLink) and link.frag_needed_sent >= 1
    st = p.client.stats
    assert st.icmp6_packet_too_big >= 1 and st.tcp_pmtu_lowered == 1
    assert conn.snd.snd_mss == 1400 - 60 - 12  # IPv6 and TCP headers, timestamps
    assert st.tcp_pmtu_retransmits > 0 and st.icmp6_packet_too_big_clamped == 0


def test_destination_reads_both_families() -> None:
    p = pair()
    p.client.connect(B6, PORT, 0.0)
    p.client.connect(B4, PORT, 0.0)
    sent = p.client.packets_to_send(0.0)
    assert [destination(bytes(x)) for x in sent] == [B6, B4]  # type: ignore[arg-type]
