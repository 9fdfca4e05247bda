"""Unmodified asyncio libraries over ustack: a loop's own connect, serve and resolve calls routed
through a :class:`~ustack.aio.api.Stack`.

Theory of operation. aiohttp, websockets, httpx (through anyio) and asyncio's own
``open_connection``/``start_server`` never see ustack: they call ``loop.create_connection``,
``loop.create_server``, ``loop.getaddrinfo``, ``loop.start_tls`` and -- aiohttp's client, through
aiohappyeyeballs -- ``loop.sock_connect`` themselves. :func:`routed` puts a :class:`Router` in
front of those five methods *on one loop object*: instance attributes shadow the class's
methods, which works the same on asyncio's loops and on uvloop's, and leaving the ``with``
block removes them again. Each call either matches a :class:`Route` and goes through that
route's stack, or goes to the loop's own method exactly as the caller made it.

The rule, per call:

* ``create_server`` is routed when every ``host`` it names is one of a stack's own addresses
  (a literal, or a name that resolves only to them). Wildcards (None, ``""``, ``"0.0.0.0"``,
  ``"::"``) and all other addresses stay with the kernel, so one program can serve both ways.
  A host list that mixes the two is a ValueError: make one call per side.
* ``create_connection`` and ``sock_connect`` are routed when the destination lies in one of
  the route's networks (and is not the stack's own address). A route's networks are by default
  the on-link prefixes of the stack's TUN device -- ``10.7.0.0/24`` with ``Stack.tun()``'s
  defaults, and the IPv6 prefix when it has one; a link without configured prefixes (a
  ``LinkPair``) routes no client until ``networks=`` names some. Names are resolved by the
  loop's own ``getaddrinfo`` (the kernel's resolver); when some of a name's addresses are
  routed, only those are tried.
* ``getaddrinfo`` of a routed literal drops ``AI_ADDRCONFIG``: the kernel's namespace need not
  have an address of that family for ustack to have one. Everything else is untouched.
* ``start_tls`` on a :class:`~ustack.aio.transport.TcpTransport` puts asyncio's
  ``SSLProtocol`` on top itself (uvloop's own ``start_tls`` takes only uvloop transports).

Connecting in two steps. A routed active open first completes with a placeholder protocol
(:class:`_Parked`) that pauses reading at once, so whatever the peer sends waits in the
connection, its receive window closing; the caller's protocol is made only for the connection
that is kept. That lets ``happy_eyeballs_delay`` race several addresses as asyncio does, and
it makes aiohttp's client work: aiohappyeyeballs connects a kernel socket with
``loop.sock_connect`` and hands it to ``create_connection(sock=...)``; a routed ``sock_connect``
parks a ustack connection against that socket object (the kernel socket itself is never
connected) and ``create_connection(sock=)`` adopts it and closes the kernel socket. A parked
connection whose socket is dropped without being adopted is reset when the socket object is
collected.

TLS (``ssl=`` on both calls) is asyncio's ``SSLProtocol`` over the transport, on either loop.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import secrets
import socket
import ssl as _ssl
import weakref
from asyncio import sslproto
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from ustack.aio.api import Server, Stack
from ustack.aio.transport import TcpTransport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The loop methods a Router stands in front of (its own methods of the same names).
_METHODS = ("create_connection", "create_server", "getaddrinfo", "sock_connect", "start_tls")

# Hosts that mean "every address" to create_server: those listen on the kernel's side.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})

# Linux's default ip_local_port_range: where a server asked for port 0 gets its port.
_EPHEMERAL_LOW, _EPHEMERAL_HIGH = 32768, 60999

_CONNECT_OPTIONS = frozenset(
    {
        "ssl",
        "family",
        "proto",
        "flags",
        "sock",
        "local_addr",
        "server_hostname",
        "ssl_handshake_timeout",
        "ssl_shutdown_timeout",
        "happy_eyeballs_delay",
        "interleave",
        "all_errors",
    }
)
_SERVER_OPTIONS = frozenset(
    {
        "family",
        "flags",
        "sock",
        "backlog",
        "ssl",
        "reuse_address",
        "reuse_port",
        "keep_alive",
        "ssl_handshake_timeout",
        "ssl_shutdown_timeout",
        "start_serving",
    }
)

_routers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Router] = weakref.WeakKeyDictionary()


def _literal(host: object) -> IPAddress | None:
    """``host`` as an address if it is an IPv4 or IPv6 literal (str or bytes), else None."""
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(host, str):
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def link_networks(link: Any) -> list[IPNetwork]:
    """The on-link prefixes configured on ``link`` (a TunLink has the kernel's address and
    prefix length for each family), looking through wrappers (``inner``); [] if none."""
    while link is not None:
        nets: list[IPNetwork] = []
        for address_name, length_name in (("address", "prefixlen"), ("address6", "prefixlen6")):
            address = getattr(link, address_name, None)
            length = getattr(link, length_name, None)
            if isinstance(address, str) and isinstance(length, int) and length > 0:
                nets.append(ipaddress.ip_network(f"{address}/{length}", strict=False))
        if nets:
            return nets
        link = getattr(link, "inner", None)
    return []


def _networks(networks: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    if isinstance(networks, str):
        networks = [networks]
    parsed: list[IPNetwork] = []
    for net in networks:
        try:
            parsed.append(ipaddress.ip_network(net, strict=False))
        except (ValueError, TypeError):
            raise ValueError(
                f"networks: {net!r} is not an IPv4 or IPv6 prefix such as '10.7.0.0/24'"
            ) from None
    return tuple(parsed)


class Route:
    """One stack and what it is routed for: its own addresses (servers) and ``networks``
    (clients' destinations)."""

    def __init__(self, stack: Stack, networks: Iterable[str | IPNetwork] | None = None) -> None:
        if not isinstance(stack, Stack):
            raise TypeError(f"ustack.routed() takes a ustack.Stack, got {stack!r}")
        self.stack = stack
        self.own: tuple[IPAddress, ...] = tuple(
            ipaddress.ip_address(a) for a in (stack.address, stack.address6) if a is not None
        )
        self.networks = _networks(link_networks(stack.link) if networks is None else networks)

    def __repr__(self) -> str:
        nets = ", ".join(str(n) for n in self.networks) or "no networks"
        return f"<ustack Route {' '.join(str(a) for a in self.own)} for {nets}>"

    def reaches(self, ip: IPAddress) -> bool:
        return ip not in self.own and any(ip in net for net in self.networks)


class _Parked(asyncio.Protocol):
    """The placeholder protocol of a routed active open until the caller's protocol adopts
    the connection: it stops reading at once and remembers whether the connection ended."""

    lost = False
    exc: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.exc = exc


def _drop_parked(transport: TcpTransport) -> None:
    """A parked connection's socket object was collected without being adopted: reset it."""
    if isinstance(transport.get_protocol(), _Parked):
        transport.abort()


def _interleave(
    targets: Sequence[tuple[Route, IPAddress]], first_family_count: int
) -> list[tuple[Route, IPAddress]]:
    """RFC 8305 4: alternate the families, ``first_family_count`` of the first one first."""
    if first_family_count <= 0:
        return list(targets)
    by_family: dict[int, list[tuple[Route, IPAddress]]] = {}
    for target in targets:
        by_family.setdefault(target[1].version, []).append(target)
    queues = list(by_family.values())
    ordered = queues[0][:first_family_count]
    queues[0] = queues[0][first_family_count:]
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def _failure(errors: list[OSError], all_errors: bool) -> BaseException:
    """One exception for a connect that tried every address, as asyncio words it."""
    if all_errors:
        return ExceptionGroup("create_connection failed", errors)
    if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
        return errors[0]
    return OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")


def _client_context(ssl: Any, server_hostname: str | None) -> _ssl.SSLContext | None:
    if not ssl:
        return None
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    # ssl=True: what asyncio makes for it, a default context checking the hostname if any.
    context = _ssl.create_default_context()
    if not server_hostname:
        context.check_hostname = False
    return context


class Router:
    """The routes installed on one loop, and the loop methods they stand in front of."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.routes: list[Route] = []
        # Kernel socket objects that a routed sock_connect parked a connection against.
        self._parked: weakref.WeakKeyDictionary[socket.socket, TcpTransport] = (
            weakref.WeakKeyDictionary()
        )
        self._saved: dict[str, Any] = {}  # what the loop's instance had before (if anything)
        self._orig: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        loop = self.loop
        for name in _METHODS:
            if name in vars(loop):
                self._saved[name] = vars(loop)[name]
            self._orig[name] = getattr(loop, name)
            setattr(loop, name, getattr(self, name))

    def uninstall(self) -> None:
        loop = self.loop
        for name in _METHODS:
            if name in self._saved:
                setattr(loop, name, self._saved[name])
            else:
                vars(loop).pop(name, None)
        self._saved.clear()
        self._orig.clear()

    def client_route(self, ip: IPAddress) -> Route | None:
        for route in self.routes:
            if route.reaches(ip):
                return route
        return None

    def server_route(self, ip: IPAddress) -> Route | None:
        for route in self.routes:
            if ip in route.own:
                return route
        return None

    # -- getaddrinfo ---------------------------------------------------------------------------

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        """The loop's own getaddrinfo; for a routed literal without ``AI_ADDRCONFIG``."""
        ip = _literal(host)
        if ip is not None and (self.client_route(ip) or self.server_route(ip)):
            flags &= ~socket.AI_ADDRCONFIG
        result: list[tuple[Any, ...]] = await self._orig["getaddrinfo"](
            host, port, family=family, type=type, proto=proto, flags=flags
        )
        return result

    # -- clients -------------------------------------------------------------------------------

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **options: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """``loop.create_connection``: through the route the destination lies in, else the
        loop's own. See the module docstring for the rule and what is supported."""
        sock = options.get("sock")
        if sock is not None:
            parked = self._parked.pop(sock, None)
            if parked is None:
                return await self._kernel_connection(protocol_factory, host, port, options)
            sock.close()  # never connected: the connection it stood for is ustack's
            try:
                if host is not None or port is not None:
                    raise ValueError("host/port and sock can not be specified at the same time")
                self._validate(options, None)
            except BaseException:
                parked.abort()
                raise
            return await self._adopt(parked, protocol_factory, options, None)
        if host is None or port is None:
            return await self._kernel_connection(protocol_factory, host, port, options)
        family = options.get("family", 0)
        targets = await self._client_targets(
            host, port, family, options.get("proto", 0), options.get("flags", 0)
        )
        if not targets:
            return await self._kernel_connection(protocol_factory, host, port, options)
        self._validate(options, host)
        port = _port(port)
        local_port = self._local_port(targets, options.get("local_addr"))
        delay = options.get("happy_eyeballs_delay")
        interleave = options.get("interleave")
        if interleave is None:
            interleave = 1 if delay is not None else 0
        transport = await self._connect(
            _interleave(targets, interleave), port, local_port, delay, options.get("all_errors")
        )
        return await self._adopt(transport, protocol_factory, options, host)

    async def _kernel_connection(
        self, factory: Callable[[], asyncio.BaseProtocol], host: Any, port: Any, options: Any
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """The loop's own create_connection, called exactly as the caller called ours."""
        result: tuple[asyncio.Transport, asyncio.BaseProtocol] = await self._orig[
            "create_connection"
        ](factory, host, port, **options)
        return result

    async def _kernel_server(
        self, factory: Callable[[], asyncio.BaseProtocol], host: Any, port: Any, options: Any
    ) -> asyncio.Server:
        """The loop's own create_server, called exactly as the caller called ours."""
        result: asyncio.Server = await self._orig["create_server"](factory, host, port, **options)
        return result

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """``loop.sock_connect``: a TCP socket to a routed destination gets a parked ustack
        connection instead, for ``create_connection(sock=sock)`` to adopt."""
        if (
            isinstance(sock, socket.socket)
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
            and isinstance(address, tuple)
            and len(address) >= 2
        ):
            ip = _literal(address[0])
            route = self.client_route(ip) if ip is not None else None
            if ip is not None and route is not None:
                transport = await self._connect([(route, ip)], address[1], None, None, False)
                self._parked[sock] = transport
                weakref.finalize(sock, _drop_parked, transport)
                return
        await self._orig["sock_connect"](sock, address)

    async def _client_targets(
        self, host: Any, port: Any, family: int, proto: int, flags: int
    ) -> list[tuple[Route, IPAddress]]:
        """The routed addresses ``host`` stands for (in the resolver's order), or []."""
        ip = _literal(host)
        if ip is not None:
            route = self.client_route(ip)
            if route is None or (family and family != _family_of(ip)):
                return []
            return [(route, ip)]
        if not any(route.networks for route in self.routes):
            return []  # nothing could match: leave the one lookup to the loop's own method
        infos = await self._orig["getaddrinfo"](
            host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        targets: list[tuple[Route, IPAddress]] = []
        for info in infos:
            found = _literal(info[4][0])
            if found is None or any(found == t[1] for t in targets):
                continue
            route = self.client_route(found)
            if route is not None:
                targets.append((route, found))
        return targets

    @staticmethod
    def _local_port(targets: list[tuple[Route, IPAddress]], local_addr: Any) -> int | None:
        """``local_addr=(host, port)``: the host must be a wildcard or the stack's address of
        the destination's family (a stack has one per family), the port becomes ours."""
        if local_addr is None:
            return None
        host, port = local_addr[0], local_addr[1]
        if host not in (None, *_WILDCARDS):
            ip = _literal(host)
            if ip is None or not all(ip in route.own for route, _ in targets):
                raise OSError(
                    errno.EADDRNOTAVAIL,
                    f"local_addr {host!r} is not the routed stack's address for {targets[0][1]}",
                )
        return int(port) or None

    async def _park(self, route: Route, ip: IPAddress, port: int, local_port: int | None) -> Any:
        transport, _ = await route.stack.create_connection(
            _Parked, str(ip), port, local_port=local_port
        )
        return transport

    async def _connect(
        self,
        targets: list[tuple[Route, IPAddress]],
        port: int,
        local_port: int | None,
        delay: float | None,
        all_errors: bool | None,
    ) -> TcpTransport:
        """A parked connection to the first of ``targets`` that answers: one after another,
        or with ``delay`` a staggered race (RFC 8305 5, as asyncio runs it) whose losers are
        reset."""
        errors: list[OSError] = []
        if delay is None or len(targets) == 1:
            for route, ip in targets:
                try:
                    transport: TcpTransport = await self._park(route, ip, port, local_port)
                    return transport
                except OSError as exc:
                    errors.append(exc)
            raise _failure(errors, bool(all_errors))
        loop = self.loop
        pending: set[asyncio.Task[Any]] = set()
        waiting = list(targets)
        winner: TcpTransport | None = None
        try:
            while winner is None and (waiting or pending):
                if waiting:
                    route, ip = waiting.pop(0)
                    pending.add(loop.create_task(self._park(route, ip, port, local_port)))
                done, pending = await asyncio.wait(
                    pending,
                    timeout=delay if waiting else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    failed = task.exception()
                    if failed is None and winner is None:
                        winner = task.result()
                    elif failed is None:
                        task.result().abort()
                    elif isinstance(failed, OSError):
                        errors.append(failed)
                    else:
                        raise failed
        finally:
            for task in pending:
                task.cancel()  # Stack.create_connection resets what it had started
            if pending:
                await asyncio.wait(pending)
            for task in pending:
                if not task.cancelled() and task.exception() is None:
                    task.result().abort()
        if winner is None:
            raise _failure(errors, bool(all_errors))
        return winner

    @staticmethod
    def _validate(options: dict[str, Any], host: Any) -> None:
        """What asyncio refuses before connecting, refused before connecting."""
        _server_hostname(options, host)
        Router._check_options(options, _CONNECT_OPTIONS, "create_connection")

    async def _adopt(
        self,
        transport: TcpTransport,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        options: dict[str, Any],
        host: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Hand a parked connection to the caller's protocol (under TLS if asked) and let the
        bytes that waited flow."""
        parked = transport.get_protocol()
        if not isinstance(parked, _Parked) or parked.lost:
            why = parked.exc if isinstance(parked, _Parked) else None
            raise why or ConnectionResetError(errno.ECONNRESET, "connection reset before use")
        ssl = options.get("ssl")
        server_hostname = _server_hostname(options, host)
        try:
            protocol = protocol_factory()
            context = _client_context(ssl, server_hostname)
            if context is None:
                transport.set_protocol(protocol)
                protocol.connection_made(transport)
                transport.resume_reading()
                return transport, protocol
            app = await self._tls(
                transport,
                protocol,
                context,
                server_side=False,
                server_hostname=server_hostname or None,
                ssl_handshake_timeout=options.get("ssl_handshake_timeout"),
                ssl_shutdown_timeout=options.get("ssl_shutdown_timeout"),
                call_connection_made=True,
            )
            return app, protocol
        except BaseException:
            transport.abort()
            raise

    # -- TLS -----------------------------------------------------------------------------------

    async def _tls(
        self,
        transport: TcpTransport,
        protocol: asyncio.BaseProtocol,
        context: _ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
        call_connection_made: bool,
    ) -> asyncio.Transport:
        """asyncio's SSLProtocol between ``transport`` and ``protocol``: the same steps as
        asyncio's start_tls (reading stays paused until the TLS layer is in place)."""
        waiter = self.loop.create_future()
        tls = sslproto.SSLProtocol(
            self.loop,
            protocol,
            context,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=call_connection_made,
            # typeshed says int; asyncio takes any number of seconds
            ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        transport.pause_reading()
        transport.set_protocol(tls)
        tls.connection_made(transport)
        transport.resume_reading()
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        app: asyncio.Transport = tls._app_transport
        return app

    async def start_tls(
        self,
        transport: asyncio.BaseTransport,
        protocol: asyncio.BaseProtocol,
        sslcontext: _ssl.SSLContext,
        **options: Any,
    ) -> asyncio.Transport | None:
        """``loop.start_tls``: on a ustack transport asyncio's SSLProtocol on either loop."""
        if not isinstance(transport, TcpTransport):
            result: asyncio.Transport | None = await self._orig["start_tls"](
                transport, protocol, sslcontext, **options
            )
            return result
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        self._check_options(
            options,
            {"server_side", "server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout"},
            "start_tls",
        )
        return await self._tls(
            transport,
            protocol,
            sslcontext,
            server_side=bool(options.get("server_side", False)),
            server_hostname=options.get("server_hostname"),
            ssl_handshake_timeout=options.get("ssl_handshake_timeout"),
            ssl_shutdown_timeout=options.get("ssl_shutdown_timeout"),
            call_connection_made=False,
        )

    # -- servers -------------------------------------------------------------------------------

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **options: Any,
    ) -> Server | asyncio.Server:
        """``loop.create_server``: a ustack :class:`~ustack.aio.api.Server` when every host is
        one of a stack's addresses, else the loop's own."""
        hosts = [host] if isinstance(host, str | bytes) or host is None else list(host)
        if options.get("sock") is not None or any(h is None or h in _WILDCARDS for h in hosts):
            return await self._kernel_server(protocol_factory, host, port, options)
        found: list[tuple[Route | None, IPAddress | None, Any]] = []
        for name in hosts:
            ip = _literal(name)
            if ip is not None:
                found.append((self.server_route(ip), ip, name))
                continue
            infos = await self._orig["getaddrinfo"](
                name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for info in infos:
                resolved = _literal(info[4][0])
                route = self.server_route(resolved) if resolved is not None else None
                found.append((route, resolved, name))
        routes = {id(route): route for route, _, _ in found if route is not None}
        if not routes:
            return await self._kernel_server(protocol_factory, host, port, options)
        if len(routes) > 1 or any(route is None for route, _, _ in found):
            named = ", ".join(f"{name!r} -> {ip}" for _, ip, name in found)
            raise ValueError(
                f"create_server: the hosts ({named}) mix addresses of different stacks or of "
                "a stack and the kernel; make one create_server call for each"
            )
        self._check_options(options, _SERVER_OPTIONS, "create_server")
        (route,) = routes.values()
        family = options.get("family", 0)
        addresses = {ip for _, ip, _ in found if ip is not None}
        if family:
            addresses = {ip for ip in addresses if _family_of(ip) == family}
            if not addresses:
                raise OSError(errno.EADDRNOTAVAIL, f"no address of family {family!r} in {hosts!r}")
        # One address: that family only; both of the stack's addresses: both (host=None).
        stack_host = str(next(iter(addresses))) if len(addresses) == 1 else None
        ssl = options.get("ssl")
        if ssl and not isinstance(ssl, _ssl.SSLContext):
            raise ValueError("Server side SSL needs a valid SSLContext")
        if not ssl:
            for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout"):
                if options.get(name) is not None:
                    raise ValueError(f"{name} is only meaningful with ssl")
        factory = protocol_factory
        if ssl:
            factory = self._tls_factory(protocol_factory, ssl, options)
        backlog = int(options.get("backlog", 100))
        start_serving = bool(options.get("start_serving", True))
        if port not in (None, 0, "0"):
            return await route.stack.create_server(
                factory, _port(port), host=stack_host, backlog=backlog, start_serving=start_serving
            )
        return await self._ephemeral_server(
            route.stack, factory, stack_host, backlog, start_serving
        )

    async def _ephemeral_server(
        self,
        stack: Stack,
        factory: Callable[[], asyncio.BaseProtocol],
        host: str | None,
        backlog: int,
        start_serving: bool,
    ) -> Server:
        """Port 0: the first free port from a random point in the ephemeral range."""
        span = _EPHEMERAL_HIGH - _EPHEMERAL_LOW + 1
        start = secrets.randbelow(span)
        for step in range(span):
            port = _EPHEMERAL_LOW + (start + step) % span
            try:
                return await stack.create_server(
                    factory, port, host=host, backlog=backlog, start_serving=start_serving
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, "no free port in the ephemeral range")

    def _tls_factory(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        context: _ssl.SSLContext,
        options: dict[str, Any],
    ) -> Callable[[], asyncio.BaseProtocol]:
        loop = self.loop
        handshake = options.get("ssl_handshake_timeout")
        shutdown = options.get("ssl_shutdown_timeout")

        def factory() -> asyncio.BaseProtocol:
            waiter = loop.create_future()
            # A failed handshake ends the connection (the SSLProtocol reports it); nobody
            # awaits the waiter of an accepted connection, so its exception is taken here.
            waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
            return sslproto.SSLProtocol(
                loop,
                protocol_factory(),
                context,
                waiter,
                server_side=True,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=shutdown,
            )

        return factory

    @staticmethod
    def _check_options(options: dict[str, Any], known: Iterable[str], what: str) -> None:
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{what}() got an unexpected keyword argument {unknown[0]!r}")


def _server_hostname(options: dict[str, Any], host: Any) -> str | None:
    """The name TLS checks the certificate against; asyncio's rules for the TLS options."""
    ssl = options.get("ssl")
    server_hostname: str | None = options.get("server_hostname")
    if not ssl:
        for name in ("server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout"):
            if options.get(name) is not None:
                raise ValueError(f"{name} is only meaningful with ssl")
        return None
    if server_hostname is None:
        if host is None:
            raise ValueError("You must set server_hostname when using ssl without a host")
        server_hostname = str(host)
    return server_hostname


def _port(port: Any) -> int:
    """A port as asyncio takes it: a number, digits, or a service name (``"http"``)."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    text = port.decode() if isinstance(port, bytes) else str(port)
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise OSError(errno.EINVAL, f"unknown TCP service {port!r}") from None


def _family_of(ip: IPAddress) -> int:
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


class Routing:
    """What :func:`routed` returns: a context manager (``with`` or ``async with``) that keeps
    ``route`` installed on ``loop`` while it is entered."""

    def __init__(self, stack: Stack, networks: Iterable[str | IPNetwork] | None, loop: Any) -> None:
        self.route = Route(stack, networks)
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._router: Router | None = None

    def __repr__(self) -> str:
        return f"<ustack routed {self.route!r} {'on' if self._router else 'off'}>"

    def __enter__(self) -> Routing:
        if self._router is not None:
            raise RuntimeError("this routing is already in force")
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "ustack.routed() needs a running event loop (or loop=...)"
                ) from None
        router = _routers.get(loop)
        if router is None:
            router = _routers[loop] = Router(loop)
            router.install()
        router.routes.append(self.route)
        self._router = router
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        router, self._router = self._router, None
        if router is None:
            return
        router.routes.remove(self.route)
        if not router.routes:
            router.uninstall()
            _routers.pop(router.loop, None)

    async def __aenter__(self) -> Routing:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def routed(
    stack: Stack,
    *,
    networks: Iterable[str | IPNetwork] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Routing:
    """Route the running loop's (or ``loop``'s) ``create_connection``, ``create_server``,
    ``getaddrinfo``, ``sock_connect`` and ``start_tls`` through ``stack`` while the returned
    context is entered: servers on the stack's own addresses, clients to destinations in
    ``networks`` (by default the prefixes configured on the stack's TUN device; a list of
    prefixes such as ``["10.9.0.0/24"]`` otherwise). Several stacks can be routed on one loop
    at once; the first whose rule matches takes a call. Everything else goes to the kernel.

    ``with ustack.routed(stack): await web.TCPSite(runner, "10.7.0.2", 80).start()`` serves an
    aiohttp application through ``stack``; the site keeps serving after the block, as routing
    only decides where new connections and servers go.
    """
    return Routing(stack, networks, loop)
