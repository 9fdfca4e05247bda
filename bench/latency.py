"""Round-trip latency of 64-byte echoes on one connection: ustack's echo against the kernel's.

A kernel client (blocking socket, ``TCP_NODELAY``) sends 64 bytes, waits for all 64 to come
back, and times that with ``perf_counter_ns``; after a warm-up it repeats ``--count`` times
(5,000). One round trip crosses the kernel's TCP twice and the server once, so for ustack it
includes two TUN crossings and one pass through the event loop, the stack and the echo
coroutine. The reference is the same client against a kernel echo server
(``bench/_refserver.py``, one epoll loop in Python) over veth, in the same run and interleaved:
its figure is the kernel's TCP plus the same kind of Python loop, so the difference is ustack.

Each run reports the median and the 99th percentile; the table shows the median of runs. A
third series, in the same runs, is ustack with ``--busy-poll 100``: after each batch it keeps
reading its TUN device for 100 us before going back to sleep, which takes the wake-up out of the
round trip (on a virtual machine an idle CPU's wake-up costs tens of microseconds) at the price
of CPU time, reported per round trip.

The ustack process's CPU time per round trip comes from /proc/PID/schedstat during the timed
runs. Apart from them, a second ``ustack serve`` started through ``bench/_profiled.py`` counts
the function calls one round trip costs it (cProfile on for ``--count-calls`` round trips,
2,000, three times; the median): a figure that, unlike times, hardly moves with the load on
the machine.

Every series is measured over IPv4 and IPv6 (``--family 4,6``) in the same runs, interleaved:
the same ``ustack serve`` processes answer on 10.7.0.2 and fd00:7::2, the veth reference carries
fd00:8::1/64 and fd00:8::2/64 too. The IPv6 rows show IPv6/IPv4, and closing lines say whether
IPv6's p50 and p99 are within 10 % of IPv4's (issue 11's target: no more than 10 % slower).
The cProfile call count stays an IPv4 figure.

    python bench/latency.py [--quick] [--runs N] [--count 5000] [--count-calls 2000]
                            [--family 4,6]

Writes bench/results/latency.json and latency.png (distribution of the median run).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

COUNT = 5000
WARMUP = 500
QUICK_COUNT = 1000
SIZE = 64
TIME_LIMIT = 60.0  # seconds per run, whatever the count
TARGET_P50_US = 40.0
BUSY_POLL_US = 100  # the busy-poll series: `ustack serve --busy-poll 100`
COUNT_CALLS = 2000  # round trips in the cProfile window
QUICK_COUNT_CALLS = 1000
CALLS_WARMUP = 200
CALLS_WINDOWS = 3  # cProfile windows; the median one is reported


def echo(sock: socket.socket, payload: bytes, count: int) -> int:
    """``count`` untimed round trips (bounded in time too); returns how many were made."""
    keep_going = c.bounded(count, TIME_LIMIT)
    i = 0
    while keep_going(i):
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                raise OSError("echo server closed the connection")
            got += chunk
        if got != payload:
            raise OSError("echo answered different bytes")
        i += 1
    return i


def count_calls(count: int) -> dict[str, Any]:
    """Function calls per round trip in a fresh, profiled ``ustack serve`` (cProfile counts,
    taken after a warm-up on the same connection)."""
    with c.UstackServe(mtu=1500, services="echo", profiled=True) as us:
        sock = c.connect(us.ns, us.address, 7)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(5.0)
            payload = bytes(range(SIZE))
            echo(sock, payload, CALLS_WARMUP)
            time.sleep(0.2)  # let the last delayed ACKs land outside the window
            result = us.count(lambda: echo(sock, payload, count), repeats=CALLS_WINDOWS)
        finally:
            sock.close()
    result["ok"] = result["operations"] == count and result["all_operations"]
    return result


def round_trips(ns: Any, address: str, count: int, warmup: int) -> dict[str, Any]:
    sock = c.connect(ns, address, 7)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(5.0)
    payload = bytes(range(SIZE))
    samples: list[float] = []
    errors = 0
    try:
        keep_going = c.bounded(count + warmup, TIME_LIMIT)
        i = 0
        while keep_going(i):
            t0 = time.perf_counter_ns()
            sock.sendall(payload)
            got = b""
            while len(got) < SIZE:
                chunk = sock.recv(SIZE - len(got))
                if not chunk:
                    raise OSError("echo server closed the connection")
                got += chunk
            t1 = time.perf_counter_ns()
            if got != payload:
                errors += 1
            if i >= warmup:
                samples.append((t1 - t0) / 1000)
            i += 1
    except OSError as exc:
        return {"ok": False, "error": str(exc), "samples_us": samples}
    finally:
        sock.close()
    return {
        "ok": errors == 0 and len(samples) == count,
        "count": len(samples),
        "errors": errors,
        "p50_us": c.percentile(samples, 50),
        "p99_us": c.percentile(samples, 99),
        "mean_us": sum(samples) / len(samples) if samples else float("nan"),
        "samples_us": samples,
    }


SERIES = ("ustack", "kernel", "ustack_busy")


def series_key(who: str, family: int) -> str:
    """``ustack``, ``kernel``, ``ustack_busy`` for IPv4 (the keys older results use), with
    ``_ipv6`` appended for IPv6."""
    return who if family == 4 else f"{who}_ipv6"


def timed_trips(us: c.UstackServe | None, ns: Any, address: str, count: int) -> dict[str, Any]:
    """One run of round trips; for a ustack server, its CPU and run-queue wait per trip too:
    how much of the round trip is ustack working, and how much waiting for a CPU."""
    if us is None:
        return round_trips(ns, address, count, WARMUP)
    assert us.proc is not None
    cpu0, wait0 = us.proc.sched()
    r = round_trips(ns, address, count, WARMUP)
    cpu1, wait1 = us.proc.sched()
    trips = count + WARMUP
    r["server_cpu_us_per_trip"] = (cpu1 - cpu0) / trips * 1e6
    r["server_wait_us_per_trip"] = (wait1 - wait0) / trips * 1e6
    return r


def run(args: Any) -> dict[str, Any]:
    runs = c.runs_of(args)
    count = args.count or (QUICK_COUNT if args.quick else COUNT)
    families = c.families_of(args)
    results: dict[str, list[dict[str, Any]]] = {
        series_key(who, f): [] for f in families for who in SERIES
    }
    with contextlib.ExitStack() as stack:
        us = stack.enter_context(c.UstackServe(mtu=1500, services="echo"))
        busy = stack.enter_context(
            c.UstackServe(mtu=1500, services="echo", extra=["--busy-poll", str(BUSY_POLL_US)])
        )
        veth = stack.enter_context(c.VethPair(1500, ipv6=6 in families))
        for f in families:
            stack.enter_context(c.RefServer(veth.server, veth.server_address(f)))
        for i in range(runs):
            for f in families:
                u = timed_trips(us, us.ns, us.address_of(f), count)
                k = timed_trips(None, veth.client, veth.server_address(f), count)
                b = timed_trips(busy, busy.ns, busy.address_of(f), count)
                results[series_key("ustack", f)].append(u)
                results[series_key("kernel", f)].append(k)
                results[series_key("ustack_busy", f)].append(b)
                print(
                    f"  run {i + 1}/{runs} IPv{f}: ustack p50 {u.get('p50_us', float('nan')):6.1f}"
                    f" us p99 {u.get('p99_us', float('nan')):6.1f} us; kernel p50 "
                    f"{k.get('p50_us', float('nan')):6.1f} us p99 "
                    f"{k.get('p99_us', float('nan')):6.1f} us; ustack --busy-poll {BUSY_POLL_US} "
                    f"p50 {b.get('p50_us', float('nan')):6.1f} us"
                    + ("" if u["ok"] and k["ok"] and b["ok"] else "  FAILED"),
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for who, rs in results.items():
        summary[who] = {
            "p50_us": c.median([r.get("p50_us", float("nan")) for r in rs]),
            "p99_us": c.median([r.get("p99_us", float("nan")) for r in rs]),
            "mean_us": c.median([r.get("mean_us", float("nan")) for r in rs]),
            "server_cpu_us_per_trip": c.median(
                [r.get("server_cpu_us_per_trip", float("nan")) for r in rs]
            ),
            "server_wait_us_per_trip": c.median(
                [r.get("server_wait_us_per_trip", float("nan")) for r in rs]
            ),
            "all_ok": all(r["ok"] for r in rs),
        }
    counted = args.count_calls or (QUICK_COUNT_CALLS if args.quick else COUNT_CALLS)
    calls = count_calls(counted)
    print(
        f"  calls: {calls['calls_per_op']:.1f} per round trip ({calls['python_calls_per_op']:.1f} "
        f"Python functions, {calls['builtin_calls_per_op']:.1f} C builtins) over "
        f"{calls['operations']} round trips, median of {len(calls['windows'])} windows "
        f"{calls['calls_per_op_range'][0]:.1f}-{calls['calls_per_op_range'][1]:.1f}"
        + ("" if calls["ok"] else "  FAILED"),
        flush=True,
    )
    calls_on = summary["ustack"] if "ustack" in summary else summary["ustack_ipv6"]
    calls_on["calls_per_trip"] = calls["calls_per_op"]
    calls_on["python_calls_per_trip"] = calls["python_calls_per_op"]
    calls_on["builtin_calls_per_trip"] = calls["builtin_calls_per_op"]
    # Keep one run's raw samples (the median run by p50) for the chart; drop the rest.
    chart: dict[str, list[float]] = {}
    for who, rs in results.items():
        ordered = sorted(rs, key=lambda r: r.get("p50_us", float("inf")))
        chart[who] = [round(x, 1) for x in ordered[len(ordered) // 2]["samples_us"]]
        for r in rs:
            r.pop("samples_us", None)
    return {
        "payload_bytes": SIZE,
        "count": count,
        "warmup": WARMUP,
        "runs": runs,
        "target_p50_us": TARGET_P50_US,
        "busy_poll_us": BUSY_POLL_US,
        "families": families,
        "ipv6_tolerance": c.IPV6_TOLERANCE,
        "summary": summary,
        **ratios(summary),
        "per_run": results,
        "calls": calls,
        "median_run_samples_us": chart,
    }


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    """ustack/kernel per family (``ratio_p50`` is IPv4's, as before; ``ratio_p50_ipv6``), and
    IPv6/IPv4 for each series where both families were measured."""
    out: dict[str, float] = {}
    for f in (4, 6):
        u, k = summary.get(series_key("ustack", f)), summary.get(series_key("kernel", f))
        if u and k:
            tail = "" if f == 4 else "_ipv6"
            out[f"ratio_p50{tail}"] = c.ratio(u["p50_us"], k["p50_us"])
            out[f"ratio_p99{tail}"] = c.ratio(u["p99_us"], k["p99_us"])
    for who in SERIES:
        v4, v6 = summary.get(who), summary.get(series_key(who, 6))
        if v4 and v6:
            for q in ("p50", "p99"):
                out[f"ipv6_ipv4_{who}_{q}"] = c.ratio(v6[f"{q}_us"], v4[f"{q}_us"])
    return out


def render(doc: dict[str, Any]) -> str:
    fams = doc.get("families", [4])
    tables = [render_family(doc, f) for f in fams]
    s = doc["summary"]
    verdicts = []
    if 4 in fams and 6 in fams:
        for who, label in (("ustack", "ustack"), ("ustack_busy", "ustack --busy-poll"),
                           ("kernel", "kernel (reference)")):  # fmt: skip
            for q in ("p50", "p99"):
                line = c.verdict_line(
                    f"{label} echo {q} (us)",
                    s[series_key(who, 6)][f"{q}_us"],
                    s[who][f"{q}_us"],
                    higher_is_better=False,
                )
                verdicts.append(line if who != "kernel" else line + " (for reference)")
    calls = doc.get("calls")
    ok = all(v["all_ok"] for v in s.values() if "all_ok" in v) and (not calls or calls["ok"])
    return "\n\n".join(tables) + "\n" + "\n".join(verdicts) + ("" if ok else "\n(some runs FAILED)")


def render_family(doc: dict[str, Any], family: int) -> str:
    """The table of one family; IPv6's has an IPv6/IPv4 column when IPv4 was measured too."""
    s = doc["summary"]
    u, k = s[series_key("ustack", family)], s[series_key("kernel", family)]
    busy = s.get(series_key("ustack_busy", family))
    tail = "" if family == 4 else "_ipv6"
    compare = family == 6 and "ustack" in s

    def v6_v4(who: str, q: str) -> str:
        r = doc.get(f"ipv6_ipv4_{who}_{q}")
        return "" if not compare or r is None else c.fmt(r, 2)

    rows = [
        ["p50 (us)", u["p50_us"], k["p50_us"], doc[f"ratio_p50{tail}"], v6_v4("ustack", "p50"),
         "<= 40"],
        ["p99 (us)", u["p99_us"], k["p99_us"], doc[f"ratio_p99{tail}"], v6_v4("ustack", "p99"),
         ""],
        ["mean (us)", u["mean_us"], k["mean_us"], "", "", ""],
        ["ustack CPU/trip (us)", u["server_cpu_us_per_trip"], "", "", "", ""],
        ["ustack CPU wait/trip (us)", u["server_wait_us_per_trip"], "", "", "", ""],
    ]  # fmt: skip
    if busy:
        n = doc["busy_poll_us"]
        ratio = c.ratio(busy["p50_us"], k["p50_us"])
        rows += [
            [f"p50, --busy-poll {n} (us)", busy["p50_us"], k["p50_us"], ratio,
             v6_v4("ustack_busy", "p50"), "<= 40"],
            [f"p99, --busy-poll {n} (us)", busy["p99_us"], k["p99_us"], "",
             v6_v4("ustack_busy", "p99"), ""],
            [f"CPU/trip, --busy-poll {n} (us)", busy["server_cpu_us_per_trip"], "", "", "", ""],
        ]  # fmt: skip
    calls = doc.get("calls")
    if calls and "calls_per_trip" in u:
        rows += [
            ["ustack calls/trip (cProfile)", calls["calls_per_op"], "", "", "", ""],
            ["  Python functions", calls["python_calls_per_op"], "", "", "", ""],
            ["  C builtins", calls["builtin_calls_per_op"], "", "", "", ""],
        ]
    head = f"64 B echo RTT, {c.family_name(family)}"
    return c.table([head, "ustack", "kernel", "ratio", "IPv6/IPv4", "target"], rows)


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for who, samples in doc["median_run_samples_us"].items():
        if not samples:
            continue
        ordered = sorted(samples)
        n = len(ordered)
        ax.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{who} (median run)")
    ax.axvline(TARGET_P50_US, color="red", linestyle="--", label="ustack p50 target")
    ax.set_xscale("log")
    ticks = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([], minor=True)
    all_samples = [x for xs in doc["median_run_samples_us"].values() for x in xs]
    if all_samples:
        ax.set_xlim(min(all_samples) * 0.8, max(all_samples) * 1.2)
    ax.set_xlabel("round-trip time (us, log)")
    ax.set_ylabel("fraction of round trips")
    ax.set_title(f"64-byte echo round trips, {doc['count']} per run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=None, help=f"round trips per run ({COUNT})")
    p.add_argument(
        "--count-calls",
        type=int,
        default=None,
        help=f"round trips with cProfile on, for calls per round trip ({COUNT_CALLS})",
    )
    c.add_family_option(p)
    args = p.parse_args()
    c.setup()
    machine = c.machine()
    print(f"latency: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    print(render(doc))
    path = c.write_json(args.out, "latency", doc)
    plot(doc, args.out / "latency.png")
    print(f"wrote {path} and {args.out / 'latency.png'}")
    ok = all(v["all_ok"] for v in doc["summary"].values())
    return 0 if ok and doc["calls"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
