"""Forward mode of the sans-IO host (``ustack forward``): packets to any unicast address are
taken in, SYNs wait for the relay's answer (``ConnectionRequested`` -> ``answer``/``refuse``),
ICMP and ICMPv6 echo are answered in the destination's name, UDP is handed to the relay and its
replies sent back in. A host without forward mode is the baseline every test compares with."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from tests.stack.helpers import addresses, both_families, make_host, segments, tcp_packet
from ustack.stack.events import ConnectionAccepted, ConnectionRequested, DatagramReceived
from ustack.stack.host import Host
from ustack.stack.tcp_demux import MAX_QUEUED_DATAGRAMS, Listener
from ustack.tcp.events import Closed, DataReceived, Established, Reset
from ustack.tcp.state import State
from ustack.wire import addr, seq, tcp

FOREIGN = {4: addr.from_text("10.9.0.2"), 6: addr.from_text("fd00:9::2")}
CLIENT_ISN = 1000
CPORT = 40000


def forward_host(family: int, syn_backlog: int = 8) -> tuple[Host, Listener]:
    host = make_host(family)
    listener = host.demux.listen_transparent(syn_backlog=syn_backlog)
    host.ip.enable_forwarding(host.demux.post_datagram)
    return host, listener


def events(host: Host) -> list[object]:
    out: list[object] = []
    while (ev := host.next_event()) is not None:
        out.append(ev)
    return out


def syn_to(family: int, port: int = 80, sport: int = CPORT, isn: int = CLIENT_ISN) -> bytearray:
    return tcp_packet(sport, port, isn, flags=tcp.SYN, dst=FOREIGN[family], family=family)


def key_of(family: int, port: int = 80, sport: int = CPORT) -> tuple[int, int, int, int]:
    return (addresses(family)[1], sport, FOREIGN[family], port)


@both_families
def test_without_forward_mode_a_foreign_destination_is_not_for_us(family: int) -> None:
    host = make_host(family)
    host.receive_packet(syn_to(family), 0.0)
    assert host.packets_to_send(0.0) == []
    assert events(host) == []
    counter = "ip_not_for_us" if family == 4 else "ip6_not_for_us"
    assert getattr(host.stats, counter) == 1


@both_families
def test_a_syn_anywhere_waits_for_the_relay_then_is_answered(family: int) -> None:
    host, listener = forward_host(family)
    key = key_of(family)
    host.receive_packet(syn_to(family), 0.0)
    # Nothing is answered before the relay has reached the destination.
    assert host.packets_to_send(0.0) == []
    assert events(host) == [ConnectionRequested(listener, key)]
    assert listener.requests == 1
    # The client's SYN retransmission meanwhile is dropped, not reported again.
    host.receive_packet(syn_to(family), 1.0)
    assert host.packets_to_send(1.0) == [] and events(host) == []
    conn = listener.answer(key, 1.2)
    assert conn is not None and conn.state is State.SYN_RECEIVED
    (synack,) = segments(host, 1.2)
    assert synack.flags & (tcp.SYN | tcp.ACK) == tcp.SYN | tcp.ACK
    # In the destination's name: the SYN's destination is the connection's local address.
    assert (synack.src, synack.src_port, synack.dst_port) == (FOREIGN[family], 80, CPORT)
    assert synack.ack == seq.add(CLIENT_ISN, 1)
    assert (conn.local_addr, conn.local_port) == (FOREIGN[family], 80)
    ack = tcp_packet(
        CPORT,
        80,
        seq.add(CLIENT_ISN, 1),
        seq.add(synack.seq, 1),
        tcp.ACK | tcp.PSH,
        payload=b"GET / HTTP/1.0\r\n\r\n",
        dst=FOREIGN[family],
        family=family,
    )
    host.receive_packet(ack, 1.3)
    got = events(host)
    # The connection is the relay's already: no accept queue, no ConnectionAccepted.
    assert [type(e) for e in got] == [Established, DataReceived]
    assert not any(isinstance(e, ConnectionAccepted) for e in got)
    state: State = conn.state
    assert state is State.ESTABLISHED and conn.read() == b"GET / HTTP/1.0\r\n\r\n"
    assert listener.requests == 0 and listener.half_open == 0 and listener.pending == 0
    stats = host.stats.nonzero()
    assert stats["forward_syn_requested"] == 1
    assert stats["forward_syn_pending_dropped"] == 1
    assert stats["forward_request_answered"] == 1
    assert "ip_not_for_us" not in stats and "ip6_not_for_us" not in stats


@both_families
def test_a_refused_request_gets_the_rst_of_a_closed_port(family: int) -> None:
    host, listener = forward_host(family)
    host.receive_packet(syn_to(family, port=81), 0.0)
    (request,) = events(host)
    assert isinstance(request, ConnectionRequested)
    listener.refuse(request.key, 0.1)
    (rst,) = segments(host, 0.1)
    assert rst.flags == tcp.RST | tcp.ACK and rst.seq == 0
    assert rst.ack == seq.add(CLIENT_ISN, 1)
    assert (rst.src, rst.src_port) == (FOREIGN[family], 81)
    assert listener.requests == 0 and host.connections == []
    assert host.stats.forward_request_refused == 1
    # Answering it now is too late: counted, nothing sent.
    assert listener.answer(request.key, 0.2) is None
    assert host.packets_to_send(0.2) == [] and host.stats.forward_request_stale == 1


def test_requests_are_bounded_by_the_syn_backlog() -> None:
    host, listener = forward_host(4, syn_backlog=2)
    for sport in (1001, 1002, 1003):
        host.receive_packet(syn_to(4, sport=sport), 0.0)
    assert [e.key[1] for e in events(host)] == [1001, 1002]  # type: ignore[attr-defined]
    assert host.stats.forward_request_overflow == 1
    # An answered connection still in SYN-RECEIVED counts against it too.
    assert listener.answer(key_of(4, sport=1001), 0.1) is not None
    host.receive_packet(syn_to(4, sport=1004), 0.2)
    assert host.stats.forward_request_overflow == 2


def test_a_reset_in_syn_received_reaches_the_owner() -> None:
    host, listener = forward_host(4)
    host.receive_packet(syn_to(4), 0.0)
    events(host)
    conn = listener.answer(key_of(4), 0.1)
    assert conn is not None
    (_synack,) = segments(host, 0.1)
    rst = tcp_packet(CPORT, 80, seq.add(CLIENT_ISN, 1), 0, tcp.RST, dst=FOREIGN[4])
    host.receive_packet(rst, 0.2)
    got = events(host)
    # A passive open would go back to LISTEN (RFC 9293 3.10.7.4); this one has an owner
    # waiting, who must learn that it ended.
    assert got == [Reset(conn, False), Closed(conn)]
    assert host.connections == [] and host.stats.forward_handshake_reset == 1


def test_other_segments_to_nowhere_get_the_closed_port_reply() -> None:
    host, _listener = forward_host(4)
    stray = tcp_packet(CPORT, 80, 5, 77, tcp.ACK, dst=FOREIGN[4])
    host.receive_packet(stray, 0.0)
    (rst,) = segments(host)
    assert rst.flags == tcp.RST and rst.seq == 77 and rst.src == FOREIGN[4]
    assert events(host) == []


def test_a_port_listener_keeps_its_port() -> None:
    host, _listener = forward_host(4)
    port_listener = host.listen(80)
    host.receive_packet(syn_to(4), 0.0)
    # The port's own listener answers at once, as on any host; nothing is requested.
    (synack,) = segments(host)
    assert synack.flags == tcp.SYN | tcp.ACK and port_listener.half_open == 1
    assert events(host) == []


def test_closing_the_transparent_listener_refuses_what_waits() -> None:
    host, listener = forward_host(4)
    host.receive_packet(syn_to(4), 0.0)
    assert len(events(host)) == 1
    listener.close(0.1)
    (rst,) = segments(host, 0.1)
    assert rst.flags == tcp.RST | tcp.ACK and listener.requests == 0
    # and the host is an ordinary one again: a new SYN to that port is reset at once
    host.receive_packet(syn_to(4, sport=CPORT + 1), 0.2)
    (rst2,) = segments(host, 0.2)
    assert rst2.flags == tcp.RST | tcp.ACK and events(host) == []


@pytest.mark.parametrize(
    "dst",
    ["255.255.255.255", "224.0.0.251", "127.0.0.1", "0.0.0.1", "ff02::1", "::1"],
)
def test_broadcast_multicast_and_loopback_stay_not_for_us(dst: str) -> None:
    family = 6 if ":" in dst else 4
    host, _listener = forward_host(family)
    host.receive_packet(tcp_packet(CPORT, 80, 1, dst=addr.from_text(dst), family=family), 0.0)
    assert host.packets_to_send(0.0) == [] and events(host) == []
    assert host.stats.forward_syn_requested == 0


def test_icmp_echo_to_any_address_is_answered_in_its_name() -> None:
    host, _listener = forward_host(4)
    peer = addr.to_text(addresses(4)[1])
    request = IP(src=peer, dst="10.9.0.2") / ICMP(type=8, id=7, seq=3) / b"ping!"
    host.receive_packet(raw(request), 0.0)
    (out,) = host.packets_to_send(0.0)
    reply = IP(bytes(out))  # type: ignore[arg-type]
    assert (reply.src, reply.dst) == ("10.9.0.2", peer)
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 7, 3)
    assert bytes(reply[ICMP].payload) == b"ping!"
    # scapy recomputes the checksum: ours must be the same
    sent = reply[ICMP].chksum
    del reply[ICMP].chksum
    assert IP(raw(reply))[ICMP].chksum == sent


def test_icmpv6_echo_to_any_address_is_answered_in_its_name() -> None:
    host, _listener = forward_host(6)
    peer = addr.to_text(addresses(6)[1])
    request = IPv6(src=peer, dst="fd00:9::2") / ICMPv6EchoRequest(id=9, seq=4, data=b"ping6")
    host.receive_packet(raw(request), 0.0)
    (out,) = host.packets_to_send(0.0)
    reply = IPv6(bytes(out))  # type: ignore[arg-type]
    assert (reply.src, reply.dst) == ("fd00:9::2", peer)
    echo = reply[ICMPv6EchoReply]
    assert (echo.id, echo.seq, bytes(echo.data)) == (9, 4, b"ping6")
    sent = echo.cksum
    del reply[ICMPv6EchoReply].cksum
    assert IPv6(raw(reply))[ICMPv6EchoReply].cksum == sent


def udp_from_peer(family: int, payload: bytes, dport: int = 53) -> bytes:
    peer = addr.to_text(addresses(family)[1])
    dst = addr.to_text(FOREIGN[family])
    ip = IP(src=peer, dst=dst) if family == 4 else IPv6(src=peer, dst=dst)
    return raw(ip / UDP(sport=5353, dport=dport) / payload)


@both_families
def test_udp_goes_to_the_relay_and_its_reply_comes_back(family: int) -> None:
    host, listener = forward_host(family)
    peer = addresses(family)[1]
    host.receive_packet(udp_from_peer(family, b"query"), 0.0)
    assert events(host) == [DatagramReceived(listener, peer, 5353, FOREIGN[family], 53, b"query")]
    assert host.packets_to_send(0.0) == []
    assert host.ip.send_udp(FOREIGN[family], 53, peer, 5353, b"answer")
    (out,) = host.packets_to_send(0.0)
    pkt = IP(bytes(out)) if family == 4 else IPv6(bytes(out))  # type: ignore[arg-type]
    assert (pkt.src, pkt.dst) == (addr.to_text(FOREIGN[family]), addr.to_text(peer))
    assert (pkt[UDP].sport, pkt[UDP].dport, bytes(pkt[UDP].payload)) == (53, 5353, b"answer")
    sent = pkt[UDP].chksum
    del pkt[UDP].chksum
    rebuilt = IP(raw(pkt)) if family == 4 else IPv6(raw(pkt))
    assert rebuilt[UDP].chksum == sent
    stats = host.stats.nonzero()
    assert stats["udp_rx"] == 1
    assert stats["forward_udp_delivered"] == 1 and stats["forward_udp_sent"] == 1


def test_udp_that_fails_its_checksum_is_counted_and_dropped() -> None:
    host, _listener = forward_host(4)
    data = bytearray(udp_from_peer(4, b"query"))
    data[-1] ^= 0xFF
    host.receive_packet(data, 0.0)
    assert events(host) == [] and host.stats.udp_bad_checksum == 1


def test_udp_without_forward_mode_is_still_an_unknown_protocol() -> None:
    host = make_host(4)
    peer = addr.to_text(addresses(4)[1])
    host.receive_packet(raw(IP(src=peer, dst="10.7.0.2") / UDP(sport=1, dport=53) / b"q"), 0.0)
    assert host.stats.ip_unknown_protocol == 1 and host.stats.udp_rx == 0


def test_a_reply_too_long_for_the_link_is_not_sent() -> None:
    host, _listener = forward_host(4)
    assert not host.ip.send_udp(FOREIGN[4], 53, addresses(4)[1], 5353, bytes(1500))
    assert host.packets_to_send(0.0) == [] and host.stats.forward_udp_too_big == 1


def test_datagrams_waiting_for_the_relay_are_bounded() -> None:
    host, _listener = forward_host(4)
    packet = udp_from_peer(4, b"x")
    for _ in range(MAX_QUEUED_DATAGRAMS + 3):
        host.receive_packet(packet, 0.0)
    assert len(events(host)) == MAX_QUEUED_DATAGRAMS
    assert host.stats.forward_udp_queue_full == 3


def test_only_one_transparent_listener() -> None:
    host, _listener = forward_host(4)
    with pytest.raises(OSError):
        host.demux.listen_transparent()
