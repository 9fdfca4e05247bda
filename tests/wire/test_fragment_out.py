"""Fragmenting on output (``ipv4.fragment``, ``ipv6.fragment``): every piece fits the MTU, all
but the last carry a multiple of 8 octets, and scapy's reassembly -- an independent oracle --
gives back the packet that was cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, defragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, defragment6

from ustack.wire import ipv4, ipv6


def datagram4(payload: bytes, ident: int = 77) -> bytearray:
    buf = bytearray(ipv4.HEADER_LEN + len(payload))
    ipv4.emit(
        buf, 0, src=0x0A070002, dst=0x0A070001, proto=1, payload_len=len(payload), ident=ident
    )
    buf[ipv4.HEADER_LEN :] = payload
    return buf


def packet6(payload: bytes, next_header: int = 58) -> bytearray:
    buf = bytearray(ipv6.HEADER_LEN + len(payload))
    ipv6.emit(
        buf,
        0,
        src=0xFD00_0007 << 96 | 2,
        dst=0xFD00_0007 << 96 | 1,
        next_header=next_header,
        payload_len=len(payload),
        flow_label=0x54321,
    )
    buf[ipv6.HEADER_LEN :] = payload
    return buf


@given(size=st.integers(0, 9000), mtu=st.integers(68, 3000))
def test_ipv4_fragments_reassemble_to_the_datagram(size: int, mtu: int) -> None:
    whole = datagram4(bytes(i * 13 & 0xFF for i in range(size)))
    pieces = ipv4.fragment(whole, mtu)
    assert all(len(p) <= mtu for p in pieces)
    if len(whole) <= mtu:
        assert pieces == [whole]
        return
    parsed = [ipv4.parse(p) for p in pieces]  # our own parser: header checksums, lengths
    assert all(not p.dont_fragment for p in parsed)
    assert [p.more_fragments for p in parsed] == [True] * (len(pieces) - 1) + [False]
    assert all(len(p.payload) % 8 == 0 for p in parsed[:-1])
    (rebuilt,) = defragment([IP(bytes(p)) for p in pieces])  # type: ignore[no-untyped-call]
    assert bytes(rebuilt.payload) == bytes(whole[ipv4.HEADER_LEN :])
    assert (rebuilt.id, rebuilt.proto, rebuilt.ttl) == (77, 1, ipv4.DEFAULT_TTL)


@given(size=st.integers(0, 9000), mtu=st.integers(1280, 3000), ident=st.integers(0, 2**32 - 1))
def test_ipv6_fragments_reassemble_to_the_packet(size: int, mtu: int, ident: int) -> None:
    whole = packet6(bytes(i * 7 & 0xFF for i in range(size)))
    pieces = ipv6.fragment(whole, mtu, ident)
    assert all(len(p) <= mtu for p in pieces)
    if len(whole) <= mtu:
        assert pieces == [whole]
        return
    for i, p in enumerate(pieces):
        parsed = ipv6.parse(p)  # our own parser walks the Fragment header
        assert parsed.fragment is not None and parsed.fragment.ident == ident
        assert parsed.fragment.more == (i < len(pieces) - 1)
        assert parsed.flow_label == 0x54321
        if parsed.fragment.more:
            assert len(parsed.payload) % 8 == 0
    frags = [IPv6(bytes(p)) for p in pieces]
    assert all(f[IPv6ExtHdrFragment].nh == 58 for f in frags)
    rebuilt = defragment6(frags)  # type: ignore[no-untyped-call]
    assert rebuilt.nh == 58
    assert bytes(rebuilt.payload) == bytes(whole[ipv6.HEADER_LEN :])


def test_fragmenters_refuse_what_they_cannot_cut() -> None:
    with pytest.raises(ValueError, match="without IP options"):
        ipv4.fragment(datagram4(b"x" * 100)[:50], 60)
    with pytest.raises(ValueError, match="no room"):
        ipv4.fragment(datagram4(b"x" * 100), 27)
    with pytest.raises(ValueError, match="extension headers"):
        ipv6.fragment(packet6(b"x" * 2000, next_header=ipv6.FRAGMENT), 1280, 1)
    with pytest.raises(ValueError, match="IPv6 packet"):
        ipv6.fragment(datagram4(b"x" * 2000), 1280, 1)
    with pytest.raises(ValueError, match="32 bits"):
        ipv6.fragment(packet6(b"x" * 2000), 1280, 2**32)
