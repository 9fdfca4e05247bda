"""Initial sequence numbers (RFC 6528).

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)``: ``M`` is a timer that
ticks every 4 microseconds (RFC 6528 3, after RFC 793), here derived from the ``now`` the caller
passes in, and ``F`` is a keyed hash, here BLAKE2s keyed with the host's secret. Each 4-tuple
therefore gets its own sequence-number space that an off-path attacker cannot guess, while the
ISNs of successive incarnations of one 4-tuple still increase with time, which is what keeps
old duplicates out of a new connection (RFC 9293 3.4.1).

Addresses are the core's ints: an IPv4 address is its 32-bit value, an IPv6 address is tagged
``addr | 1 << 128`` (129 bits, the family is ``addr >> 128``). F() is a function of the 4-tuple
whatever its family: an IPv4 tuple is hashed as 12 bytes, four fields in network order (the
bytes, and so the ISNs, ustack has always used), and any other as 38 bytes, each address in 17
bytes with its tag. Inputs of different lengths are different messages, so an IPv6 tuple never
shares its hash with the IPv4 tuple of the same low bits. :func:`pack_four_tuple` is also what
the SYN cookies (``syncookie.py``) hash.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

IsnSource = Callable[[int, int, int, int, float], int]
"""``(local_addr, local_port, remote_addr, remote_port, now) -> ISN``."""

TICKS_PER_SECOND = 250_000  # RFC 6528 3: M is a 4-microsecond timer
_TUPLE = struct.Struct("!IHIH")  # an IPv4 4-tuple
_V4_END = 1 << 32  # addresses below are IPv4 (RFC 791: 32 bits)
_WIDE_ADDR_BYTES = 17  # a tagged IPv6 address: 128 bits (RFC 8200) and the family bit


def pack_four_tuple(local_addr: int, local_port: int, remote_addr: int, remote_port: int) -> bytes:
    """The 4-tuple as the bytes F() hashes: 12 for IPv4, 38 for a tagged IPv6 tuple."""
    if local_addr < _V4_END and remote_addr < _V4_END:
        return _TUPLE.pack(local_addr, local_port, remote_addr, remote_port)
    return b"".join(
        (
            local_addr.to_bytes(_WIDE_ADDR_BYTES, "big"),
            local_port.to_bytes(2, "big"),
            remote_addr.to_bytes(_WIDE_ADDR_BYTES, "big"),
            remote_port.to_bytes(2, "big"),
        )
    )


class Rfc6528Isn:
    """The RFC 6528 generator; ``secret`` is 1 to 32 bytes (blake2s's key size limit)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or not 1 <= len(secret) <= 32:
            raise ValueError("the ISN secret must be 1 to 32 bytes (e.g. os.urandom(16))")
        self._secret = bytes(secret)

    def hash(self, local_addr: int, local_port: int, remote_addr: int, remote_port: int) -> int:
        """F(): the keyed hash of the 4-tuple, 32 bits."""
        digest = hashlib.blake2s(
            pack_four_tuple(local_addr, local_port, remote_addr, remote_port),
            digest_size=4,
            key=self._secret,
        ).digest()
        return int.from_bytes(digest, "big")

    def __call__(
        self, local_addr: int, local_port: int, remote_addr: int, remote_port: int, now: float
    ) -> int:
        m = int(now * TICKS_PER_SECOND)
        return (m + self.hash(local_addr, local_port, remote_addr, remote_port)) & 0xFFFFFFFF


def fixed_isn(value: int) -> IsnSource:
    """An ISN source that always answers ``value`` (for tests with readable sequence numbers)."""
    value &= 0xFFFFFFFF

    def source(
        local_addr: int, local_port: int, remote_addr: int, remote_port: int, now: float
    ) -> int:
        return value

    return source
