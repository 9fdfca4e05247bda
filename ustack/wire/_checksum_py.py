"""The Internet checksum in pure Python: the fallback for, and the twin of, ``_checksum.c``.

Theory of operation: the one's-complement sum of 16-bit words (RFC 1071) is their sum modulo
0xFFFF, written as 1..0xFFFF unless every word is zero. Read as one big little-endian integer, a
buffer is the sum of its 16-bit words times powers of 2**16, and 2**16 is 1 modulo 0xFFFF, so
``int.from_bytes(data, "little") % 0xFFFF`` is the sum of the byte-swapped words; one swap of the
16-bit result gives network order (RFC 1071 2(B)), and a trailing odd byte lands in the right
place by itself. All the work happens inside CPython's C loops, a constant number of them per
chunk, never a Python loop per word.

Taking a remainder costs a hardware division per 30-bit digit, so large integers are first folded
at multiples of 240 bits (16 for the checksum, 30 for CPython's digits): ``(x >> k) + (x & mask)``
keeps ``x`` modulo 0xFFFF, halves its size, and is zero only if ``x`` is. ``int.from_bytes``
copies a buffer that is not ``bytes``, so big inputs go in chunks of ``_CHUNK`` bytes to bound
that copy.

Results, exceptions and signatures match the C module bit for bit; tests run both.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, SupportsIndex

if TYPE_CHECKING:
    from typing_extensions import Buffer

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_U128 = (1 << 128) - 1
# RFC 9293 3.1: the pseudo-header's TCP length is a 16-bit field.
_TCP_MAX_LENGTH = 0xFFFF
_PROTO_TCP = 6

# Fold steps k = 240 * 2**j, largest first; after the step at k a value has at most k + 1 bits.
# Below _FOLD_STOP bits one division per digit is cheaper than another fold (measured).
_FOLD_STOP = 1920
_FOLDS = tuple((k, (1 << k) - 1) for k in (240 << j for j in range(10, 2, -1)))
# Bytes per int.from_bytes call: twice the largest fold step, so one chunk needs one fold per step.
_CHUNK = 2 * _FOLDS[0][0] // 8
# Up to this many bytes, one remainder is cheaper than any fold.
_SHORT = _FOLD_STOP // 8


def _reduce(x: int) -> int:
    """A small int congruent to ``x`` modulo 0xFFFF, zero only if ``x`` is zero."""
    bits = x.bit_length()
    if bits > _FOLD_STOP:
        for k, mask in _FOLDS:
            if bits > k:
                x = (x >> k) + (x & mask)
                bits = x.bit_length()
    return x


def _checked(value: SupportsIndex, maximum: int, name: str) -> int:
    """The slow path of every integer argument: TypeError for non-integers, ValueError out of
    range, exactly like the C module (which also accepts any ``__index__``)."""
    v = operator.index(value)
    if v < 0 or v > maximum:
        raise ValueError(f"{name} must be in 0..{maximum}")
    return v


def _data_view(data: Buffer) -> memoryview:
    mv = memoryview(data)
    if not mv.c_contiguous:
        # The C module asks for PyBUF_SIMPLE, which a strided view refuses with this error.
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    return mv


def _swapped_sum(data: Buffer) -> int:
    """Sum of the little-endian 16-bit words of ``data``, reduced: zero only for all-zero data."""
    if type(data) is bytes and len(data) <= _CHUNK:
        return _reduce(int.from_bytes(data, "little"))
    mv = _data_view(data)
    n = len(mv)
    if n <= _CHUNK:
        return _reduce(int.from_bytes(mv, "little"))
    total = 0
    # Chunks start at even offsets, so each one's words are the buffer's words.
    for start in range(0, n, _CHUNK):
        total += _reduce(int.from_bytes(mv[start : start + _CHUNK], "little"))
    return total


def partial_sum(data: Buffer, /, initial: int = 0) -> int:
    """One's-complement sum of ``data`` in network order plus ``initial``, folded to 16 bits and
    not complemented (0 only if everything is zero); chain it through ``initial``."""
    if type(initial) is not int or (initial & _U64) != initial:
        initial = _checked(initial, _U64, "initial")
    # Short bytes (most packets) skip the view and the folds.
    if type(data) is bytes and len(data) <= _SHORT:
        x = int.from_bytes(data, "little")
    else:
        x = _swapped_sum(data)
    r = x % _U16
    if r:
        r = ((r & 0xFF) << 8) | (r >> 8)
    elif x:
        r = _U16  # a non-zero sum is never written 0
    if initial:
        r = (r + initial) % _U16 or _U16
    return r


def finish(total: int, /) -> int:
    """Fold a partial sum (0..2**64-1) to 16 bits and complement it: the checksum."""
    if type(total) is not int or (total & _U64) != total:
        total = _checked(total, _U64, "total")
    s = total % _U16
    return 0 if s == 0 and total else s ^ _U16


def internet_checksum(data: Buffer, /, initial: int = 0) -> int:
    """RFC 1071 checksum of ``data`` (with the partial sum ``initial`` added first)."""
    # partial_sum is already folded to 0..0xFFFF, so finish() is just the complement.
    return partial_sum(data, initial) ^ _U16


def ipv4_pseudo_header_sum(src: int, dst: int, proto: int, length: int, /) -> int:
    """Partial sum of the IPv4 pseudo-header (RFC 9293 3.1); addresses are host-order ints."""
    if type(src) is not int or (src & _U32) != src:
        src = _checked(src, _U32, "src")
    if type(dst) is not int or (dst & _U32) != dst:
        dst = _checked(dst, _U32, "dst")
    if type(proto) is not int or (proto & 0xFF) != proto:
        proto = _checked(proto, 0xFF, "proto")
    if type(length) is not int or (length & _U16) != length:
        length = _checked(length, _U16, "length")
    total = (src >> 16) + (src & _U16) + (dst >> 16) + (dst & _U16) + proto + length
    s = total % _U16
    return s if s or not total else _U16


def ipv6_pseudo_header_sum(src: int, dst: int, next_header: int, length: int, /) -> int:
    """Partial sum of the IPv6 pseudo-header (RFC 8200 8.1); addresses are 128-bit host-order
    ints, ``length`` is the 32-bit upper-layer packet length."""
    if type(src) is not int or (src & _U128) != src:
        src = _checked(src, _U128, "src")
    if type(dst) is not int or (dst & _U128) != dst:
        dst = _checked(dst, _U128, "dst")
    if type(next_header) is not int or (next_header & 0xFF) != next_header:
        next_header = _checked(next_header, 0xFF, "next_header")
    if type(length) is not int or (length & _U32) != length:
        length = _checked(length, _U32, "length")
    # Each address is the sum of its eight 16-bit words times powers of 2**16, and 2**16 is 1
    # modulo 0xFFFF, so the plain integer sum is the word sum modulo 0xFFFF; likewise for the
    # 32-bit length. The 24 zero bits add nothing.
    total = src + dst + next_header + length
    s = total % _U16
    return s if s or not total else _U16


def _tcp(src: int, dst: int, segment: Buffer) -> int:
    if type(src) is not int or (src & _U32) != src:
        src = _checked(src, _U32, "src")
    if type(dst) is not int or (dst & _U32) != dst:
        dst = _checked(dst, _U32, "dst")
    n = len(segment) if type(segment) is bytes else _data_view(segment).nbytes
    if n > _TCP_MAX_LENGTH:
        raise ValueError(f"segment longer than {_TCP_MAX_LENGTH} bytes")
    pseudo = (src >> 16) + (src & _U16) + (dst >> 16) + (dst & _U16) + _PROTO_TCP + n
    return partial_sum(segment, pseudo) ^ _U16


def tcp_checksum(src: int, dst: int, segment: Buffer, /) -> int:
    """Checksum of a TCP ``segment`` (header with checksum field zeroed, plus payload)."""
    return _tcp(src, dst, segment)


def verify_tcp(src: int, dst: int, segment: Buffer, /) -> bool:
    """True if the received TCP ``segment`` carries a correct checksum."""
    return _tcp(src, dst, segment) == 0


def update16(old_checksum: int, old_word: int, new_word: int, /) -> int:
    """RFC 1624 eqn. 3: the checksum after one 16-bit word changes, HC' = ~(~HC + ~m + m')."""
    if type(old_checksum) is not int or (old_checksum & _U16) != old_checksum:
        old_checksum = _checked(old_checksum, _U16, "old_checksum")
    if type(old_word) is not int or (old_word & _U16) != old_word:
        old_word = _checked(old_word, _U16, "old_word")
    if type(new_word) is not int or (new_word & _U16) != new_word:
        new_word = _checked(new_word, _U16, "new_word")
    s = (old_checksum ^ _U16) + (old_word ^ _U16) + new_word
    s = (s & _U16) + (s >> 16)
    s = (s & _U16) + (s >> 16)
    return s ^ _U16


def update32(old_checksum: int, old_dword: int, new_dword: int, /) -> int:
    """RFC 1624 eqn. 3 applied to both halves of a changed 32-bit field."""
    if type(old_checksum) is not int or (old_checksum & _U16) != old_checksum:
        old_checksum = _checked(old_checksum, _U16, "old_checksum")
    if type(old_dword) is not int or (old_dword & _U32) != old_dword:
        old_dword = _checked(old_dword, _U32, "old_dword")
    if type(new_dword) is not int or (new_dword & _U32) != new_dword:
        new_dword = _checked(new_dword, _U32, "new_dword")
    s = (
        (old_checksum ^ _U16)
        + ((old_dword >> 16) ^ _U16)
        + ((old_dword & _U16) ^ _U16)
        + (new_dword >> 16)
        + (new_dword & _U16)
    )
    s = (s & _U16) + (s >> 16)
    s = (s & _U16) + (s >> 16)
    return s ^ _U16
