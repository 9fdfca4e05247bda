"""Where ``ustack serve`` spends its time under bulk and echo load: py-spy's top functions.

For each workload a fresh ``ustack serve`` (MTU 1500) is put under load from a kernel client in
its namespace, and after a warm-up ``py-spy record --format raw`` samples it for ``--seconds``
(10). The samples are then summed by function: **own** (the function was the innermost Python
frame: its own code, plus any C it called, such as ``os.read`` or a uvloop callback's C side)
and **total** (it was anywhere on the stack). Percentages are of the samples py-spy took while
the thread was busy (idle samples, waiting in the event loop, are not recorded); ``busy`` says
what share of the expected samples those were. Workloads:

* ``bulk-out``: ustack -> kernel, ``GET /bytes/N`` read into a 1 MiB buffer, repeated;
* ``bulk-in``: kernel -> ustack, sending to the discard service from a 1 MiB buffer, repeated;
* ``echo``: 64-byte echo round trips on one connection, TCP_NODELAY (the latency client loop).

py-spy pauses the process for each sample (``--nonblocking`` does not), so rates during the
window are a little lower than in the timed benchmarks; the shape is what this is for.

    python bench/pyspy_top.py [--seconds 10] [--rate 100] [--top 10] [--only echo,bulk-in]
        [--out DIR]

Writes DIR/pyspy-WORKLOAD.raw (py-spy's collapsed stacks) and DIR/pyspy-top.txt (the tables).
"""

from __future__ import annotations

import collections
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import throughput

WORKLOADS = ("bulk-out", "bulk-in", "echo")
SECONDS = 10.0
WARMUP = 1.0
RATE = 100
TOP = 10
BULK_SIZE = 200_000_000  # bytes per transfer; the loop repeats transfers until told to stop
LOAD_LIMIT = 120.0  # seconds: no load loop outlives this, whatever happens to py-spy
_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _bulk(direction: str) -> Callable[[c.UstackServe, threading.Event], int]:
    def load(us: c.UstackServe, stop: threading.Event) -> int:
        done = 0
        deadline = time.monotonic() + LOAD_LIMIT
        while not stop.is_set() and time.monotonic() < deadline:
            r = throughput.measure(direction, us.ns, us.address, BULK_SIZE, 5.0)
            if not r["ok"] and not stop.is_set():
                raise OSError(f"bulk transfer failed: {r.get('error', r)}")
            done += r["bytes"]
        return done

    return load


def _echo(us: c.UstackServe, stop: threading.Event) -> int:
    sock = c.connect(us.ns, us.address, 7)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(5.0)
    payload = bytes(range(64))
    trips = 0
    deadline = time.monotonic() + LOAD_LIMIT
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(len(payload) - len(got))
                if not chunk:
                    raise OSError("echo server closed the connection")
                got += chunk
            trips += 1
    finally:
        sock.close()
    return trips


LOADS: dict[str, tuple[str, str, Callable[[c.UstackServe, threading.Event], int]]] = {
    "bulk-out": ("ustack -> kernel, GET /bytes/N", "bytes", _bulk("ustack->kernel")),
    "bulk-in": ("kernel -> ustack, to discard", "bytes", _bulk("kernel->ustack")),
    "echo": ("64 B echo round trips", "round trips", _echo),
}


def aggregate(raw: str) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Samples, own samples by function and total samples by function, from py-spy's raw
    (collapsed-stack) output. Line numbers are dropped: a function is its name and file."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        n = int(m.group(2))
        frames = [_function(f) for f in m.group(1).split(";") if f]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    return samples, own, total


def _function(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    return f"{m.group(1)} ({m.group(2)})" if m else frame.strip()


def profile(name: str, args: Any) -> dict[str, Any]:
    label, unit, load = LOADS[name]
    raw_path = args.out / f"pyspy-{name}.raw"
    extra = ["--offload", args.offload] if args.offload else []
    with c.UstackServe(mtu=1500, services="echo,discard,http", extra=extra) as us:
        assert us.proc is not None
        stop = threading.Event()
        result: dict[str, Any] = {}

        def client() -> None:
            try:
                result["done"] = load(us, stop)
            except Exception as exc:  # reported below, after py-spy has finished
                result["error"] = repr(exc)

        thread = threading.Thread(target=client, name=f"load-{name}", daemon=True)
        thread.start()
        try:
            time.sleep(WARMUP)
            cpu0, wait0 = us.proc.sched()
            t0 = time.monotonic()
            cmd = [c.need("py-spy"), "record", "--pid", str(us.pid), "--duration",
                   str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                   "--function", "--output", str(raw_path)]  # fmt: skip
            if args.nonblocking:
                cmd.append("--nonblocking")
            spy = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
            elapsed = time.monotonic() - t0
            cpu1, wait1 = us.proc.sched()
        finally:
            stop.set()
            thread.join(LOAD_LIMIT)
    if spy.returncode != 0 or not raw_path.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy.stderr.strip()[-1000:]}")
    samples, own, total = aggregate(raw_path.read_text())
    return {
        "workload": name,
        "label": label,
        "unit": unit,
        "load_done": result.get("done"),
        "load_error": result.get("error"),
        "seconds": elapsed,
        "samples": samples,
        "busy": samples / (args.seconds * args.rate),
        "ustack_cpu": (cpu1 - cpu0) / elapsed,
        "ustack_runqueue_wait": (wait1 - wait0) / elapsed,
        "top": [
            {
                "function": f,
                "own_samples": n,
                "own": n / samples,
                "total": total[f] / samples,
            }
            for f, n in own.most_common(args.top)
        ],
        "raw": raw_path,
    }


def render(doc: dict[str, Any]) -> str:
    out = []
    for w in doc["workloads"]:
        done = w["load_done"]
        out.append(
            f"{w['workload']}: {w['label']}; {w['samples']} samples in {w['seconds']:.1f} s "
            f"(busy {w['busy'] * 100:.0f} % of samples; ustack CPU {w['ustack_cpu'] * 100:.0f} %, "
            f"CPU wait {w['ustack_runqueue_wait'] * 100:.0f} %)"
            + (f"; load: {done:,} {w['unit']} in all" if done is not None else "")
            + (f"; LOAD ERROR {w['load_error']}" if w["load_error"] else "")
        )
        out.append(" #  own %  total %  function (own: innermost Python frame)")
        out += [
            f"{i + 1:2}  {t['own'] * 100:5.1f}  {t['total'] * 100:7.1f}  {t['function']}"
            for i, t in enumerate(w["top"])
        ]
        out.append("")
    return "\n".join(out).rstrip()


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.set_defaults(out=Path(tempfile.gettempdir()) / "ustack-pyspy")
    p.add_argument("--seconds", type=float, default=SECONDS, help=f"sampling time ({SECONDS:g})")
    p.add_argument("--rate", type=int, default=RATE, help=f"samples per second ({RATE})")
    p.add_argument("--top", type=int, default=TOP, help=f"functions listed ({TOP})")
    p.add_argument("--only", default="", help="comma-separated: " + ",".join(WORKLOADS))
    p.add_argument("--nonblocking", action="store_true", help="py-spy does not pause ustack")
    p.add_argument(
        "--offload", default="", help="ustack serve --offload on|off|auto (default: serve's own)"
    )
    args = p.parse_args()
    c.setup()
    c.need("py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in WORKLOADS if not args.only or n in args.only.split(",")]
    machine = c.machine()
    print(f"pyspy_top: {c.machine_line(machine)}", flush=True)
    doc: dict[str, Any] = {"machine": machine, "rate": args.rate, "workloads": []}
    for name in names:
        doc["workloads"].append(profile(name, args))
    text = render(doc)
    print(text)
    (args.out / "pyspy-top.txt").write_text(f"pyspy_top: {c.machine_line(machine)}\n{text}\n")
    path = c.write_json(args.out, "pyspy_top", doc)
    print(f"wrote {path}, {args.out / 'pyspy-top.txt'} and the raw stacks beside them")
    return 0 if all(not w["load_error"] for w in doc["workloads"]) else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
