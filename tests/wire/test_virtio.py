"""The virtio-net header: hand-checked vectors, truncation, round trips, random input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ustack.wire import virtio
from ustack.wire.errors import ParseError

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)

# (fields, bytes): little-endian u8 flags, u8 gso_type, then four u16 (virtio 1.2, 5.1.6).
VECTORS = [
    # ustack sending TSO: NEEDS_CSUM, TCPv4, 20+32 header bytes, MSS 1448, TCP at 20, csum at +16.
    (
        virtio.VirtioNetHdr(1, 1, 52, 1448, 20, 16),
        b"\x01\x01\x34\x00\xa8\x05\x14\x00\x10\x00",
    ),
    # What Linux 6.18 wrote into a TUN fd for a 10-segment GRO super-segment (MSS 1460, no options).
    (
        virtio.VirtioNetHdr(1, 1, 40, 1460, 20, 16),
        b"\x01\x01\x28\x00\xb4\x05\x14\x00\x10\x00",
    ),
    # A plain packet: all zero.
    (virtio.NO_OFFLOAD, b"\x00" * 10),
    # Checked already, TCPv6 with ECN: DATA_VALID=2, gso_type 4|0x80.
    (
        virtio.VirtioNetHdr(2, 0x84, 0x0102, 0x0304, 0x0506, 0x0708),
        b"\x02\x84\x02\x01\x04\x03\x06\x05\x08\x07",
    ),
]


@pytest.mark.parametrize(("fields", "raw"), VECTORS)
def test_parse_and_emit_match_hand_checked_bytes(fields: virtio.VirtioNetHdr, raw: bytes) -> None:
    assert virtio.parse(raw) == fields
    buf = bytearray(b"\xee" * 14)
    virtio.emit(buf, 2, **fields._asdict())
    assert buf == b"\xee\xee" + raw + b"\xee\xee"  # exactly ten bytes written, at the offset


def test_parse_ignores_what_follows_the_header() -> None:
    raw = VECTORS[0][1] + b"\x45\x00" + b"x" * 100
    assert virtio.parse(memoryview(raw)) == VECTORS[0][0]
    assert virtio.HEADER_LEN == 10


@pytest.mark.parametrize("size", range(virtio.HEADER_LEN))
def test_truncated_header_is_a_parse_error(size: int) -> None:
    with pytest.raises(ParseError) as info:
        virtio.parse(b"\x01" * size)
    assert str(info.value) == "virtio_truncated"


def test_emit_into_too_small_a_buffer_raises() -> None:
    import struct

    with pytest.raises(struct.error):
        virtio.emit(bytearray(12), 3, flags=1)


@pytest.mark.parametrize(
    ("flags", "trusted"),
    [(0, False), (virtio.F_NEEDS_CSUM, True), (virtio.F_DATA_VALID, True), (3, True), (4, False)],
)
def test_checksum_trusted_follows_the_two_flags(flags: int, trusted: bool) -> None:
    assert virtio.VirtioNetHdr(flags, 0, 0, 0, 0, 0).checksum_trusted is trusted


@given(u8, u8, u16, u16, u16, u16)
def test_emit_then_parse_round_trips(
    flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int
) -> None:
    fields = virtio.VirtioNetHdr(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    buf = bytearray(virtio.HEADER_LEN)
    virtio.emit(buf, **fields._asdict())
    assert virtio.parse(buf) == fields


@given(st.binary(max_size=40))
def test_random_bytes_parse_or_raise_only_the_parse_error(data: bytes) -> None:
    try:
        hdr = virtio.parse(data)
    except ParseError:
        assert len(data) < virtio.HEADER_LEN
        return
    buf = bytearray(virtio.HEADER_LEN)
    virtio.emit(buf, **hdr._asdict())
    assert bytes(buf) == data[: virtio.HEADER_LEN]


@pytest.mark.parametrize(
    ("flags", "gso_type"),
    [
        (0, virtio.GSO_NONE),
        (virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4),
        (virtio.F_DATA_VALID, 0),
        (0, virtio.GSO_TCPV6),
    ],
)
def test_rx_flags_read_what_parse_reads(flags: int, gso_type: int) -> None:
    buf = bytearray(virtio.HEADER_LEN + 4)
    virtio.emit(buf, flags=flags, gso_type=gso_type, gso_size=1448)
    hdr = virtio.parse(buf)
    assert virtio.rx_flags(buf) == (hdr.checksum_trusted, hdr.gso_type != virtio.GSO_NONE)
    with pytest.raises(ParseError, match="virtio_truncated"):
        virtio.rx_flags(buf[: virtio.HEADER_LEN - 1])
