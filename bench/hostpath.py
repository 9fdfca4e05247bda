"""The sans-IO host's per-packet cost: nanoseconds per packet through ``receive_packet`` and
``packets_to_send``, for this tree against another one (say, the commit before a change).

Two hosts in one process, no link model and no event loop: a client with ``--conns`` established
connections keeps every send buffer full, and the packets go back and forth in lock step in
virtual time -- data segments (cut from super-segments by software GSO) one way, pure ACKs the
other -- until ``--size`` bytes have arrived in all; with ``--message`` every connection writes
one message of that many bytes per round instead, Nagle off, so the fixed cost per packet
dominates. The figure is the CPU time of that whole
exchange (process time, so other load on a shared machine counts less) divided by the number
of packets received by either host, so it is dominated by the host's input and output paths, the
TCP machine and the checksums. Each measurement is the best of ``--repeat`` runs in one
interpreter: noise only ever adds time.

The reference is measured in the same run: with ``--against DIR`` (a worktree of another
commit, e.g. ``git worktree add /tmp/base HEAD``), each round runs the workload once per tree
in a fresh interpreter, alternating, and the table gives the medians and their ratio, so a
shared, noisy machine affects both alike. Writes bench/results/hostpath.json.

    python bench/hostpath.py [--against DIR] [--rounds N] [--repeat N] [--conns N] [--size BYTES]
                             [--message BYTES] [--family 4|6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDRESSES = {4: ("10.7.0.1", "10.7.0.2"), 6: ("fd00:7::1", "fd00:7::2")}
PORT = 5001
STEP = 0.0001  # virtual seconds per lock-step round


def workload(conns: int, size: int, message: int, family: int) -> tuple[int, float]:
    """Move ``size`` bytes over ``conns`` connections of ``family`` (4 or 6), in bulk or
    (``message``) one message of that many bytes per connection per round, Nagle off;
    (packets received, seconds)."""
    from ustack.stack.host import Host
    from ustack.tcp.events import DataReceived
    from ustack.wire import addr

    a, b = (addr.from_text(t) for t in ADDRESSES[family])
    client = Host(a, secret=b"c" * 16)
    server = Host(b, secret=b"s" * 16)
    server.listen(PORT, backlog=conns)
    now = 0.0
    active = [client.connect(b, PORT, now) for _ in range(conns)]
    for conn in active:
        conn.set_nodelay(bool(message))
    chunk = bytes(256 * 1024)
    burst = message or len(chunk)
    left = dict.fromkeys(active, size // conns)
    received = 0
    packets = 0
    start = time.process_time()
    while received < size:
        now += STEP
        for conn in active:
            want = left[conn]
            if want:
                left[conn] = want - conn.send(memoryview(chunk)[: min(want, burst)])
        for p in client.packets_to_send(now):
            server.receive_packet(p, now)
            packets += 1
        while (ev := server.next_event()) is not None:
            if type(ev) is DataReceived:
                received += len(ev.conn.read())
        for p in server.packets_to_send(now):
            client.receive_packet(p, now)
            packets += 1
        while client.next_event() is not None:
            pass
        for host in (client, server):
            deadline = host.next_deadline()
            if deadline is not None and deadline <= now:
                host.on_deadline(now)
    return packets, time.process_time() - start


def measure_in(tree: Path, conns: int, size: int, message: int, repeat: int, family: int) -> float:
    """ns/packet, the best of ``repeat`` runs of the workload with ``tree`` first on the
    import path."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, __file__, "--child", "--conns", str(conns), "--size", str(size)]
    cmd += ["--message", str(message), "--repeat", str(repeat), "--family", str(family)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)["ns_per_packet"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, help="another tree to measure as the reference")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--size", type=int, default=8_000_000)
    ap.add_argument("--message", type=int, default=0, help="bytes per write (0: bulk)")
    ap.add_argument("--family", type=int, choices=(4, 6), default=4, help="IP version")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        runs = [
            workload(args.conns, args.size, args.message, args.family) for _ in range(args.repeat)
        ]
        best = min(seconds / packets * 1e9 for packets, seconds in runs)
        print(json.dumps({"packets": runs[0][0], "ns_per_packet": best}))
        return 0
    trees = {"this tree": ROOT}
    if args.against is not None:
        trees["reference"] = args.against.resolve()
    results: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            results[name].append(
                measure_in(tree, args.conns, args.size, args.message, args.repeat, args.family)
            )
    print(f"{'tree':12} {'median ns/pkt':>14} {'min':>8} {'max':>8}  runs")
    for name, values in results.items():
        print(
            f"{name:12} {statistics.median(values):14.0f} {min(values):8.0f} {max(values):8.0f}"
            f"  {' '.join(f'{v:.0f}' for v in values)}"
        )
    if "reference" in results:
        ratio = statistics.median(results["this tree"]) / statistics.median(results["reference"])
        print(f"this tree / reference (medians): {ratio:.3f}")
    out = ROOT / "bench" / "results" / "hostpath.json"
    out.parent.mkdir(exist_ok=True)
    doc = {"conns": args.conns, "size": args.size, "message": args.message, "repeat": args.repeat}
    doc["family"] = args.family
    doc["trees"] = {k: str(v) for k, v in trees.items()}
    out.write_text(json.dumps({**doc, "ns_per_packet": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
