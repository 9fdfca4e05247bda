"""The one-line tcpdump-style formatter: exact lines, Linux packets, and never raising."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    fragment6,
)
from scapy.packet import Packet, Raw

from ustack.wire import checksum, icmp, ipv4, tcp
from ustack.wire.fmt import format_packet
from ustack.wire.tcp import ACK, SYN, TcpOptions

GOLDEN = Path(__file__).parent / "golden"
A = ipv4.addr_to_int("10.7.0.1")
B = ipv4.addr_to_int("10.7.0.2")


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text())


def tcp_packet(flags: int, options: bytes = b"", payload: bytes = b"", **kw: int) -> bytearray:
    n = 20 + len(options) + len(payload)
    buf = bytearray(20 + n)
    ipv4.emit(buf, 0, src=A, dst=B, proto=ipv4.PROTO_TCP, payload_len=n)
    fields: dict[str, Any] = {
        "src_port": 40000,
        "dst_port": 80,
        "seq": 1,
        "ack": 0,
        "window": 64240,
    } | kw
    tcp.emit(
        buf,
        20,
        pseudo=checksum.ipv4_pseudo_header_sum(A, B, tcp.PROTO, 0),
        flags=flags,
        options=options,
        payload=payload,
        **fields,
    )
    return buf


def echo_packet(payload: bytes) -> bytearray:
    buf = bytearray(28 + len(payload))
    ipv4.emit(buf, 0, src=A, dst=B, proto=ipv4.PROTO_ICMP, payload_len=8 + len(payload))
    icmp.emit_echo(buf, 20, type=icmp.ECHO_REQUEST, ident=1, sequence=1, payload=payload)
    return buf


def test_tcp_syn_line() -> None:
    opts = TcpOptions(mss=1460, sack_permitted=True, timestamps=(1, 0), wscale=7).encode()
    assert format_packet(tcp_packet(SYN, opts)) == (
        "IP 10.7.0.1.40000 > 10.7.0.2.80: Flags [S], seq 1, win 64240, "
        "options [mss 1460,sackOK,TS val 1 ecr 0,wscale 7], length 0"
    )


def test_tcp_data_line() -> None:
    line = format_packet(tcp_packet(ACK | tcp.PSH, payload=b"hello", seq=100, ack=7, window=502))
    assert (
        line == "IP 10.7.0.1.40000 > 10.7.0.2.80: Flags [P.], seq 100:105, ack 7, win 502, length 5"
    )


def test_icmp_echo_line() -> None:
    assert format_packet(echo_packet(bytes(56))) == (
        "IP 10.7.0.1 > 10.7.0.2: ICMP echo request, id 1, seq 1, length 64"
    )


def test_other_protocol_line() -> None:
    buf = bytearray(30)
    ipv4.emit(buf, 0, src=B, dst=A, proto=253, payload_len=10)
    assert format_packet(buf) == "IP 10.7.0.2 > 10.7.0.1: ip-proto-253 10"


def test_fragment_line() -> None:
    buf = tcp_packet(SYN)
    buf[6:8] = struct.pack("!H", 0x2000 | 3)  # MF, offset 24
    buf[10:12] = b"\0\0"
    buf[10:12] = struct.pack("!H", checksum.internet_checksum(buf[:20]))
    assert (
        format_packet(buf) == "IP 10.7.0.1 > 10.7.0.2: frag (id 0, offset 24+), proto 6, length 20"
    )


@pytest.mark.parametrize(
    ("damage", "line"),
    [
        (lambda b: b[:0], "IP bad packet (ipv4_truncated), 0 bytes"),
        (lambda b: b[:39], "IP bad packet (ipv4_truncated), 39 bytes"),
        (lambda b: b[:8] + b"\x00" + b[9:], "IP bad packet (ipv4_bad_checksum), 40 bytes"),
        (lambda b: b"\x55" + b[1:], "IP bad packet (ipv4_bad_version), 40 bytes"),
        (
            lambda b: b[:-1] + bytes([b[-1] ^ 1]),
            "IP 10.7.0.1 > 10.7.0.2: tcp bad segment (tcp_bad_checksum), 20 bytes",
        ),
    ],
)
def test_unparsable_input_says_why(damage: object, line: str) -> None:
    buf = bytes(tcp_packet(SYN))
    assert format_packet(damage(buf)) == line  # type: ignore[operator]


def test_bad_tcp_flags_and_bad_icmp() -> None:
    assert format_packet(tcp_packet(SYN | tcp.FIN)).endswith(
        "tcp bad segment (tcp_bad_flags), 20 bytes"
    )
    buf = echo_packet(b"abc")
    buf[-1] ^= 0xFF
    assert (
        format_packet(buf)
        == "IP 10.7.0.1 > 10.7.0.2: icmp bad message (icmp_bad_checksum), 11 bytes"
    )


GOLDEN_LINES = {
    "tcp_syn": r"IP 10\.7\.0\.1\.\d+ > 10\.7\.0\.2\.80: Flags \[S\], seq \d+, win 64240, "
    r"options \[mss 1460,sackOK,TS val \d+ ecr 0,wscale 10\], length 0",
    "tcp_synack": r"IP 10\.7\.0\.1\.8080 > 10\.7\.0\.2\.40001: Flags \[S\.\], seq \d+, ack 2, win 65160, "
    r"options \[mss 1460,sackOK,TS val \d+ ecr 1000,wscale 10\], length 0",
    "tcp_data": r"IP 10\.7\.0\.1\.\d+ > 10\.7\.0\.2\.80: Flags \[P\.\], seq (\d+):(\d+), ack 5001, win 63, "
    r"options \[TS val \d+ ecr 777\], length 14",
    "tcp_handshake_ack": r"IP .* Flags \[\.\], seq \d+, ack 5001, win 63, options \[TS val \d+ ecr 777\], length 0",
    "tcp_fin": r"IP .* Flags \[F\.\], seq \d+, ack 5001, win 63, options \[TS val \d+ ecr 777\], length 0",
    "tcp_rst_abort": r"IP .* Flags \[R\.\], seq \d+, ack 5001, win 63, .*length 0",
    "tcp_rst_closed_port": r"IP 10\.7\.0\.1\.9 > 10\.7\.0\.2\.40002: Flags \[R\.\], seq 0, ack 1001, win 0, length 0",
    "icmp_echo_request": r"IP 10\.7\.0\.1 > 10\.7\.0\.2: ICMP echo request, id \d+, seq 1, length 64",
    "icmp_echo_reply": r"IP 10\.7\.0\.1 > 10\.7\.0\.2: ICMP echo reply, id 16962, seq 7, length 52",
    "icmp_port_unreach": r"IP 10\.7\.0\.1 > 10\.7\.0\.2: ICMP 10\.7\.0\.1 udp port 9 unreachable, length 48",
    "icmp_proto_unreach": r"IP 10\.7\.0\.1 > 10\.7\.0\.2: ICMP 10\.7\.0\.1 protocol 253 unreachable, length 38",
    "icmp_frag_needed": r"IP 10\.7\.0\.1 > 10\.7\.0\.2: ICMP 10\.8\.0\.5 unreachable - need to frag \(mtu 1000\), length 556",
}


@pytest.mark.parametrize("name", sorted(GOLDEN_LINES))
def test_linux_packets(name: str) -> None:
    line = format_packet(golden(name))
    assert re.fullmatch(GOLDEN_LINES[name], line), line


# -- IPv6: packets built by scapy, an independent encoder --------------------------------------

A6, B6, ROUTER6 = "fd00:7::1", "fd00:7::2", "fd00:7::fe"


def v6(pkt: Packet) -> bytes:
    return raw(IPv6(src=A6, dst=B6) / pkt)


SYN_OPTIONS = [("MSS", 1440), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
QUOTED = raw(IPv6(src=B6, dst=A6) / TCP(sport=80, dport=43210, flags="PA") / Raw(b"x" * 1400))


@pytest.mark.parametrize(
    ("pkt", "line"),
    [
        (
            v6(TCP(sport=43210, dport=80, flags="S", seq=1, window=64800, options=SYN_OPTIONS)),
            "IP6 fd00:7::1.43210 > fd00:7::2.80: Flags [S], seq 1, win 64800, "
            "options [mss 1440,sackOK,TS val 1 ecr 0,wscale 7], length 0",
        ),
        (
            v6(TCP(sport=43210, dport=80, flags="PA", seq=100, ack=7, window=502) / b"hello"),
            "IP6 fd00:7::1.43210 > fd00:7::2.80: Flags [P.], seq 100:105, ack 7, win 502, length 5",
        ),
        (
            v6(ICMPv6EchoRequest(id=1, seq=1, data=bytes(56))),
            "IP6 fd00:7::1 > fd00:7::2: ICMP6, echo request, id 1, seq 1, length 64",
        ),
        (
            v6(ICMPv6EchoReply(id=0x4242, seq=7, data=bytes(44))),
            "IP6 fd00:7::1 > fd00:7::2: ICMP6, echo reply, id 16962, seq 7, length 52",
        ),
        (
            raw(IPv6(src=ROUTER6, dst=B6) / ICMPv6PacketTooBig(mtu=1280) / QUOTED[:1232]),
            "IP6 fd00:7::fe > fd00:7::2: ICMP6, packet too big, mtu 1280, length 1240",
        ),
        (
            v6(ICMPv6DestUnreach(code=4) / raw(IPv6(src=B6, dst=A6) / UDP(sport=1, dport=9))),
            "IP6 fd00:7::1 > fd00:7::2: ICMP6, destination unreachable port fd00:7::1 udp port 9, "
            "length 56",
        ),
        (
            v6(ICMPv6TimeExceeded(code=0) / QUOTED[:100]),
            "IP6 fd00:7::1 > fd00:7::2: ICMP6, time exceeded in-transit, length 108",
        ),
        (
            v6(ICMPv6ParamProblem(code=1, ptr=6) / QUOTED[:48]),
            "IP6 fd00:7::1 > fd00:7::2: ICMP6, parameter problem, unrecognized next header at 6, "
            "length 56",
        ),
        (
            v6(IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2, flags="S")),
            "IP6 fd00:7::1.1 > fd00:7::2.2: HBH DSTOPT Flags [S], seq 0, win 8192, length 0",
        ),
        (
            # An atomic fragment is a whole packet (RFC 6946 4): its upper layer is shown.
            v6(IPv6ExtHdrFragment(id=7) / TCP(sport=1, dport=2, flags="S")),
            "IP6 fd00:7::1.1 > fd00:7::2.2: frag Flags [S], seq 0, win 8192, length 0",
        ),
        (raw(IPv6(src=A6, dst=B6, nh=59)), "IP6 fd00:7::1 > fd00:7::2: no next header, length 0"),
        (v6(UDP(sport=1, dport=2)), "IP6 fd00:7::1 > fd00:7::2: ip-proto-17 8"),
    ],
    ids=lambda v: v.split(": ", 1)[1][:32] if isinstance(v, str) else "",
)
def test_ipv6_lines(pkt: bytes, line: str) -> None:
    assert format_packet(pkt) == line


def test_ipv6_fragments_show_their_fragment_header() -> None:
    whole = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=9) / TCP(flags="PA") / Raw(b"y" * 3000)
    pieces = fragment6(whole, 1280)  # type: ignore[no-untyped-call]
    lines = [format_packet(raw(f)) for f in pieces]
    assert lines == [
        "IP6 fd00:7::1 > fd00:7::2: frag (id 9, offset 0+), next-header 6, length 1232",
        "IP6 fd00:7::1 > fd00:7::2: frag (id 9, offset 1232+), next-header 6, length 1232",
        "IP6 fd00:7::1 > fd00:7::2: frag (id 9, offset 2464), next-header 6, length 556",
    ]


def test_unparsable_ipv6_says_why() -> None:
    syn = bytearray(v6(TCP(sport=1, dport=2, flags="S")))
    assert format_packet(syn[:30]) == "IP6 bad packet (ipv6_truncated), 30 bytes"
    assert format_packet(b"\x60") == "IP6 bad packet (ipv6_truncated), 1 bytes"
    syn[-1] ^= 1
    assert format_packet(syn) == (
        "IP6 fd00:7::1 > fd00:7::2: tcp bad segment (tcp_bad_checksum), 20 bytes"
    )
    echo = bytearray(v6(ICMPv6EchoRequest(data=b"abc")))
    echo[-1] ^= 0xFF
    assert format_packet(echo) == (
        "IP6 fd00:7::1 > fd00:7::2: icmp6 bad message (icmpv6_bad_checksum), 11 bytes"
    )
    routed = bytearray(v6(TCP(sport=1, dport=2, flags="S")))
    # Next Header says Routing, so ports 1 and 2 read as type 0 with 2 segments left (RFC 5095).
    routed[6] = 43
    assert format_packet(routed) == "IP6 bad packet (ipv6_routing_type0), 60 bytes"


def test_golden_set_is_complete() -> None:
    assert {p.stem for p in GOLDEN.glob("*.hex")} == set(GOLDEN_LINES)
