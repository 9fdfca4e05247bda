"""Built-in services, as plain asyncio-streams handlers that run on ustack or on kernel sockets.

``SERVICES`` maps a name to its well-known port and a factory; ``ustack serve`` picks from it.
Every one is also an asyncio protocol (each a :class:`Service`: echo, discard, chargen and
:class:`HttpApp`), which is how ustack's ``start_server`` runs them: no task, reader or writer
per connection. HTTP is written only as a protocol (:class:`HttpProtocol`); its streams handler
hands the connection over to it (:func:`serve_protocol`).
"""

from __future__ import annotations

from ustack.apps.base import (
    Handler,
    InfoProvider,
    Service,
    ServiceFactory,
    ServiceProtocol,
    close_quietly,
    serve_protocol,
)
from ustack.apps.httpd import HttpApp, HttpProtocol, http_service, pattern_bytes, render_page
from ustack.apps.simple import (
    ChargenProtocol,
    DiscardProtocol,
    EchoProtocol,
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
    "ChargenProtocol",
    "DiscardProtocol",
    "EchoProtocol",
    "Handler",
    "HttpApp",
    "HttpProtocol",
    "InfoProvider",
    "Service",
    "ServiceFactory",
    "ServiceProtocol",
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
    "serve_protocol",
]
