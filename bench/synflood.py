"""SYN flood: do legitimate connections still get through, and does memory stay bounded?

A flood of spoofed SYNs goes to the echo port (7), at 10,000 per second and at the highest rate
the sender reaches (``--rates 10000,max``), each for ``--seconds`` (10). The sender
(``bench/_synsender.py``) is a separate process with a raw IP_HDRINCL socket inside the client
namespace, so it does not starve the client; its SYNs look like Linux's (MSS, SACK permitted,
timestamps, window scale) and come from random addresses of 198.18.0.0/15 (RFC 2544's
benchmarking range, none of the namespace's addresses) with random ports and ISNs. The SYN-ACKs
answering them come back to the kernel of the client namespace, which drops them as not its own
(``Ip.InAddrErrors`` / ``IpExt.InNoRoutes``): no RST that would clear the listener's state
cheaply. The table shows the counters that prove it: the kernel's RSTs sent in that namespace,
and the RSTs that took a SYN-RECEIVED connection back to LISTEN.

Meanwhile a legitimate client makes ``--connections`` (200) connections from the same namespace,
started at even intervals over the flood, each connect followed by a 64-byte echo; a connection
succeeds if it connects and gets its 64 bytes back within ``--timeout`` (5 s, which leaves room
for the kernel client's SYN retransmissions at 1 s and 3 s). Measured per row: the legitimate
success rate, connect time p50/p99 (connect() to writable), the SYNs actually sent per second,
and for ustack its CPU time (utime + stime from /proc/PID/stat over the flood, as a share of one
core), its RSS (sampled every 0.1 s: before, peak) and its counters from ``GET /stats.json``
afterwards: ``listen_syn_queue_overflow``, and the ``syncookies_*`` counters once they exist.

Rows: ustack (``ustack serve`` on a TUN device) and, in the same run, the kernel (the echo of
``bench/_refserver.py`` over veth, in a server namespace with ``net.ipv4.tcp_syncookies=1``
set for that namespace only), each with no flood (baseline) and at every rate; each row gets
fresh namespaces and a fresh server, so no half-open connection carries over. The kernel's CPU
and memory are not measured (its work is in softirq, charged to no process).

Target: at 10,000 SYN/s at least 99 % of the legitimate connections succeed, and memory stays
bounded: ustack's peak RSS in the second half of the flood is at most 5 % above its peak in the
first half (the SYN queue is full early on; anything that keeps growing after that is a leak).

    python bench/synflood.py [--seconds 10] [--rates 10000,max] [--connections 200] [--quick]

Writes bench/results/synflood.json and synflood.png.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SECONDS = 10.0
QUICK_SECONDS = 3.0
RATES = "10000,max"
CONNECTIONS = 200
QUICK_CONNECTIONS = 50
TIMEOUT = 5.0  # seconds a legitimate connection gets to connect and echo
PORT = 7
SIZE = 64
SPOOFED = "198.18.0.0/15"  # RFC 2544 benchmarking addresses: nobody's, anywhere in this test
SAMPLE_EVERY = 0.1  # seconds between RSS samples
SENDER_GRACE = 30.0  # seconds past --seconds the sender gets to finish
TARGET_RATE = 10000.0
TARGET_SUCCESS = 0.99
TARGET_RSS_GROWTH = 0.05  # second half of the flood vs the first half, peak RSS
TUN = "ustack0"  # the device `ustack serve` creates (its --name default)

USTACK_COUNTERS = (
    "listen_syn",
    "listen_syn_queue_overflow",
    "listen_accept_queue_overflow",
    "tcp_synack_retransmits",
    "tcp_timeout_synack",
    "tcp_synrcvd_back_to_listen",
    "ip_rx",
)
KERNEL_COUNTERS = (
    "TcpExt.SyncookiesSent",
    "TcpExt.SyncookiesRecv",
    "TcpExt.SyncookiesFailed",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
)
# Counted in the client namespace: SYN-ACKs to spoofed addresses dropped, and any RST sent.
CLIENT_COUNTERS = ("Ip.InAddrErrors", "IpExt.InNoRoutes", "Tcp.OutRsts")


# -- the legitimate client -----------------------------------------------------------------------


@dataclass
class Attempt:
    sock: socket.socket
    payload: bytes
    started: float = 0.0
    connected: float | None = None
    done: float | None = None
    got: bytes = b""
    error: str | None = None


def legitimate(
    ns: Any,
    address: str,
    count: int,
    spread: float,
    timeout: float,
    tick: Callable[[float], None],
) -> list[Attempt]:
    """``count`` connections to ``address``:7 started evenly over ``spread`` seconds, each a
    connect and one 64-byte echo, all driven by one selector; ``tick(now)`` runs between
    selects. Every attempt ends by success, error or ``timeout``."""
    with c.inside(ns):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    attempts = [
        Attempt(s, f"legitimate connection {i:06d} ".encode().ljust(SIZE, b"."))
        for i, s in enumerate(socks)
    ]
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    gap = spread / count if count else 0.0
    next_i = 0
    active: dict[int, Attempt] = {}

    def finish(a: Attempt, error: str | None, now: float) -> None:
        a.error = error
        a.done = now
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(a.sock)
        a.sock.close()
        active.pop(id(a), None)

    try:
        while next_i < count or active:
            now = time.monotonic()
            while next_i < count and start + next_i * gap <= now:
                a = attempts[next_i]
                next_i += 1
                a.sock.setblocking(False)
                a.started = time.monotonic()
                rc = a.sock.connect_ex((address, PORT))
                if rc not in (0, errno.EINPROGRESS):
                    finish(a, errno.errorcode.get(rc, str(rc)), a.started)
                    continue
                active[id(a)] = a
                sel.register(a.sock, selectors.EVENT_WRITE, a)
            wait = SAMPLE_EVERY / 2
            if next_i < count:
                wait = max(0.0, min(wait, start + next_i * gap - time.monotonic()))
            for key, _mask in sel.select(wait):
                a = key.data
                now = time.monotonic()
                if a.connected is None:
                    err = a.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(a, errno.errorcode.get(err, str(err)), now)
                        continue
                    a.connected = now
                    try:
                        a.sock.send(a.payload)  # 64 bytes always fit a fresh send buffer
                    except OSError as e:
                        finish(a, type(e).__name__, now)
                        continue
                    sel.modify(a.sock, selectors.EVENT_READ, a)
                    continue
                try:
                    chunk = a.sock.recv(SIZE)
                except BlockingIOError:
                    continue
                except OSError as e:
                    finish(a, type(e).__name__, now)
                    continue
                if not chunk:
                    finish(a, "closed before the echo", now)
                    continue
                a.got += chunk
                if len(a.got) >= SIZE:
                    finish(a, None if a.got == a.payload else "wrong echo", now)
            now = time.monotonic()
            for a in list(active.values()):
                if now - a.started > timeout:
                    finish(a, "timeout (connect)" if a.connected is None else "timeout (echo)", now)
            tick(now)
    finally:
        for a in list(active.values()):
            finish(a, "interrupted", time.monotonic())
        sel.close()
    return attempts


# -- one row -------------------------------------------------------------------------------------


@dataclass
class Watch:
    """What the benchmark watches while a row runs: ustack's RSS over time, and its CPU time
    from the first SYN to the sender's exit (or over the client's run, without a flood)."""

    pid: int | None
    sender: c.Proc | None
    t0: float = 0.0
    cpu0: float = 0.0
    cpu1: float | None = None
    flood_end: float | None = None
    window: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)
    last: float = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        if self.pid is not None:
            self.cpu0 = c.cpu_seconds(self.pid)
            self.rss.append((0.0, _rss_kb(self.pid)))

    def tick(self, now: float) -> None:
        if self.flood_end is None and self.sender is not None and not self.sender.alive():
            self.flood_end = now
            self.stop(now)
        if self.pid is not None and now - self.last >= SAMPLE_EVERY:
            self.last = now
            with contextlib.suppress(OSError, RuntimeError):
                self.rss.append((now - self.t0, _rss_kb(self.pid)))

    def stop(self, now: float) -> None:
        if self.cpu1 is None and self.pid is not None:
            with contextlib.suppress(OSError):
                self.cpu1 = c.cpu_seconds(self.pid)
                self.window = now - self.t0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Target:
    """Where a row's traffic goes: the server's address, the namespace the client and sender
    live in, and how to read the server's counters."""

    name: str
    address: str
    client_ns: Any
    counters: Callable[[], dict[str, int]]
    pid: int | None = None
    syn_recv: Callable[[], int | None] | None = None
    tun_ns: Any = None


def measure(target: Target, rate: str | None, args: Any, seconds: float) -> dict[str, Any]:
    """One row: the flood at ``rate`` (None: no flood) and the legitimate client over it."""
    before = target.counters()
    client_before = c.kernel_counters(target.client_ns)
    tun_before = c.link_counters(target.tun_ns, TUN) if target.tun_ns is not None else {}
    sender: c.Proc | None = None
    row: dict[str, Any] = {"server": target.name, "flood": rate or "none"}
    try:
        if rate is not None:
            cmd = ["ip", "netns", "exec", target.client_ns.name, sys.executable,
                   str(c.BENCH / "_synsender.py"), "--dst", target.address, "--port", str(PORT),
                   "--rate", "0" if rate == "max" else rate, "--seconds", str(seconds),
                   "--source", SPOOFED, "--seed", str(args.seed)]  # fmt: skip
            sender = c.Proc(cmd, name="synsender")
            sender.wait_for("ready")
        watch = Watch(target.pid, sender)
        watch.start()
        attempts = legitimate(
            target.client_ns, target.address, args.connections, seconds, args.timeout, watch.tick
        )
        if sender is not None:
            try:
                sender.popen.wait(seconds + SENDER_GRACE)
            except Exception:
                row["sender_error"] = "did not finish"
            watch.tick(time.monotonic())
            out = sender.output().strip().splitlines()
            try:
                row["sender"] = json.loads(out[-1]) if out else {}
            except ValueError:
                row["sender"] = {"output": "\n".join(out[-5:])}
        watch.stop(time.monotonic())
    finally:
        if sender is not None:
            sender.stop()
    after = target.counters()
    client_after = c.kernel_counters(target.client_ns)
    row["syn_recv_after"] = target.syn_recv() if target.syn_recv else None
    if target.tun_ns is not None:
        tun_after = c.link_counters(target.tun_ns, TUN)
        row["tun"] = {k: tun_after.get(k, 0) - tun_before.get(k, 0) for k in tun_after}
    ok = [a for a in attempts if a.error is None]
    connect_ms = [(a.connected - a.started) * 1e3 for a in attempts if a.connected is not None]
    errors: dict[str, int] = {}
    for a in attempts:
        if a.error is not None:
            errors[a.error] = errors.get(a.error, 0) + 1
    sent = row.get("sender", {})
    row.update(
        {
            "connections": len(attempts),
            "succeeded": len(ok),
            "success": len(ok) / len(attempts) if attempts else float("nan"),
            "errors": errors,
            "connect_p50_ms": c.percentile(connect_ms, 50),
            "connect_p99_ms": c.percentile(connect_ms, 99),
            "connect_max_ms": max(connect_ms) if connect_ms else float("nan"),
            "syn_per_s": float(sent.get("rate", 0.0)) if rate else 0.0,
            "syn_sent": int(sent.get("sent", 0)) if rate else 0,
            "counters": {k: after.get(k, 0) - before.get(k, 0) for k in after},
            "client_ns": {
                k: client_after.get(k, 0) - client_before.get(k, 0) for k in CLIENT_COUNTERS
            },
        }
    )
    if target.pid is not None:
        rss = watch.rss
        row["rss_kb"] = rss
        row["rss_before_mb"] = rss[0][1] / 1024 if rss else float("nan")
        row["rss_peak_mb"] = max(r for _, r in rss) / 1024 if rss else float("nan")
        row["cpu_s"] = (watch.cpu1 or watch.cpu0) - watch.cpu0
        row["cpu_share"] = c.ratio(row["cpu_s"], watch.window)
        row["window_s"] = watch.window
        end = (watch.flood_end - watch.t0) if watch.flood_end else watch.window
        first = [r for t, r in rss if 0 < t <= end / 2]
        second = [r for t, r in rss if end / 2 < t <= end]
        if first and second:
            row["rss_first_half_peak_mb"] = max(first) / 1024
            row["rss_second_half_peak_mb"] = max(second) / 1024
            row["rss_growth"] = max(second) / max(first) - 1
    return row


# -- the two servers -----------------------------------------------------------------------------


@contextlib.contextmanager
def ustack_target() -> Iterator[Target]:
    with c.UstackServe(services="echo,http") as us:
        yield Target(
            name="ustack",
            address=us.address,
            client_ns=us.ns,
            counters=lambda: {k: int(v) for k, v in c.ustack_counters(us).items()},
            pid=us.pid,
            syn_recv=lambda: _ustack_syn_recv(us),
            tun_ns=us.ns,
        )


def _ustack_syn_recv(us: c.UstackServe) -> int | None:
    try:
        doc = json.loads(c.http_get(us.ns, us.address, "/stats.json"))
    except (OSError, ValueError):
        return None
    return sum(1 for conn in doc.get("connections", []) if conn.get("state") == "SYN-RECEIVED")


@contextlib.contextmanager
def kernel_target() -> Iterator[Target]:
    with c.VethPair(1500) as veth:
        # SYN cookies for the server's namespace only; then a route back to the spoofed range
        # (towards the client namespace, whose kernel drops the SYN-ACKs), without which the
        # reverse-path filter would drop the SYNs before TCP saw them.
        c.sysctl(veth.server, "net.ipv4.tcp_syncookies", "1")
        cookies = c.sysctl_value(veth.server, "net.ipv4.tcp_syncookies")
        if cookies != "1":
            raise RuntimeError(f"could not set tcp_syncookies=1 in {veth.server.name}: {cookies}")
        c.ip("route", "add", SPOOFED, "via", veth.client_addr, ns=veth.server)
        with c.RefServer(veth.server):
            yield Target(
                name="kernel",
                address=veth.server_addr,
                client_ns=veth.client,
                counters=lambda: c.kernel_counters(veth.server),
                syn_recv=lambda: c.kernel_syn_recv(veth.server),
            )


# -- the run -------------------------------------------------------------------------------------


def run(args: Any) -> dict[str, Any]:
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    rates: list[str | None] = [None]
    for r in args.rates.split(","):
        r = r.strip()
        if r != "max" and not (r.isdigit() and int(r) > 0):
            raise SystemExit(f"--rates: {r!r} is neither a positive number nor 'max'")
        rates.append(r)
    rows = []
    for rate in rates:
        for name, target in (("ustack", ustack_target), ("kernel", kernel_target)):
            with target() as t:
                row = measure(t, rate, args, seconds)
                if t.pid is not None:
                    row["server_alive"] = _alive(t.pid)
            rows.append(row)
            print("  " + _progress(row, name), flush=True)
    return {
        "seconds": seconds,
        "connections": args.connections,
        "timeout_s": args.timeout,
        "spoofed_sources": SPOOFED,
        "port": PORT,
        "rows": rows,
        "target": target_verdict(rows),
    }


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _progress(row: dict[str, Any], name: str) -> str:
    flood = "no flood" if row["flood"] == "none" else f"flood {row['flood']}"
    text = (
        f"{name:6} {flood:12}: {row['succeeded']}/{row['connections']} legitimate ok, "
        f"{row['syn_per_s']:,.0f} SYN/s sent"
    )
    if row["errors"]:
        text += f", errors {row['errors']}"
    return text


def _cookie_counters(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if "cookie" in k.lower()}


def _cells(row: dict[str, Any]) -> list[Any]:
    k = row["counters"]
    if row["server"] == "ustack":
        dropped = k.get("listen_syn_queue_overflow")
        cookies = [k.get(f"syncookies_{n}") for n in ("sent", "accepted", "failed")]
        cpu = f"{row['cpu_share'] * 100:.0f}%" if "cpu_share" in row else "-"
        rss = f"{row['rss_before_mb']:.0f}->{row['rss_peak_mb']:.0f}"
    else:
        dropped = k.get("TcpExt.TCPReqQFullDrop")
        cookies = [k.get(f"TcpExt.Syncookies{n}") for n in ("Sent", "Recv", "Failed")]
        cpu, rss = "n/a", "n/a"
    cookie_cell = "/".join("-" if v is None else f"{v:,}" for v in cookies)
    return [
        row["server"],
        "none" if row["flood"] == "none" else f"{row['flood']}/s",
        row["syn_per_s"],
        f"{row['success'] * 100:.1f}%",
        row["connect_p50_ms"],
        row["connect_p99_ms"],
        cpu,
        rss,
        "-" if dropped is None else f"{dropped:,}",
        cookie_cell,
        "-" if row["syn_recv_after"] is None else row["syn_recv_after"],
        row["client_ns"].get("Tcp.OutRsts", 0),
    ]


HEADERS = ["server", "flood", "SYN/s sent", "legit ok", "connect p50 ms", "p99 ms", "CPU",
           "RSS MB", "SYNs dropped", "cookies sent/ok/bad", "SYN-RCVD after", "client RSTs"]  # fmt: skip


def target_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The target row: ustack at the 10,000/s flood."""
    at = [r for r in rows if r["server"] == "ustack" and r["flood"] == f"{TARGET_RATE:.0f}"]
    if not at:
        return {"measured": False}
    r = at[0]
    growth = r.get("rss_growth", float("nan"))
    success_ok = r["success"] >= TARGET_SUCCESS
    memory_ok = growth == growth and growth <= TARGET_RSS_GROWTH
    return {
        "measured": True,
        "success": r["success"],
        "rss_growth": growth,
        "rss_first_half_peak_mb": r.get("rss_first_half_peak_mb"),
        "rss_second_half_peak_mb": r.get("rss_second_half_peak_mb"),
        "success_met": success_ok,
        "memory_met": memory_ok,
        "met": success_ok and memory_ok,
    }


def render(doc: dict[str, Any]) -> str:
    text = c.table(HEADERS, [_cells(r) for r in doc["rows"]])
    text += (
        f"\n{doc['connections']} legitimate connections (connect + {SIZE} B echo, {doc['timeout_s']:g} s"
        f" limit) over each {doc['seconds']:g} s flood of spoofed SYNs from {doc['spoofed_sources']}"
        f" to port {doc['port']}. SYNs dropped: ustack listen_syn_queue_overflow, kernel "
        "TCPReqQFullDrop; cookies: ustack syncookies_sent/accepted/failed, kernel "
        "Syncookies{Sent,Recv,Failed}; client RSTs: RSTs the client namespace's kernel sent."
    )
    for r in doc["rows"]:
        if r["flood"] == "none":
            continue
        c_ns = r["client_ns"]
        dropped = c_ns.get("Ip.InAddrErrors", 0) + c_ns.get("IpExt.InNoRoutes", 0)
        line = (
            f"\n  {r['server']} at {r['flood']}/s: {r['syn_sent']:,} SYNs sent; the client "
            f"namespace dropped {dropped:,} packets to spoofed addresses and sent "
            f"{c_ns.get('Tcp.OutRsts', 0)} RSTs"
        )
        if r["server"] == "ustack":
            k = r["counters"]
            line += (
                f"; ustack took in {k.get('ip_rx', 0):,} packets (the TUN queue dropped "
                f"{r.get('tun', {}).get('tx_dropped', 0):,}), listen_syn {k.get('listen_syn', 0):,}, "
                f"RSTs back to LISTEN {k.get('tcp_synrcvd_back_to_listen', 0)}"
            )
            cookies = _cookie_counters(k)
            line += f", cookie counters {cookies}" if cookies else ", no cookie counters yet"
            if not r.get("server_alive", True):
                line += "; USTACK EXITED"
        if r["errors"]:
            line += f"; legitimate failures {r['errors']}"
        text += line
    t = doc["target"]
    if t.get("measured"):
        growth = t["rss_growth"]
        text += (
            f"\ntarget: >= {TARGET_SUCCESS * 100:.0f} % of legitimate connections succeed at "
            f"{TARGET_RATE:,.0f} SYN/s: {t['success'] * 100:.1f} % "
            f"({'met' if t['success_met'] else 'NOT met'}); memory bounded (peak RSS of the "
            f"flood's second half <= first half + {TARGET_RSS_GROWTH * 100:.0f} %): "
            + (
                f"{t['rss_first_half_peak_mb']:.1f} -> {t['rss_second_half_peak_mb']:.1f} MB, "
                f"{growth * 100:+.1f} %"
                if growth == growth
                else "not enough samples"
            )
            + f" ({'met' if t['memory_met'] else 'NOT met'})"
        )
    else:
        text += f"\ntarget: not measured (no {TARGET_RATE:,.0f}/s row in --rates)"
    return text


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    rows = doc["rows"]
    floods = list(dict.fromkeys(r["flood"] for r in rows))
    by = {(r["server"], r["flood"]): r for r in rows}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    w = 0.38
    xs = range(len(floods))
    for dx, server in ((-w / 2, "ustack"), (w / 2, "kernel")):
        values = [by[(server, f)]["success"] * 100 if (server, f) in by else 0 for f in floods]
        left.bar([x + dx for x in xs], values, w, label=server)
    left.axhline(TARGET_SUCCESS * 100, color="red", linestyle="--", linewidth=1)
    left.set_xticks(list(xs), [f if f == "none" else f"{f}/s" for f in floods])
    left.set_xlabel("spoofed SYN flood")
    left.set_ylabel("legitimate connections that succeeded (%)")
    left.set_ylim(0, 105)
    left.legend(fontsize=8)
    left.set_title("legitimate connections during the flood")
    for r in rows:
        if r["server"] == "ustack" and r.get("rss_kb"):
            right.plot(
                [t for t, _ in r["rss_kb"]],
                [kb / 1024 for _, kb in r["rss_kb"]],
                label=f"flood {r['flood']}",
            )
    right.set_xlabel("seconds since the first SYN")
    right.set_ylabel("ustack RSS (MB)")
    right.set_title("ustack memory")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0], runs=1)
    p.add_argument("--seconds", type=float, default=None, help=f"flood length ({SECONDS:g})")
    p.add_argument("--rates", default=RATES, help=f"SYNs per second, or max ({RATES})")
    p.add_argument("--connections", type=int, default=None, help=f"legitimate ({CONNECTIONS})")
    p.add_argument("--timeout", type=float, default=TIMEOUT, help=f"per connection ({TIMEOUT:g} s)")
    p.add_argument("--seed", type=int, default=1, help="the sender's random seed")
    args = p.parse_args()
    if args.connections is None:
        args.connections = QUICK_CONNECTIONS if args.quick else CONNECTIONS
    if (
        args.connections < 1
        or args.timeout <= 0
        or (args.seconds is not None and args.seconds <= 0)
    ):
        raise SystemExit("--connections, --timeout and --seconds must be positive")
    c.setup()
    machine = c.machine()
    print(f"synflood: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    doc["runs"] = 1
    print(render(doc))
    path = c.write_json(args.out, "synflood", doc)
    plot(doc, args.out / "synflood.png")
    print(f"wrote {path} and {args.out / 'synflood.png'}")
    return 0 if doc["target"].get("met") else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
