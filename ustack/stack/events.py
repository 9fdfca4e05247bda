"""Host-level events, reported by ``Host.next_event()`` next to the connections' own events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ustack.stack.host import Listener


@dataclass(frozen=True, slots=True)
class ConnectionAccepted:
    """A connection completed its handshake and entered ``listener``'s accept queue; take it
    with ``listener.accept()``."""

    listener: Listener


@dataclass(frozen=True, slots=True)
class ConnectionRequested:
    """Forward mode (``TcpDemux.listen_transparent``): a SYN arrived for ``key`` (``(remote_addr,
    remote_port, local_addr, local_port)``, the local side being the SYN's destination, whatever
    it is) and waits unanswered. ``listener.answer(key, now)`` sends the SYN,ACK and returns the
    connection; ``listener.refuse(key, now)`` sends a RST."""

    listener: Listener
    key: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """Forward mode (``IpLayer.enable_forwarding``): a UDP datagram from ``src:src_port`` to
    ``dst:dst_port`` (the core's address ints), for the relay registered with ``listener``."""

    listener: Listener
    src: int
    src_port: int
    dst: int
    dst_port: int
    payload: bytes


HostEvent = ConnectionAccepted | ConnectionRequested | DatagramReceived
