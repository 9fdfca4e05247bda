"""Soak: a mixed workload for ``--minutes`` (10) under 1 % loss; does anything leak?

``ustack serve --loss 1 --offload off --msl 1`` (echo and HTTP; 1 % of packets dropped in each
direction by its seeded fault injector; a one-second MSL so TIME-WAIT drains in 2 s) gets, from
kernel sockets on the other side of its TUN device, a steady mix in which every step has a time
limit and none can hang:

* **churn**: ``--churn`` (10) short connections per second, alternately a 64-byte echo and an
  HTTP ``GET /bytes/1000`` with ``Connection: close``, each checked;
* **bulk**: a ``GET /bytes/N`` of ``--bulk-bytes`` (2 MB) every ``BULK_EVERY`` seconds, every
  byte checked against the pattern;
* **idle**: ``--idle`` (20) echo connections opened at the start and held to the end with
  SO_KEEPALIVE (TCP_KEEPIDLE 5 s, TCP_KEEPINTVL 2 s), so keepalive probes flow all along; each
  must still echo at the end;
* **aborts**: every ``ABORT_EVERY`` seconds a download of a large body that the client abandons
  after ``ABORT_AFTER`` bytes by closing with SO_LINGER 0, which sends an RST.

Every ``--interval`` (10 s) the benchmark samples ustack's RSS (/proc/PID/status), its open file
descriptors (/proc/PID/fd) and its connection table (``GET /stats.json``: the connections it
lists, less the one asking), and the client's error counts so far.

The reference, in the same run and with the same workload at the same time, is
``bench/_refserver.py`` over veth with iptables dropping 1 % of incoming packets in both
namespaces: its errors are what 1 % loss explains. Its RSS, file descriptors and sockets (every
TCP socket of its namespace but the listeners; TIME-WAIT lasts Linux's fixed 60 s there) are
sampled and plotted too.

Verdicts:

* **memory**: after the warm-up (the first 20 % of the run), ustack's RSS stays within 5 % of
  the first sample after the warm-up: max(RSS after warm-up) / first(RSS after warm-up) - 1;
* **drain**: after the traffic stops, the connection table returns to nothing but the
  listeners (polled every 0.5 s, for at most ``DRAIN_LIMIT`` seconds);
* **errors**: ustack's client errors are no more than the reference's under the same loss, plus
  0.1 % of the operations (at least one).

    python bench/soak.py [--minutes 10] [--interval 10] [--churn 10] [--idle 20] [--quick]

``--quick`` is a one-minute run. Writes bench/results/soak.json and soak.png.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

MINUTES = 10.0
QUICK_MINUTES = 1.0
INTERVAL = 10.0
LOSS_PERCENT = 1.0
MSL = 1.0  # seconds: `ustack serve --msl`, so TIME-WAIT (2 MSL) drains quickly
CHURN = 10.0  # short connections per second
IDLE = 20  # idle keepalive connections
BULK_BYTES = 2_000_000
BULK_EVERY = 10.0  # seconds from one bulk download's start to the next
ABORT_EVERY = 5.0  # seconds from one aborted download's start to the next
ABORT_BODY = 1_000_000_000  # the body an aborted download asks for (it never gets far)
ABORT_AFTER = 256 * 1024  # bytes read before the RST
OP_TIMEOUT = 15.0  # seconds any one socket call may block
BULK_LIMIT = 120.0  # seconds one bulk download may take in all
KEEPIDLE = 5  # TCP_KEEPIDLE, seconds
KEEPINTVL = 2  # TCP_KEEPINTVL, seconds
KEEPCNT = 5  # TCP_KEEPCNT
WARMUP_SHARE = 0.2  # the first 20 % of the run is warm-up for the memory verdict
RSS_LIMIT = 0.05  # RSS after warm-up stays within 5 % of its first post-warm-up sample
DRAIN_LIMIT = 60.0  # seconds the connection table gets to empty after the traffic stops
ERROR_SLACK = 0.001  # errors allowed beyond the reference's: 0.1 % of operations
JOIN_LIMIT = BULK_LIMIT + 30.0  # seconds a worker gets to notice the stop
SIZE = 64
QUERY_PORTS = 64  # recent /stats.json client ports, long enough to outlive their TIME-WAIT
PERIOD = 251
PATTERN = memoryview(bytes(i % PERIOD for i in range(PERIOD)) * (65536 // PERIOD + 2))


# -- the client workload -------------------------------------------------------------------------


@dataclass
class Tally:
    """Operations and errors per kind of work, shared by one target's worker threads."""

    ops: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1

    def fail(self, kind: str, reason: str) -> None:
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1
            per = self.errors.setdefault(kind, {})
            per[reason] = per.get(reason, 0) + 1

    def total_ops(self) -> int:
        with self.lock:
            return sum(self.ops.values())

    def total_errors(self) -> int:
        with self.lock:
            return sum(sum(v.values()) for v in self.errors.values())

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"ops": dict(self.ops), "errors": {k: dict(v) for k, v in self.errors.items()}}


class Failed(Exception):
    """One operation went wrong; the message is its reason in the tally."""


def _reason(e: BaseException) -> str:
    if isinstance(e, Failed):
        return str(e)
    if isinstance(e, TimeoutError | socket.timeout):
        return "timeout"
    return type(e).__name__


class Client:
    """The workload against one server (ustack or the reference), in threads of its own."""

    def __init__(self, name: str, ns: Any, address: str, stop: threading.Event) -> None:
        self.name = name
        self.ns = ns
        self.address = address
        self.stop = stop
        self.tally = Tally()
        self.idle: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def new_socket(self) -> socket.socket:
        sock = c.ns_socket(self.ns)
        sock.settimeout(OP_TIMEOUT)
        return sock

    def connect(self, port: int) -> socket.socket:
        sock = self.new_socket()
        try:
            sock.connect((self.address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    # one operation of each kind; each raises on any failure

    def echo_once(self) -> None:
        with contextlib.closing(self.connect(7)) as sock:
            payload = bytes(range(SIZE))
            sock.sendall(payload)
            if _recv_exactly(sock, SIZE) != payload:
                raise Failed("wrong echo")

    def get(self, size: int, *, close: bool = True, limit: float = OP_TIMEOUT) -> None:
        """``GET /bytes/size`` with every byte of the body checked against the pattern."""
        with contextlib.closing(self.connect(80)) as sock:
            _request(sock, self.address, size, close)
            length, body = _response_head(sock)
            if length != size:
                raise Failed("wrong Content-Length")
            deadline = time.monotonic() + limit
            got = _check(body, 0)
            while got < size:
                if time.monotonic() > deadline:
                    raise Failed("body too slow")
                chunk = sock.recv(65536)
                if not chunk:
                    raise Failed("closed inside the body")
                got = _check(chunk, got)
            if got != size:
                raise Failed("body longer than Content-Length")

    def abort_once(self) -> None:
        """A download of a huge body, abandoned with an RST (SO_LINGER 0) after ABORT_AFTER."""
        sock = self.connect(80)
        try:
            _request(sock, self.address, ABORT_BODY, True)
            _length, body = _response_head(sock)
            got = _check(body, 0)
            while got < ABORT_AFTER:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Failed("closed before the abort")
                got = _check(chunk, got)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()

    def open_idle(self, count: int) -> None:
        for _ in range(count):
            try:
                sock = self.connect(7)
            except OSError as e:
                self.tally.fail("idle", _reason(e))
                continue
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)
            self.idle.append(sock)

    def close_idle(self) -> None:
        """Each idle connection must still echo after the whole run; then it is closed."""
        for sock in self.idle:
            try:
                payload = b"still here".ljust(SIZE, b".")
                sock.sendall(payload)
                if _recv_exactly(sock, SIZE) != payload:
                    raise Failed("wrong echo")
                self.tally.ok("idle")
            except (OSError, Failed) as e:
                self.tally.fail("idle", _reason(e))
            finally:
                sock.close()
        self.idle = []

    # the workers

    def start(self, churn: float, bulk_bytes: int) -> None:
        flip = [False]

        def churn_op() -> None:
            flip[0] = not flip[0]
            if flip[0]:
                self.echo_once()
            else:
                self.get(1000)

        def bulk_op() -> None:
            self.get(bulk_bytes, limit=BULK_LIMIT)

        work: list[tuple[str, float, Callable[[], None]]] = [
            ("churn", 1.0 / churn, churn_op),
            ("bulk", BULK_EVERY, bulk_op),
            ("abort", ABORT_EVERY, self.abort_once),
        ]
        for kind, period, op in work:
            t = threading.Thread(
                target=self._paced, args=(kind, period, op), name=f"{self.name}-{kind}", daemon=True
            )
            t.start()
            self.threads.append(t)

    def _paced(self, kind: str, period: float, op: Callable[[], None]) -> None:
        """``op`` every ``period`` seconds until the stop; a late one is not made up (a slow
        server gets less churn, not a burst)."""
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                op()
                self.tally.ok(kind)
            except (OSError, Failed) as e:
                self.tally.fail(kind, _reason(e))
            due = max(due + period, time.monotonic())
            self.stop.wait(max(0.0, due - time.monotonic()))

    def join(self) -> list[str]:
        """Wait for the workers; the names of any still stuck after JOIN_LIMIT."""
        deadline = time.monotonic() + JOIN_LIMIT
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]


def _request(sock: socket.socket, address: str, size: int, close: bool) -> None:
    extra = "Connection: close\r\n" if close else ""
    sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: {address}\r\n{extra}\r\n".encode())


def _response_head(sock: socket.socket) -> tuple[int, bytes]:
    """(Content-Length, the body bytes that came with the head) of a 200 response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed("closed before the response head")
        buf += chunk
        if len(buf) > 16384 and b"\r\n\r\n" not in buf:
            raise Failed("response head too long")
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise Failed(f"status {head[:12]!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value), body
    raise Failed("no Content-Length")


def _check(chunk: bytes, offset: int) -> int:
    """Compare ``chunk`` with the pattern at ``offset``; the offset after it."""
    view = memoryview(chunk)
    pos = 0
    while pos < len(view):
        start = (offset + pos) % PERIOD
        n = min(len(view) - pos, len(PATTERN) - start)
        if view[pos : pos + n] != PATTERN[start : start + n]:
            raise Failed("body differs from the pattern")
        pos += n
    return offset + len(chunk)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Failed("closed early")
        buf += chunk
    return buf


# -- the servers and their samples ---------------------------------------------------------------


@dataclass
class Server:
    """One side of the comparison: where the client goes and how to sample the server."""

    name: str
    ns: Any
    address: str
    pid: int
    table: Callable[[], tuple[int | None, dict[str, int]]]
    counters: Callable[[], dict[str, Any]] = dict


class UstackTable:
    """ustack's connection table by state, from ``GET /stats.json``, less the benchmark's own
    queries: the one asking, and earlier ones still in TIME-WAIT (the server closes first after
    ``Connection: close``), told apart by the client port each query used."""

    def __init__(self, us: c.UstackServe) -> None:
        self.us = us
        self.ports: collections.deque[int] = collections.deque(maxlen=QUERY_PORTS)

    def fetch(self) -> dict[str, Any] | None:
        """The ``/stats.json`` document (counters and connections), None if the query failed."""
        us = self.us
        try:
            sock = c.connect(us.ns, us.address, 80, timeout=OP_TIMEOUT)
        except OSError:
            return None
        try:
            self.ports.append(sock.getsockname()[1])
            sock.sendall(
                f"GET /stats.json HTTP/1.1\r\nHost: {us.address}\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            deadline = time.monotonic() + OP_TIMEOUT
            while time.monotonic() < deadline and (chunk := sock.recv(65536)):
                chunks.append(chunk)
            doc = json.loads(b"".join(chunks).partition(b"\r\n\r\n")[2])
        except (OSError, ValueError):
            return None
        finally:
            sock.close()
        return doc if isinstance(doc, dict) else None

    def __call__(self) -> tuple[int | None, dict[str, int]]:
        doc = self.fetch()
        if doc is None:
            return None, {}
        ours = {f"{c.USTACK_PEER}:{port}" for port in self.ports}
        states: dict[str, int] = {}
        for conn in doc.get("connections", []):
            if conn.get("remote") in ours:
                continue
            state = str(conn.get("state"))
            states[state] = states.get(state, 0) + 1
        return sum(states.values()), states

    def counters(self) -> dict[str, int]:
        doc = self.fetch()
        counters = doc.get("counters", {}) if doc else {}
        return {k: int(v) for k, v in counters.items()} if isinstance(counters, dict) else {}


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN-SENT", "03": "SYN-RECEIVED", "04": "FIN-WAIT-1",
               "05": "FIN-WAIT-2", "06": "TIME-WAIT", "07": "CLOSED", "08": "CLOSE-WAIT",
               "09": "LAST-ACK", "0A": "LISTEN", "0B": "CLOSING"}  # fmt: skip


def _kernel_table(ns: Any) -> tuple[int | None, dict[str, int]]:
    """The reference namespace's TCP sockets by state, listeners left out."""

    def read() -> dict[str, int]:
        states: dict[str, int] = {}
        rows = Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]
        for row in rows:
            state = _TCP_STATES.get(row.split()[3], row.split()[3])
            if state != "LISTEN":
                states[state] = states.get(state, 0) + 1
        return states

    try:
        states = ns.call(read)
    except OSError:
        return None, {}
    return sum(states.values()), states


@contextlib.contextmanager
def ustack_server(seed: int) -> Iterator[Server]:
    extra = ["--loss", f"{LOSS_PERCENT:g}", "--offload", "off", "--msl", f"{MSL:g}",
             "--seed", str(seed)]  # fmt: skip
    with c.UstackServe(services="echo,http", extra=extra) as us:
        table = UstackTable(us)
        yield Server("ustack", us.ns, us.address, us.pid, table, table.counters)


@contextlib.contextmanager
def kernel_server() -> Iterator[Server]:
    import loss  # bench/loss.py: the iptables random drop its kernel reference uses

    with c.VethPair(1500, offloads=False) as veth:
        loss.iptables_drop(veth.client, LOSS_PERCENT)
        loss.iptables_drop(veth.server, LOSS_PERCENT)
        with c.RefServer(veth.server) as ref:
            assert ref.proc is not None
            yield Server(
                "kernel",
                veth.client,
                veth.server_addr,
                ref.proc.pid,
                lambda: _kernel_table(veth.server),
            )


def sample(server: Server, client: Client, t: float) -> dict[str, Any]:
    rss = fds = None
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        rss = _rss_kb(server.pid)
        fds = c.open_fds(server.pid)
    table, states = server.table()
    return {
        "t": round(t, 2),
        "rss_kb": rss,
        "fds": fds,
        "connections": table,
        "states": states,
        "client_ops": client.tally.total_ops(),
        "client_errors": client.tally.total_errors(),
    }


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# -- the run -------------------------------------------------------------------------------------


def run(args: Any) -> dict[str, Any]:
    minutes = (
        args.minutes if args.minutes is not None else (QUICK_MINUTES if args.quick else MINUTES)
    )
    seconds = minutes * 60.0
    stop = threading.Event()
    samples: dict[str, list[dict[str, Any]]] = {"ustack": [], "kernel": []}
    with ustack_server(args.seed) as us, kernel_server() as ref:
        servers = (us, ref)
        clients = {s.name: Client(s.name, s.ns, s.address, stop) for s in servers}
        before = us.counters()
        for s in servers:
            clients[s.name].open_idle(args.idle)
            clients[s.name].start(args.churn, args.bulk_bytes)
        t0 = time.monotonic()
        try:
            next_sample = t0
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    for s in servers:
                        samples[s.name].append(sample(s, clients[s.name], now - t0))
                    line = _progress_line(samples, now - t0)
                    print(line, flush=True)
                    next_sample += args.interval
                if now - t0 >= seconds:
                    break
                time.sleep(max(0.0, min(next_sample, t0 + seconds) - time.monotonic()))
        finally:
            stop.set()
            stuck = {s.name: clients[s.name].join() for s in servers}
        traffic_s = time.monotonic() - t0
        for s in servers:
            clients[s.name].close_idle()
        drain = _drain(us, t0, t0 + traffic_s)
        after = us.counters()
        for s in servers:
            samples[s.name].append(sample(s, clients[s.name], time.monotonic() - t0))
        alive = Path(f"/proc/{us.pid}").exists()
    counters = {k: v - before.get(k, 0) for k, v in after.items()}
    doc: dict[str, Any] = {
        "minutes": minutes,
        "traffic_seconds": traffic_s,
        "interval_s": args.interval,
        "loss_percent": LOSS_PERCENT,
        "msl_s": MSL,
        "workload": {
            "churn_per_s": args.churn,
            "idle": args.idle,
            "bulk_bytes": args.bulk_bytes,
            "bulk_every_s": BULK_EVERY,
            "abort_every_s": ABORT_EVERY,
            "abort_after_bytes": ABORT_AFTER,
            "keepalive": {"idle_s": KEEPIDLE, "interval_s": KEEPINTVL, "count": KEEPCNT},
        },
        "samples": samples,
        "clients": {name: cl.tally.snapshot() for name, cl in clients.items()},
        "stuck_workers": stuck,
        "drain": drain,
        "ustack_counters": {k: v for k, v in counters.items() if v},
        "ustack_alive": alive,
    }
    doc["verdicts"] = verdicts(doc, seconds)
    return doc


def _progress_line(samples: dict[str, list[dict[str, Any]]], t: float) -> str:
    u, k = samples["ustack"][-1], samples["kernel"][-1]
    rss = "-" if u["rss_kb"] is None else f"{u['rss_kb'] / 1024:.1f} MB"
    return (
        f"  {t:6.0f} s  ustack: RSS {rss}, {u['fds']} fds, {u['connections']} connections, "
        f"{u['client_errors']}/{u['client_ops']} client errors; kernel: "
        f"{k['connections']} sockets, {k['client_errors']}/{k['client_ops']} client errors"
    )


def _drain(us: Server, t0: float, stopped: float) -> dict[str, Any]:
    """Poll ustack's table until only the listeners are left (bounded by DRAIN_LIMIT); the
    time is counted from when the traffic stopped (``stopped``)."""
    start = time.monotonic()
    polls: list[dict[str, Any]] = []
    while True:
        table, states = us.table()
        now = time.monotonic()
        polls.append({"t": round(now - t0, 2), "connections": table, "states": states})
        if table == 0:
            return {"drained": True, "seconds": now - stopped, "polls": polls[-5:]}
        if now - start > DRAIN_LIMIT:
            return {"drained": False, "seconds": now - stopped, "left": states, "polls": polls[-5:]}
        time.sleep(0.5)


def verdicts(doc: dict[str, Any], seconds: float) -> dict[str, Any]:
    samples = [s for s in doc["samples"]["ustack"] if s["rss_kb"] is not None]
    # The last sample is after the traffic; the memory verdict is about the traffic.
    during = [s for s in samples if s["t"] <= doc["traffic_seconds"]]
    warm = [s for s in during if s["t"] >= WARMUP_SHARE * seconds]
    memory: dict[str, Any] = {"warmup_s": WARMUP_SHARE * seconds, "samples": len(warm)}
    if warm:
        first, peak = warm[0]["rss_kb"], max(s["rss_kb"] for s in warm)
        growth = peak / first - 1
        memory.update(
            {
                "first_mb": first / 1024,
                "max_mb": peak / 1024,
                "growth": growth,
                "met": growth <= RSS_LIMIT,
            }
        )
    else:
        memory["met"] = False
    fds = [s["fds"] for s in doc["samples"]["ustack"] if s["fds"] is not None]
    clients = doc["clients"]
    u_err = sum(sum(v.values()) for v in clients["ustack"]["errors"].values())
    k_err = sum(sum(v.values()) for v in clients["kernel"]["errors"].values())
    u_ops = sum(clients["ustack"]["ops"].values())
    allowed = k_err + max(1, int(ERROR_SLACK * u_ops))
    return {
        "memory": memory,
        "fds": {"min": min(fds) if fds else None, "max": max(fds) if fds else None},
        "drain": {"met": bool(doc["drain"]["drained"]), "seconds": doc["drain"]["seconds"]},
        "errors": {
            "ustack": u_err,
            "kernel": k_err,
            "ustack_ops": u_ops,
            "allowed": allowed,
            "met": u_err <= allowed and not any(doc["stuck_workers"].values()),
        },
        "met": bool(memory["met"])
        and bool(doc["drain"]["drained"])
        and u_err <= allowed
        and doc["ustack_alive"],
    }


def render(doc: dict[str, Any]) -> str:
    rows = []
    for name in ("ustack", "kernel"):
        cl = doc["clients"][name]
        kinds = sorted(cl["ops"])
        for kind in kinds:
            errs = cl["errors"].get(kind, {})
            rows.append([name, kind, cl["ops"][kind], sum(errs.values()),
                         ", ".join(f"{k} {v}" for k, v in errs.items()) or "-"])  # fmt: skip
    text = c.table(["server", "work", "operations", "errors", "reasons"], rows)
    u = doc["samples"]["ustack"]
    sample_rows = [
        [
            s["t"],
            "-" if s["rss_kb"] is None else s["rss_kb"] / 1024,
            s["fds"],
            "-" if s["connections"] is None else s["connections"],
            s["client_errors"],
        ]
        for s in u
    ]
    text += "\n\nustack samples (the last one after the traffic and the drain):\n"
    text += c.table(["t (s)", "RSS (MB)", "fds", "connections", "client errors"], sample_rows)
    v = doc["verdicts"]
    m = v["memory"]
    if "growth" in m:
        mem = (
            f"after the {m['warmup_s']:.0f} s warm-up, RSS first {m['first_mb']:.1f} MB, max "
            f"{m['max_mb']:.1f} MB: {m['growth'] * 100:+.1f} % (limit +{RSS_LIMIT * 100:.0f} %)"
        )
    else:
        mem = "no samples after the warm-up (run longer, or sample more often)"
    d = doc["drain"]
    drain = (
        f"the table held only the listeners {d['seconds']:.1f} s after the traffic stopped"
        if d["drained"]
        else f"still {d.get('left')} {d['seconds']:.0f} s after the traffic stopped"
    )
    e = v["errors"]
    text += (
        f"\nmemory: {mem}: {'met' if m['met'] else 'NOT met'}"
        f"\nfile descriptors: {v['fds']['min']}..{v['fds']['max']}"
        f"\ndrain: {drain}: {'met' if v['drain']['met'] else 'NOT met'}"
        f"\nclient errors: ustack {e['ustack']} of {e['ustack_ops']} operations, kernel reference "
        f"under the same {doc['loss_percent']:g} % loss {e['kernel']}; allowed {e['allowed']}: "
        f"{'met' if e['met'] else 'NOT met'}"
    )
    stuck = {k: v for k, v in doc["stuck_workers"].items() if v}
    if stuck:
        text += f"\nworkers still stuck at the end: {stuck}"
    if not doc["ustack_alive"]:
        text += "\nUSTACK EXITED during the run"
    # The kernel's keepalive probes (SEG.SEQ = RCV.NXT - 1) are out-of-window segments to
    # ustack, each answered with an ACK: that counter shows the probes flowed.
    keep = {k: doc["ustack_counters"].get(k, 0) for k in
            ("tcp_keepalive_probes", "tcp_drop_out_of_window", "tcp_resets_received",
             "tcp_time_wait_expired", "tcp_retransmits")}  # fmt: skip
    text += f"\nustack counters over the run (selection): {keep}"
    text += f"\nverdict: {'all met' if v['met'] else 'NOT all met'}"
    return text


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    series = (
        ("rss_kb", "RSS (MB)", 1 / 1024),
        ("fds", "open file descriptors", 1.0),
        ("connections", "connections (ustack: table;\nkernel: non-listening sockets)", 1.0),
    )
    for ax, (key, label, scale) in zip(axes, series, strict=True):
        for name, style in (("ustack", "-"), ("kernel", "--")):
            pts = [(s["t"], s[key] * scale) for s in doc["samples"][name] if s[key] is not None]
            if pts:
                ax.plot([t for t, _ in pts], [v for _, v in pts], style, marker=".",
                        label=name if name == "ustack" else "kernel reference")  # fmt: skip
        ax.axvline(doc["traffic_seconds"], color="grey", linewidth=0.8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].axvline(doc["verdicts"]["memory"]["warmup_s"], color="orange", linewidth=0.8)
    axes[0].legend(fontsize=8)
    axes[0].set_title(
        f"soak: {doc['minutes']:g} min, {doc['loss_percent']:g} % loss "
        "(orange: end of warm-up; grey: traffic stops)"
    )
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0], runs=1)
    p.add_argument(
        "--minutes", type=float, default=None, help=f"length ({MINUTES:g}; fractions ok)"
    )
    p.add_argument(
        "--interval", type=float, default=INTERVAL, help=f"seconds between samples ({INTERVAL:g})"
    )
    p.add_argument(
        "--churn", type=float, default=CHURN, help=f"short connections per second ({CHURN:g})"
    )
    p.add_argument("--idle", type=int, default=IDLE, help=f"idle keepalive connections ({IDLE})")
    p.add_argument(
        "--bulk-bytes", type=int, default=BULK_BYTES, help=f"bulk download size ({BULK_BYTES:,})"
    )
    p.add_argument("--seed", type=int, default=1, help="ustack's fault injector seed")
    args = p.parse_args()
    if (args.minutes is not None and args.minutes <= 0) or args.interval <= 0 or args.churn <= 0:
        raise SystemExit("--minutes, --interval and --churn must be positive")
    if args.idle < 0 or args.bulk_bytes < 0:
        raise SystemExit("--idle and --bulk-bytes must not be negative")
    c.setup()
    c.need("iptables")
    machine = c.machine()
    print(f"soak: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    doc["runs"] = 1
    print(render(doc))
    path = c.write_json(args.out, "soak", doc)
    plot(doc, args.out / "soak.png")
    print(f"wrote {path} and {args.out / 'soak.png'}")
    return 0 if doc["verdicts"]["met"] else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
