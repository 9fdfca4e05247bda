"""The Internet checksum: RFC 1071 sums, RFC 1624 updates, and the promise that the C extension
(both kernels) and the pure-Python fallback are the same function.

Every test that takes ``checksum_impl`` runs once per implementation. Results are compared with
an obviously correct word-at-a-time reference, with each other, and with scapy.
"""

from __future__ import annotations

import array
import inspect
import ipaddress
import mmap
import os
import random
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ustack.wire import _checksum_py, checksum

ROOT = Path(__file__).resolve().parents[2]

# Deterministic: the same examples on every run. The fixture only selects an implementation, so
# sharing it across examples is safe.
PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

PUBLIC = (
    "partial_sum",
    "internet_checksum",
    "finish",
    "ipv4_pseudo_header_sum",
    "ipv6_pseudo_header_sum",
    "tcp_checksum",
    "verify_tcp",
    "update16",
    "update32",
)


def reference_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 section 4.1, word by word: the canonical folded sum (0 only if all is zero)."""
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(int(w) for w in struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def c_module() -> ModuleType | None:
    try:
        from ustack.wire import _checksum
    except ImportError:
        return None
    return _checksum


# -- fixed vectors --------------------------------------------------------------------------


def test_rfc1071_example(checksum_impl: ModuleType) -> None:
    # RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2 (checksum 0x220d).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert checksum_impl.partial_sum(data) == 0xDDF2
    assert checksum_impl.internet_checksum(data) == 0x220D
    assert checksum_impl.finish(0xDDF2) == 0x220D


@pytest.mark.parametrize(
    ("data", "initial", "expected"),
    [
        pytest.param(b"", 0, 0x0000, id="empty"),
        pytest.param(bytes(1), 0, 0x0000, id="one-zero-byte"),
        pytest.param(bytes(4097), 0, 0x0000, id="zeros"),
        # An odd byte is the high byte of a zero-padded word.
        pytest.param(b"\xff", 0, 0xFF00, id="odd-byte"),
        pytest.param(b"\x00\xff", 0, 0x00FF, id="low-byte"),
        pytest.param(b"\xff\xff", 0, 0xFFFF, id="ffff"),
        # One's-complement zero from non-zero data is written 0xFFFF, never 0.
        pytest.param(b"\xff" * 4096, 0, 0xFFFF, id="ffff-words"),
        pytest.param(b"\xff" * 4097, 0, 0xFF00, id="ffff-words-odd"),
        pytest.param(b"\x80\x00\x80\x00", 0, 0x0001, id="end-around-carry"),
        pytest.param(b"\xff\xfe" * 3, 0, 0xFFFC, id="fffe-words"),
        pytest.param(b"\x00\x01", 0xFFFE, 0xFFFF, id="initial-to-ffff"),
        pytest.param(b"\x00\x02", 0xFFFE, 0x0001, id="initial-carry"),
        pytest.param(b"", 0x1FFFE, 0xFFFF, id="unfolded-initial"),
        pytest.param(b"", 2**64 - 1, 0xFFFF, id="max-initial"),
        pytest.param(b"", 0x12345, 0x2346, id="initial-fold"),
    ],
)
def test_carry_and_zero_edges(
    checksum_impl: ModuleType, data: bytes, initial: int, expected: int
) -> None:
    assert reference_sum(data, initial) == expected
    assert checksum_impl.partial_sum(data, initial) == expected
    assert checksum_impl.internet_checksum(data, initial) == expected ^ 0xFFFF


@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, 0xFFFF), (0xFFFF, 0), (0x1FFFE, 0), (0x10000, 0xFFFE), (0xDDF2, 0x220D), (2**64 - 1, 0)],
)
def test_finish(checksum_impl: ModuleType, total: int, expected: int) -> None:
    assert checksum_impl.finish(total) == expected


def test_rfc1624_example(checksum_impl: ModuleType) -> None:
    # RFC 1624 section 4: HC 0xdd2f, m 0x5555 -> m' 0x3285 gives 0x0000 by eqn. 3 (RFC 1141's
    # eqn. 2 would give 0xffff).
    assert checksum_impl.update16(0xDD2F, 0x5555, 0x3285) == 0x0000
    assert checksum_impl.update32(0xDD2F, 0x12345555, 0x12343285) == 0x0000


def test_pseudo_header_sum_matches_its_bytes(checksum_impl: ModuleType) -> None:
    rng = random.Random(9293)
    for _ in range(200):
        src, dst = rng.getrandbits(32), rng.getrandbits(32)
        proto, length = rng.getrandbits(8), rng.getrandbits(16)
        header = struct.pack("!IIBBH", src, dst, 0, proto, length)
        assert checksum_impl.ipv4_pseudo_header_sum(src, dst, proto, length) == reference_sum(
            header
        )
    assert checksum_impl.ipv4_pseudo_header_sum(0, 0, 0, 0) == 0
    assert checksum_impl.ipv4_pseudo_header_sum(0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFF) == 0xFFFF


# -- every length, alignment and kernel path --------------------------------------------------


def test_all_lengths_and_alignments(checksum_impl: ModuleType) -> None:
    # Covers the AVX2 kernel's head (0..31 bytes to alignment), 128-byte loop, 32-byte loop and
    # tail, the portable kernel's 32-byte loop and tail, and the Python short path and folds.
    rng = random.Random(1071)
    backing = bytearray(rng.randbytes(2048 + 64))
    for n in [*range(0, 600), 1023, 1500, 2047, 2048]:
        for offset in (0, 1, 2, 3, 7, 8, 13, 31, 32, 33, 63):
            view = memoryview(backing)[offset : offset + n]
            assert checksum_impl.partial_sum(view) == reference_sum(bytes(view)), (n, offset)


@pytest.mark.parametrize("n", [61439, 61440, 61441, 65535, 65536, 3 * 61440 + 3, 1 << 20])
def test_large_buffers(checksum_impl: ModuleType, n: int) -> None:
    # Spans the Python fallback's chunk boundary (61440 bytes) and several of its folds.
    data = random.Random(n).randbytes(n)
    assert checksum_impl.partial_sum(data) == reference_sum(data)
    assert checksum_impl.partial_sum(memoryview(data)[1:]) == reference_sum(data[1:])
    ones = b"\xff" * n
    assert checksum_impl.partial_sum(ones) == (0xFF00 if n % 2 else 0xFFFF)
    assert checksum_impl.partial_sum(bytes(n)) == 0


def _sparse_sum(buf: mmap.mmap, marks: set[int], start: int) -> int:
    """reference_sum(buf[start:]) when only the bytes at `marks` are non-zero."""
    words = b"".join(
        bytes([buf[i], 0]) if (i - start) % 2 == 0 else bytes([0, buf[i]])
        for i in sorted(marks)
        if i >= start
    )
    return reference_sum(words)


def test_c_kernels_beyond_one_block() -> None:
    # The C module feeds its kernels at most 1 GiB at a time; a sparse buffer just past that,
    # backed by untouched (zero) pages of an anonymous map, checks the pieces are joined right.
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    size = (1 << 30) + 4099
    rng = random.Random(30)
    marks = {rng.randrange(size) for _ in range(200)} | {0, (1 << 30) - 1, 1 << 30, size - 1}
    previous = c._kernel()
    with mmap.mmap(-1, size) as buf:
        for i in marks:
            buf[i] = rng.randrange(1, 256)
        try:
            for kernel in c.KERNELS:
                c._set_kernel(kernel)
                assert c.partial_sum(buf) == _sparse_sum(buf, marks, 0), kernel
                view = memoryview(buf)
                try:
                    assert c.partial_sum(view[1:]) == _sparse_sum(buf, marks, 1), kernel
                finally:
                    view.release()
        finally:
            c._set_kernel(previous)


def _buffer_kinds(data: bytes) -> list[object]:
    return [
        data,
        bytearray(data),
        memoryview(data),
        memoryview(bytearray(b"\x00\x01\x02" + data))[3:],  # non-zero start, odd address
        array.array("B", data),
    ]


def test_bytes_like_types(checksum_impl: ModuleType) -> None:
    data = random.Random(5).randbytes(1001)
    expected = reference_sum(data)
    for buf in _buffer_kinds(data):
        assert checksum_impl.partial_sum(buf) == expected, type(buf)
    words = array.array("H", data[:1000])  # a non-byte format is read as its raw bytes
    assert checksum_impl.partial_sum(words) == reference_sum(data[:1000])
    grid = memoryview(bytearray(data[:1000])).cast("B", (10, 100))
    assert checksum_impl.partial_sum(grid) == reference_sum(data[:1000])


# -- property tests: C == Python == reference -----------------------------------------------

FILLS = ("random", "zeros", "ones", "ffff-words-with-a-few-random", "ffff-then-0001")


@st.composite
def buffers(draw: st.DrawFn) -> tuple[bytes, int]:
    """(data, offset): lengths 0..65535 with small and odd ones favoured, fills that stress the
    carries, and a start offset into the backing buffer."""
    n = draw(
        st.one_of(
            st.integers(0, 65535),
            st.integers(0, 300),
            st.integers(0, 32767).map(lambda k: 2 * k + 1),
        )
    )
    fill = draw(st.sampled_from(FILLS))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if fill == "random":
        data = rng.randbytes(n)
    elif fill == "zeros":
        data = bytes(n)
    elif fill == "ones":
        data = b"\xff" * n
    elif fill == "ffff-then-0001":
        data = (b"\xff\xff" * (n // 2) + b"\x00\x01")[:n]
    else:
        buf = bytearray(b"\xff" * n)
        for _ in range(min(n, 3)):
            buf[rng.randrange(n)] = rng.getrandbits(8)
        data = bytes(buf)
    return data, draw(st.integers(0, 63))


@PROPERTY
@given(
    case=buffers(), initial=st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1))
)
def test_property_matches_reference_and_python(
    checksum_impl: ModuleType, case: tuple[bytes, int], initial: int
) -> None:
    data, offset = case
    view = memoryview(bytearray(offset) + data + b"\x5a")[offset : offset + len(data)]
    expected = reference_sum(data, initial)
    assert checksum_impl.partial_sum(view, initial) == expected
    assert _checksum_py.partial_sum(view, initial) == expected
    assert checksum_impl.internet_checksum(data, initial=initial) == expected ^ 0xFFFF


@PROPERTY
@given(case=buffers(), cut=st.integers(0, 65535))
def test_property_chaining_equals_one_shot(
    checksum_impl: ModuleType, case: tuple[bytes, int], cut: int
) -> None:
    # Pieces chain through `initial` as long as each piece but the last has even length.
    data, _ = case
    cut = min(cut, len(data)) & ~1
    head, tail = memoryview(data)[:cut], memoryview(data)[cut:]
    chained = checksum_impl.partial_sum(tail, checksum_impl.partial_sum(head))
    assert chained == checksum_impl.partial_sum(data)
    assert checksum_impl.finish(chained) == checksum_impl.internet_checksum(data)


def test_pseudo_header_header_payload_chain(checksum_impl: ModuleType) -> None:
    rng = random.Random(793)
    src, dst = 0x0A000001, 0xC0A80102
    header, payload = bytearray(rng.randbytes(32)), rng.randbytes(1461)
    header[16:18] = b"\0\0"
    segment = bytes(header) + payload
    ph = checksum_impl.ipv4_pseudo_header_sum(src, dst, 6, len(segment))
    chained = checksum_impl.finish(
        checksum_impl.partial_sum(payload, checksum_impl.partial_sum(header, ph))
    )
    assert chained == checksum_impl.tcp_checksum(src, dst, segment)
    pseudo = struct.pack("!IIBBH", src, dst, 0, 6, len(segment))
    assert chained == reference_sum(pseudo + segment) ^ 0xFFFF


def _one_complement_equal(a: int, b: int) -> bool:
    return a % 0xFFFF == b % 0xFFFF


@PROPERTY
@given(
    words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=40),
    position=st.integers(0, 39),
    new=st.integers(0, 0xFFFFFFFF),
    wide=st.booleans(),
)
def test_property_update_equals_recomputation(
    checksum_impl: ModuleType, words: list[int], position: int, new: int, wide: bool
) -> None:
    position %= len(words) - 1 if wide else len(words)
    before = struct.pack(f"!{len(words)}H", *words)
    old_sum = checksum_impl.internet_checksum(before)
    after = list(words)
    if wide:
        old = (words[position] << 16) | words[position + 1]
        after[position], after[position + 1] = new >> 16, new & 0xFFFF
        updated = checksum_impl.update32(old_sum, old, new)
    else:
        new &= 0xFFFF
        after[position] = new
        updated = checksum_impl.update16(old_sum, words[position], new)
    recomputed = checksum_impl.internet_checksum(struct.pack(f"!{len(after)}H", *after))
    if any(after):
        assert updated == recomputed
    else:
        # RFC 1624 section 3: for all-zero data eqn. 3 yields 0x0000 where recomputation gives
        # 0xffff -- the same one's-complement value.
        assert _one_complement_equal(updated, recomputed)
    assert updated == getattr(_checksum_py, "update32" if wide else "update16")(
        old_sum, old if wide else words[position], new
    )


@PROPERTY
@given(
    words=st.lists(
        st.sampled_from([0x0000, 0x0001, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]), min_size=1, max_size=12
    )
)
def test_property_update16_carry_words(checksum_impl: ModuleType, words: list[int]) -> None:
    # Words at the carry edges, each one rewritten in turn.
    data = struct.pack(f"!{len(words)}H", *words)
    hc = checksum_impl.internet_checksum(data)
    for i, old in enumerate(words):
        for new in (0x0000, 0xFFFF, 0x8000, old ^ 0xFFFF):
            after = [*words[:i], new, *words[i + 1 :]]
            expected = checksum_impl.internet_checksum(struct.pack(f"!{len(after)}H", *after))
            got = checksum_impl.update16(hc, old, new)
            assert got == expected if any(after) else _one_complement_equal(got, expected)


# -- TCP ---------------------------------------------------------------------------------------


def test_tcp_checksum_and_verify(checksum_impl: ModuleType) -> None:
    rng = random.Random(6)
    for n in (20, 21, 40, 1480, 65535):
        src, dst = rng.getrandbits(32), rng.getrandbits(32)
        segment = bytearray(rng.randbytes(n))
        segment[16:18] = b"\0\0"
        pseudo = struct.pack("!IIBBH", src, dst, 0, 6, n)
        csum = checksum_impl.tcp_checksum(src, dst, segment)
        assert csum == reference_sum(pseudo + segment) ^ 0xFFFF
        segment[16:18] = csum.to_bytes(2, "big")
        assert checksum_impl.verify_tcp(src, dst, segment) is True
        assert checksum_impl.tcp_checksum(src, dst, segment) == 0
        assert checksum_impl.verify_tcp(src ^ 1, dst, segment) is False
        assert checksum_impl.verify_tcp(src, dst, segment[:-1]) is False
        segment[n // 2] ^= 0x01
        assert checksum_impl.verify_tcp(src, dst, segment) is False


# -- scapy as an independent oracle ---------------------------------------------------------


def test_agrees_with_scapy_checksum(checksum_impl: ModuleType) -> None:
    scapy_utils = pytest.importorskip("scapy.utils")
    rng = random.Random(7)
    for n in [*range(0, 70), 576, 1499, 1500, 9001]:
        data = rng.randbytes(n)
        assert checksum_impl.internet_checksum(data) == scapy_utils.checksum(data), n
    for data in (bytes(64), b"\xff" * 64, b"\xff" * 63):
        assert checksum_impl.internet_checksum(data) == scapy_utils.checksum(data)


def test_agrees_with_scapy_tcp_and_ip(checksum_impl: ModuleType) -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP, TCP

    rng = random.Random(8)
    for i in range(40):
        src, dst = rng.getrandbits(32), rng.getrandbits(32)
        payload = rng.randbytes(rng.choice([0, 1, 7, 536, 1460, rng.randrange(2000)]))
        options = [("MSS", 1460), ("NOP", None), ("WScale", 7)] if i % 2 else []
        pkt = IP(src=_addr(src), dst=_addr(dst)) / TCP(
            sport=rng.getrandbits(16),
            dport=rng.getrandbits(16),
            seq=rng.getrandbits(32),
            ack=rng.getrandbits(32),
            flags="PA",
            window=rng.getrandbits(16),
            options=options,
        )
        raw = bytes(pkt / payload)
        ihl = (raw[0] & 0x0F) * 4
        parsed = IP(raw)
        segment = bytearray(raw[ihl:])
        assert checksum_impl.verify_tcp(src, dst, segment)
        segment[16:18] = b"\0\0"
        assert checksum_impl.tcp_checksum(src, dst, segment) == parsed[TCP].chksum
        header = bytearray(raw[:ihl])
        assert checksum_impl.internet_checksum(header) == 0  # verifies as received
        header[10:12] = b"\0\0"
        assert checksum_impl.internet_checksum(header) == parsed.chksum


def _addr(value: int) -> str:
    return ".".join(str(b) for b in value.to_bytes(4, "big"))


# -- the IPv6 pseudo-header (RFC 8200 8.1) ----------------------------------------------------

U128 = 2**128 - 1


def ipv6_pseudo_header(src: int, dst: int, next_header: int, length: int) -> bytes:
    """RFC 8200 8.1's layout: source, destination, 32-bit upper-layer length, 24 zero bits,
    next header."""
    return (
        src.to_bytes(16, "big")
        + dst.to_bytes(16, "big")
        + struct.pack("!I3xB", length, next_header)
    )


@pytest.mark.parametrize(
    ("src", "dst", "next_header", "length"),
    [
        (0, 0, 0, 0),  # everything zero: the only zero sum
        (U128, U128, 0, 0),  # all-ones addresses: each word is 0xFFFF
        (U128, U128, 255, 2**32 - 1),
        (U128, 0, 0, 0),
        (0, 0, 6, 0),  # what TCP is handed: the sum with its length field 0
        (0, 0, 0, 2**32 - 1),  # the length's high word counts too
        (0, 0, 0, 0x10000),
        (1, 2**127, 58, 1280),
        (
            0xFD00_0007_0000_0000_0000_0000_0000_0001,
            0xFD00_0007_0000_0000_0000_0000_0000_0002,
            6,
            40,
        ),
        (0xFFFF_0000_0000_0000_FFFF_0000_0000_0001, 2**64 - 1, 17, 65535),
    ],
)
def test_ipv6_pseudo_header_sum_edges(
    checksum_impl: ModuleType, src: int, dst: int, next_header: int, length: int
) -> None:
    expected = reference_sum(ipv6_pseudo_header(src, dst, next_header, length))
    assert checksum_impl.ipv6_pseudo_header_sum(src, dst, next_header, length) == expected


addr128 = st.one_of(
    st.integers(0, U128),
    st.sampled_from([0, 1, U128, 2**64 - 1, 2**64, U128 - 2**64 + 1]),
    # The 64-bit halves, the C extension's unit, at their extremes.
    st.tuples(st.sampled_from([0, 1, 2**64 - 1]), st.sampled_from([0, 1, 2**64 - 1])).map(
        lambda hl: (hl[0] << 64) | hl[1]
    ),
)


@PROPERTY
@given(
    src=addr128,
    dst=addr128,
    next_header=st.integers(0, 255),
    length=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 0xFFFF, 0x10000, 2**32 - 1])),
)
def test_property_ipv6_pseudo_header_sum_matches_its_bytes_and_python(
    checksum_impl: ModuleType, src: int, dst: int, next_header: int, length: int
) -> None:
    got = checksum_impl.ipv6_pseudo_header_sum(src, dst, next_header, length)
    assert got == reference_sum(ipv6_pseudo_header(src, dst, next_header, length))
    assert got == _checksum_py.ipv6_pseudo_header_sum(src, dst, next_header, length)


def test_ipv6_c_and_python_agree_on_many_random_inputs() -> None:
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    rng = random.Random(8200)
    for _ in range(20_000):
        args = (rng.getrandbits(128), rng.getrandbits(128), rng.getrandbits(8), rng.getrandbits(32))
        assert c.ipv6_pseudo_header_sum(*args) == _checksum_py.ipv6_pseudo_header_sum(*args), args


def _addr6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def test_agrees_with_scapy_tcp_over_ipv6(checksum_impl: ModuleType) -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6

    rng = random.Random(2460)
    addresses = [U128, 0, 2**64 - 1, 0xFD00_0007 << 96 | 1, 0xFE80 << 112 | rng.getrandbits(64)]
    for i in range(40):
        src = addresses[i] if i < len(addresses) else rng.getrandbits(128)
        dst = addresses[-1 - i] if i < len(addresses) else rng.getrandbits(128)
        payload = rng.randbytes(rng.choice([0, 1, 7, 1220, 1440, rng.randrange(2000)]))
        options = [("MSS", 1440), ("NOP", None), ("WScale", 7)] if i % 2 else []
        pkt = IPv6(src=_addr6(src), dst=_addr6(dst)) / TCP(
            sport=rng.getrandbits(16),
            dport=rng.getrandbits(16),
            seq=rng.getrandbits(32),
            ack=rng.getrandbits(32),
            flags="PA",
            window=rng.getrandbits(16),
            options=options,
        )
        raw = bytes(pkt / payload)
        segment = bytearray(raw[40:])  # no extension headers: TCP follows the fixed header
        ph = checksum_impl.ipv6_pseudo_header_sum(src, dst, 6, len(segment))
        assert checksum_impl.internet_checksum(segment, ph) == 0  # verifies as received
        scapy_sum = IPv6(raw)[TCP].chksum
        segment[16:18] = b"\0\0"
        assert checksum_impl.internet_checksum(segment, ph) == scapy_sum


# -- errors, signatures, no copies ----------------------------------------------------------


@pytest.mark.parametrize("bad", ["text", 123, None, [1, 2], 1.5])
def test_non_buffer_raises_type_error(checksum_impl: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        checksum_impl.partial_sum(bad)
    with pytest.raises(TypeError):
        checksum_impl.internet_checksum(bad)
    with pytest.raises(TypeError):
        checksum_impl.tcp_checksum(1, 2, bad)
    with pytest.raises(TypeError):
        checksum_impl.verify_tcp(1, 2, bad)


def test_strided_or_released_views_are_refused(checksum_impl: ModuleType) -> None:
    with pytest.raises(BufferError):
        checksum_impl.partial_sum(memoryview(bytes(10))[::2])
    released = memoryview(bytes(10))
    released.release()
    with pytest.raises(ValueError, match="released"):
        checksum_impl.partial_sum(released)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("partial_sum", (b"", -1)),
        ("partial_sum", (b"", 2**64)),
        ("internet_checksum", (b"", -5)),
        ("finish", (-1,)),
        ("finish", (2**64,)),
        ("ipv4_pseudo_header_sum", (2**32, 0, 6, 0)),
        ("ipv4_pseudo_header_sum", (0, -1, 6, 0)),
        ("ipv4_pseudo_header_sum", (0, 0, 256, 0)),
        ("ipv4_pseudo_header_sum", (0, 0, 6, 65536)),
        ("ipv6_pseudo_header_sum", (2**128, 0, 6, 0)),
        ("ipv6_pseudo_header_sum", (0, 2**200, 6, 0)),
        ("ipv6_pseudo_header_sum", (-1, 0, 6, 0)),
        ("ipv6_pseudo_header_sum", (0, -(2**100), 6, 0)),
        ("ipv6_pseudo_header_sum", (0, 0, 256, 0)),
        ("ipv6_pseudo_header_sum", (0, 0, -1, 0)),
        ("ipv6_pseudo_header_sum", (0, 0, 6, 2**32)),
        ("tcp_checksum", (2**32, 0, b"")),
        ("tcp_checksum", (0, 0, bytes(65536))),
        ("verify_tcp", (0, 0, bytearray(70000))),
        ("update16", (0x10000, 0, 0)),
        ("update16", (0, -1, 0)),
        ("update16", (0, 0, 0x10000)),
        ("update32", (0x10000, 0, 0)),
        ("update32", (0, 2**32, 0)),
        ("update32", (0, 0, -1)),
    ],
)
def test_out_of_range_raises_value_error(
    checksum_impl: ModuleType, name: str, args: tuple[object, ...]
) -> None:
    with pytest.raises(ValueError):
        getattr(checksum_impl, name)(*args)


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("partial_sum", (b"", 1.5), {}),
        ("partial_sum", (b"", "1"), {}),
        ("partial_sum", (), {"data": b""}),  # data is positional-only
        ("partial_sum", (b"", 1), {"initial": 1}),
        ("partial_sum", (b"",), {"start": 1}),
        ("partial_sum", (b"", 0, 0), {}),
        ("finish", (0.0,), {}),
        ("finish", (), {"total": 1}),
        ("ipv4_pseudo_header_sum", (1.0, 0, 6, 0), {}),
        ("ipv4_pseudo_header_sum", (0, 0, 6), {}),
        ("ipv6_pseudo_header_sum", (1.0, 0, 6, 0), {}),
        ("ipv6_pseudo_header_sum", (0, b"\0" * 16, 6, 0), {}),
        ("ipv6_pseudo_header_sum", (0, 0, 6), {}),
        ("ipv6_pseudo_header_sum", (0, 0, 6, 0, 0), {}),
        ("ipv6_pseudo_header_sum", (0, 0), {"next_header": 6, "length": 0}),
        ("update16", (0, 0), {}),
        ("update32", (0, 0, None), {}),
    ],
)
def test_wrong_types_and_arguments_raise_type_error(
    checksum_impl: ModuleType, name: str, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(TypeError):
        getattr(checksum_impl, name)(*args, **kwargs)


def test_initial_by_keyword_and_int_like(checksum_impl: ModuleType) -> None:
    assert checksum_impl.partial_sum(b"\x00\x01", initial=1) == 2
    assert checksum_impl.internet_checksum(b"\x00\x01", initial=True) == 0xFFFD

    class Index:
        def __index__(self) -> int:
            return 3

    assert checksum_impl.update16(Index(), 0, 0) == checksum_impl.update16(3, 0, 0)

    class Wide:
        def __index__(self) -> int:
            return 2**100 + 3

    wide = checksum_impl.ipv6_pseudo_header_sum(Wide(), True, Index(), Index())
    assert wide == checksum_impl.ipv6_pseudo_header_sum(2**100 + 3, 1, 3, 3)


def test_ipv6_range_errors_are_identical() -> None:
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    for args in [(2**128, 0, 6, 0), (0, -1, 6, 0), (0, 0, 256, 0), (0, 0, 6, 2**32)]:
        messages = []
        for impl in (c, _checksum_py):
            with pytest.raises(ValueError) as e:
                impl.ipv6_pseudo_header_sum(*args)
            messages.append(str(e.value))
        assert messages[0] == messages[1], args
    assert messages[0] == "length must be in 0..4294967295"


def test_signatures_are_identical() -> None:
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    for name in PUBLIC:
        params_c = inspect.signature(getattr(c, name)).parameters.values()
        params_py = inspect.signature(getattr(_checksum_py, name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in params_c] == [
            (p.name, p.kind, p.default) for p in params_py
        ], name


def test_c_reads_buffers_in_place() -> None:
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    backing = bytearray(8 << 20)
    view = memoryview(backing)[3:]
    tracemalloc.start()
    try:
        c.partial_sum(view)
        c.tcp_checksum(1, 2, view[:65535])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096


def test_python_fallback_copies_at_most_a_chunk() -> None:
    backing = bytearray(random.Random(3).randbytes(8 << 20))
    tracemalloc.start()
    try:
        _checksum_py.partial_sum(memoryview(backing)[1:])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # a few chunk-sized temporaries, not a copy of the 8 MiB input


# -- kernels and implementation choice ------------------------------------------------------


def test_c_kernels_are_selectable() -> None:
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    cpu_has_avx2 = "avx2" in Path("/proc/cpuinfo").read_text() if sys.platform == "linux" else None
    if cpu_has_avx2 is not None and os.uname().machine == "x86_64":
        # Run-time dispatch: the default kernel follows the CPU.
        kernels = c.KERNELS
        assert kernels == (("avx2", "portable") if cpu_has_avx2 else ("portable",))
    previous = c._kernel()
    assert c._set_kernel("portable") == previous
    try:
        assert c._kernel() == "portable"
        with pytest.raises(ValueError):
            c._set_kernel("sse9")
        assert c._kernel() == "portable"
    finally:
        c._set_kernel(previous)


def test_public_module_uses_the_reported_implementation() -> None:
    assert checksum.IMPLEMENTATION in ("c", "python")
    impl = _checksum_py if checksum.IMPLEMENTATION == "python" else c_module()
    assert impl is not None
    for name in PUBLIC:
        assert getattr(checksum, name) is getattr(impl, name)
    assert (checksum.KERNEL is None) == (checksum.IMPLEMENTATION == "python")
    assert checksum.IMPLEMENTATION_REASON


def _probe(env: dict[str, str], prelude: str = "") -> list[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("USTACK_PUREPYTHON", "USTACK_CHECKSUM_KERNEL")
    }
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    code = (
        f"{prelude}from ustack.wire import checksum as c\n"
        "print(c.IMPLEMENTATION, c.KERNEL, c.IMPLEMENTATION_REASON, sep='|')\n"
        "print(c.internet_checksum(bytes.fromhex('0001f203f4f5f6f7')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, second = out.stdout.splitlines()
    assert int(second) == 0x220D
    return first.split("|")


def test_env_forces_pure_python() -> None:
    assert _probe({"USTACK_PUREPYTHON": "1"}) == ["python", "None", "USTACK_PUREPYTHON=1 set"]


def test_default_is_c_when_built() -> None:
    c = c_module()
    if c is None:
        pytest.skip("C extension not built")
    impl, kernel, reason = _probe({})
    assert (impl, kernel) == ("c", c.KERNELS[0])
    assert reason.startswith("C extension loaded, ")
    assert ("AVX2 path" in reason) == (kernel == "avx2")


def test_env_forces_portable_kernel() -> None:
    if c_module() is None:
        pytest.skip("C extension not built")
    impl, kernel, reason = _probe({"USTACK_CHECKSUM_KERNEL": "portable"})
    assert (impl, kernel) == ("c", "portable")
    assert reason == "C extension loaded, portable path (USTACK_CHECKSUM_KERNEL=portable set)"


def test_missing_extension_falls_back_with_reason() -> None:
    impl, kernel, reason = _probe({}, "import sys\nsys.modules['ustack.wire._checksum'] = None\n")
    assert (impl, kernel) == ("python", "None")
    assert reason.startswith("C extension not built: ModuleNotFoundError")
