"""Packet capture: a classic pcap writer and a tap that records any link.

Format (the "libpcap" file format, as documented by tcpdump.org and the IETF pcap draft): a
24-byte global header -- magic ``0xa1b2c3d4`` (microsecond timestamps), version 2.4, zone 0,
sigfigs 0, snaplen, link type -- then per packet a 16-byte record header (seconds,
microseconds, captured length, original length) and the captured bytes. Link type 101,
``LINKTYPE_RAW``, means each record starts directly with an IP header, IPv4 or IPv6 (readers
tell them apart by the version nibble), which is exactly what a TUN device with ``IFF_NO_PI``
carries; so a capture of both families needs nothing per family. Everything is written
little-endian; readers detect the byte order from the magic.

Timestamps are wall-clock time, because a capture is for humans and Wireshark, not for the
protocol core. Records are gathered in a bounded in-memory buffer and written out when it
passes ``buffer_size`` bytes, on ``flush()`` and on ``close()``, so capturing costs one
``write(2)`` per buffer rather than per packet.

``PcapTap(inner, writer)`` wraps any link and records both directions: packets as they are
handed to ``write`` (before the inner link may drop them) and packets returned by
``read_batch``. Where it sits decides what it sees: ``PcapTap(FaultyLink(tun))`` records what
the host sent and received, ``FaultyLink(PcapTap(tun))`` what actually crossed the device.
Over a link with TUN offloads on, the tap drops the virtio-net header and records the IP
packet behind it; a super-segment stays one packet of up to 64 KB, which is what tcpdump shows
on an interface with GRO/TSO.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ustack.link.base import Gathered, Link, LinkStats, Packet, joined

PCAP_MAGIC = 0xA1B2C3D4  # microsecond-resolution pcap
PCAP_VERSION = (2, 4)
LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header
SNAPLEN = 65535
BUFFER_SIZE = 256 * 1024

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


class PcapWriter:
    """Writes packets to a pcap file (a path, or a binary file object opened for writing)."""

    __slots__ = ("_buffer", "_buffer_size", "_file", "_owns_file", "packets", "snaplen")

    def __init__(
        self,
        path_or_file: str | Path | BinaryIO,
        *,
        snaplen: int = SNAPLEN,
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        if isinstance(path_or_file, str | Path):
            self._file: BinaryIO | None = open(path_or_file, "wb")  # noqa: SIM115 - closed in close()
            self._owns_file = True
        else:
            self._file = path_or_file
            self._owns_file = False
        self.snaplen = snaplen
        self.packets = 0
        self._buffer_size = buffer_size
        self._buffer = bytearray(
            _GLOBAL_HEADER.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, LINKTYPE_RAW)
        )

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, packet: Packet, timestamp: float | None = None) -> None:
        """Record one packet, stamped ``timestamp`` (seconds since the epoch) or now."""
        if self._file is None:
            return
        if timestamp is None:
            seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
            micros = nanos // 1000
        else:
            seconds = int(timestamp)
            micros = min(round((timestamp - seconds) * 1e6), 999_999)
        length = len(packet)
        captured = min(length, self.snaplen)
        buffer = self._buffer
        buffer += _RECORD_HEADER.pack(seconds, micros, captured, length)
        buffer += packet if captured == length else memoryview(packet)[:captured]
        self.packets += 1
        if len(buffer) >= self._buffer_size:
            self.flush()

    def flush(self) -> None:
        if self._file is None:
            return
        if self._buffer:
            self._file.write(self._buffer)
            self._buffer.clear()
        self._file.flush()

    def close(self) -> None:
        if self._file is None:
            return
        self.flush()
        if self._owns_file:
            self._file.close()
        self._file = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcapTap:
    """A link that records every packet passing through ``inner`` into ``writer``.

    ``close()`` closes the inner link and then the writer, which flushes the capture.
    """

    __slots__ = ("header_len", "inner", "writer")

    def __init__(self, inner: Link, writer: PcapWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.header_len: int = getattr(inner, "header_len", 0)

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    @property
    def offload(self) -> bool:
        return self.header_len != 0

    @property
    def gather(self) -> bool:
        """Packets in pieces pass through (see ``base.Gathered``); the record joins them."""
        return bool(getattr(self.inner, "gather", False))

    def _record(self, packets: Sequence[Packet | Gathered]) -> None:
        record = self.writer.write
        skip = self.header_len
        for packet in packets:
            whole = joined(packet)
            record(memoryview(whole)[skip:] if skip else whole)

    @property
    def stats(self) -> LinkStats:
        return self.inner.stats

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def at_eof(self) -> bool:
        return self.inner.at_eof

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        packets = self.inner.read_batch(now, limit)
        self._record(packets)
        return packets

    def write(self, packet: Packet | Gathered, now: float) -> None:
        self._record((packet,))
        self.inner.write(packet, now)

    def write_batch(self, packets: Sequence[Packet | Gathered], now: float) -> None:
        self._record(packets)
        self.inner.write_batch(packets, now)

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    def on_deadline(self, now: float) -> None:
        self.inner.on_deadline(now)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.writer.close()
