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

A second measurement needs no namespace and counts bytes exactly: ``tracemalloc`` around a bare
sans-IO Host (no asyncio, no link) fed crafted segments. ``--sans-io`` established connections
(handshake with Linux's SYN options, 8 bytes echoed and acknowledged, accepted and held as a
server would) give the TCP core's bytes per connection; then ``--time-wait`` connections each
go through a server-side active close -- released by the "application", as the asyncio
transport releases a connection after ``connection_lost`` -- and are left in TIME-WAIT, which
gives the bytes a TIME-WAIT connection costs the host. The largest allocation sites are kept
in the JSON (``sans_io.*.top``).

    python bench/concurrency.py [--quick] [--runs N] [--connections 10000]
                                [--sans-io 10000] [--time-wait 100000] [--sans-io-only]

Writes bench/results/concurrency.json.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from ustack.stack.host import Host
from ustack.tcp.timewait import TimeWait
from ustack.wire import checksum, ipv4, tcp

CONNECTIONS = 10_000
QUICK_CONNECTIONS = 1_000
WINDOW = 128  # handshakes or echoes in flight at once
OPEN_TIME_LIMIT = 120.0
ECHO_TIME_LIMIT = 60.0
WARMUP = 50
TARGET_BYTES = 5000.0
TARGET_OPEN_SECONDS = 1.0  # for 10,000 connections
SANS_IO_CONNECTIONS = 10_000
TIME_WAIT_CONNECTIONS = 100_000
QUICK_TIME_WAIT = 20_000
TARGET_TIME_WAIT_BYTES = 500.0
TOP_SITES = 12


# -- sans-IO: tracemalloc around a bare Host ---------------------------------------------------


class _Peer:
    """Crafted segments from many clients to one Host: the kernel's SYN options (MSS, SACK,
    timestamps, window scale), then whatever each step needs. Client ``i`` is a distinct
    4-tuple (2**16 ports per source address)."""

    def __init__(self, host_addr: int) -> None:
        self.host_addr = host_addr
        self.base = ipv4.addr_to_int(c.USTACK_PEER)
        self.syn_options = tcp.TcpOptions(
            mss=1460, wscale=7, sack_permitted=True, timestamps=(1000, 0)
        ).encode()

    def source(self, i: int) -> tuple[int, int]:
        return self.base + (i >> 15) * 256, 20000 + (i & 0x7FFF)

    def packet(
        self, i: int, seq: int, ack: int, flags: int, payload: bytes = b"", tsecr: int | None = None
    ) -> bytearray:
        src, sport = self.source(i)
        if flags & tcp.SYN:
            options = self.syn_options
        elif tsecr is not None:
            options = tcp.TcpOptions(timestamps=(2000, tsecr)).encode()
        else:
            options = b""
        length = tcp.HEADER_LEN + len(options) + len(payload)
        buf = bytearray(ipv4.HEADER_LEN + length)
        ipv4.emit(buf, 0, src=src, dst=self.host_addr, proto=ipv4.PROTO_TCP, payload_len=length)
        tcp.emit(
            buf,
            ipv4.HEADER_LEN,
            pseudo=checksum.ipv4_pseudo_header_sum(src, self.host_addr, tcp.PROTO, 0),
            src_port=sport,
            dst_port=7,
            seq=seq,
            ack=ack,
            flags=flags,
            window=502,
            options=options,
            payload=payload,
        )
        return buf


def _synack(host: Any, now: float) -> tuple[int, int]:
    """The SYN,ACK the host just made: (its sequence number, its TSval)."""
    [p] = host.packets_to_send(now)
    pkt = ipv4.parse(p)
    synack = tcp.parse(
        pkt.payload,
        pkt.src,
        pkt.dst,
        pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
    )
    assert synack.control is tcp.Control.SYN and synack.options.timestamps is not None
    return synack.seq, synack.options.timestamps[0]


def _open(
    host: Any, listener: Any, peer: _Peer, i: int, now: float, echo: bool = True
) -> tuple[Any, int, int]:
    """Handshake, then (``echo``) 8 bytes in and echoed back, the echo acknowledged: an idle
    established connection, as the echo service leaves one. Returns it, our ISS and TSval."""
    host.receive_packet(peer.packet(i, 1000, 0, tcp.SYN), now)
    iss, tsval = _synack(host, now)
    una = iss + 1
    host.receive_packet(peer.packet(i, 1001, una, tcp.ACK, tsecr=tsval), now)
    conn = listener.accept()
    if echo:
        msg = i.to_bytes(8, "big")
        host.receive_packet(peer.packet(i, 1001, una, tcp.ACK | tcp.PSH, msg, tsecr=tsval), now)
        while host.next_event() is not None:
            pass
        conn.send(conn.read())
        host.packets_to_send(now)
        host.receive_packet(peer.packet(i, 1009, una + 8, tcp.ACK, tsecr=tsval), now)
        host.packets_to_send(now)
    return conn, iss, tsval


def _to_time_wait(host: Any, listener: Any, peer: _Peer, i: int, now: float) -> None:
    """A connection the server closes first (its application released it); the client's FIN,
    acknowledging ours, leaves it in TIME-WAIT."""
    conn, iss, tsval = _open(host, listener, peer, i, now, echo=False)
    host.release(conn, now)
    conn.close(now)
    [_fin] = host.packets_to_send(now)
    host.receive_packet(peer.packet(i, 1001, iss + 2, tcp.FIN | tcp.ACK, tsecr=tsval), now)
    host.packets_to_send(now)
    while host.next_event() is not None:
        pass


def _traced(step: Any, n: int) -> tuple[float, list[dict[str, Any]], float]:
    """Run ``step(i)`` for ``n`` connections under tracemalloc: (bytes each, the largest
    allocation sites with their bytes each, seconds)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    root = str(c.ROOT) + "/"
    diff = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    top = [
        {
            "site": f"{str(d.traceback[0].filename).replace(root, '')}:{d.traceback[0].lineno}",
            "bytes_per_conn": d.size_diff / n,
            "blocks_per_conn": d.count_diff / n,
        }
        for d in diff[:TOP_SITES]
    ]
    return total / n, top, seconds


def _established(n: int) -> dict[str, Any]:
    host_addr = ipv4.addr_to_int(c.USTACK_ADDR)
    host = Host(host_addr, secret=os.urandom(16))
    listener = host.listen(7, backlog=n + WARMUP)
    peer = _Peer(host_addr)
    held: list[Any] = []  # the "application" holds its connections, as a server does

    def open_one(i: int) -> None:
        held.append(_open(host, listener, peer, i, 1.0)[0])
        while host.next_event() is not None:
            pass

    for i in range(WARMUP):  # first-use costs (code, caches) out of the measurement
        open_one(n + i)
    per, top, secs = _traced(open_one, n)
    assert len(host.connections) == n + WARMUP
    return {"connections": n, "bytes_per_conn": per, "seconds": secs, "top": top}


def _time_wait(n: int) -> dict[str, Any]:
    host_addr = ipv4.addr_to_int(c.USTACK_ADDR)
    host = Host(host_addr, secret=os.urandom(16))
    listener = host.listen(7, backlog=16)
    peer = _Peer(host_addr)
    for i in range(WARMUP):
        _to_time_wait(host, listener, peer, n + i, 1.0)
    per, top, secs = _traced(lambda i: _to_time_wait(host, listener, peer, i, 1.0), n)
    records = sum(isinstance(x, TimeWait) for x in host.connections)
    assert records == n + WARMUP, records
    return {"connections": n, "bytes_per_conn": per, "seconds": secs, "top": top}


def sans_io(established: int, time_wait: int) -> dict[str, Any]:
    """Bytes per established connection and per TIME-WAIT connection of a bare Host."""
    return {
        "established": _established(established),
        "time_wait": _time_wait(time_wait),
        "target_bytes_per_conn": TARGET_BYTES,
        "target_time_wait_bytes": TARGET_TIME_WAIT_BYTES,
    }


def render_sans_io(doc: dict[str, Any]) -> str:
    e, t = doc["established"], doc["time_wait"]
    rows = [
        [
            f"{e['connections']:,} established (B each)",
            e["bytes_per_conn"],
            f"<= {doc['target_bytes_per_conn']:,.0f} (whole process)",
            "yes" if e["bytes_per_conn"] <= doc["target_bytes_per_conn"] else "no",
        ],
        [
            f"{t['connections']:,} in TIME-WAIT (B each)",
            t["bytes_per_conn"],
            f"<= {doc['target_time_wait_bytes']:,.0f}",
            "yes" if t["bytes_per_conn"] <= doc["target_time_wait_bytes"] else "no",
        ],
    ]
    return "sans-IO Host, tracemalloc:\n" + c.table(["", "bytes", "target", "met"], rows, 0)


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
    at_10k = n == CONNECTIONS
    open_met = "yes" if u["open_seconds"] <= TARGET_OPEN_SECONDS else "no"
    mem_met = "yes" if u["bytes_per_conn"] <= TARGET_BYTES else "no"
    rows = [
        ["connections open", f"{u['opened']:.0f}/{n}", f"{k['opened']:.0f}/{n}", "", ""],
        [
            "time to open all (s)",
            f"{u['open_seconds']:.2f}",
            f"{k['open_seconds']:.2f}",
            f"<= {TARGET_OPEN_SECONDS:g}" + ("" if at_10k else " at 10k"),
            open_met if at_10k else "",
        ],
        ["opened per second", u["open_per_s"], k["open_per_s"], "", ""],
        ["echoed correctly", f"{u['echoed_ok']:.0f}/{n}", f"{k['echoed_ok']:.0f}/{n}", "", ""],
        [
            "memory per conn (B)",
            u["bytes_per_conn"],
            "kernel's (not in RSS)",
            f"<= {TARGET_BYTES:,.0f}",
            mem_met,
        ],
        ["  (just opened)", u["bytes_per_conn_open"], "", "", ""],
        ["  server RSS growth (B)", "", k["bytes_per_conn"], "", ""],
    ]
    ok = u["all_ok"] and k["all_ok"]
    return c.table(["", "ustack", "kernel", "target", "met"], rows) + (
        "" if ok else "\n(some runs FAILED)"
    )


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=None, help=f"({CONNECTIONS})")
    p.add_argument(
        "--sans-io",
        type=int,
        default=None,
        help=f"established, tracemalloc ({SANS_IO_CONNECTIONS})",
    )
    p.add_argument(
        "--time-wait",
        type=int,
        default=None,
        help=f"TIME-WAIT, tracemalloc ({TIME_WAIT_CONNECTIONS}; quick {QUICK_TIME_WAIT})",
    )
    p.add_argument(
        "--sans-io-only", action="store_true", help="only the tracemalloc part (no root needed)"
    )
    args = p.parse_args()
    c.handle_signals()
    machine = c.machine()
    print(f"concurrency: {c.machine_line(machine)}", flush=True)
    mem = sans_io(
        args.sans_io or SANS_IO_CONNECTIONS,
        args.time_wait or (QUICK_TIME_WAIT if args.quick else TIME_WAIT_CONNECTIONS),
    )
    print(render_sans_io(mem), flush=True)
    if args.sans_io_only:
        doc: dict[str, Any] = {"sans_io": mem, "machine": machine}
        print(f"wrote {c.write_json(args.out, 'concurrency_sans_io', doc)}")
        return 0
    c.setup()
    doc = run(args)
    doc["machine"] = machine
    doc["sans_io"] = mem
    doc["target_open_seconds"] = TARGET_OPEN_SECONDS
    print(render(doc))
    path = c.write_json(args.out, "concurrency", doc)
    print(f"wrote {path}")
    s = doc["summary"]
    return 0 if s["ustack"]["all_ok"] and s["kernel"]["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
