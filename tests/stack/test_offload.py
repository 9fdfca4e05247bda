"""The host behind a virtio-net header: checksum offload and TSO/GRO super-segments, sans-IO.

The kernel's part is played by :func:`kernel_segment`, a software GSO written from the virtio
and Linux semantics (cut the payload every ``gso_size`` bytes, copy the headers, advance the
sequence number, PSH and FIN on the last piece only, complete the checksum from ``csum_start``
into ``csum_offset``): what it makes of ustack's super-segments must be valid TCP that a host
without offload accepts. Everything TCP does here is checked over IPv4 (``GSO_TCPV4``) and IPv6
(``GSO_TCPV6``, the TUN_F_TSO6 offload).
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from ustack.stack.host import TSO_MAX, TSO_MAX6, Host, OutPacket
from ustack.stack.isn import fixed_isn
from ustack.tcp.config import TcpConfig
from ustack.tcp.state import State
from ustack.wire import addr, checksum, ipv4, ipv6, tcp, virtio
from ustack.wire.tcp import TcpSegment

from .helpers import HOST, HOST6, IP_HEADER_LEN, addresses, config_of, mss, tcp_packet

V = virtio.HEADER_LEN
GSO_TCP = {4: virtio.GSO_TCPV4, 6: virtio.GSO_TCPV6}  # the gso_type of a TCP super-segment
MAX_SUPER = {4: TSO_MAX, 6: TSO_MAX6}  # the longest payload one may carry


def whole(packets: list[OutPacket]) -> list[bytearray]:
    """The host's output when it hands nothing over in pieces (no ``scatter``)."""
    out = [p for p in packets if not isinstance(p, tuple)]
    assert len(out) == len(packets)
    return out


def offload_host(addr: int, **kwargs: object) -> Host:
    kwargs.setdefault("isn", fixed_isn(1000 if addr in (HOST, HOST6) else 9000))
    return Host(addr, offload=True, **kwargs)  # type: ignore[arg-type]


def parse_tcp(packet: bytes | bytearray | memoryview, *, verify: bool = True) -> TcpSegment:
    """The TCP segment in a plain IP packet of either family (no virtio header)."""
    mv = memoryview(packet)
    if mv[0] >> 4 == 4:
        pkt = ipv4.parse(mv)
        src, dst = pkt.src, pkt.dst
        pseudo = checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, 0)
    else:
        pkt6 = ipv6.parse(mv)
        assert pkt6.proto == ipv6.PROTO_TCP
        src, dst = addr.tag6(pkt6.src), addr.tag6(pkt6.dst)
        pseudo = ipv6.pseudo_header_sum(pkt6.src, pkt6.dst, ipv6.PROTO_TCP, 0)
        pkt = pkt6  # type: ignore[assignment]
    return tcp.parse(pkt.payload, src, dst, pseudo=pseudo, verify_checksum=verify)


def pseudo_sum(packet: bytes | bytearray | memoryview, length: int) -> int:
    """The pseudo-header's partial sum of a plain IP packet (either family) for a TCP segment of
    ``length`` octets: what NEEDS_CSUM leaves in the checksum field for the kernel to finish."""
    if packet[0] >> 4 == 4:
        src, dst = struct.unpack_from("!II", packet, 12)
        return checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, length)
    src6 = int.from_bytes(packet[8:24], "big")
    dst6 = int.from_bytes(packet[24:40], "big")
    return ipv6.pseudo_header_sum(src6, dst6, ipv6.PROTO_TCP, length)


def kernel_segment(packet: bytes | bytearray) -> list[bytearray]:
    """Cut one offloaded packet (virtio header + IPv4 or IPv6) into plain wire packets, as the
    kernel's GSO and checksum offload would."""
    hdr = virtio.parse(packet)
    ip = bytearray(packet[V:])
    family = ip[0] >> 4
    # IPv4: the IHL; IPv6: the fixed header (ustack sends no extension headers)
    ihl = (ip[0] & 0x0F) * 4 if family == 4 else ipv6.HEADER_LEN
    if hdr.flags & virtio.F_NEEDS_CSUM:
        assert hdr.csum_start == ihl and hdr.csum_offset == virtio.TCP_CSUM_OFFSET
    if hdr.gso_type == virtio.GSO_NONE:
        pieces = [ip]
    else:
        assert hdr.gso_type == GSO_TCP[family] and hdr.flags & virtio.F_NEEDS_CSUM
        head = hdr.hdr_len
        thl = (ip[ihl + 12] >> 4) * 4
        assert head == ihl + thl
        payload = ip[head:]
        assert len(payload) > hdr.gso_size
        seq0 = struct.unpack_from("!I", ip, ihl + 4)[0]
        flags = ip[ihl + 13]
        pieces = []
        for off in range(0, len(payload), hdr.gso_size):
            chunk = payload[off : off + hdr.gso_size]
            last = off + hdr.gso_size >= len(payload)
            p = bytearray(ip[:head]) + chunk
            if family == 4:
                # Total Length, and the header checksum over it
                struct.pack_into("!H", p, 2, len(p))
                struct.pack_into("!H", p, 10, 0)
                struct.pack_into("!H", p, 10, checksum.internet_checksum(memoryview(p)[:ihl]))
            else:
                struct.pack_into("!H", p, 4, len(p) - ihl)  # Payload Length; no header checksum
            struct.pack_into("!I", p, ihl + 4, (seq0 + off) & 0xFFFFFFFF)
            p[ihl + 13] = flags if last else flags & ~(tcp.PSH | tcp.FIN)
            struct.pack_into("!H", p, ihl + 16, pseudo_sum(p, len(p) - ihl))
            pieces.append(p)
    if hdr.flags & virtio.F_NEEDS_CSUM:
        for p in pieces:
            # the partial sum already in the field covers the pseudo-header (RFC 1071 folding)
            struct.pack_into("!H", p, ihl + 16, checksum.internet_checksum(memoryview(p)[ihl:]))
    for p in pieces:
        parse_tcp(p)  # valid IP and valid TCP, checksum included
    return pieces


def with_header(packet: bytes | bytearray, **fields: int) -> bytearray:
    buf = bytearray(V) + packet
    virtio.emit(buf, **fields)
    return buf


def run_transfer(size: int, family: int) -> tuple[Host, Host, bytes, bytes, list[int]]:
    """Client (offload) -> server (offload): the server's listener reads everything. Returns
    both hosts, what was sent, what arrived, and the payload length of every client packet."""
    host, peer = addresses(family)
    client = offload_host(peer)
    server = offload_host(host)
    listener = server.listen(80)
    now = 0.0
    conn = client.connect(host, 80, now)
    data = os.urandom(size)
    sent = 0
    got = bytearray()
    accepted = None
    lengths: list[int] = []
    for _ in range(20000):
        if conn.state is State.ESTABLISHED and sent < size:
            sent += conn.send(data[sent : sent + (1 << 20)])
        for p in whole(client.packets_to_send(now)):
            assert virtio.parse(p).gso_type in (virtio.GSO_NONE, GSO_TCP[family])
            lengths.append(len(parse_tcp(memoryview(p)[V:], verify=False).payload))
            server.receive_packet(p, now)
        if accepted is None:
            accepted = listener.accept()
        if accepted is not None:
            got += accepted.read()
        for p in whole(server.packets_to_send(now)):
            client.receive_packet(p, now)
        if len(got) == size:
            break
        deadline = min(
            (d for d in (client.next_deadline(), server.next_deadline()) if d is not None),
            default=None,
        )
        if not any(client.demux.want_output) and not any(server.demux.want_output) and deadline:
            now = max(now, deadline)
            client.on_deadline(now)
            server.on_deadline(now)
    return client, server, data, bytes(got), lengths


@pytest.mark.parametrize("family", [4, 6])
def test_tso_transfer_between_offload_hosts_sends_super_segments(family: int) -> None:
    size = 3_000_000
    client, server, data, got, lengths = run_transfer(size, family)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    one = config_of(client, family).mss
    assert one == mss(family)  # MTU - 40 or MTU - 60
    big = [n for n in lengths if n > one]
    assert big, "no super-segment was sent"
    assert max(lengths) <= MAX_SUPER[family]
    # far fewer packets than MSS-sized segments would take
    assert len([n for n in lengths if n]) < size / one / 4
    assert client.stats.offload_tx_super == len(big)
    assert server.stats.offload_rx_super == len(big)
    assert server.stats.offload_rx_csum_trusted == server.stats.ip_rx
    assert server.stats.tcp_bad_checksum == 0


@pytest.mark.parametrize("family", [4, 6])
def test_super_segments_cut_like_the_kernel_are_valid_tcp_for_a_plain_host(family: int) -> None:
    """ustack's TSO output, cut by a software GSO, is what a host without offload accepts."""
    host, peer = addresses(family)
    sender = offload_host(peer)
    plain = Host(host, isn=fixed_isn(1000), config=TcpConfig())
    listener = plain.listen(80)
    now = 0.0
    conn = sender.connect(host, 80, now)
    data = os.urandom(400_000)
    sent = 0
    got = bytearray()
    accepted = None
    supers = 0
    for _ in range(5000):
        if conn.state is State.ESTABLISHED and sent < len(data):
            sent += conn.send(data[sent:])
        for p in whole(sender.packets_to_send(now)):
            gso_type = virtio.parse(p).gso_type
            assert gso_type in (virtio.GSO_NONE, GSO_TCP[family])
            supers += gso_type != virtio.GSO_NONE
            for piece in kernel_segment(p):
                plain.receive_packet(piece, now)
        accepted = accepted or listener.accept()
        if accepted is not None:
            got += accepted.read()
        for p in whole(plain.packets_to_send(now)):
            sender.receive_packet(with_header(p), now)
        if len(got) == len(data):
            break
        now += 0.001
        for h in (sender, plain):
            d = h.next_deadline()
            if d is not None and d <= now:
                h.on_deadline(now)
    assert bytes(got) == data
    assert supers > 0
    assert plain.stats.tcp_bad_checksum == 0
    # a plain host's packets (full checksums, flags 0) were verified, not trusted
    assert sender.stats.offload_rx_csum_trusted == 0


@pytest.mark.parametrize("family", [4, 6])
def test_every_offloaded_tcp_packet_leaves_the_checksum_to_the_kernel(family: int) -> None:
    ip_len = IP_HEADER_LEN[family]
    h = offload_host(addresses(family)[0])
    h.listen(80)
    h.receive_packet(with_header(tcp_packet(40000, 80, 7, family=family)), 0.0)
    (p,) = whole(h.packets_to_send(0.0))
    hdr = virtio.parse(p)
    assert hdr == virtio.VirtioNetHdr(virtio.F_NEEDS_CSUM, virtio.GSO_NONE, 0, 0, ip_len, 16)
    ip = memoryview(p)[V:]
    field = struct.unpack_from("!H", ip, ip_len + 16)[0]
    assert field == pseudo_sum(ip, len(ip) - ip_len)
    seg = parse_tcp(kernel_segment(p)[0])
    assert seg.control is tcp.Control.SYN and seg.has_ack


@pytest.mark.parametrize("family", [4, 6])
def test_needs_csum_packet_with_only_the_pseudo_header_sum_is_accepted(family: int) -> None:
    ip_len = IP_HEADER_LEN[family]
    h = offload_host(addresses(family)[0])
    h.listen(80)
    syn = tcp_packet(40000, 80, 7, family=family)
    struct.pack_into("!H", syn, ip_len + 16, pseudo_sum(syn, len(syn) - ip_len))
    h.receive_packet(
        with_header(syn, flags=virtio.F_NEEDS_CSUM, csum_start=ip_len, csum_offset=16), 0.0
    )
    assert h.stats.tcp_bad_checksum == 0
    assert h.stats.listen_syn == 1
    assert h.stats.offload_rx_csum_trusted == 1


@pytest.mark.parametrize("family", [4, 6])
def test_unvouched_packet_with_a_bad_checksum_is_still_dropped(family: int) -> None:
    h = offload_host(addresses(family)[0])
    h.listen(80)
    syn = tcp_packet(40000, 80, 7, family=family)
    syn[IP_HEADER_LEN[family] + 16] ^= 0xFF
    h.receive_packet(with_header(syn), 0.0)
    assert h.stats.tcp_bad_checksum == 1
    assert h.stats.listen_syn == 0
    assert h.packets_to_send(0.0) == []


@pytest.mark.parametrize("family", [4, 6])
def test_gro_super_segment_in_is_taken_whole(family: int) -> None:
    ip_len = IP_HEADER_LEN[family]
    h = offload_host(addresses(family)[0])
    listener = h.listen(80)
    h.receive_packet(with_header(tcp_packet(40000, 80, 7, family=family)), 0.0)
    (synack,) = whole(h.packets_to_send(0.0))
    iss = struct.unpack_from("!I", synack, V + ip_len + 4)[0]
    ack = tcp_packet(40000, 80, 8, iss + 1, tcp.ACK, family=family)
    h.receive_packet(with_header(ack), 0.0)
    conn = listener.accept()
    assert conn is not None
    payload = os.urandom(60_000)
    big = tcp_packet(40000, 80, 8, iss + 1, tcp.ACK | tcp.PSH, payload=payload, family=family)
    h.receive_packet(
        with_header(
            big,
            flags=virtio.F_DATA_VALID,
            gso_type=GSO_TCP[family],
            hdr_len=ip_len + 20,
            gso_size=mss(family),
        ),
        0.0,
    )
    assert conn.read() == payload
    assert h.stats.offload_rx_super == 1


def test_truncated_virtio_header_is_counted() -> None:
    host = offload_host(HOST)
    host.receive_packet(b"\x01\x02\x03", 0.0)
    assert host.stats.offload_malformed == 1
    assert host.stats.host_internal_error == 0


@pytest.mark.parametrize("family", [4, 6])
def test_scatter_hands_super_segments_over_in_pieces_that_join_to_the_same_packet(
    family: int,
) -> None:
    """``scatter`` (for links that write with writev) changes how a super-segment is handed
    over, not what goes out: joined, every packet is byte for byte the contiguous one -- over
    IPv4 and over IPv6."""
    host, peer = addresses(family)
    outs = []
    for scatter in (False, True):
        client = Host(peer, offload=True, scatter=scatter, isn=fixed_isn(9000))
        server = Host(host, offload=True, isn=fixed_isn(1000))
        server.listen(80)
        now = 0.0
        conn = client.connect(host, 80, now)
        packets: list[bytes] = []
        pieces = 0
        for _ in range(40):
            if conn.state is State.ESTABLISHED:
                conn.send(b"z" * 100_000)
            for p in client.packets_to_send(now):
                if isinstance(p, tuple):
                    pieces += 1
                    assert len(p[1]) > client.config.mss  # only super-segments go in pieces
                    p = p[0] + bytes(p[1])
                packets.append(bytes(p))
                server.receive_packet(p, now)
            for p in whole(server.packets_to_send(now)):
                client.receive_packet(p, now)
            now += 0.001
        outs.append((packets, pieces))
    (plain, none), (gathered, some) = outs
    assert none == 0 and some > 0
    assert gathered == plain
