"""The asyncio layer: the driver, the TCP transport and the public stream API."""

from ustack.aio.api import Listener, Server, Stack, open_connection, start_server
from ustack.aio.driver import Driver
from ustack.aio.loop import new_event_loop, run
from ustack.aio.transport import TcpTransport

__all__ = [
    "Driver",
    "Listener",
    "Server",
    "Stack",
    "TcpTransport",
    "new_event_loop",
    "open_connection",
    "run",
    "start_server",
]
