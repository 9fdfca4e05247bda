"""Run every benchmark, then rewrite the performance section of README.md from their results.

Each benchmark runs as its own process (exactly as when run alone) with ``--quick`` and
``--runs`` passed through, and writes its JSON under bench/results/. The README is then
regenerated from those files: only the region between ``<!-- PERFORMANCE:BEGIN ... -->`` and
``<!-- PERFORMANCE:END -->`` changes. ``--readme-only`` skips the runs and just rewrites that
region from the JSON already there.

    python bench/run_all.py [--quick] [--runs N] [--only throughput,latency] [--readme-only]
                            [--soak MINUTES]
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

# (name, extra arguments in quick mode, time limit in seconds)
BENCHES: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("checksum", ("--quick",), 300),
    ("netsim", ("--size", "2000000"), 300),
    ("throughput", ("--quick",), 600),
    ("latency", ("--quick",), 300),
    ("connrate", ("--quick",), 300),
    ("concurrency", ("--quick",), 600),
    ("loss", ("--quick",), 900),  # two directions, five loss rates
    ("synflood", ("--quick",), 600),  # baseline and two flood rates, ustack and kernel
    ("soak", ("--quick",), 900),  # only when asked for (LONG): 10 minutes by default
)
OURS = {"throughput", "latency", "connrate", "concurrency", "loss", "synflood", "soak"}
LONG = {"soak"}  # run only with --soak MINUTES or when named in --only
SOAK_SLACK = 300.0  # seconds a soak gets beyond its minutes: start-up, drain and clean-up
STOP_GRACE = 60.0  # seconds a benchmark gets to clean up after SIGTERM
README = c.ROOT / "README.md"
BEGIN = re.compile(r"<!-- PERFORMANCE:BEGIN[^>]*-->")
END = "<!-- PERFORMANCE:END -->"


def run_benchmarks(args: argparse.Namespace) -> dict[str, int | None]:
    only = set(args.only.split(",")) if args.only else None
    status: dict[str, int | None] = {}
    for name, quick_args, limit in BENCHES:
        if only is not None and name not in only:
            continue
        if name in LONG and not args.soak and only is None:
            continue
        script = c.BENCH / f"{name}.py"
        if not script.exists():
            status[name] = None
            continue
        cmd = [sys.executable, str(script)]
        if args.quick:
            cmd += quick_args
        if name in OURS:
            if args.runs:
                cmd += ["--runs", str(args.runs)]
            cmd += ["--out", str(args.out)]
        if name == "soak" and args.soak:
            cmd += ["--minutes", f"{args.soak:g}"]
            limit = args.soak * 60 + SOAK_SLACK
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=c.ROOT)
        try:
            status[name] = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            print(f"== {name}: over its {limit:.0f} s limit; stopping it", flush=True)
            status[name] = _stop(proc)
        except KeyboardInterrupt:
            _stop(proc)
            raise
        print(f"== {name}: exit {status[name]} in {time.monotonic() - t0:.0f} s", flush=True)
    return status


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM first: every benchmark turns it into KeyboardInterrupt and removes its
    namespaces and servers on the way out; SIGKILL only if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# -- README section ------------------------------------------------------------------------------


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _pct(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * 100:.1f} %" if value < 0.995 else f"{value * 100:.0f} %"


def _times(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}x"


def _span(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] * 100 for r in rows if key in r and not math.isnan(r[key])]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.0f} %" if round(low) == round(high) else f"{low:.0f}-{high:.0f} %"


def _busy_verdict(rows: list[dict[str, Any]]) -> str:
    busy = [r["ustack_cpu"] + r.get("ustack_runqueue_wait", 0.0) for r in rows]
    busy = [b for b in busy if not math.isnan(b)]
    if not busy:
        return "."
    if min(busy) >= 0.9:
        return ": its one thread is the bottleneck (CPU-bound), on a core it shared."
    return (
        f": it sat idle up to {(1 - min(busy)) * 100:.0f} % of the time, so not only CPU limits it."
    )


def _segments(rows: list[dict[str, Any]]) -> str:
    seen = {(r["mtu"], r.get("offload", "off")): r for r in rows if "ustack_avg_segment_sent" in r}
    if not seen:
        return ""
    cells = [
        f"{r['ustack_avg_segment_sent']:.0f} B sent / {r['ustack_avg_segment_received']:.0f} B "
        f"received at MTU {mtu} with offloads {offload}"
        for (mtu, offload), r in sorted(seen.items())
    ]
    return (
        " ustack's average data segment as its TCP formed it (with offloads on, the kernel "
        "cuts the super-segments into MTU-sized packets, or delivers them whole): "
        + "; ".join(cells)
        + "."
    )


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def _calls_note(cr: dict[str, Any]) -> str:
    """ustack's cProfile call counts (and CPU time under wrk) per connection and per request."""
    cells = [
        f"{_num(r['calls_per_op'])} per {r['mode'][:-1]} ({_num(r['python_calls_per_op'])} to "
        f"Python functions; {_num(r.get('ustack_cpu_us_per_op'), 0)} µs of CPU under wrk)"
        for r in cr["rows"]
        if "calls_per_op" in r
    ]
    return " ustack's function calls (cProfile): " + "; ".join(cells) + "." if cells else ""


def _ipv6_tolerance(doc: dict[str, Any]) -> float:
    return float(doc.get("ipv6_tolerance", 0.10))


def _ipv6_throughput_rows(tp: dict[str, Any]) -> list[list[str]]:
    """Issue 11's IPv6 rows at MTU 1500 (offloads on and off), each against IPv4 from the
    same run: the target is at most 10 % below IPv4."""
    tol = _ipv6_tolerance(tp)
    rows = []
    for r in tp["rows"]:
        if r.get("family") != 6 or r["mtu"] != 1500 or "ipv4_ustack_mb_s" not in r:
            continue
        arrow = r["direction"].replace("->", " → ")
        floor = r["ipv4_ustack_mb_s"] * (1 - tol)
        rows.append(
            [
                f"bulk {arrow}, MTU 1500, offloads {r['offload']}, **IPv6** "
                f"(IPv6/IPv4 {_num(r['ratio_ipv6_ipv4'], 2)}) (MB/s)",
                _num(r["ustack_mb_s"], 1),
                _num(r["kernel_mb_s"]),
                _pct(r["ratio"]),
                f"≥ {_num(floor, 1)} (IPv4 - {tol * 100:g} %)",
                _met(None if math.isnan(floor) else r["ustack_mb_s"] >= floor),
            ]
        )
    return rows


def _ipv6_echo_rows(lat: dict[str, Any]) -> list[list[str]]:
    """The IPv6 echo p50 against IPv4's from the same run: at most 10 % above it."""
    s = lat["summary"]
    u4, u6, k6 = s.get("ustack"), s.get("ustack_ipv6"), s.get("kernel_ipv6")
    if not (u4 and u6 and k6):
        return []
    tol = _ipv6_tolerance(lat)
    ceiling = u4["p50_us"] * (1 + tol)
    return [
        [
            "64 B echo round trip, p50, **IPv6** "
            f"(IPv6/IPv4 {_num(c.ratio(u6['p50_us'], u4['p50_us']), 2)}) (µs)",
            _num(u6["p50_us"], 1),
            _num(k6["p50_us"], 1),
            _times(c.ratio(u6["p50_us"], k6["p50_us"])),
            f"≤ {_num(ceiling, 1)} (IPv4 + {tol * 100:g} %)",
            _met(None if math.isnan(ceiling) else u6["p50_us"] <= ceiling),
        ]
    ]


def performance_rows(out: Path) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """The summary table (metric, ustack, kernel, ustack/kernel, target, met) and the docs used."""
    rows: list[list[str]] = []
    docs: list[dict[str, Any]] = []
    tp = c.load_result(out, "throughput")
    if tp:
        docs.append(tp)
        for r in tp["rows"]:
            if r.get("family", 4) != 4:
                continue  # IPv6 rows follow, for MTU 1500 only (_ipv6_rows)
            target = r.get("target_mb_s")
            arrow = r["direction"].replace("->", " → ")
            offload = f", offloads {r['offload']}" if "offload" in r else ""
            rows.append(
                [
                    f"bulk {arrow}, MTU {r['mtu']}{offload} (MB/s)",
                    _num(r["ustack_mb_s"], 1),
                    _num(r["kernel_mb_s"]),
                    _pct(r["ratio"]),
                    f"≥ {target:g}" if target else "",
                    _met(r["ustack_mb_s"] >= target if target else None),
                ]
            )
        rows += _ipv6_throughput_rows(tp)
    lat = c.load_result(out, "latency")
    if lat:
        docs.append(lat)
        u, k = lat["summary"]["ustack"], lat["summary"]["kernel"]
        rows.append(
            [
                "64 B echo round trip, p50 (µs)",
                _num(u["p50_us"], 1),
                _num(k["p50_us"], 1),
                _times(lat["ratio_p50"]),
                f"≤ {lat['target_p50_us']:g}",
                _met(u["p50_us"] <= lat["target_p50_us"]),
            ]
        )
        rows += _ipv6_echo_rows(lat)
        busy = lat["summary"].get("ustack_busy")
        if busy:
            rows.append(
                [
                    f"64 B echo round trip, p50, `--busy-poll {lat['busy_poll_us']}` (µs)",
                    _num(busy["p50_us"], 1),
                    _num(k["p50_us"], 1),
                    _times(c.ratio(busy["p50_us"], k["p50_us"])),
                    f"≤ {lat['target_p50_us']:g}",
                    _met(busy["p50_us"] <= lat["target_p50_us"]),
                ]
            )
        rows.append(
            [
                "64 B echo round trip, p99 (µs)",
                _num(u["p99_us"], 1),
                _num(k["p99_us"], 1),
                _times(lat["ratio_p99"]),
                "",
                "",
            ]
        )
    cr = c.load_result(out, "connrate")
    if cr:
        docs.append(cr)
        for r in cr["rows"]:
            target = r.get("target_per_s")
            rows.append(
                [
                    f"{r['mode']} per second (HTTP, wrk)",
                    _num(r["ustack_per_s"]),
                    _num(r["kernel_per_s"]),
                    _pct(r["ratio"]),
                    f"≥ {target:,.0f}" if target else "",
                    _met(r["ustack_per_s"] >= target if target else None),
                ]
            )
    cc = c.load_result(out, "concurrency")
    if cc:
        docs.append(cc)
        u, k = cc["summary"]["ustack"], cc["summary"]["kernel"]
        n = cc["connections"]
        target = cc["target_bytes_per_conn"]
        rows.append(
            [
                f"{n:,} connections: memory per connection (bytes)",
                _num(u["bytes_per_conn"]),
                "in kernel memory",
                "",
                f"≤ {target:,.0f}",
                _met(u["bytes_per_conn"] <= target and u["opened"] >= n),
            ]
        )
        open_target = cc.get("target_open_seconds")
        rows.append(
            [
                f"{n:,} connections: time to open all (s)",
                _num(u["open_seconds"], 2),
                _num(k["open_seconds"], 2),
                _times(c.ratio(u["open_seconds"], k["open_seconds"])),
                f"≤ {open_target:g}" if open_target else "",
                _met(u["open_seconds"] <= open_target if open_target else None),
            ]
        )
        sans = cc.get("sans_io") or {}
        est, tw = sans.get("established"), sans.get("time_wait")
        if est:
            rows.append(
                [
                    f"{est['connections']:,} established, TCP core only (bytes each, tracemalloc)",
                    _num(est["bytes_per_conn"]),
                    "",
                    "",
                    "",
                    "",
                ]
            )
        if tw:
            tw_target = sans.get("target_time_wait_bytes")
            rows.append(
                [
                    f"{tw['connections']:,} in TIME-WAIT (bytes each, tracemalloc)",
                    _num(tw["bytes_per_conn"]),
                    "",
                    "",
                    f"≤ {tw_target:g}" if tw_target else "",
                    _met(tw["bytes_per_conn"] <= tw_target if tw_target else None),
                ]
            )
        rows.append(
            [
                f"{n:,} connections: echoing correctly afterwards",
                f"{u['echoed_ok']:,.0f}",
                f"{k['echoed_ok']:,.0f}",
                "",
                f"{n:,}",
                _met(u["echoed_ok"] >= n),
            ]
        )
    sf = c.load_result(out, "synflood")
    if sf:
        docs.append(sf)
        by = {(r["server"], r["flood"]): r for r in sf["rows"]}
        u, k = by.get(("ustack", "10000")), by.get(("kernel", "10000"))
        if u:
            rows.append(
                [
                    "legitimate connections succeeding under a 10,000 SYN/s flood",
                    _pct(u["success"]),
                    _pct(k["success"]) if k else "-",
                    "",
                    "≥ 99 %",
                    _met(sf["target"].get("success_met")),
                ]
            )
            growth = sf["target"].get("rss_growth")
            rows.append(
                [
                    "RSS growth, second vs first half of that flood",
                    "-" if growth is None else f"{growth * 100:+.1f} %",
                    "",
                    "",
                    "≤ +5 %",
                    _met(sf["target"].get("memory_met")),
                ]
            )
    soak = c.load_result(out, "soak")
    if soak:
        docs.append(soak)
        v = soak["verdicts"]
        growth = v["memory"].get("growth")
        rows.append(
            [
                f"soak, {soak['minutes']:g} min at {soak['loss_percent']:g} % loss: RSS growth "
                "after warm-up; table drained; client errors (ustack / kernel)",
                ("-" if growth is None else f"{growth * 100:+.1f} %")
                + f"; {'yes' if v['drain']['met'] else 'no'}; {v['errors']['ustack']}",
                str(v["errors"]["kernel"]),
                "",
                "≤ +5 %; yes; ≤ kernel + 0.1 %",
                _met(v["met"]),
            ]
        )
    return rows, docs


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _loss_rows(
    doc: dict[str, Any],
) -> tuple[list[str], dict[str, dict[float, dict[str, Any]]], dict[float, dict[str, Any]]]:
    """Directions, their rows by loss rate, and netsim's rows by loss rate. Files written before
    both directions were measured (ustack sending only, netsim inside each row) read too."""
    rows = doc["rows"]
    if rows and "direction" not in rows[0]:
        sims = {r["loss_percent"]: r for r in rows}
        return ["ustack->kernel"], {"ustack->kernel": sims}, sims
    directions = doc.get("directions") or list(dict.fromkeys(r["direction"] for r in rows))
    by_dir = {d: {r["loss_percent"]: r for r in rows if r["direction"] == d} for d in directions}
    sims = {s["loss_percent"]: s for s in doc.get("netsim", {}).get("rows", [])}
    return directions, by_dir, sims


def _loss_cell(r: dict[str, Any] | None, who: str) -> str:
    if r is None:
        return "-"
    cell = f"{_num(r[f'{who}_mb_s'], 2)} ({_pct(r[f'{who}_relative'])})"
    done, runs = r.get(f"{who}_complete"), r.get("runs")
    if done is not None and runs and done < runs:
        cell += f", {done}/{runs} complete"
    return cell


def loss_section(out: Path) -> str:
    doc = c.load_result(out, "loss")
    if not doc:
        return ""
    directions, by_dir, sims = _loss_rows(doc)
    losses = list(dict.fromkeys(r["loss_percent"] for r in doc["rows"]))
    headers = ["loss %"]
    for d in directions:
        arrow = d.replace("->", " → ")
        headers += [f"{arrow}, MB/s", "kernel → kernel, MB/s", "met"]
    headers.append("netsim, Mbit/s")
    rows = []
    for loss in losses:
        cells = [f"{loss:g}"]
        for d in directions:
            r = by_dir[d].get(loss)
            met = r.get("target_met") if r else None
            cells += [_loss_cell(r, "ustack"), _loss_cell(r, "kernel"), _met(met)]
        sim = sims.get(loss)
        cells.append(
            f"{_num(sim['netsim_mbit'], 2)} ({_pct(sim['netsim_relative'])})" if sim else "-"
        )
        rows.append(cells)
    ns = doc["netsim"]
    how = {
        "ustack->kernel": "ustack → kernel: the kernel GETs `/bytes/N` from ustack",
        "kernel->ustack": "kernel → ustack: the kernel POSTs N bytes to ustack's `/sha256`, "
        "complete when the answer is their SHA-256",
    }
    return (
        f"Goodput under random loss on both directions of the path "
        f"({doc['size_bytes'] / 1e6:g} MB per transfer, at most {doc['seconds_limit']:g} s; in "
        f"brackets: share of the loss-free figure). "
        + "; ".join(how[d] for d in directions if d in how)
        + ". Kernel reference: the same transfers over veth with offloads off and iptables "
        "dropping at random. Met: ustack keeps at least the kernel's share of its loss-free "
        "goodput and completes every transfer. netsim: two ustack hosts in virtual time over "
        f"{ns['rate_bit_s'] / 1e6:g} Mbit/s, {ns['rtt_s'] * 1e3:g} ms RTT.\n\n"
        + _md_table(headers, rows)
    )


def checksum_section(out: Path) -> str:
    doc = c.load_result(out, "checksum")
    if not doc or "results" not in doc:
        return ""
    res = doc["results"]
    parts = []
    for impl in sorted(res):
        at = res[impl].get("1500") or res[impl].get(1500)
        big = res[impl].get("65536") or res[impl].get(65536)
        if at:
            cell = f"{impl} {at['gb_per_s']:.2f} GB/s at 1500 B"
            if big:
                cell += f", {big['gb_per_s']:.1f} GB/s at 64 KiB"
            parts.append(cell)
    met = [t for t in doc.get("targets", [])]
    text = "Internet checksum (`bench/checksum.py`): " + "; ".join(parts) + "."
    if met:
        text += (
            " Targets: "
            + "; ".join(f"{t['target']}: {_num(t['value'], 2)} ({_met(t['met'])})" for t in met)
            + "."
        )
    return text


def netsim_section(out: Path) -> str:
    doc = c.load_result(out, "netsim")
    if not doc or "rows" not in doc:
        return ""
    link = doc.get("link", {})
    intro = (
        f"Simulator (`bench/netsim.py`, virtual time, {doc.get('size_bytes', 0) / 1e6:g} MB over "
        f"{link.get('rate_bit_s', 0) / 1e6:g} Mbit/s, {link.get('rtt_s', 0) * 1e3:g} ms RTT, "
        f"{link.get('queue_packets', '?')}-packet queue)"
    )
    if not doc["rows"] or "variant" not in doc["rows"][0]:  # a file from before the variants
        cells = [f"{r['loss'] * 100:g} %: {r['goodput_mbit_median']:.2f}" for r in doc["rows"]]
        return intro + ", goodput in Mbit/s by loss rate: " + ", ".join(cells) + "."
    default = doc.get("default_variant")
    names = [n for n, v in doc["variants"].items() if v["available"]]
    by_key = {(r["variant"], r["loss"]): r for r in doc["rows"] if r.get("available")}
    headers = ["loss %", *(n + (" (default)" if n == default else "") for n in names)]
    headers += ["Mathis", "Padhye"]
    rows = []
    for m in doc["models"]:
        cells = [f"{m['loss'] * 100:g}"]
        for n in names:
            r = by_key[(n, m["loss"])]
            cells.append(
                f"{_num(r['goodput_mbit_median'], 2)} ({_num(r['retransmitted_per_lost'], 2)})"
                + ("" if r["all_ok"] else " unfinished")
            )
        cells += [_num(m["mathis_mbit"], 2), _num(m["padhye_mbit"], 2)]
        rows.append(cells)
    text = (
        f"{intro}, median goodput in Mbit/s of {doc['seeds']} seeds per TCP variant, with "
        "retransmitted / lost payload bytes in brackets (1.0: every loss repaired exactly once)."
    )
    skipped = [n for n, v in doc["variants"].items() if not v["available"]]
    if skipped:
        text += " Not available in this build, so not measured: " + ", ".join(skipped) + "."
    targets = doc.get("targets") or []
    if targets:
        text += (
            f" Targets for {default}: "
            + "; ".join(f"{t['target']}: {_num(t['value'], 2)} ({_met(t['met'])})" for t in targets)
            + "."
        )
    return text + "\n\n" + _md_table(headers, rows)


def render_section(out: Path) -> str:
    rows, docs = performance_rows(out)
    if not docs:
        return "No benchmark results yet: run `python bench/run_all.py` (as root)."
    machine = docs[0]["machine"]
    dates = sorted({d["machine"]["date"] for d in docs})
    runs = sorted({d["runs"] for d in docs})
    loads = [d["machine"]["load_average_1min"] for d in docs]
    parts = [
        "## Performance",
        "",
        f"Measured {dates[0]}"
        + (f" to {dates[-1]}" if len(dates) > 1 else "")
        + f" on {c.machine_line(machine).rsplit(', load', 1)[0]}"
        + f" (1-minute load average {min(loads):g} to {max(loads):g} during the runs: other work "
        "shared the machine, so absolute numbers are noisy; ratios less so). ustack runs as "
        "`ustack serve` on a TUN device in a private network namespace; the kernel reference is "
        "the same client against kernel sockets over a veth pair between two namespaces, "
        f"measured in the same run. Every figure is the median of {'/'.join(map(str, runs))} "
        "runs. MB = 10^6 bytes. Reproduce with `python bench/run_all.py` (root; about 10 "
        "minutes); each `bench/*.py` also runs alone and takes `--quick`.",
        "",
        _md_table(["metric", "ustack", "kernel", "ustack / kernel", "target", "met"], rows),
        "",
    ]
    notes = []
    cr = c.load_result(out, "connrate")
    if cr:
        notes.append(
            f"Connection and request rates: {cr['client']}; reference: {cr['reference']}."
            + _calls_note(cr)
        )
    lat = c.load_result(out, "latency")
    if lat:
        u = lat["summary"]["ustack"]
        notes.append(
            f"Echo: {lat['count']:,} round trips per run after {lat['warmup']} warm-up, blocking "
            "client with TCP_NODELAY; the kernel reference echo server is a Python epoll loop. "
            "ustack's own CPU time per round trip: "
            f"{_num(u.get('server_cpu_us_per_trip'), 0)} µs"
            + (
                f"; function calls per round trip (cProfile): {_num(u['calls_per_trip'])}, of "
                f"which {_num(u['python_calls_per_trip'])} to Python functions."
                if "calls_per_trip" in u
                else "."
            )
        )
    cc = c.load_result(out, "concurrency")
    if cc:
        notes.append(
            "Memory per connection is the growth of the ustack process's VmRSS with all "
            "connections open and echoed, divided by their number; the kernel keeps its "
            "connections in kernel memory, so only time and correctness compare."
        )
    tp = c.load_result(out, "throughput")
    if tp:
        notes.append(
            f"Bulk: one connection, {tp['size_bytes'] / 1e6:g} MB or {tp['seconds_limit']:g} s, "
            "kernel client with 1 MiB socket buffers; ustack's discard service "
            "(kernel → ustack) and `GET /bytes/N` (ustack → kernel). During these transfers the "
            f"ustack process was on a CPU {_span(tp['rows'], 'ustack_cpu')} of the time and "
            f"runnable but waiting for one {_span(tp['rows'], 'ustack_runqueue_wait')}"
            + _busy_verdict(tp["rows"])
            + _segments(tp["rows"])
        )
    parts += [" ".join(notes), ""] if notes else []
    for section in (loss_section(out), checksum_section(out), netsim_section(out)):
        if section:
            parts += [section, ""]
    charts = [
        f"[{name}](bench/results/{name}.png)"
        for name in (
            "throughput",
            "latency",
            "connrate",
            "loss",
            "synflood",
            "soak",
            "checksum",
            "netsim",
        )
        if (out / f"{name}.png").exists()
    ]
    if charts:
        parts.append("Charts: " + ", ".join(charts) + ".")
    return "\n".join(parts).rstrip() + "\n"


def update_readme(out: Path, readme: Path = README) -> bool:
    text = readme.read_text()
    begin = BEGIN.search(text)
    end = text.find(END, begin.end() if begin else 0)
    if begin is None or end < 0:
        print(f"{readme}: no PERFORMANCE:BEGIN/END markers; README left alone", file=sys.stderr)
        return False
    new = text[: begin.end()] + "\n" + render_section(out) + text[end:]
    if new != text:
        readme.write_text(new)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    p.add_argument("--out", type=Path, default=c.RESULTS)
    p.add_argument("--readme-only", action="store_true", help="only regenerate the README")
    p.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="MINUTES",
        help="also run bench/soak.py for MINUTES (it is left out otherwise; --only soak runs it "
        "for its default 10 minutes, 1 with --quick)",
    )
    args = p.parse_args()
    c.handle_signals()
    status: dict[str, int | None] = {}
    if not args.readme_only:
        t0 = time.monotonic()
        status = run_benchmarks(args)
        print(f"== all done in {time.monotonic() - t0:.0f} s: {status}", flush=True)
    if update_readme(args.out):
        print(f"updated the performance section of {README}")
    print(render_section(args.out))
    return 0 if all(v == 0 for v in status.values() if v is not None) else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
