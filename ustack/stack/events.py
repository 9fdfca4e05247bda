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


HostEvent = ConnectionAccepted
