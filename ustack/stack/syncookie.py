"""SYN cookies (RFC 4987 3.6): answer a SYN without keeping any state, rebuild the TCB from the ACK.

Theory of operation
-------------------
A listener under a SYN flood cannot keep a SYN-RECEIVED connection for every SYN: the spoofed
sources never complete the handshake, so the queue fills and real clients are locked out. With
cookies the host answers such a SYN with a SYN,ACK whose ISN *is* the state it would have kept,
signed with a secret, and forgets the SYN. A real client's ACK brings the cookie back
(SEG.ACK - 1) together with its own ISN (SEG.SEQ - 1); if the signature checks out and the cookie
is young enough, the host creates the connection directly in ESTABLISHED. A forged or stale
ACK fails the check and is answered with a RST, as any ACK to a listener is (RFC 9293 3.10.7.2).

The cookie ISN, 32 bits::

    31    29 28  27 26                                        0
    +-------+------+-------------------------------------------+
    | t % 8 | mss  | hash(4-tuple, peer ISN, t, mss) & 2**27-1  |
    +-------+------+-------------------------------------------+

``t`` is a coarse clock, ``int(now // COUNTER_PERIOD)`` (64 s a tick). Its low three bits tell
the validator which tick to hash with, so one hash checks a cookie; a cookie more than
``MAX_AGE`` ticks old is refused without hashing. One from a tick still to come reads as old
(``k`` ticks ahead is ``8 - k`` ticks old modulo 8): it is refused as too old, or by the hash,
which covers the whole counter. ``mss`` indexes :data:`MSS_TABLE`, the largest entry not above
the MSS the SYN offered: only two bits of the peer's MSS survive, as on Linux. The hash is
BLAKE2s in its keyed mode: a MAC by construction (no HMAC double pass needed), fast on inputs
this short, in the standard library, and the same primitive the RFC 6528 ISNs use; an attacker
who cannot see the SYN,ACK must guess 27 bits per forged ACK. The 4-tuple enters the hash as the
ISNs' F() packs it (:func:`~ustack.stack.isn.pack_four_tuple`): the same 12 bytes as ever for
IPv4, 38 with the tagged addresses for IPv6, so a cookie made for one family never checks out
for the other.

What else the SYN said is lost, except through timestamps: when the SYN carried one and we use
them, the low :data:`TS_OPT_BITS` bits of our TSval in the SYN,ACK hold the peer's window shift
(4 bits, ``0xF`` = no scaling) and SACK-permitted (1 bit), and the ACK's TSecr echoes them back
(RFC 7323 makes the peer echo our TSval). The TSval is rounded *down* to the last clock value
with those low bits, never up, so our later TSvals never go backwards (which the peer's PAWS
check would punish). Without timestamps the SYN,ACK offers neither window scaling nor SACK, and
the connection has neither -- as on Linux.

Cookies only ever replace the SYN-RECEIVED state; they cost MSS values between the table's,
window scaling and SACK without timestamps, and SYN,ACK retransmission (nothing is kept to
resend it: a lost one is answered again when the peer's SYN is).
The host uses them only when its policy (``TcpConfig.syn_cookies``) says so.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from ustack.stack.isn import pack_four_tuple

# Linux's IPv4 table (net/ipv4/syncookies.c): the MSS values most SYNs carry. Index 0 is also
# the floor: RFC 9293 3.7.1 lets every host send 536 bytes to a peer that said nothing (one
# that offered less gets 536 too, as on Linux).
MSS_TABLE: Final = (536, 1300, 1440, 1460)
# RFC 4987 3.6: "a slowly incrementing" counter t; a tick is 64 s, as in the original design.
COUNTER_PERIOD: Final = 64.0
# A cookie is good for this many ticks after the one it was made in (2 to 3 minutes, as
# Linux's MAX_SYNCOOKIE_AGE): longer than any SYN,ACK takes to be answered.
MAX_AGE: Final = 2
# The longest a cookie can stay valid (made at the start of its tick): while a listener's last
# cookie may still come back, an ACK to it is worth checking.
LIFETIME: Final = (MAX_AGE + 1) * COUNTER_PERIOD
# Bits of our SYN,ACK TSval that carry the SYN's options (see the module docstring).
TS_OPT_BITS: Final = 5
TS_OPT_MASK: Final = (1 << TS_OPT_BITS) - 1
WSCALE_NONE: Final = 0xF
_WSCALE_MASK: Final = 0xF
_SACK_BIT: Final = 0x10
_MAX_WSCALE: Final = 14  # RFC 7323 2.3

_T_BITS: Final = 3
_T_SHIFT: Final = 29
_MSS_SHIFT: Final = 27
_MSS_MASK: Final = 0x3
_HASH_MASK: Final = (1 << _MSS_SHIFT) - 1
# After the 4-tuple: peer ISN, t, MSS index (with an IPv4 tuple, "!IHIHIIB" as ever).
_INPUT_TAIL = struct.Struct("!IIB")
_MASK32: Final = 0xFFFFFFFF


def mss_index(peer_mss: int) -> int:
    """The largest :data:`MSS_TABLE` entry not above ``peer_mss`` (index 0 below them all)."""
    for i in range(len(MSS_TABLE) - 1, 0, -1):
        if peer_mss >= MSS_TABLE[i]:
            return i
    return 0


class SynCookies:
    """Makes and checks cookie ISNs with one secret key (1 to 32 bytes, blake2s's key size)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or not 1 <= len(key) <= 32:
            raise ValueError("the SYN cookie secret must be 1 to 32 bytes")
        self._key = bytes(key)

    def _hash(
        self,
        local_addr: int,
        local_port: int,
        remote_addr: int,
        remote_port: int,
        peer_isn: int,
        t: int,
        index: int,
    ) -> int:
        data = pack_four_tuple(local_addr, local_port, remote_addr, remote_port)
        data += _INPUT_TAIL.pack(peer_isn, t & _MASK32, index)
        digest = hashlib.blake2s(data, digest_size=4, key=self._key).digest()
        return int.from_bytes(digest, "big") & _HASH_MASK

    def make(
        self,
        local_addr: int,
        local_port: int,
        remote_addr: int,
        remote_port: int,
        peer_isn: int,
        peer_mss: int,
        now: float,
    ) -> int:
        """The ISN of a cookie SYN,ACK answering a SYN with ``peer_isn`` and ``peer_mss``."""
        t = int(now // COUNTER_PERIOD)
        index = mss_index(peer_mss)
        h = self._hash(local_addr, local_port, remote_addr, remote_port, peer_isn, t, index)
        return ((t & ((1 << _T_BITS) - 1)) << _T_SHIFT) | (index << _MSS_SHIFT) | h

    def check(
        self,
        local_addr: int,
        local_port: int,
        remote_addr: int,
        remote_port: int,
        seg_seq: int,
        seg_ack: int,
        now: float,
    ) -> int | None:
        """The MSS a cookie ACK (``SEG.ACK - 1`` our cookie, ``SEG.SEQ - 1`` the peer's ISN)
        carries, or ``None`` if it is forged, for another 4-tuple, too old or from the future."""
        cookie = (seg_ack - 1) & _MASK32
        peer_isn = (seg_seq - 1) & _MASK32
        count = int(now // COUNTER_PERIOD)
        age = (count - (cookie >> _T_SHIFT)) % (1 << _T_BITS)
        if age > MAX_AGE:
            return None
        index = (cookie >> _MSS_SHIFT) & _MSS_MASK
        h = self._hash(
            local_addr, local_port, remote_addr, remote_port, peer_isn, count - age, index
        )
        if h != cookie & _HASH_MASK:
            return None
        return MSS_TABLE[index]


def encode_tsval(clock: int, wscale: int | None, sack: bool) -> int:
    """Our TSval for a cookie SYN,ACK: ``clock`` (our timestamp clock) with its low bits
    replaced by the SYN's window shift and SACK-permitted, rounded down, never up."""
    bits = (WSCALE_NONE if wscale is None else min(wscale, _MAX_WSCALE)) | (
        _SACK_BIT if sack else 0
    )
    if clock & TS_OPT_MASK < bits:
        clock -= TS_OPT_MASK + 1
    return ((clock & ~TS_OPT_MASK) | bits) & _MASK32


def decode_tsecr(tsecr: int) -> tuple[int | None, bool]:
    """The (window shift or None, SACK-permitted) a cookie ACK's TSecr echoes back."""
    wscale = tsecr & _WSCALE_MASK
    return None if wscale == WSCALE_NONE else wscale, bool(tsecr & _SACK_BIT)
