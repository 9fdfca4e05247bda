"""New connections per second, and HTTP requests per second with keep-alive, ustack vs nginx.

The client is wrk (C, two threads, 50 connections) run inside the client namespace, asking for
``/bytes/64`` (64 bytes of body):

* **new connections**: ``-H 'Connection: close'``, so every request is a connect, one request,
  one response and a close initiated by the server. Requests/s is then connections/s.
* **keep-alive**: wrk's default, many requests per connection.

ustack serves with its HTTP service. The reference, in the same run, is nginx with one worker
process (the single core ustack's one thread can use) on the far end of a veth pair, serving
the same 64 bytes from a file: a C server, fast enough that the figure shows how fast the
client and the kernel's TCP can go. Without nginx, the reference falls back to
``bench/_refserver.py`` (one Python epoll loop) and says so. Each ustack run uses a fresh
``ustack serve`` so earlier runs' TIME-WAIT connections do not carry over. The ustack process's
CPU time per request under wrk comes from /proc/PID/schedstat.

Apart from the timed runs, a fresh ``ustack serve`` started through ``bench/_profiled.py``
counts the function calls (cProfile) that one new connection and one keep-alive request cost
it, from a plain client making them one after another (``--count-calls`` connections, 300, and
three times as many requests; three windows each, the median). That server runs with a short MSL (0.25 s) and the window stays
open until every connection's TIME-WAIT has ended, so a connection's count includes all of its
life. Counts, unlike rates, do not move with the load on the machine.

    python bench/connrate.py [--quick] [--runs N] [--seconds 5] [--count-calls 300]

Writes bench/results/connrate.json and connrate.png.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SECONDS = 5
QUICK_SECONDS = 2
THREADS = 2
CONNECTIONS = 50
PATH = "/bytes/64"
TARGET_CONN_S = 5000.0
MODES = ("new connections", "keep-alive requests")

_RATE = re.compile(r"Requests/sec:\s*([\d.]+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(m?s)")

COUNT_CALLS = 300  # new connections in the cProfile window (keep-alive requests: 3x)
QUICK_COUNT_CALLS = 100
CALLS_MSL = 0.25  # seconds: TIME-WAIT (2 MSL) ends inside the window
CALLS_TIME_LIMIT = 60.0
CALLS_WINDOWS = 3  # cProfile windows; the median one is reported
_BODY = c.http_body_pattern(64)


def wrk(ns: Any, url: str, seconds: int, close: bool) -> dict[str, Any]:
    cmd = ["ip", "netns", "exec", ns.name, c.need("wrk"), f"-t{THREADS}", f"-c{CONNECTIONS}",
           f"-d{seconds}s", "--timeout", "2s"]  # fmt: skip
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(url)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    except subprocess.TimeoutExpired:
        return {"ok": False, "rate": 0.0, "error": "wrk did not finish"}
    rate = _RATE.search(out)
    errors = _ERRORS.search(out)
    non2xx = _NON2XX.search(out)
    total = _TOTAL.search(out)
    result: dict[str, Any] = {
        "rate": float(rate.group(1)) if rate else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)
        )
        if errors
        else {},
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }
    # wrk counts the server's close after "Connection: close" as a read error on some
    # versions; only connect errors, timeouts and non-2xx answers mean failed requests.
    failed = result["non_2xx"] + sum(
        v for k, v in result["socket_errors"].items() if k in ("connect", "timeout")
    )
    result["failed"] = failed
    result["ok"] = bool(rate) and result["requests"] > 0 and failed <= 0.01 * result["requests"]
    if not rate:
        result["output"] = out[-1000:]
    return result


def _request(sock: socket.socket, address: str, close: bool) -> None:
    """One ``GET PATH`` on ``sock``, its response read whole (by Content-Length) and checked."""
    extra = "Connection: close\r\n" if close else ""
    sock.sendall(f"GET {PATH} HTTP/1.1\r\nHost: {address}\r\n{extra}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if not head.startswith(b"HTTP/1.1 200") or length is None:
        raise OSError(f"unexpected response: {head[:60]!r}")
    while len(body) < int(length.group(1)):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed inside the body")
        body += chunk
    if body != _BODY:
        raise OSError("wrong body")
    if close and sock.recv(1) != b"":
        raise OSError("no close after Connection: close")


def _connections(us: c.UstackServe, count: int) -> int:
    """``count`` connections one after another, each one request with ``Connection: close``;
    then a wait until the server's TIME-WAITs have ended."""
    keep_going = c.bounded(count, CALLS_TIME_LIMIT)
    i = 0
    with c.inside(us.ns):
        while keep_going(i):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(5.0)
                sock.connect((us.address, 80))
                _request(sock, us.address, close=True)
            finally:
                sock.close()
            i += 1
    time.sleep(2 * CALLS_MSL + 0.5)
    return i


def count_calls(count: int) -> dict[str, Any]:
    """Function calls per new connection and per keep-alive request in a fresh, profiled
    ``ustack serve`` (cProfile counts), each after a warm-up."""
    with c.UstackServe(
        mtu=1500, services="http", profiled=True, extra=["--msl", str(CALLS_MSL)]
    ) as us:
        _connections(us, 20)
        conn = us.count(lambda: _connections(us, count), repeats=CALLS_WINDOWS)
        conn["ok"] = conn["operations"] == count and conn["all_operations"]
        requests = 3 * count
        sock = c.connect(us.ns, us.address, 80)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(5.0)

            def keepalive(n: int) -> int:
                keep_going = c.bounded(n, CALLS_TIME_LIMIT)
                i = 0
                while keep_going(i):
                    _request(sock, us.address, close=False)
                    i += 1
                return i

            keepalive(50)
            time.sleep(0.2)  # let the last delayed ACKs land outside the window
            req = us.count(lambda: keepalive(requests), repeats=CALLS_WINDOWS)
            req["ok"] = req["operations"] == requests and req["all_operations"]
        finally:
            sock.close()
    return {"new connections": conn, "keep-alive requests": req, "msl_s": CALLS_MSL}


@contextlib.contextmanager
def reference(ns: Any) -> Any:
    body = {PATH: c.http_body_pattern(64)}
    if c.Nginx.available():
        with c.Nginx(ns, body):
            yield "nginx 1 worker (kernel TCP, veth)"
    else:
        with c.RefServer(ns):
            yield "bench/_refserver.py, one Python epoll loop (nginx not installed)"


def run(args: Any) -> dict[str, Any]:
    runs = c.runs_of(args)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {"ustack": [], "kernel": []} for m in MODES
    }
    with c.VethPair(1500) as veth, reference(veth.server) as ref_name:
        ref_url = f"http://{veth.server_addr}{PATH}"
        for i in range(runs):
            with c.UstackServe(mtu=1500, services="http") as us:
                url = f"http://{us.address}{PATH}"
                for mode in MODES:
                    close = mode == "new connections"
                    assert us.proc is not None
                    cpu0, _ = us.proc.sched()
                    u = wrk(us.ns, url, seconds, close)
                    cpu1, _ = us.proc.sched()
                    if u["requests"]:
                        u["server_cpu_us_per_req"] = (cpu1 - cpu0) / u["requests"] * 1e6
                    k = wrk(veth.client, ref_url, seconds, close)
                    results[mode]["ustack"].append(u)
                    results[mode]["kernel"].append(k)
                    print(
                        f"  run {i + 1}/{runs} {mode:20}: ustack {u['rate']:9.0f}/s, "
                        f"reference {k['rate']:9.0f}/s"
                        + ("" if u["ok"] and k["ok"] else "  FAILED"),
                        flush=True,
                    )
                alive = us.proc is not None and us.proc.alive()
            if not alive:
                print("  ustack exited during the run", flush=True)
    calls = count_calls(args.count_calls or (QUICK_COUNT_CALLS if args.quick else COUNT_CALLS))
    for mode in MODES:
        m = calls[mode]
        print(
            f"  calls: {m['calls_per_op']:.1f} per {mode[:-1]} ({m['python_calls_per_op']:.1f} "
            f"Python functions, {m['builtin_calls_per_op']:.1f} C builtins) over "
            f"{m['operations']}, median of {len(m['windows'])} windows "
            f"{m['calls_per_op_range'][0]:.1f}-{m['calls_per_op_range'][1]:.1f}"
            + ("" if m["ok"] else "  FAILED"),
            flush=True,
        )
    rows = []
    for mode in MODES:
        u_rate = c.median([r["rate"] for r in results[mode]["ustack"]])
        k_rate = c.median([r["rate"] for r in results[mode]["kernel"]])
        rows.append(
            {
                "mode": mode,
                "ustack_per_s": u_rate,
                "kernel_per_s": k_rate,
                "ratio": c.ratio(u_rate, k_rate),
                "target_per_s": TARGET_CONN_S if mode == "new connections" else None,
                "ustack_cpu_us_per_op": c.median(
                    [r.get("server_cpu_us_per_req", float("nan")) for r in results[mode]["ustack"]]
                ),
                "calls_per_op": calls[mode]["calls_per_op"],
                "python_calls_per_op": calls[mode]["python_calls_per_op"],
                "builtin_calls_per_op": calls[mode]["builtin_calls_per_op"],
                "calls": calls[mode],
                "all_ok": calls[mode]["ok"]
                and all(r["ok"] for r in results[mode]["ustack"] + results[mode]["kernel"]),
                "ustack_runs": results[mode]["ustack"],
                "kernel_runs": results[mode]["kernel"],
            }
        )
    return {
        "client": f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s, GET {PATH}",
        "reference": ref_name,
        "runs": runs,
        "rows": rows,
    }


def render(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["mode"] + "/s",
            r["ustack_per_s"],
            r["kernel_per_s"],
            f"{r['ratio'] * 100:.1f}%",
            (f">= {r['target_per_s']:,.0f}" if r["target_per_s"] else "")
            + ("" if r["all_ok"] else " (FAILED runs)"),
        ]
        for r in doc["rows"]
    ]
    text = (
        c.table(["", "ustack", "reference", "ratio", "target"], rows)
        + f"\nclient: {doc['client']}; reference: {doc['reference']}"
    )
    if all("calls_per_op" in r for r in doc["rows"]):
        per = [
            [
                "per " + r["mode"][:-1],
                r["calls_per_op"],
                r["python_calls_per_op"],
                r["builtin_calls_per_op"],
                r["ustack_cpu_us_per_op"],
            ]
            for r in doc["rows"]
        ]
        headers = ["ustack", "calls (cProfile)", "Python functions", "C builtins", "CPU (us, wrk)"]
        text += "\n\n" + c.table(headers, per)
    return text


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    rows = doc["rows"]
    xs = range(len(rows))
    w = 0.38
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.bar([x - w / 2 for x in xs], [r["ustack_per_s"] for r in rows], w, label="ustack (TUN)")
    ax.bar([x + w / 2 for x in xs], [r["kernel_per_s"] for r in rows], w, label=doc["reference"])
    for x, r in zip(xs, rows, strict=True):
        if r["target_per_s"]:
            ax.hlines(r["target_per_s"], x - 0.45, x + 0.45, colors="red", linestyles="--")
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)
    ax.set_xticks(list(xs), [r["mode"] for r in rows])
    ax.set_ylabel("per second (log); red dashes: ustack target")
    ax.set_title(f"HTTP GET {PATH} with wrk (median of {doc['runs']})")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=None, help=f"wrk duration ({SECONDS})")
    p.add_argument(
        "--count-calls",
        type=int,
        default=None,
        help=f"new connections with cProfile on, for calls per connection ({COUNT_CALLS})",
    )
    args = p.parse_args()
    c.setup()
    c.need("wrk")
    machine = c.machine()
    print(f"connrate: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    print(render(doc))
    path = c.write_json(args.out, "connrate", doc)
    plot(doc, args.out / "connrate.png")
    print(f"wrote {path} and {args.out / 'connrate.png'}")
    return 0 if all(r["all_ok"] for r in doc["rows"]) else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
