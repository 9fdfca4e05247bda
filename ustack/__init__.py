"""ustack: a userspace TCP/IP stack in Python on asyncio, over a Linux TUN device.

The public API is re-exported here and loaded on first use, so that ``import ustack.wire``
(or the sans-IO core on its own) does not pull in asyncio and the link layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ustack.aio.api import Listener, Server, Stack, open_connection, start_server
    from ustack.aio.loop import new_event_loop, run
    from ustack.aio.routed import routed
    from ustack.aio.transport import StackSocket, TcpTransport
    from ustack.tcp.config import TcpConfig
    from ustack.tcp.stats import Stats

_EXPORTS = {
    "Stack": "ustack.aio.api",
    "Server": "ustack.aio.api",
    "Listener": "ustack.aio.api",
    "open_connection": "ustack.aio.api",
    "start_server": "ustack.aio.api",
    "TcpTransport": "ustack.aio.transport",
    "StackSocket": "ustack.aio.transport",
    "routed": "ustack.aio.routed",
    "run": "ustack.aio.loop",
    "new_event_loop": "ustack.aio.loop",
    "TcpConfig": "ustack.tcp.config",
    "Stats": "ustack.tcp.stats",
}

__all__ = [
    "Listener",
    "Server",
    "Stack",
    "StackSocket",
    "Stats",
    "TcpConfig",
    "TcpTransport",
    "__version__",
    "new_event_loop",
    "open_connection",
    "routed",
    "run",
    "start_server",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ustack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
