"""Ethernet II framing (RFC 894) and MAC addresses.

Theory of operation: an Ethernet II frame as a TAP device carries it is a 14-octet header --
destination MAC, source MAC, EtherType -- and then the payload; the preamble and the frame check
sequence never reach software, so there is no trailer to strip. :func:`parse` checks the length
once and returns an :class:`EthernetFrame` whose ``payload`` is a view of the rest (RFC 894's
zero padding of short frames included: the IPv4 and ARP parsers stop at their own length).
:func:`header` builds the 14 octets that go in front of a packet, so an IP packet is written
behind it with one ``writev(2)`` and never copied.

A type field below 0x0600 is an IEEE 802.3 length, not an EtherType: such frames (LLC, spanning
tree) are not Ethernet II and are refused with a reason. MAC addresses are 6-octet ``bytes``;
the low bit of the first octet is the I/G (group) bit, the next one the U/L (locally
administered) bit (IEEE 802, RFC 7042 2.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ustack.wire.errors import ParseError

_HEADER: Final = struct.Struct("!6s6sH")
HEADER_LEN: Final = 14
MAC_LEN: Final = 6

ETHERTYPE_IPV4: Final = 0x0800  # RFC 894
ETHERTYPE_ARP: Final = 0x0806  # RFC 826
ETHERTYPE_IPV6: Final = 0x86DD  # RFC 2464 3
# IEEE 802.3: a type/length field from 1536 (0x0600) up is an EtherType; below, a length.
ETHERTYPE_MIN: Final = 0x0600
# RFC 894: "The minimum length of the data field of a packet sent over an Ethernet is 46
# octets"; shorter data is padded with zero octets.
MIN_PAYLOAD: Final = 46

BROADCAST: Final = b"\xff" * MAC_LEN
ZERO_MAC: Final = bytes(MAC_LEN)
_GROUP_BIT: Final = 0x01  # I/G: a group (multicast or broadcast) address
_LOCAL_BIT: Final = 0x02  # U/L: locally administered
# RFC 1112 6.4: an IPv4 multicast group maps to 01-00-5E plus the group's low 23 bits.
_IPV4_MULTICAST_PREFIX: Final = 0x01005E000000
_IPV6_MULTICAST_PREFIX: Final = 0x333300000000  # RFC 2464 7

_TYPE_NAMES: Final = {ETHERTYPE_IPV4: "IPv4", ETHERTYPE_ARP: "ARP", ETHERTYPE_IPV6: "IPv6"}


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    dst: bytes
    src: bytes
    ethertype: int
    payload: memoryview


def parse(frame: bytes | bytearray | memoryview) -> EthernetFrame:
    """The header and a view of the payload; :class:`ParseError` if it is no Ethernet II frame."""
    if len(frame) < HEADER_LEN:
        raise ParseError("ethernet_truncated")
    dst, src, ethertype = _HEADER.unpack_from(frame)
    if ethertype < ETHERTYPE_MIN:
        raise ParseError("ethernet_8023_length")
    return EthernetFrame(dst, src, ethertype, memoryview(frame)[HEADER_LEN:])


def header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """The 14-octet header to put in front of a payload."""
    return _HEADER.pack(dst, src, ethertype)


def emit(buf: bytearray, offset: int, dst: bytes, src: bytes, ethertype: int) -> int:
    """Write the header into ``buf`` at ``offset``; returns its length."""
    _HEADER.pack_into(buf, offset, dst, src, ethertype)
    return HEADER_LEN


def is_group(mac: bytes | memoryview) -> bool:
    """Multicast or broadcast: never the address of one interface."""
    return bool(mac[0] & _GROUP_BIT)


def is_locally_administered(mac: bytes | memoryview) -> bool:
    return bool(mac[0] & _LOCAL_BIT)


def local_mac(seed: bytes) -> bytes:
    """A locally administered unicast MAC from six octets of (injected) randomness: U/L set,
    I/G clear, so it can collide with no vendor's address and is never a group address."""
    if len(seed) != MAC_LEN:
        raise ValueError(f"a MAC takes {MAC_LEN} octets of seed, got {len(seed)}")
    return bytes([(seed[0] | _LOCAL_BIT) & ~_GROUP_BIT & 0xFF]) + bytes(seed[1:])


def ipv4_multicast_mac(group: int) -> bytes:
    """RFC 1112 6.4: the Ethernet group address of IPv4 multicast group ``group``."""
    return (_IPV4_MULTICAST_PREFIX | (group & 0x7FFFFF)).to_bytes(MAC_LEN, "big")


def ipv6_multicast_mac(group: int) -> bytes:
    """RFC 2464 7: the Ethernet group address of IPv6 multicast address ``group`` (untagged or
    tagged): 33-33 plus the group's low 32 bits."""
    return (_IPV6_MULTICAST_PREFIX | (group & 0xFFFFFFFF)).to_bytes(MAC_LEN, "big")


def mac_to_text(mac: bytes | memoryview) -> str:
    """``02:5e:10:00:00:02``: lower-case hex octets separated by colons, as ``ip link`` shows."""
    return ":".join(f"{b:02x}" for b in bytes(mac))


def mac_from_text(text: str) -> bytes:
    """Parse ``02:5e:10:00:00:02`` (or with ``-`` between octets); ValueError if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"a MAC address must be text, got {text!r}")
    parts = text.replace("-", ":").split(":")
    if len(parts) != MAC_LEN or not all(
        1 <= len(p) <= 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise ValueError(f"bad MAC address {text!r}: use six hex octets, e.g. 02:00:00:00:00:01")
    return bytes(int(p, 16) for p in parts)


def type_name(ethertype: int) -> str:
    return _TYPE_NAMES.get(ethertype, f"0x{ethertype:04x}")


def format_frame(frame: EthernetFrame) -> str:
    """One line in tcpdump -e's words: ``02:..:01 > ff:..:ff, ethertype ARP (0x0806), length 42``."""
    return (
        f"{mac_to_text(frame.src)} > {mac_to_text(frame.dst)}, ethertype "
        f"{type_name(frame.ethertype)} (0x{frame.ethertype:04x}), "
        f"length {HEADER_LEN + len(frame.payload)}"
    )
