"""The contract every link implements, and the counters every link keeps.

A link moves whole IPv4 packets between the host and something outside it: a TUN device, the
other end of an in-memory pair, or another link it wraps (fault injection, pcap capture). The
asyncio driver is the only caller and uses exactly this surface:

* ``loop.add_reader(link.fileno(), ...)``; on readiness it calls ``read_batch(now, limit)``,
  which never blocks and returns at most ``limit`` packets (``DESIGN.md`` rule 12).
* ``write``/``write_batch`` never block either. A full kernel queue is a counted drop, not an
  exception: TCP recovers lost packets, a blocked event loop recovers nothing.
* Links that hold packets (delay, rate limit) report ``next_deadline()``; the driver calls
  ``on_deadline(now)`` then, which releases held outbound packets, and ``read_batch(now, ...)``,
  which returns held inbound packets that have become due.

Ownership: ``write`` must not keep a reference to ``packet`` after it returns, because the host
emits into a reused buffer. A link that holds a packet copies it first. Packets returned by
``read_batch`` belong to the caller.

Offload: a link whose ``header_len`` is not 0 (a TUN device opened with ``IFF_VNET_HDR``) moves
*frames*: ``header_len`` bytes of virtio-net header (``ustack.wire.virtio``), then one IPv4 packet,
which may be a GSO super-segment of up to 64 KB whatever the MTU. ``offload`` says the same as a
bool. Links pass frames through untouched; a wrapper that looks inside a packet skips the header
first. ``mtu`` stays the size of one packet on the wire. The byte counters count IP bytes, without
the header.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from ustack.link.errors import LinkError

Packet: TypeAlias = bytes | bytearray | memoryview
# A packet in pieces (headers, then payload views), written with one writev(2): what a host
# with ``scatter`` hands a link whose ``gather`` is true, so a 64 KB super-segment's payload is
# never copied into a packet buffer. Only such links ever see one.
Gathered: TypeAlias = tuple[Packet, ...]


def joined(packet: Packet | Gathered) -> Packet:
    """The packet as one buffer (for observers and captures, which are not on the fast path)."""
    return b"".join(packet) if isinstance(packet, tuple) else packet


MTU_MIN = 576  # RFC 791: every internet host must accept datagrams of 576 octets.
MTU_MAX = 65535  # RFC 791: Total Length is a 16-bit field.


@dataclass(slots=True)
class LinkStats:
    """Per-link counters. ``rx_dropped``/``tx_dropped`` are the sums of the reason counters."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    rx_oversize: int = 0  # longer than the MTU (64 KB with offload); the read may be truncated
    rx_error: int = 0  # the read failed with something other than "nothing to read"
    rx_fault: int = 0  # dropped by an injected fault
    rx_full: int = 0  # a wrapper's bounded hold queue was full
    tx_full: int = 0  # EAGAIN/ENOBUFS, or a wrapper's bounded hold queue was full
    tx_oversize: int = 0  # longer than the MTU (64 KB with offload); never handed to the kernel
    tx_error: int = 0  # empty packet, or the write failed (EIO, EINVAL, peer gone)
    tx_closed: int = 0  # written after close()
    tx_fault: int = 0  # dropped by an injected fault

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@runtime_checkable
class Link(Protocol):
    @property
    def mtu(self) -> int: ...

    @property
    def stats(self) -> LinkStats: ...

    @property
    def header_len(self) -> int:
        """Bytes of virtio-net header before every packet: 0, or ``virtio.HEADER_LEN``."""
        ...

    @property
    def offload(self) -> bool:
        """``header_len != 0``: the host must parse and emit the header."""
        ...

    def fileno(self) -> int: ...

    @property
    def at_eof(self) -> bool:
        """True once the other end is gone for good (a closed pair peer); the fd then stays
        readable forever, so the driver must stop watching it."""
        ...

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]: ...

    def write(self, packet: Packet | Gathered, now: float) -> None: ...

    def write_batch(self, packets: Sequence[Packet | Gathered], now: float) -> None: ...

    def next_deadline(self) -> float | None: ...

    def on_deadline(self, now: float) -> None: ...

    def close(self) -> None: ...


def check_mtu(mtu: int) -> int:
    """Return ``mtu`` if a link can use it, else raise ``LinkError`` saying the valid range."""
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MTU_MIN <= mtu <= MTU_MAX:
        raise LinkError(f"bad MTU {mtu!r}: must be an integer from {MTU_MIN} to {MTU_MAX}")
    return mtu


# Write errors that mean "the queue is full right now", as opposed to "this will never work".
_QUEUE_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


class FdLink:
    """A link over one non-blocking file descriptor that keeps packet boundaries.

    TUN devices and ``SOCK_SEQPACKET`` sockets both return exactly one packet per ``read(2)``
    and take exactly one per ``write(2)``, so one read/write loop serves both. Reads ask for
    one byte more than the longest frame: anything that fills that buffer is too long (and was
    possibly truncated by the kernel), so it is counted as ``rx_oversize`` and dropped rather
    than handed up as a damaged packet. The longest frame is ``mtu``, or with a header
    ``header_len + 65535``: a super-segment is one IPv4 packet of up to 64 KB.
    """

    __slots__ = ("_fd", "_max_frame", "_read_size", "at_eof", "header_len", "mtu", "stats")

    gather = True  # writes a ``Gathered`` packet with one writev(2)

    def __init__(self, fd: int, mtu: int, *, header_len: int = 0) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self.mtu = check_mtu(mtu)
        self.header_len = header_len
        self._max_frame = header_len + MTU_MAX if header_len else mtu
        self._read_size = self._max_frame + 1
        self.at_eof = False
        self.stats = LinkStats()

    @property
    def offload(self) -> bool:
        return self.header_len != 0

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._fd

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        packets: list[bytes | memoryview] = []
        fd = self._fd
        if fd < 0:
            return packets
        read = os.read
        size = self._read_size
        longest = self._max_frame
        nbytes = 0
        oversize = 0
        errors = 0
        # Drain until the kernel says "nothing more" or the batch is full: one read per
        # wakeup costs several times more than draining (DESIGN.md, lessons from peers).
        for _ in range(limit):
            try:
                data = read(fd, size)
            except BlockingIOError:
                break
            except OSError:
                errors += 1
                break
            n = len(data)
            if n > longest:
                oversize += 1
                continue
            if n == 0:
                # A SEQPACKET peer that closed reads as EOF; a TUN never returns 0.
                self.at_eof = True
                break
            packets.append(data)
            nbytes += n
        stats = self.stats
        stats.rx_packets += len(packets)
        stats.rx_bytes += nbytes - self.header_len * len(packets)
        if oversize or errors:
            stats.rx_oversize += oversize
            stats.rx_error += errors
            stats.rx_dropped += oversize + errors
        return packets

    def write(self, packet: Packet | Gathered, now: float) -> None:
        stats = self.stats
        gathered = isinstance(packet, tuple)
        n = sum([len(part) for part in packet]) if isinstance(packet, tuple) else len(packet)
        if self._fd < 0:
            stats.tx_closed += 1
        elif n > self._max_frame:
            stats.tx_oversize += 1
        elif n <= self.header_len:
            stats.tx_error += 1
        else:
            try:
                if gathered:
                    os.writev(self._fd, packet)  # type: ignore[arg-type]
                else:
                    os.write(self._fd, packet)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno in _QUEUE_FULL:
                    stats.tx_full += 1
                else:
                    stats.tx_error += 1
            else:
                stats.tx_packets += 1
                stats.tx_bytes += n - self.header_len
                return
        stats.tx_dropped += 1

    def write_batch(self, packets: Sequence[Packet | Gathered], now: float) -> None:
        write = self.write
        for packet in packets:
            write(packet, now)

    def next_deadline(self) -> float | None:
        return None

    def on_deadline(self, now: float) -> None:
        return None

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
