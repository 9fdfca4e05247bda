"""The simulator itself: link timing, drop-tail queue, routing, stop conditions, packet log."""

from __future__ import annotations

import pytest

from tests.netsim.harness import A, B
from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import Network, SimLink
from ustack.stack.host import Host
from ustack.tcp.events import Established
from ustack.wire import checksum, icmp, ipv4, tcp


def test_link_serialises_at_bandwidth_then_adds_delay() -> None:
    link = SimLink(bandwidth=1_000_000, delay=0.01, queue_limit=None)
    arrivals = [link.transmit(b"x" * 1000, 0.0) for _ in range(3)]
    assert [a[0][0] for a in arrivals] == pytest.approx([0.011, 0.012, 0.013])
    # An idle link starts sending at once.
    assert link.transmit(b"x" * 500, 1.0)[0][0] == pytest.approx(1.0105)


def test_drop_tail_queue_limit_counted() -> None:
    link = SimLink(bandwidth=1000, delay=0.0, queue_limit=3)
    results = [link.transmit(b"y" * 100, 0.0) for _ in range(5)]
    assert [len(r) for r in results] == [1, 1, 1, 0, 0]
    assert link.stats.queue_drops == 2 and link.stats.delivered == 3
    # Once the first packet has left (0.1 s), there is room for one more.
    assert len(link.transmit(b"y" * 100, 0.1)) == 1


def test_fault_model_on_a_link() -> None:
    link = SimLink(delay=0.001, fault=FaultModel(FaultConfig(drop=1.0)))
    assert link.transmit(b"z", 0.0) == [] and link.stats.fault_lost == 1


def _segment(payload: bytes, options: bytes = b"", flags: int = tcp.ACK) -> bytearray:
    size = tcp.HEADER_LEN + len(options) + len(payload)
    buf = bytearray(ipv4.HEADER_LEN + size)
    ipv4.emit(buf, 0, src=A, dst=B, proto=ipv4.PROTO_TCP, payload_len=size)
    tcp.emit(buf, ipv4.HEADER_LEN, pseudo=checksum.ipv4_pseudo_header_sum(A, B, tcp.PROTO, 0), src_port=1, dst_port=2, seq=0, ack=0, flags=flags,
             window=1000, options=options, payload=payload)  # fmt: skip
    return buf


def test_lost_payload_counts_tcp_payload_of_every_drop() -> None:
    # Queue drops: a one-packet queue keeps the first segment and drops the next two, one with
    # 12 bytes of options (the data offset is honoured) and one bare ACK (no payload: not lost
    # data). An ICMP packet dropped is not counted either.
    link = SimLink(bandwidth=1000, delay=0.0, queue_limit=1)
    link.transmit(_segment(b"a" * 100), 0.0)
    link.transmit(_segment(b"b" * 300, options=b"\x01" * 12), 0.0)
    link.transmit(_segment(b""), 0.0)
    link.transmit(_echo(A, B), 0.0)
    assert link.stats.queue_drops == 3
    assert (link.stats.lost_payload_packets, link.stats.lost_payload_bytes) == (1, 300)
    # Fault-model losses count the same way; delivered packets never do.
    lossy = SimLink(fault=FaultModel(FaultConfig(drop=1.0)))
    lossy.transmit(_segment(b"c" * 1460), 0.0)
    lossy.transmit(_segment(b"", flags=tcp.SYN), 0.0)
    lossy.transmit(b"\x45" + bytes(10), 0.0)  # too short for its headers: ignored
    assert lossy.stats.fault_lost == 3
    assert (lossy.stats.lost_payload_packets, lossy.stats.lost_payload_bytes) == (1, 1460)
    clean = SimLink()
    clean.transmit(_segment(b"d" * 500), 0.0)
    assert clean.stats.lost_payload_bytes == 0 and clean.stats.delivered == 1


def _pair(**kwargs: object) -> tuple[Network, Host, Host]:
    net = Network(log=True)
    a = net.add_host(Host(A, secret=b"a" * 16))
    b = net.add_host(Host(B, secret=b"b" * 16))
    net.connect(a, b, **kwargs)  # type: ignore[arg-type]
    return net, a, b


def _echo(src: int, dst: int) -> bytearray:
    buf = bytearray(ipv4.HEADER_LEN + icmp.HEADER_LEN + 4)
    ipv4.emit(buf, 0, src=src, dst=dst, proto=ipv4.PROTO_ICMP, payload_len=icmp.HEADER_LEN + 4)
    icmp.emit_echo(
        buf, ipv4.HEADER_LEN, type=icmp.ECHO_REQUEST, ident=1, sequence=2, payload=b"ping"
    )
    return buf


def test_ping_round_trip_in_virtual_time_and_log() -> None:
    net, a, b = _pair(bandwidth=32_000, delay=0.05)
    net.transmit(a, _echo(A, B))
    assert net.run(lambda: a.stats.icmp_rx == 1, max_time=10.0)
    # Two hops of 50 ms plus two 32-byte serialisations of 1 ms each.
    assert net.now == pytest.approx(0.102)
    assert b.stats.icmp_echo_replies == 1 and a.stats.icmp_ignored == 1
    lines = net.format_log().splitlines()
    assert len(lines) == 4
    assert "sent" in lines[0] and "ICMP echo request, id 1, seq 2" in lines[0]
    assert "delivered" in lines[-1] and "ICMP echo reply" in lines[-1]


def test_unroutable_packets_are_counted() -> None:
    net, a, _ = _pair()
    net.transmit(a, _echo(A, ipv4.addr_to_int("10.99.0.1")))
    assert net.no_route == 1


def test_handshake_timing_and_stop_at_time_bound() -> None:
    net, a, b = _pair(bandwidth=None, delay=0.02)
    b.listen(80)
    seen: list[float] = []
    net.set_app(a, lambda ev, now: seen.append(now) if isinstance(ev, Established) else None)
    a.connect(B, 80, 0.0)  # the host wakes the simulator itself: no kick needed
    assert net.run(lambda: bool(seen), max_time=1.0)
    assert seen == [pytest.approx(0.04)]  # SYN out, SYN-ACK back: one RTT
    # A connection to a silent host keeps retransmitting SYNs; run() stops at the bound.
    net2, c, _ = _pair(delay=0.01)
    c.connect(ipv4.addr_to_int("10.9.0.2"), 81, 0.0)  # B answers with RST: refused quickly
    assert not net2.run(lambda: False, max_time=5.0)
    assert c.stats.tcp_refused == 1
    net3 = Network()
    d = net3.add_host(Host(A, secret=b"d" * 16))
    d.connect(B, 80, 0.0)  # no route: the SYN is never answered
    assert not net3.run(lambda: False, max_time=5.0)
    assert net3.now == 5.0 and net3.no_route >= 3 and d.stats.tcp_syn_retransmits >= 2
