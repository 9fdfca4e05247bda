"""The virtio-net header that a TUN device opened with ``IFF_VNET_HDR`` puts before each packet.

Theory of operation. With ``IFF_VNET_HDR`` every read from and write to the TUN fd starts with a
``struct virtio_net_hdr`` (virtio spec 1.2, 5.1.6; ``<linux/virtio_net.h>``), ten bytes that
carry what a NIC's offload engines would otherwise do:

* ``flags``: ``NEEDS_CSUM`` -- the transport checksum was *not* computed; the checksum field
  holds only the pseudo-header sum and ``csum_start``/``csum_offset`` say where summing starts
  and where the result goes. The kernel sets it on packets it generated itself (so the bytes
  never crossed a wire), and accepts it from us on what we write. ``DATA_VALID`` -- the
  checksum was verified already.
* ``gso_type``/``gso_size``/``hdr_len``: a *super-segment*. ``GSO_TCPV4`` (or ``GSO_TCPV6``)
  with ``gso_size`` = the TCP payload per wire segment means "this is several segments
  coalesced": the kernel hands us up to 64 KB at once (GRO/TSO on its side), and cuts what we
  write into ``gso_size`` pieces itself (TSO on ours) -- or, for a locally delivered packet,
  never cuts it at all. ``hdr_len`` is the length of the IP and TCP headers.

The fields are little-endian: TUN uses the legacy header in the host's byte order unless told
otherwise, and ustack only runs on little-endian hosts (x86-64, arm64); ``TunLink`` asks the
kernel for little-endian explicitly where it can. Like every wire module: a length check, then
plain values; :func:`emit` writes into a caller's buffer.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ustack.wire.errors import ParseError

_HDR = struct.Struct("<BBHHHH")
HEADER_LEN = 10  # struct virtio_net_hdr; TUNSETVNETHDRSZ keeps this size

# flags
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
# gso_type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80  # ORed into gso_type: the segments carry CE/ECE

# csum_offset of the checksum field inside a TCP header (RFC 9293 3.1)
TCP_CSUM_OFFSET = 16


class VirtioNetHdr(NamedTuple):
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int

    @property
    def checksum_trusted(self) -> bool:
        """The transport checksum needs no verification: the kernel made the packet (its
        checksum was never computed) or checked it already."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))


NO_OFFLOAD = VirtioNetHdr(0, GSO_NONE, 0, 0, 0, 0)


def parse(buf: bytes | bytearray | memoryview) -> VirtioNetHdr:
    """The header at the front of ``buf``; :class:`ParseError` if ``buf`` is shorter."""
    if len(buf) < HEADER_LEN:
        raise ParseError("virtio_truncated")
    return VirtioNetHdr._make(_HDR.unpack_from(buf))


def rx_flags(buf: bytes | bytearray | memoryview) -> tuple[bool, bool]:
    """The receive path's reading of a header, without building a record: whether the transport
    checksum is trusted (see :attr:`VirtioNetHdr.checksum_trusted`) and whether the packet is
    a GSO super-segment. :class:`ParseError` if ``buf`` is shorter than a header."""
    if len(buf) < HEADER_LEN:
        raise ParseError("virtio_truncated")
    return bool(buf[0] & (F_NEEDS_CSUM | F_DATA_VALID)), buf[1] != GSO_NONE


def emit(
    buf: bytearray | memoryview,
    offset: int = 0,
    *,
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> None:
    """Write a header at ``buf[offset:offset + HEADER_LEN]``."""
    _HDR.pack_into(buf, offset, flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
