"""The quoted datagram of an ICMP error: ports, sequence number, total length; the errno map."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP

from ustack.wire import icmp, ipv4
from ustack.wire.errors import ParseError

LOCAL = "10.7.0.1"
PEER = "10.7.0.2"


def error_about(original: bytes, *, code: int = icmp.PORT_UNREACH, mtu: int = 0) -> bytes:
    """An ICMP destination unreachable (the IP payload) quoting ``original``."""
    buf = bytearray(icmp.HEADER_LEN + icmp.quote_length(original))
    icmp.emit_unreachable(buf, 0, code=code, original=original, mtu=mtu)
    return bytes(buf)


def test_quote_gives_ports_sequence_and_total_length() -> None:
    # scapy builds the datagram we "sent": an independent encoder of IPv4 and TCP
    sent = bytearray(
        raw(IP(src=LOCAL, dst=PEER, flags="DF") / TCP(sport=40000, dport=80, seq=0xDEADBEEF))
    )
    sent += b"x" * 1000
    sent[2:4] = len(sent).to_bytes(2, "big")
    q = icmp.parse_quoted(icmp.parse(error_about(bytes(sent))))
    assert (q.src, q.dst, q.proto) == (
        ipv4.addr_to_int(LOCAL),
        ipv4.addr_to_int(PEER),
        ipv4.PROTO_TCP,
    )
    assert (q.src_port, q.dst_port, q.seq, q.total_length) == (40000, 80, 0xDEADBEEF, 1040)
    assert bytes(q.transport[:8]) == bytes(sent[20:28])


def test_quote_with_ip_options_reads_after_them() -> None:
    header = raw(IP(src=LOCAL, dst=PEER, options=b"\x01\x01\x01\x00") / TCP(sport=1, dport=2))
    q = icmp.parse_quoted(icmp.parse(error_about(header)))
    assert (q.src_port, q.dst_port) == (1, 2)


def test_scapy_built_frag_needed_parses() -> None:
    inner = IP(src=LOCAL, dst=PEER, flags="DF", len=1500) / TCP(sport=5, dport=6, seq=77)
    msg = raw(ICMP(type=3, code=4, nexthopmtu=1280) / raw(inner)[:28])
    parsed = icmp.parse(msg)
    assert (parsed.type, parsed.code, parsed.mtu) == (3, 4, 1280)
    q = icmp.parse_quoted(parsed)
    assert (q.src_port, q.dst_port, q.seq, q.total_length) == (5, 6, 77, 1500)


def _message(quote: bytes) -> icmp.IcmpMessage:
    body = bytearray(icmp.HEADER_LEN) + quote
    struct.pack_into("!BBHI", body, 0, icmp.DEST_UNREACH, icmp.HOST_UNREACH, 0, 0)
    return icmp.parse(body, verify_checksum=False)


GOOD = raw(IP(src=LOCAL, dst=PEER) / TCP(sport=1, dport=2))[:28]


@pytest.mark.parametrize(
    ("quote", "reason"),
    [
        (b"", "icmp_quote_truncated"),
        (GOOD[:19], "icmp_quote_truncated"),  # not even an IP header
        (GOOD[:27], "icmp_quote_truncated"),  # the header, but 7 octets of TCP
        (b"\x65" + GOOD[1:], "icmp_quote_bad_version"),  # IPv6 in an IPv4 quote
        (b"\x44" + GOOD[1:], "icmp_quote_bad_ihl"),  # IHL 4
        (b"\x46" + GOOD[1:], "icmp_quote_truncated"),  # IHL 6 leaves only 4 transport octets
        (GOOD[:2] + b"\x00\x13" + GOOD[4:], "icmp_quote_bad_total_length"),  # 19 < IHL
    ],
)
def test_malformed_quote_raises_parse_error(quote: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        icmp.parse_quoted(_message(quote))
    assert info.value.reason == reason


@given(st.binary(max_size=80))
def test_random_quote_raises_only_parse_error(quote: bytes) -> None:
    try:
        q = icmp.parse_quoted(_message(quote))
    except ParseError as exc:
        assert exc.reason.startswith("icmp_quote_")
    else:
        assert 0 <= q.src_port <= 0xFFFF and q.total_length >= 20


@pytest.mark.parametrize(
    ("type_", "code", "err"),
    [
        (icmp.DEST_UNREACH, icmp.NET_UNREACH, errno.ENETUNREACH),
        (icmp.DEST_UNREACH, icmp.HOST_UNREACH, errno.EHOSTUNREACH),
        (icmp.DEST_UNREACH, icmp.PROTO_UNREACH, errno.ENOPROTOOPT),
        (icmp.DEST_UNREACH, icmp.PORT_UNREACH, errno.ECONNREFUSED),
        (icmp.DEST_UNREACH, icmp.FRAG_NEEDED, errno.EMSGSIZE),
        (icmp.DEST_UNREACH, 13, errno.EHOSTUNREACH),
        (icmp.DEST_UNREACH, 99, errno.EHOSTUNREACH),  # no such code
        (icmp.TIME_EXCEEDED, 0, errno.EHOSTUNREACH),
        (icmp.PARAM_PROBLEM, 0, errno.EPROTO),
    ],
)
def test_error_errno(type_: int, code: int, err: int) -> None:
    assert icmp.error_errno(type_, code) == err
