"""10,000 concurrent established connections against ustack's echo: memory, time, correctness.

A kernel client in the benchmark process creates ``--connections`` non-blocking sockets inside
the client namespace and connects them all to the echo service, keeping at most ``WINDOW``
handshakes in flight (so the burst never overflows the TUN device's 500-packet queue or the
listener's backlog), and times how long it takes until every one is established. Then it
sends 8 bytes on each (the connection's number), again with a bounded window, and checks that
each connection echoes exactly its own 8 bytes back. Only then is memory read.

Memory per connection is the growth of the ustack process's resident set (``VmRSS`` in
/proc/PID/status) from a warmed-up baseline to the point where all connections are open and
have echoed, divided by the number of connections. It is everything ustack keeps per
connection: the TCB, buffers, the asyncio transport, stream reader/writer and the echo task.

The reference, in the same run, is the same client against ``bench/_refserver.py``'s echo over
veth. Its connections live in the kernel, whose memory is not in any process's RSS, so for the
reference only the time and the correctness are comparable; its RSS growth (the Python
server's own per-connection objects) is shown for completeness.

    python bench/concurrency.py [--quick] [--runs N] [--connections 10000]

Writes bench/results/concurrency.json.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

CONNECTIONS = 10_000
QUICK_CONNECTIONS = 1_000
WINDOW = 128  # handshakes or echoes in flight at once
OPEN_TIME_LIMIT = 120.0
ECHO_TIME_LIMIT = 60.0
WARMUP = 50
TARGET_BYTES = 5000.0


def open_all(ns: Any, address: str, n: int) -> tuple[list[socket.socket], float, int]:
    """Connect ``n`` sockets with at most WINDOW in flight; (open sockets, seconds, failures)."""
    with c.inside(ns):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    for s in socks:
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    failed = 0
    pending = 0
    next_i = 0
    t0 = time.perf_counter()
    deadline = t0 + OPEN_TIME_LIMIT
    try:
        while len(opened) + failed < n and time.perf_counter() < deadline:
            while pending < WINDOW and next_i < n:
                s = socks[next_i]
                next_i += 1
                err = s.connect_ex((address, 7))
                if err in (0, errno.EINPROGRESS):
                    sel.register(s, selectors.EVENT_WRITE)
                    pending += 1
                else:
                    failed += 1
                    s.close()
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj  # type: ignore[assignment]
                sel.unregister(s)
                pending -= 1
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    opened.append(s)
                else:
                    failed += 1
                    s.close()
        elapsed = time.perf_counter() - t0
    finally:
        sel.close()
    kept = set(map(id, opened))
    for s in socks:
        if id(s) not in kept:
            s.close()  # failed, or never tried before the time limit
    return opened, elapsed, n - len(opened)


def echo_all(socks: list[socket.socket]) -> tuple[int, float]:
    """Send each connection its number (8 bytes), WINDOW at a time; count exact echoes."""
    sel = selectors.DefaultSelector()
    expect: dict[int, bytes] = {}
    got: dict[int, bytes] = {}
    good = 0
    next_i = 0
    pending = 0
    t0 = time.perf_counter()
    deadline = t0 + ECHO_TIME_LIMIT
    try:
        while (next_i < len(socks) or pending) and time.perf_counter() < deadline:
            while pending < WINDOW and next_i < len(socks):
                s = socks[next_i]
                msg = struct.pack("!Q", next_i)
                try:
                    s.send(msg)
                except OSError:
                    next_i += 1
                    continue
                expect[s.fileno()] = msg
                got[s.fileno()] = b""
                sel.register(s, selectors.EVENT_READ)
                next_i += 1
                pending += 1
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj  # type: ignore[assignment]
                fd = s.fileno()
                try:
                    data = s.recv(64)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                got[fd] += data
                if not data or len(got[fd]) >= 8:
                    sel.unregister(s)
                    pending -= 1
                    good += got[fd] == expect[fd]
        elapsed = time.perf_counter() - t0
    finally:
        sel.close()
    return good, elapsed


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def measure(ns: Any, address: str, n: int, proc: c.Proc) -> dict[str, Any]:
    # Warm up: the first connections pay for lazily imported code and first-time allocations.
    warm, _, _ = open_all(ns, address, WARMUP)
    echo_all(warm)
    close_all(warm)
    time.sleep(0.5)
    rss0 = proc.rss_kb()
    socks, open_s, open_failed = open_all(ns, address, n)
    try:
        time.sleep(0.2)
        rss_open = proc.rss_kb()
        good, echo_s = echo_all(socks)
        time.sleep(0.2)
        rss1 = proc.rss_kb()
    finally:
        close_all(socks)
    opened = len(socks)
    return {
        "requested": n,
        "opened": opened,
        "open_failed": open_failed,
        "open_seconds": open_s,
        "open_per_s": opened / open_s if open_s else float("nan"),
        "echoed_ok": good,
        "echo_seconds": echo_s,
        "rss_base_kb": rss0,
        "rss_open_kb": rss_open,
        "rss_after_echo_kb": rss1,
        "bytes_per_conn_open": (rss_open - rss0) * 1024 / opened if opened else float("nan"),
        "bytes_per_conn": (rss1 - rss0) * 1024 / opened if opened else float("nan"),
        "ok": opened == n and good == n,
    }


def run(args: Any) -> dict[str, Any]:
    runs = c.runs_of(args)
    n = args.connections or (QUICK_CONNECTIONS if args.quick else CONNECTIONS)
    results: dict[str, list[dict[str, Any]]] = {"ustack": [], "kernel": []}
    with c.VethPair(1500) as veth, c.RefServer(veth.server) as ref:
        assert ref.proc is not None
        for i in range(runs):
            # A fresh ustack per run, so every run starts from the same baseline.
            # (http only to read its counters afterwards; it holds no connections meanwhile)
            with c.UstackServe(mtu=1500, services="echo,http") as us:
                assert us.proc is not None
                u = measure(us.ns, us.address, n, us.proc)
                u["ustack_counters"] = {
                    k: v
                    for k, v in c.ustack_counters(us).items()
                    if v and ("listen" in k or "syn" in k or "retrans" in k or "drop" in k)
                }
            k = measure(veth.client, veth.server_addr, n, ref.proc)
            results["ustack"].append(u)
            results["kernel"].append(k)
            print(
                f"  run {i + 1}/{runs}: ustack {u['opened']}/{n} open in {u['open_seconds']:.1f} s,"
                f" {u['echoed_ok']} echoed, {u['bytes_per_conn']:.0f} B/conn; kernel "
                f"{k['opened']}/{n} in {k['open_seconds']:.1f} s, {k['echoed_ok']} echoed"
                + ("" if u["ok"] and k["ok"] else "  FAILED"),
                flush=True,
            )
    summary = {}
    for who, rs in results.items():
        summary[who] = {
            key: c.median([float(r[key]) for r in rs])
            for key in (
                "opened",
                "open_seconds",
                "open_per_s",
                "echoed_ok",
                "echo_seconds",
                "bytes_per_conn",
                "bytes_per_conn_open",
            )
        }
        summary[who]["all_ok"] = all(r["ok"] for r in rs)
    return {
        "connections": n,
        "window": WINDOW,
        "runs": runs,
        "target_bytes_per_conn": TARGET_BYTES,
        "summary": summary,
        "per_run": results,
    }


def render(doc: dict[str, Any]) -> str:
    u, k = doc["summary"]["ustack"], doc["summary"]["kernel"]
    n = doc["connections"]
    rows = [
        ["connections open", f"{u['opened']:.0f}/{n}", f"{k['opened']:.0f}/{n}", ""],
        ["time to open all (s)", u["open_seconds"], k["open_seconds"], ""],
        ["opened per second", u["open_per_s"], k["open_per_s"], ""],
        ["echoed correctly", f"{u['echoed_ok']:.0f}/{n}", f"{k['echoed_ok']:.0f}/{n}", ""],
        ["memory per conn (B)", u["bytes_per_conn"], "kernel's (not in RSS)", "<= 5,000"],
        ["  (just opened)", u["bytes_per_conn_open"], "", ""],
        ["  server RSS growth (B)", "", k["bytes_per_conn"], ""],
    ]
    ok = u["all_ok"] and k["all_ok"]
    return c.table(["", "ustack", "kernel", "target"], rows) + (
        "" if ok else "\n(some runs FAILED)"
    )


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=None, help=f"({CONNECTIONS})")
    args = p.parse_args()
    c.setup()
    machine = c.machine()
    print(f"concurrency: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    print(render(doc))
    path = c.write_json(args.out, "concurrency", doc)
    print(f"wrote {path}")
    s = doc["summary"]
    return 0 if s["ustack"]["all_ok"] and s["kernel"]["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
