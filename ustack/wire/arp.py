"""ARP for IPv4 over Ethernet (RFC 826).

Theory of operation: an ARP packet names a hardware space and a protocol space, the lengths of
their addresses, an opcode, and then the sender's and the target's hardware and protocol
addresses. ustack speaks exactly one combination -- Ethernet (``ar$hrd`` 1, ``ar$hln`` 6) and
IPv4 (``ar$pro`` 0x0800, ``ar$pln`` 4) -- so :func:`parse` checks the length once, refuses any
other combination with a reason (RFC 826: "?Do I have the hardware type in ar$hrd ... ?Do I speak
the protocol in ar$pro? [optionally check the hardware length ar$hln] [optionally check the
protocol length ar$pln]"; we do check both), and returns an :class:`ArpPacket` with the protocol
addresses as the core's IPv4 ints. Bytes after the 28 octets (Ethernet padding) are ignored.

RFC 5227's special forms are ordinary ARP packets: a *probe* is a request with sender protocol
address 0.0.0.0, an *announcement* (gratuitous ARP) a request whose sender and target protocol
addresses are both the sender's own. :func:`summary` names them in tcpdump's words.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ustack.wire.errors import ParseError
from ustack.wire.ethernet import mac_to_text
from ustack.wire.ipv4 import int_to_addr

# ar$hrd, ar$pro, ar$hln, ar$pln, ar$op, ar$sha, ar$spa, ar$tha, ar$tpa (RFC 826 "Packet format")
_PACKET: Final = struct.Struct("!HHBBH6sI6sI")
PACKET_LEN: Final = 28

HTYPE_ETHERNET: Final = 1  # ares_hrd$Ethernet (RFC 826; IANA "Hardware Types")
PTYPE_IPV4: Final = 0x0800  # the protocol space is named by its EtherType
HLEN_ETHERNET: Final = 6
PLEN_IPV4: Final = 4
OP_REQUEST: Final = 1  # ares_op$REQUEST
OP_REPLY: Final = 2  # ares_op$REPLY

UNSPECIFIED: Final = 0  # 0.0.0.0: a probe's sender protocol address (RFC 5227 2.1.1)


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sha: bytes  # sender hardware address
    spa: int  # sender protocol address
    tha: bytes  # target hardware address (ignored in a request)
    tpa: int  # target protocol address

    @property
    def is_probe(self) -> bool:
        """RFC 5227 2.1.1: a request from a host that has no address yet."""
        return self.op == OP_REQUEST and self.spa == UNSPECIFIED

    @property
    def is_announcement(self) -> bool:
        """RFC 5227 2.3 (gratuitous ARP): the sender states its own mapping."""
        return self.spa == self.tpa and self.spa != UNSPECIFIED


def parse(data: bytes | bytearray | memoryview) -> ArpPacket:
    """One Ethernet/IPv4 ARP packet; :class:`ParseError` naming what is wrong otherwise."""
    if len(data) < PACKET_LEN:
        raise ParseError("arp_truncated")
    hrd, pro, hln, pln, op, sha, spa, tha, tpa = _PACKET.unpack_from(data)
    if hrd != HTYPE_ETHERNET:
        raise ParseError("arp_unsupported_hardware")
    if pro != PTYPE_IPV4:
        raise ParseError("arp_unsupported_protocol")
    if hln != HLEN_ETHERNET or pln != PLEN_IPV4:
        raise ParseError("arp_bad_address_length")
    if op not in (OP_REQUEST, OP_REPLY):
        raise ParseError("arp_bad_op")
    return ArpPacket(op, sha, spa, tha, tpa)


def emit(
    buf: bytearray, offset: int, *, op: int, sha: bytes, spa: int, tha: bytes, tpa: int
) -> int:
    """Write one Ethernet/IPv4 ARP packet into ``buf`` at ``offset``; returns its length."""
    _PACKET.pack_into(
        buf, offset, HTYPE_ETHERNET, PTYPE_IPV4, HLEN_ETHERNET, PLEN_IPV4, op, sha, spa, tha, tpa
    )
    return PACKET_LEN


def build(*, op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    buf = bytearray(PACKET_LEN)
    emit(buf, 0, op=op, sha=sha, spa=spa, tha=tha, tpa=tpa)
    return bytes(buf)


def summary(pkt: ArpPacket) -> str:
    """tcpdump's sentence for the packet: ``who-has 10.7.0.2? tell 10.7.0.1``,
    ``10.7.0.2 is-at 02:..``, with RFC 5227's probes and announcements named."""
    if pkt.op == OP_REQUEST:
        if pkt.is_probe:
            return f"who-has {int_to_addr(pkt.tpa)}? tell 0.0.0.0 (probe)"
        if pkt.is_announcement:
            return f"announce {int_to_addr(pkt.spa)} is-at {mac_to_text(pkt.sha)}"
        return f"who-has {int_to_addr(pkt.tpa)}? tell {int_to_addr(pkt.spa)}"
    return f"{int_to_addr(pkt.spa)} is-at {mac_to_text(pkt.sha)}"
