"""The Ethernet/ARP layer put between a frame link (TAP) and the driver.

``EthernetLink(frames, layer)`` is a link as the driver knows it (``ustack.link.base.Link``)
that moves IP packets: frames read from the wrapped link go through the sans-IO
:class:`~ustack.stack.arp.ArpLayer`, and only the IP packets inside come out of
:meth:`read_batch` (ARP and Neighbor Discovery stay in the layer); an IP packet written gets its 14-octet Ethernet header from the layer's
neighbour cache and goes out behind it with one ``writev(2)`` (the wrapped link's ``Gathered``
write, no copy), or waits in the layer while ARP resolves the next hop. What the layer sends on
its own (ARP replies and requests, ND solicitations and advertisements, their retransmissions,
RFC 5227 announcements, packets that waited) is written whenever it has some: after a read, after a write, and at its deadline, which
is this link's ``next_deadline`` -- so the driver's one timer serves ARP too, and neither the
host nor the driver changes.

This glue lives on the asyncio side because it joins a link (I/O) to a sans-IO layer from
``ustack/stack``, and links may not import the stack (DESIGN.md's layers); it does no protocol
work itself.

``on_arp(direction, frame, now)``, if set, sees every frame of neighbour resolution ("in" or
"out"): ARP, and IPv6's Neighbor Solicitations and Advertisements -- what a packet observer never
sees on TUN. ``Stack.tap`` forwards it to the stack's ``on_packet`` as
``"arp-in"``/``"arp-out"``, which :class:`ustack.ladder.Ladder` draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ustack.link.base import Gathered, Packet
from ustack.stack.arp import ArpConfig, ArpLayer
from ustack.tcp.stats import Stats
from ustack.wire import addr, ethernet, ipv6, nd
from ustack.wire.ipv4 import addr_to_int

ArpObserver = Callable[[str, bytes, float], None]

_ARP_TYPE = ethernet.ETHERTYPE_ARP.to_bytes(2, "big")
_IPV6_TYPE = ethernet.ETHERTYPE_IPV6.to_bytes(2, "big")
_TYPE_AT = slice(12, 14)  # the EtherType's octets in a frame
_NEXT_HEADER_AT = ethernet.HEADER_LEN + ipv6.OFF_NEXT_HEADER
_ICMPV6_TYPE_AT = ethernet.HEADER_LEN + ipv6.HEADER_LEN
_ND_TYPES = (nd.NEIGHBOR_SOLICITATION, nd.NEIGHBOR_ADVERTISEMENT)


def is_resolution(frame: bytes | bytearray | memoryview) -> bool:
    """An ARP frame, or an IPv6 frame carrying an NS or NA right behind its fixed header."""
    kind = frame[_TYPE_AT]
    if kind == _ARP_TYPE:
        return True
    return (
        kind == _IPV6_TYPE
        and len(frame) > _ICMPV6_TYPE_AT
        and frame[_NEXT_HEADER_AT] == ipv6.PROTO_ICMPV6
        and frame[_ICMPV6_TYPE_AT] in _ND_TYPES
    )


class EthernetLink:
    """IP packets over a link of Ethernet frames (see the module docstring).

    ``inner`` is the frame link (a :class:`~ustack.link.tap.TapLink`), ``arp`` the layer, whose
    ``neighbours(now)`` is the neighbour cache as ``ip neigh`` would show it."""

    # Every packet gets a header in front, so the host hands over whole packets.
    gather = False
    header_len = 0
    offload = False

    def __init__(self, inner: Any, layer: ArpLayer) -> None:
        self.inner = inner
        self.arp = layer
        self.on_arp: ArpObserver | None = None

    @classmethod
    def over(cls, tap: Any, *, arp_config: ArpConfig | None = None) -> EthernetLink:
        """Wrap an open TAP link: ustack is its ``peer`` (and ``peer6``) with MAC ``tap.mac``
        on the subnet ``peer/prefixlen`` (and ``peer6/prefixlen6``), and the kernel
        (``tap.address``, ``tap.address6``) is the router."""
        v6 = getattr(tap, "peer6", None) is not None
        layer = ArpLayer(
            tap.mac,
            addr_to_int(tap.peer),
            prefixlen=tap.prefixlen,
            gateway=addr_to_int(tap.address),
            address6=addr.from_text(tap.peer6) if v6 else None,
            prefixlen6=tap.prefixlen6 if v6 else 64,
            gateway6=addr.from_text(tap.address6) if v6 else None,
            config=arp_config,
        )
        return cls(tap, layer)

    def __repr__(self) -> str:
        return f"<EthernetLink mac={ethernet.mac_to_text(self.arp.mac)} over {self.inner!r}>"

    def __getattr__(self, name: str) -> Any:
        # name, address, peer, netns, failure, mac, ...: the TAP link's own description.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def mtu(self) -> int:
        return int(self.inner.mtu)

    @property
    def stats(self) -> Any:
        return self.inner.stats

    @property
    def at_eof(self) -> bool:
        return bool(self.inner.at_eof)

    def fileno(self) -> int:
        return int(self.inner.fileno())

    def share_stats(self, stats: Stats) -> None:
        """Count the Ethernet/ARP layer's decisions in ``stats`` (a stack's host's)."""
        self.arp.share_stats(stats)

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        frames = self.inner.read_batch(now, limit)
        packets: list[bytes | memoryview] = []
        receive = self.arp.receive
        observer = self.on_arp
        for frame in frames:
            if observer is not None and is_resolution(frame):
                observer("in", bytes(frame), now)
            packet = receive(frame, now)
            if packet is not None:
                packets.append(packet)
        self._flush(now)
        return packets

    def write(self, packet: Packet | Gathered, now: float) -> None:
        self.write_batch((packet,), now)

    def write_batch(self, packets: Sequence[Packet | Gathered], now: float) -> None:
        resolve = self.arp.resolve
        frames: list[Packet | Gathered] = []
        for packet in packets:
            if isinstance(packet, tuple):  # never from a host, since gather is False
                packet = b"".join(packet)
            header = resolve(packet, now)
            if header is not None:
                frames.append((header, packet))
        if frames:
            self.inner.write_batch(frames, now)
        self._flush(now)

    def next_deadline(self) -> float | None:
        return self.arp.next_deadline()

    def on_deadline(self, now: float) -> None:
        self.arp.on_deadline(now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        """Write the layer's own frames: ARP, and packets that waited for it."""
        frames = self.arp.frames_to_send()
        if not frames:
            return
        observer = self.on_arp
        if observer is not None:
            for frame in frames:
                if is_resolution(frame):
                    observer("out", frame, now)
        self.inner.write_batch(frames, now)

    def close(self) -> None:
        self.inner.close()
