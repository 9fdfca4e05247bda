"""``asyncio.Transport`` over one TCP connection of the sans-IO core.

Theory of operation. A :class:`TcpTransport` owns one ``Connection`` and the asyncio protocol
on top of it. The driver hands it that connection's events; it turns them into protocol calls.

* **Sending.** ``write()`` copies into the connection's send buffer up to ``send_space`` (the
  connection plays the part the kernel socket buffer plays for asyncio's socket transport).
  Whatever does not fit waits in an overflow queue here and is moved in on ``WriteSpace``
  events. ``get_write_buffer_size()`` is the overflow size, and the usual high/low watermarks
  on it call ``pause_writing``/``resume_writing``, which is what ``StreamWriter.drain()`` waits
  on. So a writer is held back once the peer's window, our send buffer and the high watermark
  are all full.
* **Receiving.** ``DataReceived`` is answered with ``conn.read()`` -> ``data_received``.
  ``pause_reading()`` simply stops reading: the bytes stay in the connection, its receive
  window shrinks to zero, and the peer stops sending. ``resume_reading()`` reads what is
  pending, which reopens the window; the driver's flush sends the window update.
* **Closing.** ``write_eof()`` is a FIN after every queued byte (half-close); ``close()`` is a
  graceful close, deferred until the overflow has been handed to the connection; ``abort()``
  is an RST. As with asyncio's socket transport, ``connection_lost`` follows a local close as
  soon as everything has been handed over (the connection finishes FIN-WAIT/TIME-WAIT on its
  own), or when the connection ends by itself, with the builtin exception that says why.
* **Errors.** RST -> ``ConnectionResetError`` (``ConnectionRefusedError`` for our SYN, also
  when an ICMP port or protocol unreachable refused it), a give-up timer -> ``TimeoutError``, or
  the ``OSError`` of the last soft ICMP error the connection kept (``EHOSTUNREACH``, ...);
  writes after that are dropped silently (counted) and ``drain()`` raises, as with asyncio
  sockets.
* **Socket-shaped questions.** ``get_extra_info`` answers ``peername``, ``sockname`` and
  ``socket`` -- a :class:`StackSocket`, the stand-in for a kernel socket that libraries ask for
  (aiohttp calls ``setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)`` on it): the options TCP
  has (``TCP_NODELAY``, ``SO_KEEPALIVE`` and its ``TCP_KEEP*`` timers, ``TCP_USER_TIMEOUT``)
  reach the connection, the rest are kept and read back without effect; ``fileno()`` is -1.
  ``sslcontext``, ``peercert``, ``cipher``, ``compression`` and ``ssl_object`` are None here,
  as on a plain socket transport; TLS is an ``asyncio.sslproto.SSLProtocol`` on top, whose
  transport answers them (``_start_tls_compatible``: ``loop.start_tls`` takes this transport).
* **Protocols.** ``asyncio.Protocol`` gets ``data_received``; an ``asyncio.BufferedProtocol``
  (asyncio's own TLS layer is one) gets the bytes copied into its ``get_buffer()``.
* **Letting go.** After ``connection_lost`` the transport stops listening to the connection's
  events and releases it to the host (``Host.release``): it finishes on its own, and a
  TIME-WAIT it reaches costs the host a compact record, not a whole TCB.

A transport is lean, because there is one per connection: ``__slots__``, the overflow queue
made on the first write that does not fit, and the ``get_extra_info`` values computed when
asked for.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from asyncio import constants, transports
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ustack.tcp import events as ev
from ustack.wire import addr

if TYPE_CHECKING:
    from ustack.aio.driver import Driver
    from ustack.tcp.connection import Connection

# asyncio's defaults for selector transports (64 KiB high, a quarter of it low).
DEFAULT_HIGH_WATER = 64 * 1024
_DEFAULT_LOW_WATER = DEFAULT_HIGH_WATER // 4
# setsockopt(IPPROTO_TCP, ...) options that set one of the keep-alive timers (tcp(7)), by the
# keyword Connection.set_keepalive takes them as.
_KEEPALIVE_TIMERS = {
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): "idle",
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): "interval",
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): "count",
}
_TLS_EXTRA = frozenset({"sslcontext", "ssl_object", "peercert", "cipher", "compression"})
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)  # Linux's number, tcp(7)
# BaseTransport keeps "extra" in a dict; ours are computed on demand (get_extra_info), so every
# transport shares this empty one instead of building its own.
_NO_EXTRA: dict[str, Any] = {}


def _sockaddr(address: int, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """What ``getpeername``/``getsockname`` return: ``(host, port)`` for IPv4 and, like an
    ``AF_INET6`` socket, ``(host, port, flowinfo, scope_id)`` for IPv6 -- both 0 here: no
    flow information is reported to applications, and no scope (no link-local addresses)."""
    if addr.is_v6(address):
        return (addr.to_text(address), port, 0, 0)
    return (addr.to_text(address), port)


def endpoint_text(address: int, port: int) -> str:
    """``10.7.0.2:80`` or, as URLs write it (RFC 3986 3.2.2), ``[fd00:7::2]:80``."""
    text = addr.to_text(address)
    return f"[{text}]:{port}" if addr.is_v6(address) else f"{text}:{port}"


def _error(code: int, detail: str | None = None) -> OSError:
    # OSError(errno, ...) instantiates the matching builtin subclass (ConnectionResetError, ...).
    message = os.strerror(code) if detail is None else f"{os.strerror(code)} ({detail})"
    return OSError(code, message)


def error_for(event: ev.Reset | ev.TimedOut) -> OSError:
    """The builtin exception an application sees for a connection that ended abnormally."""
    if type(event) is ev.Reset:
        return _error(errno.ECONNREFUSED if event.refused else errno.ECONNRESET)
    assert type(event) is ev.TimedOut
    # RFC 1122 4.2.3.9: a soft ICMP error the connection kept explains the timeout better than
    # ETIMEDOUT does (Linux reports sk_err_soft the same way): EHOSTUNREACH, ENETUNREACH, ...
    return _error(event.conn.soft_error or errno.ETIMEDOUT, event.reason)


class StackSocket:
    """What ``get_extra_info("socket")`` (and ``Server.sockets``) give instead of a kernel
    socket: the surface of ``asyncio.trsock.TransportSocket``, what asyncio's own transports
    hand out there.

    ``family``, ``type``, ``proto``, ``getsockname()``, ``getpeername()`` answer from the
    connection (or the listening address). ``setsockopt`` hands the options TCP has to the
    connection -- ``TCP_NODELAY`` (Nagle), ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``/``TCP_KEEPINTVL``
    /``TCP_KEEPCNT``, ``TCP_USER_TIMEOUT`` (milliseconds, as tcp(7) has it) -- and keeps every
    other option only so that ``getsockopt`` reads it back: there is no kernel socket for
    ``SO_RCVBUF``, ``SO_REUSEADDR``, ``IP_TOS`` and the like to act on. ``fileno()`` is -1, the
    answer of a closed socket: nothing here can be polled, passed to ``sendfile(2)`` or
    duplicated (``dup`` raises)."""

    __slots__ = ("_conn", "_local", "_options")

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, conn: Connection | None = None, local: tuple[int, int] | None = None):
        self._conn = conn  # None for a listening address
        self._local = local  # (address, port) of a listening address
        self._options: dict[tuple[int, int], int | bytes] = {}

    @property
    def family(self) -> socket.AddressFamily:
        address = self._conn.local_addr if self._conn is not None else self._address()[0]
        return socket.AF_INET6 if addr.is_v6(address) else socket.AF_INET

    def _address(self) -> tuple[int, int]:
        if self._conn is not None:
            return self._conn.local_addr, self._conn.local_port
        assert self._local is not None
        return self._local

    def __repr__(self) -> str:
        where = endpoint_text(*self._address())
        if self._conn is None:
            return f"<ustack StackSocket listening {where}>"
        peer = endpoint_text(self._conn.remote_addr, self._conn.remote_port)
        return f"<ustack StackSocket {where} -> {peer}>"

    def fileno(self) -> int:
        return -1

    def dup(self) -> socket.socket:
        raise OSError(errno.EOPNOTSUPP, "a ustack connection has no kernel socket to duplicate")

    def getsockname(self) -> tuple[str, int] | tuple[str, int, int, int]:
        return _sockaddr(*self._address())

    def getpeername(self) -> tuple[str, int] | tuple[str, int, int, int]:
        if self._conn is None:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        return _sockaddr(self._conn.remote_addr, self._conn.remote_port)

    def setsockopt(self, level: int, optname: int, value: int | bytes, *args: Any) -> None:
        conn = self._conn
        if conn is not None and isinstance(value, int):
            option = (level, optname)
            if option == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
                conn.set_nodelay(bool(value))
            elif option == (socket.SOL_SOCKET, socket.SO_KEEPALIVE):
                conn.set_keepalive(bool(value))
            elif option in _KEEPALIVE_TIMERS:
                if value < 1:
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
                conn.set_keepalive(conn.keepalive, **{_KEEPALIVE_TIMERS[option]: value})
            elif option == (socket.IPPROTO_TCP, _TCP_USER_TIMEOUT):
                # tcp(7): milliseconds, 0 means "the system default" (retry counting).
                if value < 0:
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
                conn.set_user_timeout(value / 1000 if value else None)
        self._options[(level, optname)] = value

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        option = (level, optname)
        if option == (socket.SOL_SOCKET, socket.SO_TYPE):
            return int(socket.SOCK_STREAM)
        if option == (socket.SOL_SOCKET, socket.SO_ERROR):
            return 0
        if option == (socket.IPPROTO_TCP, socket.TCP_NODELAY) and self._conn is not None:
            return int(self._conn.nodelay)
        value = self._options.get(option, 0)
        if buflen is not None and isinstance(value, int):
            return bytes(buflen)
        return value

    def setblocking(self, flag: bool) -> None:
        if flag:
            raise ValueError("setblocking(True) is not supported: the transport owns the stream")

    def settimeout(self, value: float | None) -> None:
        if value != 0:
            raise ValueError("settimeout(): only 0 is supported: the transport owns the stream")

    def gettimeout(self) -> float:
        return 0.0


class TcpTransport(transports._FlowControlMixin):
    """One TCP connection as an asyncio transport; create via the :mod:`ustack.aio.api`."""

    # loop.start_tls (asyncio's) checks this: asyncio's SSLProtocol needs nothing from a
    # transport that this one lacks (see the module docstring).
    _start_tls_compatible = True
    # loop.sendfile (asyncio's) checks this: no kernel socket for sendfile(2), so the file is
    # read and written in chunks under write flow control, asyncio's fallback -- which wants
    # an instance of _FlowControlMixin, the base of asyncio's own socket transports (its
    # slots _loop, _protocol_paused, _high_water, _low_water are ours; its methods are
    # overridden below). Without this asyncio raises RuntimeError, which aiohttp's
    # FileResponse does not expect (it falls back itself on NotImplementedError, uvloop's).
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    __slots__ = (
        "__weakref__",
        "_buffered",
        "_close_pending",
        "_closing",
        "_conn",
        "_driver",
        "_eof_delivered",
        "_eof_pending",
        "_eof_sent",
        "_exc",
        "_lost",
        "_made",
        "_overflow",
        "_overflow_size",
        "_protocol",
        "_reading_paused",
        "_socket",
        "_waiter",
        "_write_eof_pending",
        "on_lost",
        "writes_after_lost",
    )

    def __init__(
        self,
        driver: Driver,
        conn: Connection,
        protocol: asyncio.BaseProtocol,
        *,
        waiter: asyncio.Future[None] | None = None,
    ) -> None:
        super().__init__(_NO_EXTRA, driver.loop)
        self._driver = driver
        self._loop = driver.loop
        self._conn = conn
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._socket: StackSocket | None = None  # get_extra_info("socket"), made when asked
        self._waiter = waiter  # set while an active open is in progress
        # What write() could not hand to the connection yet; made when first needed.
        self._overflow: deque[bytes] | None = None
        self._overflow_size = 0
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = _DEFAULT_LOW_WATER
        self._protocol_paused = False  # pause_writing() was called on the protocol
        self._reading_paused = False
        self._eof_pending = False  # peer FIN arrived while reading was paused
        self._eof_delivered = False
        self._write_eof_pending = False  # write_eof() waiting for the overflow to drain
        self._eof_sent = False
        self._closing = False  # close() or abort() called, or the connection is gone
        self._close_pending = False  # close() waiting for the overflow to drain
        self._made = False  # connection_made delivered
        self._lost = False  # connection_lost delivered (or scheduled)
        self._exc: Exception | None = None
        self.writes_after_lost = 0
        # Called once after connection_lost; servers and the Stack track live transports.
        self.on_lost: Callable[[TcpTransport], None] | None = None
        driver.register(conn, self)

    def __repr__(self) -> str:
        conn = self._conn
        state = getattr(conn.state, "name", conn.state)
        return (
            f"<TcpTransport {endpoint_text(conn.local_addr, conn.local_port)} -> "
            f"{endpoint_text(conn.remote_addr, conn.remote_port)} {state}>"
        )

    # -- asyncio.BaseTransport -----------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` and ``sockname`` (``(host, port)``, or for IPv6 ``(host, port, 0, 0)``
        as an ``AF_INET6`` socket gives them), ``ustack_connection`` (the
        :class:`~ustack.tcp.connection.Connection`), ``socket`` (a :class:`StackSocket`, one
        per transport); the TLS names (``sslcontext``, ``ssl_object``, ``peercert``,
        ``cipher``, ``compression``) are None, as on asyncio's plain socket transport."""
        conn = self._conn
        if name == "peername":
            return _sockaddr(conn.remote_addr, conn.remote_port)
        if name == "sockname":
            return _sockaddr(conn.local_addr, conn.local_port)
        if name == "ustack_connection":
            return conn
        if name == "socket":
            if self._socket is None:
                self._socket = StackSocket(conn)
            return self._socket
        if name in _TLS_EXTRA:
            return None
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Graceful close: FIN once every byte written so far has been handed to TCP."""
        if self._closing:
            return
        self._closing = True
        self._reading_paused = True  # asyncio: no data_received after close()
        if self._overflow_size:
            self._close_pending = True
            return
        self._close_now()

    def _close_now(self) -> None:
        self._close_pending = False
        if not self._lost:
            self._conn.close(self._driver.now())
            self._connection_lost(None)

    def abort(self) -> None:
        """Reset the connection (RST) and drop anything not yet sent."""
        if self._lost:
            return
        self._closing = True
        self._overflow = None
        self._overflow_size = 0
        self._conn.abort(self._driver.now())
        self._connection_lost(None)

    def _force_close(self, exc: Exception | None) -> None:
        """What asyncio's SSLProtocol calls on a fatal TLS error or a shutdown that timed out:
        reset the connection and report ``exc`` to the protocol."""
        if self._lost:
            return
        self._closing = True
        self._overflow = None
        self._overflow_size = 0
        self._conn.abort(self._driver.now())
        self._connection_lost(exc)

    def set_user_timeout(self, seconds: float | None) -> None:
        """Linux's TCP_USER_TIMEOUT for this connection (see ``Connection.set_user_timeout``):
        give up -- ``TimeoutError`` -- once sent data has gone unacknowledged, or queued data
        has waited behind a zero window, for ``seconds``; ``None`` turns it off."""
        self._conn.set_user_timeout(seconds)

    def _link_lost(self, exc: Exception) -> None:
        """The driver lost the link for good (a TUN device deleted): the connection is gone,
        and whoever waits on it learns so as ``exc`` (a ``ConnectionResetError``)."""
        self._fail(exc)

    # -- asyncio.ReadTransport -----------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        """Stop taking bytes from the connection; its receive window closes as they pile up."""
        if self._closing:
            return
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Take what is waiting (reopening the window); pending EOF follows the data."""
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        self._loop.call_soon(self._deliver_pending)

    def _deliver_pending(self) -> None:
        if self._reading_paused or self._lost or not self._made:
            return
        self._deliver_data()
        if self._eof_pending:
            self._deliver_eof()

    # -- asyncio.WriteTransport ----------------------------------------------------------------

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()
        self._maybe_resume_protocol()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def get_write_buffer_size(self) -> int:
        return self._overflow_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_sent or self._write_eof_pending:
            raise RuntimeError("cannot call write() after write_eof()")
        if self._closing:
            # Like asyncio's socket transport after close() or a lost connection: no exception
            # and no log here; StreamWriter.drain() raises the connection's error instead.
            self.writes_after_lost += 1
            return
        if not data:
            return
        overflow = self._overflow
        if overflow:
            overflow.append(bytes(data))
            self._overflow_size += len(data)
        else:
            try:
                sent = self._conn.send(data)
            except OSError as exc:
                self._fail(exc)
                return
            if sent < len(data):
                rest = bytes(memoryview(data)[sent:])
                if overflow is None:
                    overflow = self._overflow = deque()
                overflow.append(rest)
                self._overflow_size += len(rest)
        if self._overflow_size > self._high_water:
            self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        """Half-close: FIN after everything written so far; reading goes on."""
        if self._eof_sent or self._write_eof_pending or self._closing:
            return
        if self._overflow_size:
            self._write_eof_pending = True
            return
        self._shutdown()

    def _shutdown(self) -> None:
        self._write_eof_pending = False
        self._eof_sent = True
        try:
            self._conn.shutdown(self._driver.now())
        except OSError as exc:
            self._fail(exc)
            return

    def can_write_eof(self) -> bool:
        return True

    # -- events from the driver ----------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        kind = type(event)
        if self._lost and kind is not ev.Closed:
            return  # closed or aborted locally: the connection finishes without us
        if kind is ev.DataReceived:
            if not self._reading_paused and self._made and not self._lost:
                self._deliver_data()
        elif kind is ev.WriteSpace:
            self._refill()
        elif kind is ev.Established:
            self._established()
        elif kind is ev.EofReceived:
            self._eof_pending = True
            if not self._reading_paused and self._made and not self._lost:
                self._deliver_data()
                self._deliver_eof()
        elif kind is ev.Reset or kind is ev.TimedOut:
            self._fail(error_for(event))
        elif kind is ev.Closed:
            self._driver.unregister(self._conn)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(self._exc or _error(errno.ECONNABORTED))
            elif self._made and not self._lost:
                # Both FINs exchanged (or the peer's RST already reported): the stream is over.
                self._closing = True
                self._connection_lost(self._exc)

    def _established(self) -> None:
        if self._made:
            return
        self._made = True
        self._protocol.connection_made(self)
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def start_passive(self) -> None:
        """A connection taken from a listener: already established, maybe with data and FIN."""
        self._made = True
        self._protocol.connection_made(self)
        conn = self._conn
        if conn.readable or conn.eof_received:
            # Delivered now, after connection_made has returned (as asyncio orders them): the
            # DataReceived event that usually follows then finds nothing left to read.
            self._eof_pending = conn.eof_received
            self._deliver_pending()

    def _deliver_data(self) -> None:
        # Reading opens the receive window; the connection asks for a window update itself.
        data = self._conn.read()
        if data:
            if self._buffered:
                self._fill_buffers(data)
            else:
                self._protocol.data_received(data)  # type: ignore[attr-defined]

    def _fill_buffers(self, data: bytes) -> None:
        """Hand ``data`` to a BufferedProtocol: copy into as many of its buffers as it takes."""
        protocol: asyncio.BufferedProtocol = self._protocol  # type: ignore[assignment]
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
            n = min(len(buffer), len(view))
            if not n:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]

    def _deliver_eof(self) -> None:
        if self._eof_delivered:
            return
        self._eof_pending = False
        self._eof_delivered = True
        keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        if not keep_open:
            self.close()

    def _refill(self) -> None:
        """Move overflow into the connection's send buffer as space opens."""
        overflow = self._overflow
        if overflow is None:
            return
        conn = self._conn
        while overflow:
            if conn.send_space <= 0:
                break
            chunk = overflow[0]
            try:
                # The whole chunk, even if it does not fit: a short write is what tells the
                # connection to report WriteSpace again once the buffer drains.
                sent = conn.send(chunk)
            except OSError as exc:
                self._fail(exc)
                return
            if sent <= 0:
                break
            self._overflow_size -= sent
            if sent == len(chunk):
                overflow.popleft()
            else:
                overflow[0] = chunk[sent:]
                break
        if not overflow:
            self._overflow = None
            if self._close_pending:
                self._close_now()
            elif self._write_eof_pending:
                self._shutdown()
        self._maybe_resume_protocol()

    def _fail(self, exc: Exception) -> None:
        """The connection is gone abnormally: report ``exc`` once, to whoever is waiting."""
        if self._exc is None:
            self._exc = exc
        self._overflow = None
        self._overflow_size = 0
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
            self._closing = True
            self._lost = True
            return
        self._closing = True
        if self._made:
            self._connection_lost(exc)

    def _abandon(self) -> None:
        """The active open failed or was given up: no protocol callback will ever follow."""
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.cancel()
        self._closing = True
        self._lost = True

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        try:
            if self._protocol_paused:
                self._protocol_paused = False
            self._protocol.connection_lost(exc)
        finally:
            self._protocol = None  # type: ignore[assignment]
            self._release()
            if self.on_lost is not None:
                self.on_lost(self)

    def _release(self) -> None:
        """The application is done with the connection: its events no longer concern us, and
        the host may keep its TIME-WAIT as a compact record (see ``Host.release``)."""
        driver = self._driver
        driver.unregister(self._conn)
        if not driver.closed:
            driver.host.release(self._conn, driver.now())

    # -- write flow control (the same contract as asyncio's _FlowControlMixin) -----------------

    def _maybe_pause_protocol(self) -> None:
        if self._overflow_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.pause_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or self._overflow_size > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.resume_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
