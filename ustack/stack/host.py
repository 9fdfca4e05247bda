"""The sans-IO host: a network layer and a TCP demultiplexer behind one small API.

Theory of operation. A :class:`Host` owns one or more IPv4 and IPv6 addresses (ints, IPv6 ones
tagged, see :mod:`ustack.wire.addr`; text is accepted too), the connections and listeners on
them, and one :class:`~ustack.tcp.stats.Stats`. The driver feeds it packets with
``receive_packet(buf, now)``, pulls what to transmit with ``packets_to_send(now)``, asks
``next_deadline()`` and calls ``on_deadline(now)`` then, and pops events with ``next_event()``.

Inside, it is two layers sharing the one ``Stats``:

* the network layer, :class:`~ustack.stack.network.IpLayer` (``host.ip``): IPv4 and IPv6 in
  and out, ICMP and ICMPv6, reassembly, offloads; it parses TCP segments with the
  pseudo-header sum and builds the datagrams that carry them (see :mod:`ustack.stack.network`);
* the TCP demultiplexer, :class:`~ustack.stack.tcp_demux.TcpDemux` (``host.demux``):
  connections by 4-tuple, listeners with their SYN and accept queues and SYN cookies, TIME-WAIT
  records, the timers, the events (see :mod:`ustack.stack.tcp_demux`).

The network layer calls the demux through bound methods it stores once, and the demux calls the
network layer's builders the same way; ``receive_packet`` and ``packets_to_send`` *are* the
network layer's methods and ``next_event`` the demux's, bound at construction, so the façade adds
no call to the per-packet path. The rest of the API delegates to the layer that owns it.

Whoever drives the host (the asyncio driver, the simulator) sets ``on_wakeup``: the host calls it
when an application call left something to send or a new deadline, so the driver can flush.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable

from ustack.stack.config import HostConfig
from ustack.stack.events import HostEvent
from ustack.stack.isn import IsnSource
from ustack.stack.network import TSO_MAX, TSO_MAX6, IpLayer, Key, OutPacket
from ustack.stack.tcp_demux import Listener, TcpDemux
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection, Tracer
from ustack.tcp.events import Event
from ustack.tcp.stats import Stats
from ustack.tcp.timewait import TimeWait
from ustack.wire import addr

__all__ = ["TSO_MAX", "TSO_MAX6", "Host", "Key", "Listener", "OutPacket"]

_FLOW_KEY_LABEL = b"ustack flow label key"  # derives the RFC 6437 flow label key from secret


class Host:
    """One IP host with TCP; see the module docstring."""

    receive_packet: Callable[[bytes | bytearray | memoryview, float], None]
    """``receive_packet(buf, now)``: take one IPv4 or IPv6 datagram from the link. Never raises for bad
    input (:meth:`IpLayer.receive_packet <ustack.stack.network.IpLayer.receive_packet>`)."""

    packets_to_send: Callable[[float], list[OutPacket]]
    """``packets_to_send(now)``: every datagram ready to go, each in its own buffer (or,
    with ``scatter``, a super-segment as its headers and its payload, for a gathered write)."""

    next_event: Callable[[], Event | HostEvent | None]
    """``next_event()``: the oldest event not yet taken (a connection's, or ConnectionAccepted),
    or None."""

    def __init__(
        self,
        addresses: Iterable[int | str] | int | str,
        *,
        config: TcpConfig | None = None,
        host_config: HostConfig | None = None,
        mtu: int = 1500,
        secret: bytes | None = None,
        isn: IsnSource | None = None,
        cookie_secret: bytes | None = None,
        tracer: Tracer | None = None,
        now: float = 0.0,
        offload: bool = False,
        gso: bool = True,
        scatter: bool = False,
    ) -> None:
        self.host_config = host_config if host_config is not None else HostConfig()
        self.stats = Stats()
        given = [addresses] if isinstance(addresses, int | str) else list(addresses)
        self.ip = ip = IpLayer(
            [addr.from_text(a) if isinstance(a, str) else a for a in given],
            stats=self.stats,
            host_config=self.host_config,
            mtu=mtu,
            now=now,
            offload=offload,
            scatter=scatter,
            flow_secret=(
                hashlib.blake2s(_FLOW_KEY_LABEL, key=secret).digest() if secret is not None else b""
            ),
        )
        base = config if config is not None else TcpConfig()
        # RFC 9293 3.7.1: the MSS we advertise is what fits the link without fragmenting; a
        # configured MSS can only lower it. Super-segments (up to TSO_MAX) are for a link that
        # cuts them (offload) or for the network layer to cut (software GSO).
        self.config = dataclasses.replace(
            base,
            mss=min(base.mss, ip.link_mss) if base.mss else ip.link_mss,
            tso_max=TSO_MAX if offload or gso else 0,
        )
        # The same for connections over IPv6: MSS = MTU - 60 (RFC 8200 header, 40 octets) and
        # the IPv6 Payload Length's limit on super-segments. (An IPv4-only host may have an MTU
        # too small for IPv6, and never makes such a connection.)
        self.config6 = (
            dataclasses.replace(
                base,
                mss=min(base.mss, ip.link_mss6) if base.mss else ip.link_mss6,
                tso_max=TSO_MAX6 if offload or gso else 0,
            )
            if ip.addresses6
            else self.config
        )
        self.demux = demux = TcpDemux(
            ip,
            config=self.config,
            host_config=self.host_config,
            stats=self.stats,
            secret=secret,
            isn=isn,
            cookie_secret=cookie_secret,
            tracer=tracer,
            config6=self.config6,
        )
        ip.attach(demux)
        self.receive_packet = ip.receive_packet
        self.packets_to_send = ip.packets_to_send
        self.next_event = demux.next_event

    @property
    def addresses(self) -> tuple[int, ...]:
        return self.ip.addresses

    @property
    def mtu(self) -> int:
        return self.ip.mtu

    @property
    def offload(self) -> bool:
        return self.ip.offload

    @property
    def tracer(self) -> Tracer | None:
        """Given to every connection at birth, so a trace starts at its first transition."""
        return self.demux.tracer

    @tracer.setter
    def tracer(self, tracer: Tracer | None) -> None:
        self.demux.tracer = tracer

    @property
    def on_wakeup(self) -> Callable[[], None] | None:
        """Set by the driver: called when an application call left work to do."""
        return self.demux.on_wakeup

    @on_wakeup.setter
    def on_wakeup(self, hook: Callable[[], None] | None) -> None:
        self.demux.on_wakeup = hook

    @property
    def connections(self) -> list[Connection | TimeWait]:
        """Every connection the host still tracks, TIME-WAIT included: a released connection
        in TIME-WAIT is there as its :class:`~ustack.tcp.timewait.TimeWait` record."""
        return self.demux.connections

    def lookup(
        self, remote_addr: int, remote_port: int, local_addr: int, local_port: int
    ) -> Connection | TimeWait | None:
        """The connection on this 4-tuple (a TIME-WAIT record once released), or None."""
        return self.demux.lookup(remote_addr, remote_port, local_addr, local_port)

    def release(self, conn: Connection, now: float) -> None:
        """The application is done with ``conn`` and will not look at it again (the asyncio
        transport says so after ``connection_lost``); see :meth:`TcpDemux.release
        <ustack.stack.tcp_demux.TcpDemux.release>`."""
        self.demux.release(conn, now)

    def listen(
        self,
        port: int,
        backlog: int = 128,
        *,
        syn_backlog: int | None = None,
        family: int | None = None,
    ) -> Listener:
        """Accept connections on ``port`` at every address of this host of ``family`` (4 or 6;
        None: both); see :meth:`TcpDemux.listen <ustack.stack.tcp_demux.TcpDemux.listen>`."""
        return self.demux.listen(port, backlog, syn_backlog=syn_backlog, family=family)

    def connect(
        self,
        remote_addr: int,
        remote_port: int,
        now: float,
        local_port: int | None = None,
        local_addr: int | None = None,
    ) -> Connection:
        """Active open: a connection in SYN-SENT whose SYN the next ``packets_to_send`` carries."""
        if not 1 <= remote_port <= 65535:
            raise ValueError("bad remote address or port")
        local = self.ip.source_for(remote_addr, local_addr)
        return self.demux.connect(remote_addr, remote_port, local, now, local_port)

    def next_deadline(self) -> float | None:
        """The earliest time any connection, TIME-WAIT record or datagram in reassembly needs
        ``on_deadline``."""
        best = self.demux.next_deadline()
        # Reassembly's deadline is an O(1) look at its oldest datagram, asked here rather than
        # kept in the demux's cache, which every fragment would otherwise have to update.
        reasm = self.ip.next_deadline()
        if reasm is not None and (best is None or reasm < best):
            return reasm
        return best

    def on_deadline(self, now: float) -> None:
        """Run the timers that are due (and only those): the connections' and TIME-WAIT
        records', then reassembly's."""
        self.demux.on_deadline(now)
        self.ip.on_deadline(now)
