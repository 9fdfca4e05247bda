"""Internet checksum throughput: the C extension (both kernels) against the pure-Python fallback
and against a plain C loop that only reads the buffer.

Every number is the median of repeated samples; each sample times many back-to-back calls of
``internet_checksum(buf)`` on a ``bytes`` object with ``time.perf_counter_ns``, so it includes the
Python call (the cost a caller pays). The implementations are sampled in turn, round after
round, so a burst of noise on a shared machine hits all of them alike and the ratios hold. The
reference is a tiny C program compiled at run time (``cc -O3 -march=native -funroll-loops``)
that sums the buffer as 64-bit words into a volatile sink: about the fastest any code can read
that much memory here, so "fraction of read loop" says how close the checksum gets.

Run: ``python bench/checksum.py [--quick] [--json PATH] [--png PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ustack.wire import _checksum_py  # noqa: E402

SIZES = (20, 40, 64, 576, 1500, 9000, 65536, 1 << 20)
RESULTS = ROOT / "bench" / "results"

# (what, size, limit, kind): kind "min_gbps", "max_ns" or "min_speedup".
TARGETS = (
    ("C-avx2", 1500, 20.0, "min_gbps"),
    ("C-avx2", 65536, 60.0, "min_gbps"),
    ("C-portable", 65536, 25.0, "min_gbps"),
    ("C", 40, 60.0, "max_ns"),
    ("C-avx2", 1500, 50.0, "min_speedup"),
    ("Python", 1500, 0.35, "min_gbps"),
)

REFERENCE_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile uint64_t sink;

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* argv: sample_ns samples size... ; prints "size median_ns_per_pass" per size. */
int main(int argc, char **argv)
{
    double sample_ns = atof(argv[1]);
    int samples = atoi(argv[2]);
    size_t biggest = 8;
    for (int i = 3; i < argc; i++) {
        size_t n = strtoull(argv[i], NULL, 10);
        biggest = n > biggest ? n : biggest;
    }
    uint64_t *buf = aligned_alloc(64, (biggest + 71) / 64 * 64);
    memset(buf, 0x5a, (biggest + 71) / 64 * 64);
    double *t = malloc(sizeof(double) * samples);
    for (int i = 3; i < argc; i++) {
        size_t n = strtoull(argv[i], NULL, 10), words = (n + 7) / 8;
        long iters = 1;
        for (;;) {
            double t0 = now_ns();
            for (long k = 0; k < iters; k++) {
                uint64_t s = 0;
                for (size_t j = 0; j < words; j++) {
                    s += buf[j];
                }
                sink = s;
                __asm__ volatile("" ::: "memory");
            }
            double dt = now_ns() - t0;
            if (dt >= sample_ns / 4 || iters > (1L << 40)) {
                iters = (long)(iters * sample_ns / (dt > 1 ? dt : 1)) + 1;
                break;
            }
            iters *= 4;
        }
        for (int r = 0; r < samples; r++) {
            double t0 = now_ns();
            for (long k = 0; k < iters; k++) {
                uint64_t s = 0;
                for (size_t j = 0; j < words; j++) {
                    s += buf[j];
                }
                sink = s;
                __asm__ volatile("" ::: "memory");
            }
            t[r] = (now_ns() - t0) / iters;
        }
        qsort(t, samples, sizeof(double), cmp);
        printf("%zu %.4f\n", n, t[samples / 2]);
    }
    return 0;
}
"""


def _load_c() -> tuple[ModuleType | None, str]:
    try:
        from ustack.wire import _checksum
    except ImportError as exc:
        return None, f"C extension not built: {exc}"
    return _checksum, ""


def _calls_for(func: Callable[[bytes], int], buf: bytes, sample_ns: float) -> int:
    calls = 1
    while True:
        t = _time_calls(func, buf, calls)
        if t * calls >= sample_ns / 8 or calls >= 1 << 26:
            return max(1, int(calls * sample_ns / max(t * calls, 1.0)))
        calls *= 4


def _time_calls(func: Callable[[bytes], int], buf: bytes, calls: int) -> float:
    rng = range(calls)
    t0 = time.perf_counter_ns()
    for _ in rng:
        func(buf)
    return (time.perf_counter_ns() - t0) / calls


def _reference(
    sizes: tuple[int, ...], sample_ns: float, samples: int
) -> tuple[dict[int, float], str]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return {}, "no C compiler found: reference skipped"
    with tempfile.TemporaryDirectory(prefix="ustack-bench-") as tmp:
        src = Path(tmp) / "readloop.c"
        exe = Path(tmp) / "readloop"
        src.write_text(REFERENCE_C)
        used = ""
        for flags in (["-O3", "-march=native", "-funroll-loops"], ["-O2"]):
            build = subprocess.run(
                [cc, *flags, "-o", str(exe), str(src)], capture_output=True, text=True
            )
            if build.returncode == 0:
                used = " ".join([Path(cc).name, *flags])
                break
        else:
            return {}, f"reference did not compile: {build.stderr.strip()[:200]}"
        run = subprocess.run(
            [str(exe), str(sample_ns), str(samples), *map(str, sizes)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if run.returncode != 0:
            return {}, f"reference failed: {run.stderr.strip()[:200]}"
    out = {}
    for line in run.stdout.split("\n"):
        if line.strip():
            size, ns = line.split()
            out[int(size)] = float(ns)
    return out, used


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(quick: bool) -> dict[str, Any]:
    # Many short samples, shorter than a scheduler time slice: on a shared machine a preempted
    # sample is an outlier that the median drops.
    sample_ns = 0.3e6 if quick else 0.5e6
    samples = 21 if quick else 101
    c_mod, c_missing = _load_c()
    start_kernel = c_mod._kernel() if c_mod is not None else ""
    load_before = os.getloadavg()[0]
    impls: list[tuple[str, Callable[[bytes], int], str | None]] = []
    if c_mod is not None:
        for available in ("avx2", "portable"):
            if available in c_mod.KERNELS:
                impls.append((f"C-{available}", c_mod.internet_checksum, available))
    impls.append(("Python", _checksum_py.internet_checksum, None))

    rng = random.Random(1071)
    # Warm up (CPU clock, caches, lazily created objects) so the first size is not penalised.
    warm = rng.randbytes(1500)
    deadline = time.perf_counter_ns() + 300_000_000
    while time.perf_counter_ns() < deadline:
        for _, func, _ in impls:
            _time_calls(func, warm, 100)
    results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name, _, _ in impls}
    floor: dict[int, float] = {}
    for size in SIZES:
        buf = rng.randbytes(size)
        plan = []
        for name, func, kernel in impls:
            if c_mod is not None and kernel is not None:
                c_mod._set_kernel(kernel)
            plan.append((name, func, kernel, _calls_for(func, buf, sample_ns)))
        floor_calls = _calls_for(len, buf, sample_ns)
        times: dict[str, list[float]] = {name: [] for name, _, _ in impls}
        floor_times = []
        for _ in range(samples):
            for name, func, kernel, calls in plan:
                if c_mod is not None and kernel is not None:
                    c_mod._set_kernel(kernel)
                times[name].append(_time_calls(func, buf, calls))
            floor_times.append(_time_calls(len, buf, floor_calls))
        for name, ts in times.items():
            ns = statistics.median(ts)
            results[name][size] = {
                "ns_per_call": ns,
                "gb_per_s": size / ns,
                "best_ns_per_call": min(ts),
                "samples_ns": [round(t, 2) for t in ts],
            }
        floor[size] = statistics.median(floor_times)
    if c_mod is not None:
        c_mod._set_kernel(start_kernel)

    ref, ref_note = _reference(SIZES, sample_ns, samples)
    if ref:
        results["C read loop"] = {
            size: {"ns_per_call": ns, "gb_per_s": size / ns} for size, ns in ref.items()
        }
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_average_1min": load_before,
        },
        "settings": {"quick": quick, "samples": samples, "sample_ms": sample_ns / 1e6},
        "c_extension": "" if c_mod is not None else c_missing,
        "reference": ref_note if not ref else f"plain C read loop ({ref_note})",
        "call_floor_ns": floor,
        "results": results,
    }


def evaluate(data: dict[str, Any]) -> list[dict[str, Any]]:
    results = data["results"]
    verdicts = []
    for what, size, limit, kind in TARGETS:
        value: float | None = None
        note = ""
        if kind == "min_gbps":
            label = f"{what} >= {limit:g} GB/s at {size} B"
            if what in results:
                value = results[what][size]["gb_per_s"]
        elif kind == "max_ns":
            label = f"{what} <= {limit:g} ns/call at {size} B (every C kernel)"
            kernels = [k for k in results if k.startswith("C-")]
            if kernels:
                value = max(results[k][size]["ns_per_call"] for k in kernels)
        else:
            label = f"{what} >= {limit:g}x Python at {size} B"
            if what in results:
                value = results["Python"][size]["ns_per_call"] / results[what][size]["ns_per_call"]
        if value is None:
            met = False
            note = data["c_extension"] or f"{what} not available on this machine"
        elif kind == "max_ns":
            met = value <= limit
        else:
            met = value >= limit
        verdicts.append({"target": label, "value": value, "limit": limit, "met": met, "note": note})
    return verdicts


def report(data: dict[str, Any], verdicts: list[dict[str, Any]]) -> str:
    results = data["results"]
    names = list(results)
    lines = [
        f"Internet checksum, {data['machine']['cpu']}, Python {data['machine']['python']}"
        f" ({data['settings']['samples']} samples of ~{data['settings']['sample_ms']:g} ms,"
        " median; ns/call includes the Python call; C read loop is plain C)",
        f"load average at start: {data['machine']['load_average_1min']:.2f}"
        " (other work on the machine slows every column)",
        "",
        f"{'size':>8} " + "".join(f"{n:>22}" for n in names),
        f"{'':>8} " + "".join(f"{'ns/call':>12}{'GB/s':>10}" for _ in names),
    ]
    for size in SIZES:
        row = f"{size:>8} "
        for n in names:
            r = results[n].get(size)
            row += f"{r['ns_per_call']:>12.1f}{r['gb_per_s']:>10.2f}" if r else f"{'-':>22}"
        lines.append(row)
    ref = results.get("C read loop")
    if ref:
        lines.append("")
        lines.append("fraction of the C read loop's GB/s:")
        for n in names:
            if n.startswith("C-"):
                fr = "  ".join(
                    f"{size}: {results[n][size]['gb_per_s'] / ref[size]['gb_per_s']:.0%}"
                    for size in (1500, 9000, 65536, 1 << 20)
                )
                lines.append(f"  {n:<11} {fr}")
    floor = data["call_floor_ns"]
    lines.append("")
    lines.append(
        f"call floor (len(buf) in the same loop): {floor[40]:.1f} ns; reference: {data['reference']}"
    )
    if data["c_extension"]:
        lines.append(data["c_extension"])
    lines.append("")
    for v in verdicts:
        value = "n/a" if v["value"] is None else f"{v['value']:.2f}"
        extra = f" ({v['note']})" if v["note"] else ""
        lines.append(f"{'met    ' if v['met'] else 'NOT met'}  {v['target']}: {value}{extra}")
    return "\n".join(lines)


def chart(data: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: chart skipped"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, rows in data["results"].items():
        sizes = sorted(rows)
        style = "--" if name == "C read loop" else "-o"
        ax1.plot(sizes, [rows[s]["gb_per_s"] for s in sizes], style, label=name, markersize=4)
        ax2.plot(sizes, [rows[s]["ns_per_call"] for s in sizes], style, label=name, markersize=4)
    for ax, ylabel in ((ax1, "GB/s"), (ax2, "ns per call")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("buffer size (bytes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend()
    ax1.set_title("throughput")
    ax2.set_title("latency per call (incl. Python call)")
    fig.suptitle(f"ustack internet_checksum on {data['machine']['cpu']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    parser.add_argument("--json", type=Path, default=RESULTS / "checksum.json", help="JSON output")
    parser.add_argument("--png", type=Path, default=RESULTS / "checksum.png", help="chart output")
    args = parser.parse_args(argv)

    started = time.monotonic()
    data = measure(args.quick)
    verdicts = evaluate(data)
    data["targets"] = verdicts
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    print(report(data, verdicts))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nJSON written to {args.json}; {chart(data, args.png)}; took {data['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
