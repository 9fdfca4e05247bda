"""The host behind a virtio-net header: checksum offload and TSO/GRO super-segments, sans-IO.

The kernel's part is played by :func:`kernel_segment`, a software GSO written from the virtio
and Linux semantics (cut the payload every ``gso_size`` bytes, copy the headers, advance the
sequence number, PSH and FIN on the last piece only, complete the checksum from ``csum_start``
into ``csum_offset``): what it makes of ustack's super-segments must be valid TCP that a host
without offload accepts.
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from ustack.stack.host import TSO_MAX, Host
from ustack.stack.isn import fixed_isn
from ustack.tcp.config import TcpConfig
from ustack.tcp.state import State
from ustack.wire import addr, checksum, ipv4, tcp, virtio

from .helpers import HOST, PEER, tcp_packet

HOST6 = addr.from_text("fd00:7::2")
PEER6 = addr.from_text("fd00:7::1")

V = virtio.HEADER_LEN


def offload_host(addr: int, **kwargs: object) -> Host:
    kwargs.setdefault("isn", fixed_isn(1000 if addr == HOST else 9000))
    return Host(addr, offload=True, **kwargs)  # type: ignore[arg-type]


def kernel_segment(packet: bytes | bytearray) -> list[bytearray]:
    """Cut one offloaded packet (virtio header + IPv4) into plain wire packets, as the kernel's
    GSO and checksum offload would."""
    hdr = virtio.parse(packet)
    ip = bytearray(packet[V:])
    ihl = (ip[0] & 0x0F) * 4
    if hdr.flags & virtio.F_NEEDS_CSUM:
        assert hdr.csum_start == ihl and hdr.csum_offset == virtio.TCP_CSUM_OFFSET
    if hdr.gso_type == virtio.GSO_NONE:
        pieces = [ip]
    else:
        assert hdr.gso_type == virtio.GSO_TCPV4 and hdr.flags & virtio.F_NEEDS_CSUM
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
            struct.pack_into("!H", p, 2, len(p))
            struct.pack_into("!H", p, 10, 0)
            struct.pack_into("!H", p, 10, checksum.internet_checksum(memoryview(p)[:ihl]))
            struct.pack_into("!I", p, ihl + 4, (seq0 + off) & 0xFFFFFFFF)
            p[ihl + 13] = flags if last else flags & ~(tcp.PSH | tcp.FIN)
            src, dst = struct.unpack_from("!II", p, 12)
            pseudo = checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, len(p) - ihl)
            struct.pack_into("!H", p, ihl + 16, pseudo)
            pieces.append(p)
    if hdr.flags & virtio.F_NEEDS_CSUM:
        for p in pieces:
            # the partial sum already in the field covers the pseudo-header (RFC 1071 folding)
            struct.pack_into("!H", p, ihl + 16, checksum.internet_checksum(memoryview(p)[ihl:]))
    for p in pieces:
        pkt = ipv4.parse(p)  # valid IPv4 ...
        tcp.parse(
            pkt.payload,
            pkt.src,
            pkt.dst,
            pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
        )  # ... and valid TCP, checksum included
    return pieces


def with_header(packet: bytes | bytearray, **fields: int) -> bytearray:
    buf = bytearray(V) + packet
    virtio.emit(buf, **fields)
    return buf


def run_transfer(size: int) -> tuple[Host, Host, bytes, bytes, list[int]]:
    """Client (offload) -> server (offload): the server's listener reads everything. Returns
    both hosts, what was sent, what arrived, and the payload length of every client packet."""
    client = offload_host(PEER)
    server = offload_host(HOST)
    listener = server.listen(80)
    now = 0.0
    conn = client.connect(HOST, 80, now)
    data = os.urandom(size)
    sent = 0
    got = bytearray()
    accepted = None
    lengths: list[int] = []
    for _ in range(20000):
        if conn.state is State.ESTABLISHED and sent < size:
            sent += conn.send(data[sent : sent + (1 << 20)])
        for p in client.packets_to_send(now):
            pkt = ipv4.parse(memoryview(p)[V:])
            lengths.append(
                len(
                    tcp.parse(
                        pkt.payload,
                        pkt.src,
                        pkt.dst,
                        pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
                        verify_checksum=False,
                    ).payload
                )
            )
            server.receive_packet(p, now)
        if accepted is None:
            accepted = listener.accept()
        if accepted is not None:
            got += accepted.read()
        for p in server.packets_to_send(now):
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


def test_tso_transfer_between_offload_hosts_sends_super_segments() -> None:
    size = 3_000_000
    client, server, data, got, lengths = run_transfer(size)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    mss = client.config.mss
    big = [n for n in lengths if n > mss]
    assert big, "no super-segment was sent"
    assert max(lengths) <= TSO_MAX
    # far fewer packets than MSS-sized segments would take
    assert len([n for n in lengths if n]) < size / mss / 4
    assert client.stats.offload_tx_super == len(big)
    assert server.stats.offload_rx_super == len(big)
    assert server.stats.offload_rx_csum_trusted == server.stats.ip_rx
    assert server.stats.tcp_bad_checksum == 0


def test_super_segments_cut_like_the_kernel_are_valid_tcp_for_a_plain_host() -> None:
    """ustack's TSO output, cut by a software GSO, is what a host without offload accepts."""
    sender = offload_host(PEER)
    plain = Host(HOST, isn=fixed_isn(1000), config=TcpConfig())
    listener = plain.listen(80)
    now = 0.0
    conn = sender.connect(HOST, 80, now)
    data = os.urandom(400_000)
    sent = 0
    got = bytearray()
    accepted = None
    supers = 0
    for _ in range(5000):
        if conn.state is State.ESTABLISHED and sent < len(data):
            sent += conn.send(data[sent:])
        for p in sender.packets_to_send(now):
            supers += virtio.parse(p).gso_type != virtio.GSO_NONE
            for piece in kernel_segment(p):
                plain.receive_packet(piece, now)
        accepted = accepted or listener.accept()
        if accepted is not None:
            got += accepted.read()
        for p in plain.packets_to_send(now):
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


def test_every_offloaded_tcp_packet_leaves_the_checksum_to_the_kernel() -> None:
    host = offload_host(HOST)
    host.listen(80)
    host.receive_packet(with_header(tcp_packet(40000, 80, 7)), 0.0)
    (p,) = host.packets_to_send(0.0)
    hdr = virtio.parse(p)
    assert hdr == virtio.VirtioNetHdr(virtio.F_NEEDS_CSUM, virtio.GSO_NONE, 0, 0, 20, 16)
    pkt = ipv4.parse(memoryview(p)[V:])
    field = struct.unpack_from("!H", pkt.payload, 16)[0]
    assert field == checksum.ipv4_pseudo_header_sum(HOST, PEER, tcp.PROTO, len(pkt.payload))
    seg = tcp.parse(
        kernel_segment(p)[0][20:],
        HOST,
        PEER,
        pseudo=checksum.ipv4_pseudo_header_sum(HOST, PEER, tcp.PROTO, 0),
    )
    assert seg.control is tcp.Control.SYN and seg.has_ack


def test_needs_csum_packet_with_only_the_pseudo_header_sum_is_accepted() -> None:
    host = offload_host(HOST)
    host.listen(80)
    syn = tcp_packet(40000, 80, 7)
    struct.pack_into(
        "!H", syn, 36, checksum.ipv4_pseudo_header_sum(PEER, HOST, tcp.PROTO, len(syn) - 20)
    )
    host.receive_packet(
        with_header(syn, flags=virtio.F_NEEDS_CSUM, csum_start=20, csum_offset=16), 0.0
    )
    assert host.stats.tcp_bad_checksum == 0
    assert host.stats.listen_syn == 1
    assert host.stats.offload_rx_csum_trusted == 1


def test_unvouched_packet_with_a_bad_checksum_is_still_dropped() -> None:
    host = offload_host(HOST)
    host.listen(80)
    syn = tcp_packet(40000, 80, 7)
    syn[36] ^= 0xFF
    host.receive_packet(with_header(syn), 0.0)
    assert host.stats.tcp_bad_checksum == 1
    assert host.stats.listen_syn == 0
    assert host.packets_to_send(0.0) == []


def test_gro_super_segment_in_is_taken_whole() -> None:
    host = offload_host(HOST)
    listener = host.listen(80)
    host.receive_packet(with_header(tcp_packet(40000, 80, 7)), 0.0)
    (synack,) = host.packets_to_send(0.0)
    iss = struct.unpack_from("!I", synack, V + 24)[0]
    ack = tcp_packet(40000, 80, 8, iss + 1, tcp.ACK)
    host.receive_packet(with_header(ack), 0.0)
    conn = listener.accept()
    assert conn is not None
    payload = os.urandom(60_000)
    big = tcp_packet(40000, 80, 8, iss + 1, tcp.ACK | tcp.PSH, payload=payload)
    host.receive_packet(
        with_header(
            big,
            flags=virtio.F_DATA_VALID,
            gso_type=virtio.GSO_TCPV4,
            hdr_len=40,
            gso_size=1460,
        ),
        0.0,
    )
    assert conn.read() == payload
    assert host.stats.offload_rx_super == 1


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
    peer, host = (PEER, HOST) if family == 4 else (PEER6, HOST6)
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
            for p in server.packets_to_send(now):
                client.receive_packet(p, now)
            now += 0.001
        outs.append((packets, pieces))
    (plain, none), (gathered, some) = outs
    assert none == 0 and some > 0
    assert gathered == plain
