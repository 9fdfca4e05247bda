"""The one error the link layer raises.

Opening and configuring a link touches the kernel in several ways (``/dev/net/tun``, the
``TUNSETIFF`` ioctl, netlink, namespaces), and each can fail for a reason a user can fix.
:class:`LinkError` carries that reason as a single human sentence together with the ``errno``
that caused it, so a CLI can print ``str(err)`` and a program can still branch on ``err.errno``.
Packet I/O on an open link never raises: failures there are counted drops (see ``LinkStats``).
"""

from __future__ import annotations


class LinkError(OSError):
    """A link could not be opened or configured; ``str(err)`` is one line saying why."""

    def __init__(self, message: str, errno: int = 0) -> None:
        # One line, whatever the kernel or a library handed us, so it reads well in a CLI.
        message = " ".join(message.split())
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message
