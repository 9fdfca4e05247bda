"""The one error a parse may raise.

Every ``parse()`` in :mod:`ustack.wire` turns malformed input into a :class:`ParseError` and
nothing else. ``integrity`` errors mean the bytes were damaged in flight (a checksum failed);
``sanity`` errors mean the bytes are intact but say something impossible (a header shorter than
its minimum, SYN together with FIN). The host counts both by ``reason`` and drops the packet.
"""

from __future__ import annotations


class ParseError(ValueError):
    """A packet that cannot be parsed; ``reason`` is a short snake_case counter name."""

    __slots__ = ("integrity", "reason")

    def __init__(self, reason: str, *, integrity: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.integrity = integrity

    @property
    def kind(self) -> str:
        return "integrity" if self.integrity else "sanity"
