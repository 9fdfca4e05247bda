"""Fuzzing: random bytes and mutated valid packets make every parse() raise ParseError and
nothing else, and the formatter never raises at all.

Mutated packets optionally get their checksums repaired after mutation, so the fuzz reaches the
length, flag and option checks behind the checksum instead of stopping at it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ustack.wire import checksum, icmp, icmpv6, ipv4, ipv6, tcp
from ustack.wire.errors import ParseError
from ustack.wire.fmt import format_packet

GOLDEN = Path(__file__).parent / "golden"
CORPUS = [bytes.fromhex(p.read_text()) for p in sorted(GOLDEN.glob("*.hex"))]
T = TypeVar("T")
MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_reject(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run one parse; a ParseError is the only acceptable failure (anything else propagates)."""
    try:
        return fn(*args, **kwargs)
    except ParseError as e:
        assert e.reason and e.reason == e.reason.lower() and " " not in e.reason
        return None


def parse_everything(buf: bytes) -> None:
    """Every parser in ustack.wire over ``buf`` and what it contains."""
    for verify in (True, False):
        pkt = parse_or_reject(ipv4.parse, buf, verify_checksum=verify)
        if pkt is not None:
            body = pkt.payload
            pseudo = checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0)
            parse_or_reject(
                tcp.parse, body, pkt.src, pkt.dst, pseudo=pseudo, verify_checksum=verify
            )
            msg = parse_or_reject(icmp.parse, body, verify_checksum=verify)
            if msg is not None:
                parse_or_reject(icmp.parse_quoted, msg)
                assert isinstance(icmp.format(msg), str)
    pkt6 = parse_or_reject(ipv6.parse, buf)
    if pkt6 is not None:
        body = pkt6.payload
        pseudo = checksum.ipv6_pseudo_header_sum(pkt6.src, pkt6.dst, tcp.PROTO, 0)
        parse_or_reject(tcp.parse, body, pkt6.src, pkt6.dst, pseudo=pseudo)
        msg6 = parse_or_reject(icmpv6.parse, body, pkt6.src, pkt6.dst, verify_checksum=False)
        if msg6 is not None:
            parse_or_reject(icmpv6.parse_quoted, msg6)
            assert isinstance(icmpv6.format(msg6), str)
    line = format_packet(buf)
    # The version nibble picks the family: 6 is IPv6, anything else is read (and named) as IPv4.
    prefix = "IP6 " if buf and buf[0] >> 4 == 6 else "IP "
    assert isinstance(line, str) and line.startswith(prefix) and "\n" not in line


def fix_checksums(buf: bytearray) -> None:
    """Recompute the IPv4 header checksum and the TCP/ICMP checksum where the lengths allow."""
    if len(buf) < 20:
        return
    hlen = (buf[0] & 0x0F) * 4
    if hlen < 20 or hlen > len(buf):
        return
    buf[10:12] = b"\0\0"
    buf[10:12] = struct.pack("!H", checksum.internet_checksum(buf[:hlen]))
    total = min((buf[2] << 8) | buf[3], len(buf))
    body = memoryview(buf)[hlen:total]
    if buf[9] == ipv4.PROTO_TCP and len(body) >= 20:
        src, dst = struct.unpack_from("!II", buf, 12)
        body[16:18] = b"\0\0"
        body[16:18] = struct.pack("!H", checksum.tcp_checksum(src, dst, body))
    elif buf[9] == ipv4.PROTO_ICMP and len(body) >= 8:
        body[2:4] = b"\0\0"
        body[2:4] = struct.pack("!H", checksum.internet_checksum(body))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "flip", "truncate", "extend", "delete"]))
        if op == "truncate":
            del buf[draw(st.integers(0, len(buf))) :]
        elif op == "extend":
            buf += draw(st.binary(min_size=1, max_size=16))
        elif not buf:
            continue
        elif op == "set":
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        elif op == "flip":
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        else:
            del buf[draw(st.integers(0, len(buf) - 1))]
    if draw(st.booleans()):
        fix_checksums(buf)
    return bytes(buf)


@MANY
@given(st.binary(max_size=120))
def test_random_bytes(buf: bytes) -> None:
    parse_everything(buf)


@MANY
@given(st.binary(min_size=20, max_size=80).map(lambda b: b"\x45" + b[1:]))
def test_random_bytes_behind_a_plausible_first_byte(buf: bytes) -> None:
    fixed = bytearray(buf)
    fix_checksums(fixed)
    parse_everything(bytes(fixed))


@MANY
@given(mutated())
def test_mutated_linux_packets(buf: bytes) -> None:
    parse_everything(buf)


# Where the upper layer's checksum sits, for the two IPv6 payloads the formatter decodes.
CHECKSUM_AT = {ipv6.PROTO_TCP: 16, ipv6.PROTO_ICMPV6: 2}


@MANY
@given(
    st.binary(min_size=40, max_size=120).map(lambda b: b"\x60" + b[1:]),
    st.sampled_from([ipv6.PROTO_TCP, ipv6.PROTO_ICMPV6, None]),
)
def test_random_bytes_behind_an_ipv6_first_byte(buf: bytes, proto: int | None) -> None:
    fixed = bytearray(buf)
    fixed[4:6] = struct.pack("!H", len(fixed) - 40)  # a Payload Length that fits the bytes
    at = CHECKSUM_AT.get(proto) if proto is not None else None
    if proto is not None and at is not None and len(fixed) >= 40 + at + 2:
        # A right checksum behind no extension headers, so the fuzz reaches TCP's and
        # ICMPv6's own checks instead of stopping at the checksum.
        fixed[6] = proto
        src, dst = int.from_bytes(fixed[8:24]), int.from_bytes(fixed[24:40])
        body = memoryview(fixed)[40:]
        body[at : at + 2] = b"\0\0"
        pseudo = checksum.ipv6_pseudo_header_sum(src, dst, proto, len(body))
        body[at : at + 2] = struct.pack("!H", checksum.internet_checksum(body, pseudo))
    parse_everything(bytes(fixed))


@MANY
@given(st.binary(max_size=40))
def test_random_tcp_option_bytes(data: bytes) -> None:
    result = parse_or_reject(tcp.parse_options, memoryview(data))
    if result is not None and result.encoded_length() <= 40:
        # Whatever parsed re-encodes into options that parse back to the same value.
        assert tcp.parse_options(memoryview(result.encode())) == result


@MANY
@given(st.binary(max_size=80))
def test_random_icmp_quotes(data: bytes) -> None:
    parse_or_reject(icmp.parse_quoted, icmp.IcmpMessage(3, 3, 0, 0, 0, memoryview(data)))
    assert icmp.format(icmp.IcmpMessage(3, 4, 0, 0, 0, memoryview(data))).startswith("ICMP ")
