"""Addresses of both families as the core's one int: IPv4 plain, IPv6 tagged with bit 128.

Theory of operation: the host files connections by a 4-tuple of ints, so an address must be an
int that says its family. An IPv4 address stays the plain 32-bit int it has always been (the
IPv4 fast path never sees a tag); an IPv6 address is its 128-bit value with bit 128 set,
``addr | 1 << 128``, so it can never equal an IPv4 int -- not even ``::a.b.c.d`` -- and its
family is ``addr >> 128``. The wire modules read and write untagged values (``ipv6.parse``
gives the 128-bit integer, ``ipv6.emit`` takes it): the network layer tags on the way in and
:func:`untag` strips on the way out. Text conversion lives here, beside the tag, because every
layer that takes an address from a user (the host, netsim, the asyncio API, the CLI) needs the
same answer; it is a value conversion with no state, so it belongs to ``wire``.
"""

from __future__ import annotations

import ipaddress

V6 = 1 << 128  # the tag: set on every IPv6 address, never on an IPv4 one
_U128 = V6 - 1
_U32 = 0xFFFF_FFFF


def tag6(value: int) -> int:
    """A 128-bit IPv6 address as the core's tagged int."""
    if not 0 <= value <= _U128:
        raise ValueError(f"not a 128-bit IPv6 address: {value!r}")
    return value | V6


def untag(addr: int) -> int:
    """The address as its wire module wants it: an IPv6 address without its tag (an IPv4
    address is returned as it is)."""
    return addr & _U128


def is_v6(addr: int) -> bool:
    return addr >> 128 == 1


def from_text(text: str) -> int:
    """``"10.0.0.1"`` -> a plain int, ``"fd00:7::2"`` -> a tagged one; ValueError otherwise."""
    ip = ipaddress.ip_address(text)
    return int(ip) if ip.version == 4 else int(ip) | V6


def to_text(addr: int) -> str:
    """The inverse of :func:`from_text` (RFC 5952 text for IPv6)."""
    if addr >> 128 == 1:
        return str(ipaddress.IPv6Address(addr & _U128))
    if 0 <= addr <= _U32:
        return str(ipaddress.IPv4Address(addr))
    raise ValueError(f"not an address: {addr!r}")
