"""Links whose frames carry the virtio-net header (TUN offloads): sizes, counters, wrappers.

An ``FdLink`` over a SEQPACKET socket pair stands in for a TUN fd opened with ``IFF_VNET_HDR``:
both keep frame boundaries, and the link code is the same.
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from ustack.link.base import MTU_MAX, FdLink, Link
from ustack.link.faulty import FaultyLink
from ustack.link.pair import LinkPair
from ustack.link.pcap import PcapTap, PcapWriter
from ustack.wire import virtio

from .packets import echo

HDR = virtio.HEADER_LEN
PING = echo("10.7.0.1", "10.7.0.2", payload=b"offload")


def with_header(packet: bytes, **fields: int) -> bytes:
    buf = bytearray(HDR)
    virtio.emit(buf, **fields)
    return bytes(buf) + packet


@pytest.fixture
def pair() -> Iterator[tuple[FdLink, FdLink]]:
    """Two header-carrying links back to back, room for several 64 KB frames in flight."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    links = []
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        links.append(FdLink(sock.detach(), 1500, header_len=HDR))
    yield links[0], links[1]
    for link in links:
        link.close()


def test_plain_links_say_they_carry_no_header() -> None:
    a, b = LinkPair.create()
    try:
        assert (a.header_len, a.offload) == (0, False)
        assert isinstance(a, Link)
    finally:
        a.close()
        b.close()


def test_a_64_kb_super_segment_crosses_whatever_the_mtu(pair: tuple[FdLink, FdLink]) -> None:
    a, b = pair
    assert (a.header_len, a.offload, a.mtu) == (HDR, True, 1500)
    biggest = b"\x01" * (HDR + MTU_MAX)
    small = with_header(PING)
    a.write_batch([biggest, small], now=0.0)
    assert b.read_batch(0.0, 8) == [biggest, small]
    # The byte counters count IP bytes: the header is link framing.
    assert (a.stats.tx_packets, a.stats.tx_bytes) == (2, MTU_MAX + len(PING))
    assert (b.stats.rx_packets, b.stats.rx_bytes) == (2, MTU_MAX + len(PING))
    assert a.stats.tx_dropped == b.stats.rx_dropped == 0


def test_frames_too_long_or_without_a_packet_are_counted_drops(
    pair: tuple[FdLink, FdLink],
) -> None:
    a, b = pair
    a.write(b"\x01" * (HDR + MTU_MAX + 1), now=0.0)
    a.write(b"\x00" * HDR, now=0.0)  # a header and nothing behind it
    assert (a.stats.tx_oversize, a.stats.tx_error, a.stats.tx_dropped) == (1, 1, 2)
    assert a.stats.tx_packets == 0
    assert b.read_batch(0.0, 8) == []
    # Something too long arriving (a misbehaving writer) is dropped on read, not truncated.
    os.write(a.fileno(), b"\x02" * (HDR + MTU_MAX + 1))
    os.write(a.fileno(), with_header(PING))
    assert b.read_batch(0.0, 8) == [with_header(PING)]
    assert (b.stats.rx_oversize, b.stats.rx_dropped, b.stats.rx_packets) == (1, 1, 1)


def test_pcap_tap_records_the_ip_packet_behind_the_header(
    pair: tuple[FdLink, FdLink], tmp_path: Path
) -> None:
    a, b = pair
    path = tmp_path / "offload.pcap"
    tap = PcapTap(a, PcapWriter(path))
    assert (tap.header_len, tap.offload) == (HDR, True)
    out = with_header(PING, flags=virtio.F_NEEDS_CSUM, csum_start=20, csum_offset=16)
    tap.write(out, now=0.0)
    tap.write_batch([out], now=0.0)
    assert b.read_batch(0.0, 8) == [out, out]  # the inner link still carries the header
    reply = with_header(echo("10.7.0.2", "10.7.0.1", type=0, payload=b"offload"))
    b.write(reply, now=0.0)
    assert tap.read_batch(0.0, 8) == [reply]  # and so does what the host reads
    tap.close()
    assert [bytes(p) for p in rdpcap(str(path))] == [PING, PING, reply[HDR:]]


def test_pcap_tap_over_a_plain_link_records_the_packets_unchanged(tmp_path: Path) -> None:
    a, b = LinkPair.create()
    path = tmp_path / "plain.pcap"
    tap = PcapTap(a, PcapWriter(path))
    assert (tap.header_len, tap.offload) == (0, False)
    tap.write(PING, now=0.0)
    tap.close()
    b.close()
    assert [bytes(p) for p in rdpcap(str(path))] == [PING]


def test_fault_injector_refuses_a_header_carrying_link(pair: tuple[FdLink, FdLink]) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match="fault injection works per wire packet"):
        FaultyLink(a)
    a2, b2 = LinkPair.create()
    try:
        faulty = FaultyLink(a2)
        assert (faulty.header_len, faulty.offload) == (0, False)
        # A tap over the injector forwards what the injector says.
        with PcapWriter(io.BytesIO()) as writer:
            assert PcapTap(faulty, writer).header_len == 0
    finally:
        a2.close()
        b2.close()


def test_a_gathered_packet_is_written_whole_with_one_writev(
    pair: tuple[FdLink, FdLink], tmp_path: Path
) -> None:
    """What a host with ``scatter`` hands over: headers and payload apart, one frame out."""
    a, b = pair
    assert a.gather
    head = with_header(PING[:28])
    body = memoryview(bytes(range(256)) * 200)[5:50_005]
    a.write((head, body), now=0.0)
    a.write_batch([(head, body), with_header(PING)], now=0.0)
    got = b.read_batch(0.0, 8)
    assert got == [head + bytes(body), head + bytes(body), with_header(PING)]
    assert a.stats.tx_packets == 3
    assert a.stats.tx_bytes == 2 * (len(head) + len(body) - HDR) + len(PING)
    # a pcap tap passes the pieces through and records the packet whole
    path = tmp_path / "gathered.pcap"
    tap = PcapTap(a, PcapWriter(path))
    assert tap.gather
    tap.write_batch([(head, body)], now=0.0)
    tap.close()
    assert [bytes(p) for p in rdpcap(str(path))] == [(head + bytes(body))[HDR:]]
    assert b.read_batch(0.0, 8) == [head + bytes(body)]
