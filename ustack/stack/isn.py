"""Initial sequence numbers (RFC 6528).

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)``: ``M`` is a timer that
ticks every 4 microseconds (RFC 6528 3, after RFC 793), here derived from the ``now`` the caller
passes in, and ``F`` is a keyed hash, here BLAKE2s keyed with the host's secret. Each 4-tuple
therefore gets its own sequence-number space that an off-path attacker cannot guess, while the
ISNs of successive incarnations of one 4-tuple still increase with time, which is what keeps
old duplicates out of a new connection (RFC 9293 3.4.1).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

IsnSource = Callable[[int, int, int, int, float], int]
"""``(local_addr, local_port, remote_addr, remote_port, now) -> ISN``."""

TICKS_PER_SECOND = 250_000  # RFC 6528 3: M is a 4-microsecond timer
_TUPLE = struct.Struct("!IHIH")


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
            _TUPLE.pack(local_addr, local_port, remote_addr, remote_port),
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
