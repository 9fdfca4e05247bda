"""A namespace's network through ``ustack forward``, slirp4netns and pasta, against plain veth.

The same client, in the same run, measures four ways from a namespace to a kernel server
(``bench/_refserver.py``: echo, ``GET /bytes/N``, ``POST /sha256``) in a second namespace:

* **veth** (the reference): the client in the namespace at the near end of the veth pair
  (10.8.0.1), the kernel's TCP at both ends and nothing in between;
* **ustack forward**, **slirp4netns** and **pasta**: the client in a third, fresh namespace whose
  only way out is the tool's TUN/TAP device; the tool itself runs in the near namespace (so its
  sockets go over the same veth) -- ``ustack forward --netns``, ``slirp4netns --configure --mtu
  65520`` (as rootless Podman runs it) and ``pasta --config-net`` (its default 65520 MTU), each
  with its own defaults otherwise (ustack: MTU 1500 with TUN offloads).

Figures, each the median of ``--runs`` runs: bulk download and upload over one connection (MB/s,
decimal), echo round trips of 64 bytes (p50 and p99, microseconds) and new connections per
second (a ``GET /bytes/64`` with ``Connection: close`` per connection, from 8 concurrent
clients, bounded in time and count). Targets (issue 12): ustack within 2x of pasta's bulk and
connection rate. A tool that is not installed is skipped with a line saying so. IPv4 only.

    python bench/forward.py [--quick] [--runs N] [--size MB] [--seconds S]

Writes bench/results/forward.json. The client runs as ``bench/forward.py --client`` inside the
namespace; nothing is sent anywhere but between the namespaces this script makes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SERVER = "10.8.0.2"
SIZE_MB = 200
QUICK_SIZE_MB = 50
ECHO_COUNT = 2000
QUICK_ECHO_COUNT = 500
CONN_SECONDS = 3.0
QUICK_CONN_SECONDS = 1.5
CONN_MAX = 20_000  # connections per run at most, whatever the time bound
CONN_WORKERS = 8
CLIENT_TIMEOUT = 120.0  # seconds any one client run may take
TARGET = 0.5  # ustack at least half of pasta's bulk and connection rate
ECHO_SIZE = 64
METHODS = ("veth", "ustack", "slirp4netns", "pasta")
INNER_ADDRESS, INNER_GATEWAY = "10.0.2.100", "10.0.2.2"


# -- the client (runs inside the measured namespace) ---------------------------------------------


def _download(size: int) -> float:
    sock = socket.create_connection((SERVER, 80), timeout=30)
    with sock:
        t0 = time.perf_counter()
        sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray(1 << 20)
        got = 0
        while n := sock.recv_into(buf):
            got += n
        elapsed = time.perf_counter() - t0
    if got < size:
        raise OSError(f"download: {got} of {size} bytes")
    return size / elapsed / 1e6


def _upload(size: int) -> float:
    sock = socket.create_connection((SERVER, 80), timeout=30)
    block = bytes(1 << 20)
    with sock:
        t0 = time.perf_counter()
        sock.sendall(
            f"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        left = size
        while left:
            n = min(left, len(block))
            sock.sendall(memoryview(block)[:n])
            left -= n
        reply = b""
        while data := sock.recv(65536):
            reply += data
        elapsed = time.perf_counter() - t0
    if b"200" not in reply.split(b"\r\n", 1)[0]:
        raise OSError(f"upload: {reply[:80]!r}")
    return size / elapsed / 1e6


def _echo(count: int) -> dict[str, float]:
    sock = socket.create_connection((SERVER, 7), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = bytes(range(ECHO_SIZE))
    samples: list[float] = []
    deadline = time.monotonic() + 30
    with sock:
        for i in range(count + 50):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter_ns()
            sock.sendall(payload)
            got = b""
            while len(got) < ECHO_SIZE:
                chunk = sock.recv(ECHO_SIZE - len(got))
                if not chunk:
                    raise OSError("echo: closed")
                got += chunk
            if i >= 50:  # the first ones warm up both ends
                samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[max(0, math.ceil(0.99 * len(samples)) - 1)],
        "count": len(samples),
    }


async def _connections(seconds: float) -> dict[str, float]:
    request = b"GET /bytes/64 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    done = 0
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.monotonic() < deadline and done < CONN_MAX:
            try:
                reader, writer = await asyncio.open_connection(SERVER, 80)
                writer.write(request)
                reply = await reader.read()
                writer.close()
                if b" 200 " in reply.split(b"\r\n", 1)[0] + b" ":
                    done += 1
                else:
                    errors += 1
            except OSError:
                errors += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONN_WORKERS)))
    return {"per_s": done / (time.monotonic() - t0), "count": done, "errors": errors}


def client(args: argparse.Namespace) -> int:
    """Each figure on its own: one that fails is NaN with its error, the others still count."""
    size = args.size * 1_000_000
    nan = float("nan")
    measures: dict[str, tuple[Callable[[], Any], Any]] = {
        "download_MBps": (lambda: _download(size), nan),
        "upload_MBps": (lambda: _upload(size), nan),
        "echo": (lambda: _echo(args.echo_count), {"p50_us": nan, "p99_us": nan, "count": 0}),
        "connections": (
            lambda: asyncio.run(_connections(args.seconds)),
            {"per_s": nan, "count": 0, "errors": 0},
        ),
    }
    result: dict[str, Any] = {"errors": {}}
    for name, (measure, failed) in measures.items():
        try:
            result[name] = measure()
        except (OSError, ValueError, IndexError) as exc:
            result[name] = failed
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))
    return 0


# -- the benchmark (the controller) --------------------------------------------------------------


def _run_client(c: Any, ns: Any, args: argparse.Namespace, size: int) -> dict[str, Any]:
    cmd = [
        "ip", "netns", "exec", ns.name, sys.executable, str(Path(__file__).resolve()), "--client",
        "--size", str(size), "--echo-count", str(args.echo_count), "--seconds", str(args.seconds),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=c.TREE
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"client took over {CLIENT_TIMEOUT:.0f} s"}
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(done.stdout)
    return {"ok": not result["errors"], **result}


@contextlib.contextmanager
def _through(c: Any, method: str, near: Any) -> Iterator[Any]:
    """The namespace to measure from: ``near`` itself for veth, else a fresh one given its
    network by the tool, which runs in ``near``."""
    if method == "veth":
        yield near
        return
    ns = c.NetNamespace(prefix=f"ustack-bench-{method[:5]}")
    with ns:
        path = f"/var/run/netns/{ns.name}"
        if method == "ustack":
            cmd = [sys.executable, "-m", "ustack.cli", "forward", "--netns", ns.name, "--no-ipv6"]
            marker = "forwarding namespace"
        elif method == "slirp4netns":
            cmd = ["slirp4netns", "--configure", "--mtu", "65520", "--disable-host-loopback",
                   "--netns-type=path", path, "tap0"]  # fmt: skip
            marker = "received tapfd"
        else:
            cmd = ["pasta", "-f", "-4", "--runas", "0", "--config-net", "-a", INNER_ADDRESS,
                   "-n", "24", "-g", INNER_GATEWAY, "--no-map-gw", "-I", "tap0",
                   "--netns", path]  # fmt: skip
            marker = ""
        proc = c.Proc(["ip", "netns", "exec", near.name, *cmd], name=method)
        try:
            if marker:
                proc.wait_for(marker)
            _wait_route(ns, proc)
            yield ns
        finally:
            proc.stop()


def _wait_route(ns: Any, proc: Any, timeout: float = 20.0) -> None:
    """Until the tool has given the namespace its default route."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run(["ip", "-4", "route", "show", "default"]).stdout
        if "default" in out:
            return
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not configure the namespace:\n{proc.output()[-1000:]}")


def available(method: str) -> str | None:
    """Why ``method`` cannot be measured here, or None."""
    if method in ("slirp4netns", "pasta") and shutil.which(method) is None:
        package = "passt" if method == "pasta" else method
        return f"{method} is not installed (apt-get install {package})"
    return None


def run(c: Any, args: argparse.Namespace) -> dict[str, Any]:
    runs = c.runs_of(args)
    size = args.size or (QUICK_SIZE_MB if args.quick else SIZE_MB)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    skipped: dict[str, str] = {}
    for method in METHODS:
        why = available(method)
        if why is not None:
            skipped[method] = why
            print(f"{method}: skipped: {why}", file=sys.stderr, flush=True)
    for i in range(runs):
        # interleaved, so a noisy moment hits every method alike
        for method in METHODS:
            if method in skipped:
                continue
            # A fresh pair of namespaces and server each time: no TIME-WAIT state of one
            # method's connections meets the next method's SYNs.
            with c.VethPair(1500) as veth, c.RefServer(veth.server):
                # pasta copies its outside from the interface with the default route: one
                # through the veth to the server's namespace, which forwards nothing further.
                veth.client.run(["ip", "route", "add", "default", "via", SERVER], check=True)
                with _through(c, method, veth.client) as ns:
                    r = _run_client(c, ns, args, size)
            results[method].append(r)
            print(f"run {i + 1}/{runs} {method}: {_brief(r)}", flush=True)
    summary = {m: _summary(rs) for m, rs in results.items() if m not in skipped}
    targets = {}
    if "pasta" in summary and "ustack" in summary:
        for metric in ("download_MBps", "upload_MBps", "connections_per_s"):
            r = c.ratio(summary["ustack"][metric], summary["pasta"][metric])
            targets[metric] = {"ustack_vs_pasta": r, "met": (r >= TARGET) if r == r else None}
    return {
        "size_MB": size,
        "runs": runs,
        "echo_count": args.echo_count,
        "conn_seconds": args.seconds,
        "results": results,
        "summary": summary,
        "skipped": skipped,
        "targets": targets,
    }


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}"
    failed = "".join(f" [{k} failed: {v}]" for k, v in r["errors"].items())
    return failed + (
        f"down {r['download_MBps']:.0f} MB/s, up {r['upload_MBps']:.0f} MB/s, "
        f"echo p50 {r['echo']['p50_us']:.0f} us, {r['connections']['per_s']:.0f} conn/s"
    )


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    from statistics import median

    ok = [r for r in rs if "error" not in r]

    def med(get: Any) -> float:
        values = [v for v in (get(r) for r in ok) if v == v]  # NaN: that figure failed
        return median(values) if values else float("nan")

    return {
        "ok": bool(rs) and all(r.get("ok") for r in rs),
        "failures": sorted({k for r in ok for k in r["errors"]}),
        "download_MBps": med(lambda r: r["download_MBps"]),
        "upload_MBps": med(lambda r: r["upload_MBps"]),
        "echo_p50_us": med(lambda r: r["echo"]["p50_us"]),
        "echo_p99_us": med(lambda r: r["echo"]["p99_us"]),
        "connections_per_s": med(lambda r: r["connections"]["per_s"]),
        "connection_errors": sum(r["connections"]["errors"] for r in ok),
    }


def render(c: Any, doc: dict[str, Any]) -> str:
    headers = ["through", "down MB/s", "up MB/s", "echo p50 us", "echo p99 us", "conn/s"]
    rows = []
    for method, s in doc["summary"].items():
        rows.append(
            [
                method + ("" if s["ok"] else " (some runs failed)"),
                s["download_MBps"],
                s["upload_MBps"],
                s["echo_p50_us"],
                s["echo_p99_us"],
                s["connections_per_s"],
            ]
        )
    lines = [
        f"forward: {doc['size_MB']} MB transfers, {doc['runs']} run(s), median shown",
        c.table(headers, rows, digits=0),
    ]
    for method, why in doc["skipped"].items():
        lines.append(f"{method}: skipped ({why})")
    for metric, t in doc["targets"].items():
        word = "-" if t["met"] is None else ("met" if t["met"] else "not met")
        lines.append(
            f"{metric}: ustack/pasta {c.fmt(t['ustack_vs_pasta'], 2)} "
            f"(target: within 2x, i.e. >= {TARGET}): {word}"
        )
    return "\n".join(lines)


def main() -> int:
    if "--client" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--client", action="store_true")
        p.add_argument("--size", type=int, required=True)
        p.add_argument("--echo-count", type=int, required=True)
        p.add_argument("--seconds", type=float, required=True)
        return client(p.parse_args())
    import _common as c

    p = c.parser(__doc__.split("\n\n")[0], runs=3)
    p.add_argument("--size", type=int, default=None, help=f"MB per transfer ({SIZE_MB})")
    p.add_argument("--seconds", type=float, default=None, help="connection-rate run length")
    args = p.parse_args()
    if args.size is not None and not 1 <= args.size <= 2000:
        raise SystemExit("--size: 1 to 2000 MB")
    args.echo_count = QUICK_ECHO_COUNT if args.quick else ECHO_COUNT
    if args.seconds is None:
        args.seconds = QUICK_CONN_SECONDS if args.quick else CONN_SECONDS
    elif not 0.1 <= args.seconds <= 60:
        raise SystemExit("--seconds: 0.1 to 60")
    c.setup()
    machine = c.machine()
    print(f"forward: {c.machine_line(machine)}", flush=True)
    doc = run(c, args)
    doc["machine"] = machine
    print(render(c, doc))
    path = c.write_json(args.out, "forward", doc)
    print(f"wrote {path}")
    return 0 if all(s["ok"] for s in doc["summary"].values()) else 1


if __name__ == "__main__":
    if "--client" in sys.argv:
        sys.exit(main())
    import _common

    sys.exit(_common.guard(main))
