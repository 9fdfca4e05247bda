"""The Internet checksum (RFC 1071), with RFC 1624 incremental updates.

Theory of operation: a checksum is built from *partial sums*. ``partial_sum(data, initial)`` is
the one's-complement sum of ``data`` read as big-endian 16-bit words (a trailing odd byte padded
with zero) plus ``initial``, folded to 16 bits and not complemented; feeding one call's result to
the next as ``initial`` chains the pseudo-header, header and payload without concatenating them,
and ``finish`` complements the total into the checksum. A partial sum is 0 only if everything
summed was zero; otherwise the one's-complement zero is written 0xFFFF, so every result has one
canonical form and both implementations agree bit for bit. ``verify_tcp`` recomputes over a
received segment including its checksum field: a correct one sums to 0xFFFF, i.e. checksum 0.
``update16``/``update32`` patch a checksum after a field changes (RFC 1624 eqn. 3) without
touching the rest of the packet.

A transport checksum starts from its pseudo-header's partial sum: ``ipv4_pseudo_header_sum``
(RFC 9293 3.1: 32-bit addresses, protocol, 16-bit length) and ``ipv6_pseudo_header_sum``
(RFC 8200 8.1: 128-bit addresses, 32-bit upper-layer length, next header), addresses as
host-order ints of their width. Because 2**16 is 1 modulo 0xFFFF, an integer sums like its 16-bit
words, so a length can be added later as a plain integer: :mod:`ustack.wire.tcp` is handed the sum
with length 0 and adds the segment's own. ``tcp_checksum``/``verify_tcp`` are the IPv4 shortcut
(pseudo-header and segment in one call) for the IPv4 fast paths.

Two implementations provide the same API: the C extension ``ustack.wire._checksum`` (chosen
when it is built; an AVX2 or a portable kernel picked for the CPU) and the pure-Python
``ustack.wire._checksum_py``. ``USTACK_PUREPYTHON=1`` forces the Python one;
``USTACK_CHECKSUM_KERNEL=portable`` forces the C extension's portable kernel. The choice is made
once, at import, and reported in ``IMPLEMENTATION``, ``KERNEL`` and ``IMPLEMENTATION_REASON``.

Data is any bytes-like object (``bytes``, ``bytearray``, a ``memoryview`` slice at any offset) and
is never copied by the C extension; integers out of range raise ``ValueError``.
"""

from __future__ import annotations

import os

__all__ = [
    "IMPLEMENTATION",
    "IMPLEMENTATION_REASON",
    "KERNEL",
    "finish",
    "internet_checksum",
    "ipv4_pseudo_header_sum",
    "ipv6_pseudo_header_sum",
    "partial_sum",
    "tcp_checksum",
    "update16",
    "update32",
    "verify_tcp",
]

IMPLEMENTATION: str
"""``"c"`` or ``"python"``."""
KERNEL: str | None
"""The C extension's summing kernel at import (``"avx2"`` or ``"portable"``), None for Python."""
IMPLEMENTATION_REASON: str
"""One sentence saying why this implementation (and kernel) was chosen."""

_force = os.environ.get("USTACK_PUREPYTHON", "")
_fallback_reason = f"USTACK_PUREPYTHON={_force} set" if _force not in ("", "0") else ""
if not _fallback_reason:
    try:
        from ustack.wire._checksum import (
            finish,
            internet_checksum,
            ipv4_pseudo_header_sum,
            ipv6_pseudo_header_sum,
            partial_sum,
            tcp_checksum,
            update16,
            update32,
            verify_tcp,
        )
    except ImportError as exc:
        _fallback_reason = f"C extension not built: {type(exc).__name__}: {exc}"
if _fallback_reason:
    from ustack.wire._checksum_py import (
        finish,
        internet_checksum,
        ipv4_pseudo_header_sum,
        ipv6_pseudo_header_sum,
        partial_sum,
        tcp_checksum,
        update16,
        update32,
        verify_tcp,
    )

    IMPLEMENTATION, KERNEL = "python", None
    IMPLEMENTATION_REASON = _fallback_reason
else:
    from ustack.wire import _checksum

    IMPLEMENTATION = "c"
    _wanted = os.environ.get("USTACK_CHECKSUM_KERNEL", "")
    _note = ""
    if _wanted:
        try:
            _checksum._set_kernel(_wanted)
            _note = f" (USTACK_CHECKSUM_KERNEL={_wanted} set)"
        except ValueError:
            _note = f" (USTACK_CHECKSUM_KERNEL={_wanted} ignored: not available here)"
    KERNEL = _checksum._kernel()
    if KERNEL == "avx2":
        IMPLEMENTATION_REASON = f"C extension loaded, AVX2 path{_note}"
    else:
        _why = _note or f" ({_checksum.NO_AVX2_REASON})"
        IMPLEMENTATION_REASON = f"C extension loaded, portable path{_why}"
