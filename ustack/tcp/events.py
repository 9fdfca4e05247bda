"""Events a connection reports to whoever drives it.

Events are values: the machine appends them to a queue and the host pops them with
``next_event()``; nothing calls back into an application. Each carries ``conn``, the
:class:`~ustack.tcp.connection.Connection` it is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ustack.tcp.connection import Connection


@dataclass(frozen=True, slots=True)
class Established:
    """The three-way handshake (or a simultaneous open) completed."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class DataReceived:
    """In-order bytes are waiting; take them with ``conn.read()``."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class EofReceived:
    """The peer sent FIN and every byte before it has been made readable."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class WriteSpace:
    """The send buffer drained below its low-water mark after having been full."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer reset the connection; ``refused`` when the RST answered our SYN -- or an ICMP
    port or protocol unreachable did (RFC 1122 4.2.3.9)."""

    conn: Connection
    refused: bool = False


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The connection gave up: "syn", "synack", "retransmit", "user_timeout", "keepalive",
    "fin_wait_2". If an ICMP soft error came before, ``conn.soft_error`` is its errno (RFC 1122
    4.2.3.9: the application should learn of it), else 0."""

    conn: Connection
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection reached CLOSED; the host forgets it after popping this."""

    conn: Connection


Event = Established | DataReceived | EofReceived | WriteSpace | Reset | TimedOut | Closed
