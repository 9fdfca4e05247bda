"""``ustack forward``: a network namespace's traffic through ustack, as slirp4netns and pasta do.

Theory of operation. A TUN device is put into the target namespace as its default route (IPv4
and IPv6); ustack runs outside it, in the namespace it was started in, and stands in for every
destination behind that route. The sans-IO host runs in forward mode
(``IpLayer.enable_forwarding``, ``TcpDemux.listen_transparent``): it takes packets to any
unicast address, answers ICMP and ICMPv6 echo itself in the destination's name, reports each
SYN as a ``ConnectionRequested`` event and each UDP datagram as a ``DatagramReceived`` event to
the :class:`Forwarder`, which relays them over ordinary host sockets:

* **TCP.** For a SYN the forwarder first connects a kernel socket to the SYN's destination;
  only when that succeeds is the SYN answered (``Listener.answer``: the SYN,ACK goes out), as
  pasta does, and a refusal -- or any other failure, or ``connect_timeout`` -- is answered with
  a RST (``Listener.refuse``), so the client sees "connection refused" exactly when a direct
  connection would have. Then a :class:`_Relay` joins the two transports: bytes both ways; flow
  control both ways (a side whose write buffer passes its high-water mark pauses reading on the
  other side, so a slow reader slows the writer down through TCP's windows on both legs);
  half-close both ways (a FIN from the client is ``shutdown(SHUT_WR)`` on the socket, the
  server's EOF a FIN to the client); resets both ways (``ECONNRESET`` on the socket -> RST to
  the client; a RST from the client -> the socket closed with ``SO_LINGER`` 0, which makes the
  kernel send a RST). With ``trace`` each connection ends with one line.
* **UDP.** Each flow (client address and port, destination address and port) gets a connected
  kernel UDP socket; datagrams go out on it and whatever comes back from the destination goes
  back in through ``IpLayer.send_udp``. Flows are bounded (``max_udp_flows``, the oldest
  evicted first) and end after ``udp_idle`` seconds without traffic. DNS works this way when
  the namespace's resolver is reachable from where ustack runs.

The gateway addresses (the stack's own: 10.0.2.2 and fd00::2 by default, as in slirp4netns)
stand for the host's loopback (``map_gateway``), so a client inside reaches services listening
on 127.0.0.1 or ::1 where ustack runs; without it they are relayed like any address.

:func:`forward` is the whole command: it opens the TUN device in the namespace, adds the
default routes (pyroute2), runs the stack and the forwarder, and either waits for a signal or
runs a command inside the namespace and returns its exit status. Relayed connections use the
routes and addresses of the namespace ustack runs in; nothing is forwarded anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from ustack.aio.api import Stack
from ustack.aio.transport import TcpTransport, endpoint_text
from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace, run_in_netns
from ustack.link.tun import TunLink
from ustack.stack.events import ConnectionRequested, DatagramReceived
from ustack.tcp.config import TcpConfig
from ustack.wire import addr

log = logging.getLogger(__name__)

# Inside the namespace, as slirp4netns numbers it: the client 10.0.2.100/24 and fd00::100/64,
# its gateway (the stack) 10.0.2.2 and fd00::2.
ADDRESS = "10.0.2.100"
GATEWAY = "10.0.2.2"
PREFIXLEN = 24
ADDRESS6 = "fd00::100"
GATEWAY6 = "fd00::2"
PREFIXLEN6 = 64
TUN_NAME = "ustack0"

CONNECT_TIMEOUT = 10.0  # seconds for the outer connect before the client is refused
SYN_BACKLOG = 1024  # SYNs waiting for their outer connect, and handshakes in progress
UDP_IDLE = 60.0  # seconds a UDP flow lives without traffic (Linux conntrack's udp_timeout: 30)
MAX_UDP_FLOWS = 512
_UDP_READS = 64  # datagrams read from one flow's socket per wakeup (bounded work, rule 12)
_UDP_MAX = 65535
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


@dataclasses.dataclass
class ForwardConfig:
    """The relay's settings (see the module docstring)."""

    connect_timeout: float = CONNECT_TIMEOUT
    syn_backlog: int = SYN_BACKLOG
    udp_idle: float = UDP_IDLE
    max_udp_flows: int = MAX_UDP_FLOWS
    map_gateway: bool = True
    # One line per connection and UDP flow, when it ends.
    trace: Callable[[str], None] | None = None


@dataclasses.dataclass
class ForwardStats:
    """The relay's own counters (the stack's are in ``stack.stats``)."""

    tcp_relayed: int = 0  # outer connect succeeded, SYN answered
    tcp_refused: int = 0  # outer connect refused: RST to the client
    tcp_connect_failed: int = 0  # other outer failures (unreachable, timeout): RST as well
    tcp_handshake_failed: int = 0  # the client never completed (or reset) the handshake
    tcp_reset_by_destination: int = 0
    tcp_reset_by_client: int = 0
    tcp_closed: int = 0  # both directions finished with FINs
    udp_flows: int = 0
    udp_flows_evicted: int = 0
    udp_out: int = 0
    udp_in: int = 0
    udp_send_failed: int = 0  # the kernel refused a datagram (ICMP error, full buffer)


class _Relay:
    """One relayed TCP connection: the client's (inner, over ustack) and the destination's
    (outer, a kernel socket), and what each direction has done."""

    __slots__ = (
        "ended",
        "forwarder",
        "inner",
        "inner_eof",
        "key",
        "outer",
        "outer_eof",
        "parked",
        "started",
        "to_client",
        "to_server",
    )

    def __init__(self, forwarder: Forwarder, key: tuple[int, int, int, int]) -> None:
        self.forwarder = forwarder
        self.key = key
        self.inner: TcpTransport | None = None
        self.outer: asyncio.Transport | None = None
        self.inner_eof = False  # the client's FIN arrived (and went on as SHUT_WR)
        self.outer_eof = False  # the destination's EOF arrived (and went on as a FIN)
        # What the destination sent before the client's handshake completed (a server that
        # speaks first): handed on once it has.
        self.parked: list[bytes] = []
        self.to_server = 0
        self.to_client = 0
        self.started = time.monotonic()
        self.ended = False

    # both directions finished: close both sides
    def _maybe_done(self) -> None:
        if self.inner_eof and self.outer_eof:
            self._end("closed", reset_outer=False, reset_inner=False)

    def _end(self, how: str, *, reset_outer: bool, reset_inner: bool) -> None:
        """The relay is over: each side closed (gracefully, or with a RST), one trace line."""
        if self.ended:
            return
        self.ended = True
        outer, inner = self.outer, self.inner
        if outer is not None and not outer.is_closing():
            if reset_outer:
                sock = outer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                outer.abort()
            else:
                outer.close()
        if inner is not None and not inner.is_closing():
            if reset_inner:
                inner.abort()
            else:
                inner.close()
        self.forwarder._relay_ended(self, how)


class _InnerSide(asyncio.Protocol):
    """The client's connection, over ustack."""

    __slots__ = ("relay",)

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.inner = cast(TcpTransport, transport)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        relay.to_server += len(data)
        outer = relay.outer
        if outer is not None and not outer.is_closing():
            outer.write(data)

    def eof_received(self) -> bool:
        relay = self.relay
        relay.inner_eof = True
        outer = relay.outer
        if outer is not None and not outer.is_closing() and outer.can_write_eof():
            outer.write_eof()  # shutdown(SHUT_WR) once the buffer is written
        relay._maybe_done()
        return True  # keep receiving what the destination still sends

    # The client reads slower than the destination sends: stop reading the destination.
    def pause_writing(self) -> None:
        outer = self.relay.outer
        if outer is not None and not outer.is_closing():
            outer.pause_reading()

    def resume_writing(self) -> None:
        outer = self.relay.outer
        if outer is not None and not outer.is_closing():
            outer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        relay = self.relay
        if exc is None:
            # Ended in order (both FINs, or closed here): the destination's side follows.
            relay._end("closed", reset_outer=False, reset_inner=False)
        else:
            relay.forwarder.stats.tcp_reset_by_client += 1
            relay._end(f"reset by client ({exc})", reset_outer=True, reset_inner=False)


class _OuterSide(asyncio.Protocol):
    """The destination's connection, a kernel socket."""

    __slots__ = ("relay",)

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but have its methods)
        transport = cast(asyncio.Transport, transport)
        self.relay.outer = transport
        # Nothing is read until the client's handshake completes (there is nowhere to put it).
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        relay.to_client += len(data)
        inner = relay.inner
        if inner is None or relay.parked:
            # Read before the handshake completed after all (a loop may start reading at
            # once): kept, and no more read until then.
            relay.parked.append(data)
            with contextlib.suppress(RuntimeError):
                cast(asyncio.Transport, relay.outer).pause_reading()
        elif not inner.is_closing():
            inner.write(data)

    def eof_received(self) -> bool:
        relay = self.relay
        relay.outer_eof = True
        inner = relay.inner
        if inner is not None and not relay.parked:
            inner.write_eof()  # a FIN after everything queued
            relay._maybe_done()
        return True

    # The destination reads slower than the client sends: stop reading the client, whose
    # receive window then closes.
    def pause_writing(self) -> None:
        inner = self.relay.inner
        if inner is not None:
            inner.pause_reading()

    def resume_writing(self) -> None:
        inner = self.relay.inner
        if inner is not None:
            inner.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        relay = self.relay
        if exc is None:
            relay._end("closed", reset_outer=False, reset_inner=False)
        else:
            relay.forwarder.stats.tcp_reset_by_destination += 1
            relay._end(f"reset by destination ({exc})", reset_outer=False, reset_inner=True)


class _UdpFlow:
    """One UDP flow: a connected kernel socket to the destination, read when readable."""

    __slots__ = ("forwarder", "key", "last", "sock", "timer")

    def __init__(self, forwarder: Forwarder, key: tuple[int, int, int, int], sock: socket.socket):
        self.forwarder = forwarder
        self.key = key
        self.sock = sock
        self.last = forwarder.loop.time()
        self.timer: asyncio.TimerHandle | None = None

    def readable(self) -> None:
        fwd = self.forwarder
        src, sport, dst, dport = self.key
        sent = False
        for _ in range(_UDP_READS):
            try:
                data = self.sock.recv(_UDP_MAX)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # An ICMP error about an earlier datagram (port unreachable, ...): the client
                # learns by its own timeout, as through any NAT that drops such errors.
                fwd.stats.udp_send_failed += 1
                continue
            fwd.stats.udp_in += 1
            self.last = fwd.loop.time()
            sent = fwd._ip.send_udp(dst, dport, src, sport, data) or sent
        if sent:
            fwd._wakeup()

    def expire(self) -> None:
        fwd = self.forwarder
        idle = fwd.loop.time() - self.last
        if idle < fwd.config.udp_idle:
            self.timer = fwd.loop.call_later(fwd.config.udp_idle - idle, self.expire)
            return
        fwd._udp_close(self, "idle")


class Forwarder:
    """Forward mode on a started :class:`~ustack.aio.api.Stack`: see the module docstring.

    ``gateways`` are the stack's own addresses (text), which ``map_gateway`` relays to the
    host's loopback of the same family."""

    def __init__(
        self, stack: Stack, config: ForwardConfig | None = None, gateways: Sequence[str] = ()
    ) -> None:
        self.stack = stack
        self.config = config if config is not None else ForwardConfig()
        self.stats = ForwardStats()
        self.loop = stack.driver.loop
        host = stack.host
        self._ip = host.ip
        self._driver = stack.driver
        self._wakeup = stack.driver.wakeup
        self._gateways = {addr.from_text(g) for g in gateways}
        self.listener = host.demux.listen_transparent(self.config.syn_backlog)
        host.ip.enable_forwarding(host.demux.post_datagram)
        stack.driver.register_listener(self.listener, self)
        self._relays: dict[_Relay, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flows: dict[tuple[int, int, int, int], _UdpFlow] = {}
        self._closed = False

    # -- events from the driver ----------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if self._closed:
            return
        if type(event) is DatagramReceived:
            self._udp_out(event)
        elif type(event) is ConnectionRequested:
            task = self.loop.create_task(self._relay_tcp(event.key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _target(self, local: int) -> str:
        """Where a connection to ``local`` (a destination inside the namespace's view) goes."""
        if self.config.map_gateway and local in self._gateways:
            return "::1" if addr.is_v6(local) else "127.0.0.1"
        return addr.to_text(local)

    # -- TCP -----------------------------------------------------------------------------------

    async def _relay_tcp(self, key: tuple[int, int, int, int]) -> None:
        _remote, _remote_port, local, local_port = key
        relay = _Relay(self, key)
        loop = self.loop
        target = self._target(local)
        try:
            # (asyncio.timeout, not wait_for: no extra task per connection)
            async with asyncio.timeout(self.config.connect_timeout):
                await loop.create_connection(lambda: _OuterSide(relay), target, local_port)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                self.stats.tcp_refused += 1
            else:
                self.stats.tcp_connect_failed += 1
            if not self._closed:
                self.listener.refuse(key, self._driver.now())
            self._trace(relay, f"refused ({_why(exc)})")
            return
        outer = relay.outer
        assert outer is not None
        conn = None if self._closed else self.listener.answer(key, self._driver.now())
        if conn is None:
            outer.close()
            return
        self.stats.tcp_relayed += 1
        self._relays[relay] = None
        waiter: asyncio.Future[None] = loop.create_future()
        transport = TcpTransport(self._driver, conn, _InnerSide(relay), waiter=waiter)
        try:
            await waiter
        except (OSError, asyncio.CancelledError) as exc:
            # The client reset or never completed the handshake (or we are stopping): no
            # connection to relay.
            if not transport.is_closing():
                transport.abort()
            self.stats.tcp_handshake_failed += 1
            relay.inner = None
            relay._end(f"handshake failed ({_why(exc)})", reset_outer=True, reset_inner=False)
            return
        inner = relay.inner
        if inner is None:
            return
        if relay.ended:
            inner.abort()  # the destination's side ended while the client was connecting
            return
        for data in relay.parked:
            inner.write(data)
        relay.parked = []
        if relay.outer_eof:
            inner.write_eof()
            relay._maybe_done()
        elif not outer.is_closing():
            outer.resume_reading()

    def _relay_ended(self, relay: _Relay, how: str) -> None:
        if self._relays.pop(relay, False) is None and how == "closed":
            self.stats.tcp_closed += 1
        self._trace(relay, how)

    def _trace(self, relay: _Relay, how: str) -> None:
        trace = self.config.trace
        if trace is None:
            return
        remote, remote_port, local, local_port = relay.key
        took = time.monotonic() - relay.started
        trace(
            f"tcp {endpoint_text(remote, remote_port)} -> {endpoint_text(local, local_port)}"
            f" {how}: {relay.to_server} B out, {relay.to_client} B in, {took:.3f} s"
        )

    # -- UDP -----------------------------------------------------------------------------------

    def _udp_out(self, event: DatagramReceived) -> None:
        key = (event.src, event.src_port, event.dst, event.dst_port)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._udp_open(key)
            if flow is None:
                return
        flow.last = self.loop.time()
        try:
            flow.sock.send(event.payload)
        except OSError:
            self.stats.udp_send_failed += 1
            return
        self.stats.udp_out += 1

    def _udp_open(self, key: tuple[int, int, int, int]) -> _UdpFlow | None:
        if len(self._flows) >= self.config.max_udp_flows:
            # The oldest flow makes room (insertion order: the one opened first).
            oldest = next(iter(self._flows.values()))
            self.stats.udp_flows_evicted += 1
            self._udp_close(oldest, "evicted")
        _src, _sport, dst, dport = key
        family = socket.AF_INET6 if addr.is_v6(dst) else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:
            self.stats.udp_send_failed += 1
            return None
        try:
            sock.setblocking(False)
            sock.connect((self._target(dst), dport))
        except OSError:
            sock.close()
            self.stats.udp_send_failed += 1
            return None
        flow = _UdpFlow(self, key, sock)
        self._flows[key] = flow
        self.stats.udp_flows += 1
        self.loop.add_reader(sock.fileno(), flow.readable)
        flow.timer = self.loop.call_later(self.config.udp_idle, flow.expire)
        return flow

    def _udp_close(self, flow: _UdpFlow, why: str) -> None:
        if self._flows.get(flow.key) is flow:
            del self._flows[flow.key]
        if flow.timer is not None:
            flow.timer.cancel()
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(flow.sock.fileno())
        flow.sock.close()
        trace = self.config.trace
        if trace is not None:
            src, sport, dst, dport = flow.key
            trace(f"udp {endpoint_text(src, sport)} -> {endpoint_text(dst, dport)} ended ({why})")

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def relays(self) -> int:
        """TCP connections being relayed now."""
        return len(self._relays)

    @property
    def udp_flows(self) -> int:
        return len(self._flows)

    async def aclose(self) -> None:
        """Stop: pending requests refused, relays reset both ways, UDP flows closed."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for relay in list(self._relays):
            relay._end("stopped", reset_outer=True, reset_inner=True)
        for flow in list(self._flows.values()):
            self._udp_close(flow, "stopped")
        driver = self._driver
        if not driver.closed:
            driver.unregister_listener(self.listener)
            self.listener.close(driver.now())
            self._wakeup()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


# -- the whole command ---------------------------------------------------------------------


@dataclasses.dataclass
class ForwardSetup:
    """Where and how: the namespace's side of the TUN device and its default routes."""

    netns: str | None = None  # an existing namespace; None: make one (for ``command``)
    command: Sequence[str] = ()  # run inside, then stop with its exit status
    name: str = TUN_NAME
    mtu: int = 1500
    address: str = ADDRESS
    gateway: str = GATEWAY
    prefixlen: int = PREFIXLEN
    ipv6: bool = True
    address6: str = ADDRESS6
    gateway6: str = GATEWAY6
    prefixlen6: int = PREFIXLEN6
    offload: str = "auto"


def tcp_config() -> TcpConfig:
    """Timers for a TUN link with a sub-millisecond RTT (Linux's RTO floor, a short delayed
    ACK): WAN defaults would only add stalls to every relayed connection."""
    return TcpConfig(rto_min=0.2, delayed_ack=0.005)


def _default_routes(name: str, gateway: str, gateway6: str | None) -> None:
    """In the namespace's setup thread: the default routes through the TUN device. A route
    already there is an error (this namespace has a way out already), not replaced."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            (index,) = ipr.link_lookup(ifname=name)
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index)
            if gateway6 is not None:
                ipr.route("add", dst="::/0", gateway=gateway6, oif=index, family=socket.AF_INET6)
        except NetlinkError as exc:
            code = int(exc.code)
            if code == errno.EEXIST:
                raise LinkError(
                    "the namespace already has a default route: remove it first", code
                ) from None
            raise LinkError(f"cannot add the default route: {os.strerror(code)}", code) from None


def open_link(setup: ForwardSetup, netns: str) -> TunLink:
    """The TUN device in ``netns`` with the namespace's addresses and default routes."""
    link = TunLink.open(
        setup.name,
        mtu=setup.mtu,
        address=setup.address,
        peer=setup.gateway,
        prefixlen=setup.prefixlen,
        netns=netns,
        offload=setup.offload,
        address6=f"{setup.address6}/{setup.prefixlen6}" if setup.ipv6 else None,
        peer6=setup.gateway6 if setup.ipv6 else None,
    )
    try:
        run_in_netns(
            netns,
            lambda: _default_routes(
                link.name, setup.gateway, setup.gateway6 if setup.ipv6 else None
            ),
        )
    except BaseException:
        link.close()
        raise
    return link


async def forward(
    setup: ForwardSetup,
    config: ForwardConfig | None = None,
    *,
    announce: Callable[[str], None] | None = None,
) -> int:
    """Run ``ustack forward`` (see the module docstring) until a signal -- 0 -- or, with a
    command, until it exits -- its exit status. Raises :class:`LinkError` (an ``OSError``)
    with a one-line reason when the namespace or device cannot be set up."""
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as cleanup:
        netns = setup.netns
        if netns is None:
            ns = NetNamespace(prefix="ustack-fwd")
            cleanup.enter_context(ns)
            netns = ns.name
        elif not os.path.exists(os.path.join("/var/run/netns", netns)):
            raise LinkError(f"no network namespace named {netns!r}", errno.ENOENT)
        try:
            link = open_link(setup, netns)
        except LinkError as exc:
            if exc.errno != errno.EAFNOSUPPORT or not setup.ipv6:
                raise
            # IPv6 disabled in the namespace or the kernel (Docker's default): IPv4 alone.
            print(f"ustack: warning: IPv4 only: {exc}", file=sys.stderr, flush=True)
            setup = dataclasses.replace(setup, ipv6=False)
            link = open_link(setup, netns)
        gateways = [setup.gateway] + ([setup.gateway6] if setup.ipv6 else [])
        try:
            stack = Stack(
                link,
                address=setup.gateway,
                address6=setup.gateway6 if setup.ipv6 else None,
                config=tcp_config(),
            )
            stack.start()
        except BaseException:
            link.close()
            raise
        try:
            forwarder = Forwarder(stack, config, gateways)
        except BaseException:
            await stack.aclose(grace=0)
            raise
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            inside = f"{setup.address}/{setup.prefixlen} via {setup.gateway}"
            if setup.ipv6:
                inside += f", {setup.address6}/{setup.prefixlen6} via {setup.gateway6}"
            if announce is not None:
                announce(
                    f"forwarding namespace {netns} (TUN {link.name}: {inside}, MTU {setup.mtu}, "
                    f"offload {'on' if link.offload else 'off'})"
                )
            if setup.command:
                return await _run_command(netns, setup.command, stop)
            stopped = asyncio.ensure_future(stop.wait())
            lost = asyncio.ensure_future(stack.wait_closed())
            await asyncio.wait((stopped, lost), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            lost.cancel()
            if stack.link_error is not None:
                raise stack.link_error
            return 0
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await forwarder.aclose()
            await stack.aclose(grace=0.5)
            if forwarder.config.trace is not None:
                counts = dataclasses.asdict(forwarder.stats)
                told = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                forwarder.config.trace(f"stopped: {told or 'nothing relayed'}")
    raise AssertionError("unreachable")  # pragma: no cover


async def _run_command(netns: str, command: Sequence[str], stop: asyncio.Event) -> int:
    """``command`` inside ``netns`` with our stdin, stdout and stderr; a signal to us is passed
    on to it (SIGTERM). Its exit status, as a shell gives it (128 + signal number)."""
    proc = await asyncio.create_subprocess_exec("ip", "netns", "exec", netns, *command)
    waiting = asyncio.ensure_future(proc.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((waiting, stopped), return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(waiting), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        code = await waiting
    finally:
        stopped.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return 128 - code if code < 0 else code


def print_trace(line: str) -> None:
    """``--trace``: one line per relayed connection or UDP flow, with a wall-clock stamp."""
    when = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1e6):06d}"
    print(f"{stamp} forward {line}", file=sys.stderr, flush=True)
