"""Two links joined back to back in memory, with real file descriptors.

``LinkPair.create()`` returns two links where a packet written to one is read from the other.
It is built on ``socketpair(AF_UNIX, SOCK_SEQPACKET)`` rather than on Python queues so that
the pair exercises the same path as a TUN device: a pollable fd the driver registers with
``add_reader``, one packet per read, non-blocking writes that can fail with EAGAIN when the
peer stops reading. SEQPACKET keeps packet boundaries and, unlike ``SOCK_DGRAM``, a connected
pair is not limited to ``net.unix.max_dgram_qlen`` (10) queued packets, only by the socket
buffer, which is enlarged so that a window of full-size segments fits.
"""

from __future__ import annotations

import socket

from ustack.link.base import FdLink, check_mtu

# Bytes of kernel buffer per direction. The kernel caps the request at net.core.wmem_max and
# rmem_max; for AF_UNIX it is the sender's SO_SNDBUF that bounds the queue.
BUFFER_SIZE = 4 * 1024 * 1024


class PairLink(FdLink):
    """One end of a :class:`LinkPair`."""

    __slots__ = ()


class LinkPair:
    """Factory for a connected pair of in-memory links."""

    @staticmethod
    def create(mtu: int = 1500, *, buffer_size: int = BUFFER_SIZE) -> tuple[PairLink, PairLink]:
        check_mtu(mtu)
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        links = []
        for sock in (left, right):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            # The link owns the descriptor from here on and closes it in close().
            links.append(PairLink(sock.detach(), mtu))
        return links[0], links[1]
