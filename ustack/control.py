"""The control socket of ``ustack serve``: live ladders and JSON trace lines for whoever attaches.

Theory of operation: a :class:`TraceHub` sits between one running :class:`~ustack.Stack` and
the *sinks* that want its events -- ``serve --ladder`` writing ladders to a file, and clients of
the control socket (``ustack trace``). It installs the stack's two observers (the host's tracer
for state changes, retransmissions, RTO, recovery and SACK; the driver's ``on_packet`` for
segments) only while a sink is attached, so a daemon nobody watches pays nothing, and it passes
every event on to ``serve --trace``'s own tracer too. Connections made while a sink is attached
keep reporting to the hub for their whole life (the host gives each connection its tracer when
it is made), which is what lets their ladders end in CLOSED.

The :class:`ControlServer` listens on a Unix socket (default ``/run/ustack/<device>.sock``),
created with mode 0600 and owned by the user ``serve`` runs as (after a ``--user`` privilege
drop too), and checks each client's credentials (``SO_PEERCRED``: root or the same uid)
before it answers. A client sends one request line and gets a hello line, then one line per
event, all JSON (docs/trace-schema.md)::

    -> {"v": 1, "mode": "json" | "ladder", "ports": [80] | null}
    <- {"v": 1, "event": "hello", "mode": "json", "ports": [80], "ustack": "0.1", "pid": 4242}
    <- {"v": 1, "event": "state", ...}  /  {"v": 1, "event": "ladder", "text": "..."}

A slow or vanished client never slows the daemon: lines are written to the client's transport
without waiting, and once ``CLIENT_BUFFER`` bytes are queued for it, further lines are dropped
and counted (``trace_lines_dropped``) until it catches up; then it is told how many it missed
(a ``dropped`` line). A client that goes away is detached when its socket reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TextIO

from ustack import __version__
from ustack.aio.api import Stack
from ustack.live import (
    TRACE_SCHEMA_VERSION,
    LadderRecorder,
    decode,
    endpoint,
    segment_record,
    trace_record,
)
from ustack.tcp.connection import Tracer
from ustack.tcp.stats import Stats

log = logging.getLogger("ustack.control")

DEFAULT_DIR = "/run/ustack"
MAX_CLIENTS = 16  # control clients attached at once
CLIENT_BUFFER = 256 * 1024  # bytes queued for one client before its lines are dropped
REQUEST_LIMIT = 4096  # bytes of a client's request line
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request after connecting
LINE_LIMIT = 4 << 20  # bytes of one line the trace client accepts (a ladder is ~20 KB)
MODES = ("json", "ladder")
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (socket(7), SO_PEERCRED)


class ControlError(Exception):
    """A control socket could not be set up or used; the message is one line for the user."""


def default_path(device: str) -> str:
    """The control socket of the ``serve`` on TUN device ``device``."""
    return os.path.join(DEFAULT_DIR, f"{device}.sock")


def bind(path: str, owner: tuple[int, int] | None = None) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600, owned by ``owner`` (uid, gid) if given
    (the user a ``--user`` drop will become; needs root). A socket file left by a ``serve``
    that is gone is replaced; one that answers is in use: :class:`ControlError`."""
    directory = os.path.dirname(path) or "."
    try:
        if directory == DEFAULT_DIR:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise ControlError(f"control socket {path}: exists and is not a socket")
            if _answers(path):
                raise ControlError(f"control socket {path}: in use by another ustack serve")
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Born 0600: no moment in which another user could connect.
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, owner[0], owner[1])
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    return sock


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (``SO_PEERCRED``)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


def allowed(peer: int, own: int) -> bool:
    """Who may attach: root, or the user the daemon runs as (its effective uid)."""
    return peer == 0 or peer == own


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True).encode() + b"\n"


@dataclass(eq=False)
class _Sink:
    """One consumer of events: a ladder recorder or a JSON line stream, for some ports."""

    mode: str
    ports: frozenset[int] | None
    write: Callable[[bytes], None] | None
    text: Callable[[str], None] | None = None
    recorder: LadderRecorder | None = None

    def wants(self, port: int) -> bool:
        return self.ports is None or port in self.ports


class TraceHub:
    """Fans a stack's events out to sinks (see the module docstring). ``base_tracer`` is
    ``serve --trace``'s, called first for every event. ``clock`` times ladders (monotonic,
    fine-grained, one clock for packets and state changes, as ``ustack demo`` does); ``wall``
    times JSON lines."""

    def __init__(
        self,
        stack: Stack,
        *,
        base_tracer: Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.stats: Stats = stack.stats
        self.base_tracer = base_tracer
        self._clock = clock
        self._wall = wall
        self._sinks: list[_Sink] = []
        self._ladders: list[_Sink] = []
        self._json: list[_Sink] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._failed_once = False

    @property
    def sinks(self) -> int:
        return len(self._sinks)

    def add(
        self,
        mode: str,
        ports: Collection[int] | None,
        write: Callable[[bytes], None] | None = None,
        *,
        text: Callable[[str], None] | None = None,
    ) -> Any:
        """Attach a sink for the local ``ports`` (None: all): ``write`` gets each line (one
        JSON object and a newline; a finished ladder is a ``ladder`` event with its text), or,
        in ladder mode, ``text`` gets each ladder as text. Returns a handle for
        :meth:`remove`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if (write is None) == (text is None) or (text is not None and mode != "ladder"):
            raise ValueError("give write, or text in ladder mode")
        sink = _Sink(mode, frozenset(ports) if ports is not None else None, write, text)
        if mode == "ladder":
            sink.recorder = LadderRecorder(
                ports=sink.ports,
                stats=self.stats,
                header_len=getattr(self.stack.link, "header_len", 0),
            )
            self._ladders.append(sink)
        else:
            self._json.append(sink)
        self._sinks.append(sink)
        self._install()
        return sink

    def remove(self, sink: Any) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
            (self._ladders if sink.mode == "ladder" else self._json).remove(sink)
            self._install()

    def close(self) -> None:
        """The daemon is stopping: every ladder still being drawn is written as it stands,
        and the sinks are detached."""
        for sink in list(self._ladders):
            assert sink.recorder is not None
            self._deliver(sink, sink.recorder.flush())
        for sink in list(self._sinks):
            self.remove(sink)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _install(self) -> None:
        if self.stack.closed:
            return
        host = self.stack.host
        driver = self.stack.driver
        if self._sinks:
            host.tracer = self._trace
            driver.on_packet = self._on_packet
        else:
            host.tracer = self.base_tracer
            driver.on_packet = None

    def _trace(self, conn: Any, kind: str, detail: dict[str, Any]) -> None:
        base = self.base_tracer
        if base is not None:
            base(conn, kind, detail)
        # Inside the connection's own processing: nothing a sink does may raise into it.
        try:
            self._dispatch(conn, kind, detail)
        except Exception:
            self._failed("an event")

    def _on_packet(
        self, direction: str, packet: bytes | bytearray | memoryview, now: float
    ) -> None:
        # Inside the driver's packet loop: the same.
        try:
            self._dispatch_packet(direction, packet)
        except Exception:
            self._failed("a packet")

    def _failed(self, what: str) -> None:
        """A bug in a sink: said once, with its traceback; the stack goes on."""
        if not self._failed_once:
            self._failed_once = True
            log.exception("live trace: handling %s failed (reported once)", what)

    def _dispatch(self, conn: Any, kind: str, detail: dict[str, Any]) -> None:
        port = conn.local_port
        if kind == "state":
            now = self._clock()
            local = (conn.local_addr, port)
            peer = (conn.remote_addr, conn.remote_port)
            old = str(getattr(detail["from"], "value", detail["from"]))
            new = str(getattr(detail["to"], "value", detail["to"]))
            trigger = str(getattr(detail.get("trigger"), "value", detail.get("trigger") or ""))
            for sink in self._ladders:
                assert sink.recorder is not None
                sink.recorder.state(now, local, peer, old, new, trigger)
            self._rearm()
        line = None
        for sink in self._json:
            if sink.wants(port) and sink.write is not None:
                if line is None:
                    record = trace_record(
                        self._wall(),
                        endpoint(conn.local_addr, port),
                        endpoint(conn.remote_addr, conn.remote_port),
                        kind,
                        detail,
                    )
                    line = _line(record)
                sink.write(line)

    def _dispatch_packet(self, direction: str, packet: bytes | bytearray | memoryview) -> None:
        if self._ladders:
            now = self._clock()
            for sink in self._ladders:
                assert sink.recorder is not None
                sink.recorder.packet(now, direction, packet)
            self._rearm()
        if self._json:
            header_len = getattr(self.stack.link, "header_len", 0)
            decoded = decode(packet, header_len)
            if decoded is None:
                return
            src, dst, seg = decoded
            port = seg.dst_port if direction == "in" else seg.src_port
            line = None
            for sink in self._json:
                if sink.wants(port) and sink.write is not None:
                    if line is None:
                        line = _line(segment_record(self._wall(), direction, src, dst, seg))
                    sink.write(line)

    def _rearm(self) -> None:
        """One timer for every recorder: at the earliest of their deadlines."""
        deadline = None
        for sink in self._ladders:
            assert sink.recorder is not None
            when = sink.recorder.next_deadline()
            if when is not None and (deadline is None or when < deadline):
                deadline = when
        if deadline is None or deadline == self._timer_when:
            return
        if self._timer is not None:
            if self._timer_when is not None and self._timer_when <= deadline:
                return  # the one armed fires first and rearms
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_when = deadline
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        now = self._clock()
        for sink in list(self._ladders):
            assert sink.recorder is not None
            self._deliver(sink, sink.recorder.collect(now))
        self._rearm()

    def _deliver(self, sink: _Sink, ladders: list[str]) -> None:
        for text in ladders:
            if sink.text is not None:
                sink.text(text)
            elif sink.write is not None:
                sink.write(_line({"v": TRACE_SCHEMA_VERSION, "event": "ladder", "text": text}))


class _Client:
    """One attached control client: lines written without waiting, dropped past the bound."""

    def __init__(self, writer: asyncio.StreamWriter, stats: Stats) -> None:
        self.writer = writer
        self.stats = stats
        self.dropped = 0  # lines dropped since the client last heard of it

    def send(self, line: bytes) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > CLIENT_BUFFER:
            self.dropped += 1
            self.stats.trace_lines_dropped += 1
            return
        if self.dropped:
            transport.write(
                _line({"v": TRACE_SCHEMA_VERSION, "event": "dropped", "lines": self.dropped})
            )
            self.dropped = 0
        transport.write(line)


class ControlServer:
    """Serves a :class:`TraceHub` on a listening Unix socket made by :func:`bind`."""

    def __init__(self, sock: socket.socket, hub: TraceHub, path: str) -> None:
        self.sock = sock
        self.hub = hub
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[_Client, Any] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._serve_client, sock=self.sock, limit=REQUEST_LIMIT
        )

    async def aclose(self) -> None:
        """Stop listening, hang up on every client and remove the socket file (if this user
        still may: after a ``--user`` drop the directory may not allow it; the next ``serve``
        replaces the stale file)."""
        if self._server is not None:
            self._server.close()
        writers = []
        for client, sink in list(self._clients.items()):
            self.hub.remove(sink)
            client.writer.close()
            writers.append(client.writer.wait_closed())
        self._clients.clear()
        # What is still queued for them (the last ladders) gets a bounded moment to go out.
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 1.0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stats = self.hub.stats
        client = _Client(writer, stats)
        try:
            # The request is read first, also from a client about to be refused: answering
            # before it was sent could leave the client writing to a closed socket, never
            # reading why (EPIPE). It is bounded in size and time.
            try:
                raw = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except TimeoutError:
                raw = b"late"
            except (ValueError, asyncio.LimitOverrunError):
                raw = b"long"
            uid = peer_uid(writer.get_extra_info("socket"))
            if not allowed(uid, os.geteuid()):
                stats.control_refused_peer += 1
                self._refuse(writer, f"permission denied: uid {uid} is neither root nor "
                             f"uid {os.geteuid()}, which ustack serve runs as")  # fmt: skip
                return
            if len(self._clients) >= MAX_CLIENTS:
                stats.control_refused_busy += 1
                self._refuse(writer, f"too many trace clients attached ({MAX_CLIENTS})")
                return
            try:
                mode, ports = _parse_request(raw)
            except ValueError as exc:
                stats.control_bad_request += 1
                self._refuse(writer, f"bad request: {exc}")
                return
            hello = {
                "v": TRACE_SCHEMA_VERSION,
                "event": "hello",
                "mode": mode,
                "ports": sorted(ports) if ports is not None else None,
                "ustack": __version__,
                "pid": os.getpid(),
            }
            writer.write(_line(hello))
            self._clients[client] = self.hub.add(mode, ports, client.send)
            # Anything more the client sends is ignored; its end of file is its goodbye.
            while await reader.read(REQUEST_LIMIT):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            sink = self._clients.pop(client, None)
            if sink is not None:
                self.hub.remove(sink)
            writer.close()

    @staticmethod
    def _refuse(writer: asyncio.StreamWriter, message: str) -> None:
        writer.write(_line({"v": TRACE_SCHEMA_VERSION, "event": "error", "error": message}))


def _parse_request(raw: bytes) -> tuple[str, frozenset[int] | None]:
    """A client's request line -> (mode, ports); ValueError with a reason. ``b"late"`` and
    ``b"long"`` stand for a request that did not come in time or did not fit."""
    if raw == b"late":
        raise ValueError(f"no request line within {REQUEST_TIMEOUT:g} s")
    if raw == b"long":
        raise ValueError(f"request line longer than {REQUEST_LIMIT} bytes")
    if not raw.endswith(b"\n"):
        raise ValueError("the request must be one line")
    try:
        request = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    if request.get("v") != TRACE_SCHEMA_VERSION:
        raise ValueError(
            f"schema version {request.get('v')!r} not served (this serve: {TRACE_SCHEMA_VERSION})"
        )
    mode = request.get("mode")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    ports = request.get("ports")
    if ports is None:
        return mode, None
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in ports
    ):
        raise ValueError("ports must be a list of port numbers 1-65535")
    return mode, frozenset(ports)


async def trace(
    path: str,
    *,
    mode: str = "ladder",
    ports: Collection[int] | None = None,
    count: int = 0,
    out: TextIO | None = None,
) -> int:
    """``ustack trace``: attach to the ``serve`` at ``path`` and print what it streams --
    ladders as text, or the JSON lines as they come (the hello line first) -- until it stops,
    or until ``count`` connections have finished (0: no limit). Returns 0; raises
    :class:`ControlError` with one line if it cannot attach or is refused."""
    out = out if out is not None else sys.stdout
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
    except FileNotFoundError:
        raise ControlError(
            f"no control socket at {path}: is ustack serve running (with this --control)?"
        ) from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {path}: only root and the user ustack serve runs as may attach"
        ) from None
    except ConnectionRefusedError:
        raise ControlError(f"nobody listens on {path}: a stale socket of a stopped serve") from None
    except OSError as exc:
        raise ControlError(f"cannot attach to {path}: {exc.strerror or exc}") from None
    request = {
        "v": TRACE_SCHEMA_VERSION,
        "mode": mode,
        "ports": sorted(ports) if ports is not None else None,
    }
    try:
        writer.write(_line(request))
        finished = 0
        first = True
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise ControlError("a line from serve was too long") from None
            if not raw:
                if first:
                    raise ControlError("serve hung up before answering")
                return 0  # serve stopped
            try:
                record = json.loads(raw)
                event = record["event"]
            except (ValueError, KeyError, TypeError):
                raise ControlError(f"not a trace line: {raw[:80]!r}") from None
            if event == "error":
                raise ControlError(f"serve refused: {record.get('error')}")
            if first:
                first = False
                if event != "hello" or record.get("v") != TRACE_SCHEMA_VERSION:
                    raise ControlError(
                        f"serve speaks trace schema {record.get('v')!r}, this client "
                        f"{TRACE_SCHEMA_VERSION}"
                    )
                which = "all ports" if ports is None else "ports " + ",".join(map(str, ports))
                print(
                    f"ustack trace: attached to {path} (serve pid {record.get('pid')}; "
                    f"{'ladders' if mode == 'ladder' else 'JSON lines'} of connections to "
                    f"{which} made from now on)",
                    file=sys.stderr,
                    flush=True,
                )
            if mode == "json":
                out.write(raw.decode())
                out.flush()
                done = event == "state" and record.get("to") == "CLOSED"
            elif event == "ladder":
                out.write(record["text"] + "\n")
                out.flush()
                done = True
            else:
                if event == "dropped":
                    print(
                        f"ustack trace: {record.get('lines')} lines dropped (this client fell "
                        "behind)",
                        file=sys.stderr,
                        flush=True,
                    )
                done = False
            if done:
                finished += 1
                if count and finished >= count:
                    return 0
    except ConnectionError as exc:
        raise ControlError(f"lost the control connection: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
