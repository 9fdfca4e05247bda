"""ustack: a userspace TCP/IP stack in Python on asyncio, over a Linux TUN device."""

__version__ = "0.1.0"
