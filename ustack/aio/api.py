"""The public asyncio API: :class:`Stack`, servers, listeners and stream helpers.

Theory of operation. A :class:`Stack` owns one link, the sans-IO host speaking through it and
the :class:`~ustack.aio.driver.Driver` between them. Everything an application does goes
through it and mirrors the stdlib: ``create_connection``/``create_server`` take protocol
factories like the loop methods, ``connect``/``listen`` and the module-level
``open_connection``/``start_server`` hand out stock ``asyncio.StreamReader``/``StreamWriter``
pairs built on :class:`~ustack.aio.transport.TcpTransport`.

Accepting comes in two styles. A :class:`Server` takes every connection the host's listener
has completed as soon as the host reports it, like a kernel listening socket serviced by
asyncio. A :class:`Listener` takes one only when ``accept()`` is awaited, so connections wait
in the host's bounded accept queue meanwhile and ``backlog`` means what it says.

``aclose(grace)`` is the orderly end: stop listening, close every connection gracefully, give
them ``grace`` seconds to finish the FIN exchange, then reset whatever is left and close the
link. The other end is losing the link (a TUN device deleted under us): every connection is
reset locally (applications see ``ConnectionResetError``), ``serve_forever`` and ``accept``
raise the link's error, the stack closes, ``link_error`` holds the reason and ``wait_closed()``
raises it.

Per connection the asyncio side costs a transport (and whatever the application's protocol
holds): a built-in service passed to ``start_server`` runs as its protocol, with no
StreamReader, StreamWriter or Task, and every transport releases its connection to the host
after ``connection_lost``, so a TIME-WAIT left behind is only a compact record.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ustack.aio.driver import DEFAULT_BATCH, Driver, PacketObserver
from ustack.aio.transport import StackSocket, TcpTransport, endpoint_text
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection, Tracer
from ustack.tcp.state import State
from ustack.wire import addr

if TYPE_CHECKING:
    from ustack.link.base import Link
    from ustack.tcp.stats import Stats
    from ustack.tcp.timewait import TimeWait

P = TypeVar("P", bound=asyncio.BaseProtocol)

DEFAULT_LIMIT = 2**16  # asyncio's StreamReader buffer limit
DEFAULT_BACKLOG = 128
DEFAULT_GRACE = 2.0  # seconds aclose() waits for FIN exchanges before resetting

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]

# States in which nothing the application did is still in flight.
_SETTLED = frozenset({State.CLOSED, State.TIME_WAIT, State.LISTEN})


def _parse_address(address: str, what: str) -> int:
    """An IPv4 (``"10.7.0.2"``) or IPv6 (``"fd00:7::2"``, no brackets, like ``socket``)
    literal as the core's int (:mod:`ustack.wire.addr`); ValueError naming ``what``."""
    try:
        return addr.from_text(address)
    except (ValueError, TypeError):
        raise ValueError(f"{what} must be an IPv4 or IPv6 address, got {address!r}") from None


class Stack:
    """A userspace TCP/IP host on one link, driven by the running event loop.

    Use as ``async with Stack(link, address="10.7.0.2") as stack:``. The stack owns the link
    and closes it in :meth:`aclose`. ``address6`` (e.g. ``"fd00:7::2"``) makes it dual-stack:
    the host answers on both addresses, and connects from the one of the remote's family.
    """

    def __init__(
        self,
        link: Link,
        *,
        address: str,
        address6: str | None = None,
        config: TcpConfig | None = None,
        batch: int = DEFAULT_BATCH,
        busy_poll: float = 0.0,
        tracer: Tracer | None = None,
        on_packet: PacketObserver | None = None,
        secret: bytes | None = None,
        isn: Callable[..., int] | None = None,
        **host_options: Any,
    ) -> None:
        self.link = link
        self.address = address
        self.address6 = address6
        self._addrs = [_parse_address(address, "address")]
        if address6 is not None:
            self._addrs.append(_parse_address(address6, "address6"))
            if not addr.is_v6(self._addrs[1]):
                raise ValueError(f"address6 must be an IPv6 address, got {address6!r}")
        self.config = config if config is not None else TcpConfig()
        self.tracer = tracer
        self._batch = batch
        self._busy_poll = busy_poll
        self._on_packet = on_packet
        # None: fresh from secrets.token_bytes when the host starts (start())
        self._secret = secret
        self._isn = isn
        self._host_options = host_options
        self._host: Host | None = None
        self._driver: Driver | None = None
        # Every live transport, once, with the Server that accepted it (None for the others):
        # servers keep only a count, so a connection is tracked in one place.
        self._transports: dict[TcpTransport, Server | None] = {}
        # One bound method for every transport's on_lost (a closure each would cost ~150 B).
        self._untrack_cb: Callable[[TcpTransport], None] = self._untrack
        self._servers: set[Server] = set()
        self._listeners: set[Listener] = set()
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._link_error: OSError | None = None  # the link was lost (see the module docstring)
        self._closed_waiters: list[asyncio.Future[None]] = []

    @classmethod
    def tun(
        cls,
        name: str = "ustack0",
        address: str = "10.7.0.2",
        peer: str = "10.7.0.1",
        prefixlen: int = 24,
        mtu: int = 1500,
        *,
        netns: str | None = None,
        offload: str = "auto",
        address6: str | None = None,
        peer6: str | None = None,
        prefixlen6: int = 64,
        **kwargs: Any,
    ) -> Stack:
        """A stack on a new TUN device: the kernel side gets ``peer/prefixlen``, the stack
        answers as ``address``; with ``address6`` and ``peer6`` (e.g. ``"fd00:7::2"`` and
        ``"fd00:7::1"``) also ``peer6/prefixlen6`` and ``address6`` -- a ``LinkError`` with
        errno ``EAFNOSUPPORT`` if the kernel or namespace has IPv6 disabled.
        ``netns`` creates the device inside that namespace.
        ``offload`` (``"auto"``, ``"on"``, ``"off"``) chooses the virtio-net header with
        checksum offload and 64 KB super-segments both ways, see
        :meth:`~ustack.link.tun.TunLink.open`; ``stack.link.offload`` tells the outcome.

        Raises :class:`~ustack.link.errors.LinkError` (an ``OSError``) with a one-line reason.
        """
        from ustack.link.tun import TunLink

        if (address6 is None) != (peer6 is None):
            raise ValueError("address6 and peer6 go together: give both or neither")
        link = TunLink.open(
            name,
            mtu=mtu,
            address=peer,
            peer=address,
            prefixlen=prefixlen,
            netns=netns,
            offload=offload,
            address6=f"{peer6}/{prefixlen6}" if peer6 is not None else None,
            peer6=address6,
        )
        try:
            return cls(link, address=address, address6=address6, **kwargs)
        except BaseException:
            link.close()
            raise

    @classmethod
    def tap(
        cls,
        name: str = "ustack0",
        address: str = "10.7.0.2",
        peer: str = "10.7.0.1",
        prefixlen: int = 24,
        mtu: int = 1500,
        *,
        netns: str | None = None,
        mac: str | bytes | None = None,
        address6: str | None = None,
        peer6: str | None = None,
        prefixlen6: int = 64,
        arp_config: Any = None,
        **kwargs: Any,
    ) -> Stack:
        """A stack on a new TAP device (Ethernet, with ARP, and Neighbor Discovery for IPv6:
        see :mod:`ustack.aio.ethernet`): the kernel side gets ``peer/prefixlen`` and is the
        router, the stack answers as ``address`` with MAC ``mac`` (default: random, locally
        administered); ``address6``/``peer6``/``prefixlen6`` as for :meth:`tun`. An
        ``on_packet`` observer also sees every ARP (and IPv6 NS/NA) frame, as directions
        ``"arp-in"`` and ``"arp-out"`` (``ustack.ladder.Ladder`` draws them). ``arp_config`` is an
        :class:`ustack.stack.arp.ArpConfig` (neighbour cache times and bounds).

        Raises :class:`~ustack.link.errors.LinkError` (an ``OSError``) with a one-line reason.
        """
        from ustack.aio.ethernet import EthernetLink
        from ustack.link.tap import TapLink

        if (address6 is None) != (peer6 is None):
            raise ValueError("address6 and peer6 go together: give both or neither")
        tap = TapLink.open(
            name,
            mtu=mtu,
            address=peer,
            peer=address,
            prefixlen=prefixlen,
            netns=netns,
            mac=mac,
            address6=f"{peer6}/{prefixlen6}" if peer6 is not None else None,
            peer6=address6,
        )
        link = EthernetLink.over(tap, arp_config=arp_config)
        observer = kwargs.get("on_packet")
        if observer is not None:

            def on_arp(direction: str, frame: bytes, now: float) -> None:
                observer(f"arp-{direction}", frame, now)

            link.on_arp = on_arp
        try:
            return cls(link, address=address, address6=address6, **kwargs)
        except BaseException:
            link.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._driver else "new"
        both = self.address if self.address6 is None else f"{self.address} {self.address6}"
        return f"<Stack {both} {state} on {self.link!r}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Stack:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Attach to the running loop; the async methods call this on first use.

        The host speaks the link's framing: with TUN offloads on (``link.offload``) every
        packet it reads and writes carries the virtio-net header."""
        if self._closed:
            raise RuntimeError("stack is closed")
        if self._driver is not None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        options = dict(self._host_options)
        if self._isn is not None:
            options["isn"] = self._isn
        # RFC 6528 ISNs and RFC 4987 SYN cookies each get a key of their own, unguessable.
        options.setdefault("cookie_secret", secrets.token_bytes(16))
        if self.tracer is not None:
            options["tracer"] = self.tracer
        self._host = Host(
            self._addrs,
            config=self.config,
            mtu=self.link.mtu,
            secret=self._secret if self._secret is not None else secrets.token_bytes(16),
            now=now,
            offload=bool(getattr(self.link, "offload", False)),
            scatter=bool(getattr(self.link, "gather", False)),
            **options,
        )
        self._driver = Driver(
            loop,
            self.link,
            self._host,
            batch=self._batch,
            on_packet=self._on_packet,
            busy_poll=self._busy_poll,
        )
        self._driver.on_link_lost = self._link_lost
        # A TAP link's Ethernet/ARP layer (ustack.aio.ethernet, perhaps under a fault injector
        # or a pcap tap, which keep what they wrap as ``inner``) counts into the host's one
        # Stats from now on.
        inner: Any = self.link
        for _ in range(16):  # wrappers nest a few deep at most
            share_stats = getattr(inner, "share_stats", None)
            if share_stats is not None:
                share_stats(self._host.stats)
                break
            inner = getattr(inner, "inner", None)
            if inner is None:
                break
        self._driver.start()

    def _link_lost(self, failure: OSError) -> None:
        """The driver lost the link for good; it has reset the connections and ended the
        listeners' waits already. The stack is closed now."""
        self._link_error = failure
        self._servers.clear()
        self._listeners.clear()
        if not self._closed:
            self._closed = True
            self.link.close()
        self._wake_closed()

    def _wake_closed(self) -> None:
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def link_error(self) -> OSError | None:
        """Why the stack closed by itself (its link is gone, e.g. ``LinkError("TUN device
        ustack0 disappeared: File descriptor in bad state")``), or None."""
        return self._link_error

    async def wait_closed(self) -> None:
        """Wait until the stack is closed; raise :attr:`link_error` if it closed because it
        lost its link."""
        if not self._closed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._closed_waiters.append(waiter)
            await waiter
        if self._link_error is not None:
            raise self._link_error

    def _running(self) -> Driver:
        if self._driver is None:
            self.start()
        assert self._driver is not None
        if self._closed or self._closing is not None:
            raise RuntimeError("stack is closed")
        return self._driver

    @property
    def host(self) -> Host:
        if self._host is None:
            raise RuntimeError("stack not started: use 'async with' or call start()")
        return self._host

    @property
    def driver(self) -> Driver:
        if self._driver is None:
            raise RuntimeError("stack not started: use 'async with' or call start()")
        return self._driver

    @property
    def stats(self) -> Stats:
        return self.host.stats

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop listening, close connections gracefully, wait up to ``grace`` seconds for
        them to finish, reset the rest, and close the link."""
        if self._closed:
            return
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        driver = self._driver
        if driver is None:
            self._closed = True
            self.link.close()
            return
        loop = driver.loop
        self._closing = loop.create_future()
        try:
            for server in list(self._servers):
                server.close()
            for listener in list(self._listeners):
                listener.close()
            for transport in list(self._transports):
                transport.close()
            if grace > 0 and not self._settled():
                settled = loop.create_future()

                def check() -> None:
                    if not settled.done() and self._settled():
                        settled.set_result(None)

                driver._on_progress = check
                try:
                    await asyncio.wait_for(settled, grace)
                except TimeoutError:
                    pass
                finally:
                    driver._on_progress = None
            # Whatever is still exchanging FINs (or was never closed) is reset.
            now = driver.now()
            for conn in self._host_connections():
                if conn.state not in _SETTLED and isinstance(conn, Connection):
                    conn.abort(now)
            driver.dispatch_events()
            driver.flush(now)
            # Let connection_lost callbacks scheduled above run before the loop moves on.
            await asyncio.sleep(0)
        finally:
            self._closed = True
            driver.stop()
            self.link.close()
            self._closing.set_result(None)
            self._wake_closed()

    def _settled(self) -> bool:
        return all(conn.state in _SETTLED for conn in self._host_connections())

    # -- introspection -------------------------------------------------------------------------

    def _host_connections(self) -> list[Connection | TimeWait]:
        if self._host is None:
            return []
        return self._host.connections

    def connections(self) -> list[dict[str, Any]]:
        """One dict per connection the host knows, for status pages and the CLI. A connection
        in TIME-WAIT that the host keeps as a compact record has only the columns it keeps."""
        rows: list[dict[str, Any]] = []
        for conn in self._host_connections():
            if not isinstance(conn, Connection):
                rows.append(
                    {
                        "local": endpoint_text(conn.local_addr, conn.local_port),
                        "remote": endpoint_text(conn.remote_addr, conn.remote_port),
                        "state": str(conn.state),
                        "snd_una": conn.snd_una,
                        "snd_nxt": conn.snd_nxt,
                        "rcv_nxt": conn.rcv_nxt,
                        "rcv_wnd": conn.rcv_wnd,
                    }
                )
                continue
            rows.append(
                {
                    "local": endpoint_text(conn.local_addr, conn.local_port),
                    "remote": endpoint_text(conn.remote_addr, conn.remote_port),
                    "state": str(conn.state),  # RFC 9293 spelling: "TIME-WAIT"
                    "snd_una": conn.snd_una,
                    "snd_nxt": conn.snd_nxt,
                    "snd_wnd": conn.snd_wnd,
                    "rcv_nxt": conn.rcv_nxt,
                    "rcv_wnd": conn.rcv_wnd,
                    "send_queued": conn.send_queued,
                    "readable": conn.readable,
                    "cwnd": conn.cwnd,
                    "ssthresh": conn.ssthresh,
                    "srtt": conn.srtt,
                    "rto": conn.rto,
                }
            )
        return rows

    # -- making transports ---------------------------------------------------------------------

    def _track(self, transport: TcpTransport, server: Server | None) -> None:
        """Keep ``transport`` (accepted by ``server``, if any) until it is lost."""
        self._transports[transport] = server
        if server is not None:
            server._active += 1
        transport.on_lost = self._untrack_cb

    def _untrack(self, transport: TcpTransport) -> None:
        server = self._transports.pop(transport, None)
        if server is not None:
            server._detach()

    def _accepted(
        self, conn: Connection, protocol: asyncio.BaseProtocol, server: Server | None = None
    ) -> TcpTransport:
        transport = TcpTransport(self.driver, conn, protocol)
        self._track(transport, server)
        transport.start_passive()
        return transport

    async def create_connection(
        self,
        protocol_factory: Callable[[], P],
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        local_port: int | None = None,
    ) -> tuple[TcpTransport, P]:
        """Active open, like ``loop.create_connection``. Raises ``ConnectionRefusedError``
        (RST, or ICMP port/protocol unreachable), ``TimeoutError`` (SYN retries exhausted, or
        ``timeout`` seconds passed) or, when the SYNs ran out after an ICMP soft error, the
        ``OSError`` of that error (``EHOSTUNREACH``, ``ENETUNREACH``, ...)."""
        driver = self._running()
        remote = _parse_address(host, "host")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port!r}")
        conn = self.host.connect(remote, port, driver.now(), local_port=local_port)
        protocol = protocol_factory()
        waiter: asyncio.Future[None] = driver.loop.create_future()
        transport = TcpTransport(driver, conn, protocol, waiter=waiter)
        self._track(transport, None)
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException:
            self._transports.pop(transport, None)
            transport._abandon()
            if conn.state is not State.CLOSED:
                conn.abort(driver.now())
            raise
        return transport, protocol

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        port: int,
        *,
        host: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
        start_serving: bool = True,
        ipv6_only: bool = False,
    ) -> Server:
        """Listen on ``port``, like ``loop.create_server``; every completed connection gets a
        protocol from ``protocol_factory``. ``host`` is None, a wildcard (``"0.0.0.0"``,
        ``"::"``) or one of the stack's addresses (else ``EADDRNOTAVAIL``), and picks the
        families the server accepts as on Linux (see :meth:`_family`)."""
        self._running()
        family = self._family(host, ipv6_only)
        server = Server(self, protocol_factory, port, backlog, family)
        if start_serving:
            await server.start_serving()
        return server

    async def connect(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        limit: int = DEFAULT_LIMIT,
        local_port: int | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``open_connection`` on this stack: returns a stock reader/writer pair."""
        loop = self._running().loop
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(
            lambda: protocol, host, port, timeout=timeout, local_port=local_port
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    async def listen(
        self,
        port: int,
        *,
        host: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
        limit: int = DEFAULT_LIMIT,
        ipv6_only: bool = False,
    ) -> Listener:
        """Listen on ``port``; ``await listener.accept()`` returns (reader, writer) pairs.
        ``host`` and ``ipv6_only`` pick the families as for :meth:`create_server`."""
        self._running()
        family = self._family(host, ipv6_only)
        return Listener(self, port, backlog, limit, family)

    def _family(self, host: str | None, ipv6_only: bool) -> int | None:
        """The family a listener on ``host`` takes (4, 6, or None for both), as a Linux
        socket would: None or ``""`` -> both (asyncio binds one socket per family);
        ``"0.0.0.0"`` -> IPv4 (an AF_INET socket); ``"::"`` -> both (an AF_INET6 socket takes
        IPv4 too, as v4-mapped), or IPv6 only with ``ipv6_only`` (IPV6_V6ONLY); one of the
        stack's addresses -> its family (else ``EADDRNOTAVAIL``), the stack having one address
        per family. ``ipv6_only`` with anything but an IPv6 host is a ValueError, as
        IPV6_V6ONLY is meaningless on an AF_INET socket.

        The host's listeners are per port, not per address: one port takes one listener, so
        two servers on a port, one per family, are not supported (``EADDRINUSE``)."""
        family: int | None
        if host is None or host == "":
            family = None
        elif host == "0.0.0.0":
            family = 4
        elif host == "::":
            family = None
        else:
            local = _parse_address(host, "host")
            if local not in self._addrs:
                raise OSError(errno.EADDRNOTAVAIL, f"{host} is not one of this stack's addresses")
            family = 6 if addr.is_v6(local) else 4
        if ipv6_only:
            if host != "::" and family != 6:
                raise ValueError(f"ipv6_only needs an IPv6 host, got {host!r}")
            return 6
        return family

    def _listen(
        self, port: int, backlog: int, owner: Server | Listener, family: int | None = None
    ) -> Any:
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port!r}")
        listener = self.host.listen(port, backlog=backlog, family=family)
        self.driver.register_listener(listener, owner)
        return listener

    def _unlisten(self, listener: Any) -> None:
        if self._driver is not None:
            self._driver.unregister_listener(listener)
        if self._driver is not None and not self._driver.closed:
            listener.close(self._driver.now())


class Server:
    """A listening port serviced by protocol factories; the ``asyncio.Server`` surface, with
    stand-ins (:class:`~ustack.aio.transport.StackSocket`) as its ``sockets``."""

    def __init__(
        self,
        stack: Stack,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        port: int,
        backlog: int,
        family: int | None = None,
    ) -> None:
        self._stack = stack
        self._loop = stack.driver.loop
        self._factory = protocol_factory
        self.port = port
        self._backlog = backlog
        self._family = family  # the host listener's: 4, 6 or None for both
        self._listener: Any = None
        self._serving = False
        self._closed = False
        # How many accepted transports are live (the Stack tracks the transports themselves).
        self._active = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<ustack Server {self._stack.address}:{self.port} serving={self._serving}>"

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[StackSocket, ...]:
        """One stand-in per address this server listens on, as ``asyncio.Server.sockets`` has
        one per listening socket (libraries read the port from ``getsockname()``); empty once
        the server is closed."""
        if self._closed:
            return ()
        return tuple(
            StackSocket(local=(address, self.port))
            for address in self._stack._addrs
            if self._family is None or (6 if addr.is_v6(address) else 4) == self._family
        )

    async def start_serving(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if not self._serving:
            self._listener = self._stack._listen(self.port, self._backlog, self, self._family)
            self._stack._servers.add(self)
            self._serving = True
            self._accept_all()

    def _on_event(self, event: Any) -> None:
        self._accept_all()

    def _accept_all(self) -> None:
        listener = self._listener
        while self._serving:
            conn = listener.accept()
            if conn is None:
                return
            try:
                protocol = self._factory()
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "ustack: protocol factory failed", "exception": exc}
                )
                conn.abort(self._stack.driver.now())
                continue
            self._stack._accepted(conn, protocol, self)

    def _detach(self) -> None:
        """One of this server's transports is lost (the Stack has untracked it)."""
        self._active -= 1
        if self._closed and not self._active:
            self._wakeup()

    def _clients(self) -> list[TcpTransport]:
        return [t for t, server in self._stack._transports.items() if server is self]

    def _wakeup(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Stop listening; connections already accepted carry on (see :meth:`close_clients`)."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._stack._servers.discard(self)
        if self._listener is not None:
            self._stack._unlisten(self._listener)
            self._listener = None
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        if not self._active:
            self._wakeup()

    def _link_lost(self, failure: OSError) -> None:
        """The stack lost its link: stop serving; ``serve_forever`` raises ``failure``."""
        forever = self._serving_forever
        if forever is not None and not forever.done():
            forever.set_exception(failure)
        self._listener = None  # the host is gone with the link
        self.close()

    def close_clients(self) -> None:
        for transport in self._clients():
            transport.close()

    def abort_clients(self) -> None:
        for transport in self._clients():
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection it accepted has ended."""
        if self._closed and not self._active:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"{self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        await self.start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


class Listener:
    """A listening port whose connections are taken one ``accept()`` at a time."""

    def __init__(
        self, stack: Stack, port: int, backlog: int, limit: int, family: int | None = None
    ) -> None:
        self._stack = stack
        self._loop = stack.driver.loop
        self.port = port
        self._limit = limit
        self._closed = False
        self._error: OSError | None = None  # the stack lost its link
        self._ready: asyncio.Future[None] | None = None
        self._listener: Any = stack._listen(port, backlog, self, family)
        stack._listeners.add(self)

    def __repr__(self) -> str:
        return f"<ustack Listener {self._stack.address}:{self.port}>"

    def _on_event(self, event: Any) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The next completed connection as a stock (reader, writer) pair."""
        while True:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise OSError(errno.EBADF, "listener is closed")
            conn = self._listener.accept()
            if conn is not None:
                break
            self._ready = self._loop.create_future()
            try:
                await self._ready
            finally:
                self._ready = None
        reader = asyncio.StreamReader(limit=self._limit, loop=self._loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self._loop)
        transport = self._stack._accepted(conn, protocol)
        writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
        return reader, writer

    def _link_lost(self, failure: OSError) -> None:
        """The stack lost its link: a pending ``accept()`` raises ``failure``."""
        self._error = failure
        self._closed = True
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def close(self) -> None:
        """Stop listening; connections not yet accepted are reset by the host."""
        if self._closed:
            return
        self._closed = True
        self._stack._listeners.discard(self)
        self._stack._unlisten(self._listener)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


async def open_connection(
    host: str,
    port: int,
    *,
    stack: Stack,
    limit: int = DEFAULT_LIMIT,
    timeout: float | None = None,
    local_port: int | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` over ``stack``."""
    return await stack.connect(host, port, timeout=timeout, limit=limit, local_port=local_port)


async def start_server(
    client_connected_cb: ClientConnected,
    host: str | None = None,
    port: int | None = None,
    *,
    stack: Stack,
    backlog: int = DEFAULT_BACKLOG,
    limit: int = DEFAULT_LIMIT,
    start_serving: bool = True,
    ipv6_only: bool = False,
) -> Server:
    """``asyncio.start_server`` over ``stack``: ``client_connected_cb(reader, writer)`` runs for
    every connection (as a task when it is a coroutine function). ``host`` picks the families
    as on Linux: None, ``""`` or ``"::"`` both (``"::"`` with ``ipv6_only``: IPv6 only),
    ``"0.0.0.0"`` IPv4, an address of the stack its family (see ``Stack._family``).

    A callback that also carries a ``protocol_factory`` (a :class:`ustack.apps.base.Service`:
    the built-in echo, discard and chargen) is served through that protocol instead -- the same
    service without a StreamReader, StreamWriter and Task per connection."""
    if port is None:
        raise ValueError("port is required")
    protocol_factory = getattr(client_connected_cb, "protocol_factory", None)
    if protocol_factory is not None:
        return await stack.create_server(
            protocol_factory,
            port,
            host=host,
            backlog=backlog,
            start_serving=start_serving,
            ipv6_only=ipv6_only,
        )
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await stack.create_server(
        factory,
        port,
        host=host,
        backlog=backlog,
        start_serving=start_serving,
        ipv6_only=ipv6_only,
    )
