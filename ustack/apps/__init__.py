"""Built-in services, as plain asyncio-streams handlers that run on ustack or on kernel sockets.

``SERVICES`` maps a name to its well-known port and a factory; ``ustack serve`` picks from it.
"""

from __future__ import annotations

from ustack.apps.base import Handler, InfoProvider, ServiceFactory, close_quietly
from ustack.apps.httpd import HttpApp, http_service, pattern_bytes, render_page
from ustack.apps.simple import (
    chargen,
    chargen_line,
    chargen_service,
    discard,
    discard_service,
    echo,
    echo_service,
)

SERVICES: dict[str, tuple[int, ServiceFactory]] = {
    "echo": (7, echo_service),  # RFC 862
    "discard": (9, discard_service),  # RFC 863
    "chargen": (19, chargen_service),  # RFC 864
    "http": (80, http_service),
}

__all__ = [
    "SERVICES",
    "Handler",
    "HttpApp",
    "InfoProvider",
    "ServiceFactory",
    "chargen",
    "chargen_line",
    "chargen_service",
    "close_quietly",
    "discard",
    "discard_service",
    "echo",
    "echo_service",
    "http_service",
    "pattern_bytes",
    "render_page",
]
