"""The IPv6 fast paths of wire/tcp.py proven equal to the general path (DESIGN rule 16):
``emit_ipv6`` writes what ``ipv6.emit`` + ``tcp.emit`` write, ``parse_ipv6`` reads what
``ipv6.parse`` + ``tcp.parse`` read (or declines, and never accepts what they refuse), and
``cut_ipv6`` cuts the pieces that emitting each piece alone gives; scapy checks the checksums."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from ustack.wire import addr, ipv6, tcp
from ustack.wire.errors import ParseError
from ustack.wire.tcp import TcpOptions

SRC = addr.untag(addr.from_text("fd00:7::2"))
DST = addr.untag(addr.from_text("2001:db8:ffff::1"))
OPTIONS = [
    b"",
    tcp.encode_options(TcpOptions(timestamps=(1, 2))),
    tcp.encode_options(TcpOptions(mss=1440, wscale=7, sack_permitted=True, timestamps=(5, 0))),
    tcp.encode_options(TcpOptions(timestamps=(9, 8), sack_blocks=((100, 200), (300, 400)))),
]


def head(
    src: int = SRC, dst: int = DST, *, flow_label: int = 0, hop_limit: int = 64, plen: int = 0
) -> bytes:
    buf = bytearray(ipv6.HEADER_LEN)
    ipv6.emit(
        buf,
        0,
        src=src,
        dst=dst,
        next_header=ipv6.PROTO_TCP,
        payload_len=plen,
        hop_limit=hop_limit,
        flow_label=flow_label,
    )
    return bytes(buf)


def slow(
    src: int,
    dst: int,
    flow_label: int,
    hop_limit: int,
    fields: dict[str, Any],
    options: bytes,
    payload: bytes,
    partial: bool,
) -> bytearray:
    """The general path: the IPv6 header, then tcp.emit with the RFC 8200 8.1 pseudo-sum."""
    length = tcp.HEADER_LEN + len(options) + len(payload)
    buf = bytearray(head(src, dst, flow_label=flow_label, hop_limit=hop_limit, plen=length))
    buf += bytes(length)
    tcp.emit(
        buf,
        ipv6.HEADER_LEN,
        pseudo=ipv6.pseudo_header_sum(src, dst, ipv6.PROTO_TCP, 0),
        options=options,
        payload=payload,
        partial_checksum=partial,
        **fields,
    )
    return buf


addresses = st.integers(1, 2**128 - 1)
tcp_fields = st.fixed_dictionaries(
    {
        "src_port": st.integers(0, 65535),
        "dst_port": st.integers(0, 65535),
        "seq": st.integers(0, 2**32 - 1),
        "ack": st.integers(0, 2**32 - 1),
        "flags": st.integers(0, 0xFF),
        "window": st.integers(0, 65535),
    }
)


@given(
    src=addresses,
    dst=addresses,
    flow_label=st.integers(0, ipv6.FLOW_LABEL_MASK),
    hop_limit=st.integers(0, 255),
    fields=tcp_fields,
    options=st.sampled_from(OPTIONS),
    payload=st.binary(max_size=300),
    partial=st.booleans(),
    plen_in_head=st.integers(0, 65535),
)
def test_emit_ipv6_writes_what_the_two_emitters_write(
    src: int,
    dst: int,
    flow_label: int,
    hop_limit: int,
    fields: dict[str, Any],
    options: bytes,
    payload: bytes,
    partial: bool,
    plen_in_head: int,
) -> None:
    want = slow(src, dst, flow_label, hop_limit, fields, options, payload, partial)
    got = bytearray(3 + len(want))
    template = head(src, dst, flow_label=flow_label, hop_limit=hop_limit, plen=plen_in_head)
    n = tcp.emit_ipv6(
        got, 3, template, options=options, payload=payload, partial_checksum=partial, **fields
    )
    assert n == len(want)
    assert got[3:] == want
    assert got[:3] == b"\0\0\0"
    if not partial:
        oracle = IPv6(bytes(want))
        sent = oracle[TCP].chksum
        del oracle[TCP].chksum
        assert IPv6(bytes(oracle))[TCP].chksum == sent


def test_emit_ipv6_headers_only_and_its_refusals() -> None:
    payload = bytes(range(256)) * 4
    fields: dict[str, Any] = dict(src_port=1, dst_port=2, seq=3, ack=4, flags=tcp.ACK, window=5)
    whole = bytearray(60 + len(payload))
    tcp.emit_ipv6(whole, 0, head(), options=b"", payload=payload, partial_checksum=True, **fields)
    headers = bytearray(60)
    n = tcp.emit_ipv6(
        headers,
        0,
        head(),
        options=b"",
        payload=payload,
        partial_checksum=True,
        headers_only=True,
        **fields,
    )
    assert n == 60 and headers + payload == whole
    with pytest.raises(ValueError, match="gathered write"):
        tcp.emit_ipv6(headers, 0, head(), options=b"", payload=payload, headers_only=True, **fields)
    with pytest.raises(ValueError, match="buffer too small"):
        tcp.emit_ipv6(bytearray(59), 0, head(), options=b"", payload=b"", **fields)
    with pytest.raises(ValueError, match="40 octets"):
        tcp.emit_ipv6(whole, 0, head()[:20], options=b"", payload=b"", **fields)
    with pytest.raises(ValueError, match="at most 65535"):
        tcp.emit_ipv6(bytearray(70_000), 0, head(), options=b"", payload=bytes(65_516), **fields)


def general(buf: bytes) -> tcp.TcpSegment | None:
    """What the general path makes of ``buf``: a segment only for a packet without extension
    headers carrying TCP (the fast path's domain), None when it refuses the packet."""
    try:
        pkt = ipv6.parse(buf)
        if pkt.proto != ipv6.PROTO_TCP or pkt.ext_headers:
            return None
        return tcp.parse(
            pkt.payload,
            pkt.src | addr.V6,
            pkt.dst | addr.V6,
            pseudo=ipv6.pseudo_header_sum(pkt.src, pkt.dst, ipv6.PROTO_TCP, 0),
        )
    except ParseError:
        return None


def same(a: tcp.TcpSegment, b: tcp.TcpSegment) -> None:
    for name in (
        "src_port",
        "dst_port",
        "seq",
        "ack",
        "flags",
        "control",
        "has_ack",
        "window",
        "urgent",
        "options",
        "header_length",
        "src",
        "dst",
    ):
        assert getattr(a, name) == getattr(b, name), name
    assert bytes(a.payload) == bytes(b.payload)


@given(
    src=addresses,
    dst=addresses,
    fields=tcp_fields.filter(lambda f: f["flags"] & 0x07 not in (3, 5, 6, 7)),
    options=st.sampled_from(OPTIONS),
    payload=st.binary(max_size=100),
    trailer=st.binary(max_size=8),
    as_view=st.booleans(),
)
def test_parse_ipv6_reads_a_well_formed_packet_as_the_general_path_does(
    src: int,
    dst: int,
    fields: dict[str, Any],
    options: bytes,
    payload: bytes,
    trailer: bytes,
    as_view: bool,
) -> None:
    packet = bytes(slow(src, dst, 0, 64, fields, options, payload, False)) + trailer
    want = general(packet)
    assert want is not None
    got = tcp.parse_ipv6(memoryview(packet) if as_view else packet)
    assert got is not None
    same(got, want)
    assert got.src == src | addr.V6 and got.dst == dst | addr.V6
    assert bytes(got.payload) == payload  # octets past the Payload Length are not TCP's


@given(
    fields=tcp_fields,
    options=st.sampled_from(OPTIONS),
    payload=st.binary(max_size=60),
    at=st.integers(0, 200),
    value=st.integers(0, 255),
    cut=st.integers(0, 200),
)
def test_parse_ipv6_never_accepts_what_the_general_path_refuses(
    fields: dict[str, Any], options: bytes, payload: bytes, at: int, value: int, cut: int
) -> None:
    """Any one octet changed, or the packet cut short: the fast path either agrees with the
    general path or declines (returns None) and leaves the packet to it."""
    packet = bytearray(slow(SRC, DST, 0, 64, fields, options, payload, False))
    if at < len(packet):
        packet[at] = value
    packet = packet[: max(cut, 1)] if cut < len(packet) else packet
    want = general(bytes(packet))
    got = tcp.parse_ipv6(bytes(packet))
    if got is None:
        return
    assert want is not None
    same(got, want)


def test_parse_ipv6_declines_what_is_not_its_case() -> None:
    fields: dict[str, Any] = dict(src_port=1, dst_port=2, seq=3, ack=4, flags=tcp.ACK, window=5)
    good = bytes(slow(SRC, DST, 0, 64, fields, b"", b"data", False))
    assert tcp.parse_ipv6(good) is not None
    bad_sum = bytearray(good)
    bad_sum[-1] ^= 1
    assert tcp.parse_ipv6(bad_sum) is None
    # ...unless the checksum is not ours to check (an offloaded packet the kernel vouched for)
    assert tcp.parse_ipv6(bad_sum, verify_checksum=False) is not None
    other_proto = bytearray(good)
    other_proto[ipv6.OFF_NEXT_HEADER] = 17
    assert tcp.parse_ipv6(other_proto) is None
    v4 = bytearray(good)
    v4[0] = 0x45
    assert tcp.parse_ipv6(v4) is None
    long_plen = bytearray(good)
    struct.pack_into("!H", long_plen, 4, len(good))  # claims more than is there
    assert tcp.parse_ipv6(long_plen) is None
    assert tcp.parse_ipv6(good[:59]) is None
    syn_fin = bytes(slow(SRC, DST, 0, 64, {**fields, "flags": tcp.SYN | tcp.FIN}, b"", b"", False))
    assert tcp.parse_ipv6(syn_fin) is None
    bad_option = bytes(slow(SRC, DST, 0, 64, fields, b"\x02\x03\x00\x00", b"", False))
    assert tcp.parse_ipv6(bad_option) is None


@given(
    fields=tcp_fields,
    options=st.sampled_from(OPTIONS),
    n=st.integers(2, 6000),
    mss=st.integers(1, 1440),
    last=st.sampled_from([tcp.ACK, tcp.ACK | tcp.PSH, tcp.ACK | tcp.FIN | tcp.PSH]),
)
def test_cut_ipv6_gives_the_pieces_emitted_one_by_one(
    fields: dict[str, Any], options: bytes, n: int, mss: int, last: int
) -> None:
    if n <= mss:
        n = mss + 1
    payload = memoryview(bytes(i * 7 & 0xFF for i in range(n)))
    template = head(flow_label=0x12345)
    middle = last & ~(tcp.PSH | tcp.FIN)
    fields = {**fields, "flags": middle}
    first = bytearray(ipv6.HEADER_LEN + tcp.HEADER_LEN + len(options) + mss)
    tcp.emit_ipv6(first, 0, template, options=options, payload=payload[:mss], **fields)
    out: list[bytearray] = []
    count = tcp.cut_ipv6(first, payload, mss, last, out)
    assert count == len(out) == -(-n // mss)
    for i, got in enumerate(out):
        piece = payload[i * mss : (i + 1) * mss]
        flags = last if i == count - 1 else middle
        seq = (fields["seq"] + i * mss) & 0xFFFFFFFF
        want = slow(SRC, DST, 0x12345, 64, {**fields, "seq": seq, "flags": flags}, options,
                    bytes(piece), False)  # fmt: skip
        assert got == want, i
