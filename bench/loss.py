"""Goodput against random packet loss: ustack with the kernel as its peer, the kernel against
itself, and the virtual-time simulator, side by side.

* **ustack**: ``ustack serve --loss P`` drops each packet with probability P in *both*
  directions (data and ACKs) in its seeded fault injector. The kernel client fetches
  ``GET /bytes/N`` (``--size``, 20 MB), so ustack is the sender and its loss recovery
  (fast retransmit, RTO) is what is measured. Each transfer is capped at ``--seconds``; goodput
  is the body bytes received over the time taken.
* **kernel reference**, same run: the same client and transfer over veth to
  ``bench/_refserver.py``, with iptables' ``statistic`` match dropping each incoming packet with
  probability P in both namespaces, i.e. the same loss on both directions. Segmentation and
  receive offloads are off on that veth pair, so a dropped packet is one MTU-sized segment,
  as on ustack's TUN device.
* **netsim**: ``bench/netsim.py``'s virtual-time run of two ustack hosts over a 100 Mbit/s,
  10 ms RTT link with the same loss (imported, not re-implemented). Its absolute numbers are
  for that link, so the table also gives every series as a fraction of its own loss-free rate.

    python bench/loss.py [--quick] [--runs N] [--loss 0,1,2,5,10]

Writes bench/results/loss.json and loss.png.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import netsim as bench_netsim
from throughput import recv_bulk

LOSSES = (0.0, 1.0, 2.0, 5.0, 10.0)  # percent
SIZE = 20_000_000
QUICK_SIZE = 5_000_000
SECONDS = 10.0
QUICK_SECONDS = 5.0
NETSIM_SIZE = 10_000_000
QUICK_NETSIM_SIZE = 1_000_000


def iptables_drop(ns: Any, percent: float) -> None:
    """Drop incoming packets in ``ns`` at random with probability ``percent``/100."""
    if percent <= 0:
        return
    cmd = ["ip", "netns", "exec", ns.name, "iptables", "-A", "INPUT", "-m", "statistic",
           "--mode", "random", "--probability", f"{percent / 100:.4f}", "-j", "DROP"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"iptables failed: {run.stderr.strip()}")


def kernel_point(percent: float, runs: int, size: int, seconds: float) -> list[dict[str, Any]]:
    with c.VethPair(1500, offloads=False) as veth, c.RefServer(veth.server):
        iptables_drop(veth.client, percent)
        iptables_drop(veth.server, percent)
        return [_rate(recv_bulk(veth.client, veth.server_addr, size, seconds)) for _ in range(runs)]


def ustack_point(
    percent: float, runs: int, size: int, seconds: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    extra = ["--loss", f"{percent:g}", "--seed", "1"] if percent else []
    with c.UstackServe(mtu=1500, services="http", extra=extra) as us:
        results = [_rate(recv_bulk(us.ns, us.address, size, seconds)) for _ in range(runs)]
        counters = c.ustack_counters(us)
    return results, counters


def _rate(r: dict[str, Any]) -> dict[str, Any]:
    s = r["seconds"]
    r["mb_s"] = r["bytes"] / s / c.MB if s == s and s > 0 else 0.0
    return r


def netsim_point(percent: float, runs: int, size: int) -> dict[str, Any]:
    results = [bench_netsim.one_run(size, percent / 100, seed) for seed in range(1, runs + 1)]
    return {
        "goodput_mbit": c.median([float(r["goodput_mbit"]) for r in results]),
        "all_ok": all(bool(r["ok"]) for r in results),
        "runs": results,
    }


def run(args: Any) -> dict[str, Any]:
    runs = c.runs_of(args)
    size = args.size or (QUICK_SIZE if args.quick else SIZE)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    netsim_size = QUICK_NETSIM_SIZE if args.quick else NETSIM_SIZE
    losses = [float(x) for x in args.loss.split(",")]
    rows = []
    for p in losses:
        u_runs, counters = ustack_point(p, runs, size, seconds)
        k_runs = kernel_point(p, runs, size, seconds)
        sim = netsim_point(p, max(runs, 3), netsim_size)
        row = {
            "loss_percent": p,
            "ustack_mb_s": c.median([r["mb_s"] for r in u_runs]),
            "kernel_mb_s": c.median([r["mb_s"] for r in k_runs]),
            "ustack_complete": sum(r["bytes"] >= size for r in u_runs),
            "kernel_complete": sum(r["bytes"] >= size for r in k_runs),
            "netsim_mbit": sim["goodput_mbit"],
            "ok": all(r["ok"] for r in u_runs + k_runs) and sim["all_ok"],
            "ustack_runs": u_runs,
            "kernel_runs": k_runs,
            "ustack_counters": {
                k: v
                for k, v in counters.items()
                if any(w in k for w in ("retrans", "rto", "dup", "drop", "sack", "ooo"))
            },
            "netsim_runs": sim["runs"],
        }
        rows.append(row)
        print(
            f"  loss {p:4g}%: ustack {row['ustack_mb_s']:7.2f} MB/s "
            f"({row['ustack_complete']}/{runs} complete), kernel {row['kernel_mb_s']:8.2f} MB/s, "
            f"netsim {row['netsim_mbit']:6.2f} Mbit/s" + ("" if row["ok"] else "  (errors)"),
            flush=True,
        )
    base = rows[0] if rows and rows[0]["loss_percent"] == 0 else None
    for row in rows:
        for key in ("ustack_mb_s", "kernel_mb_s", "netsim_mbit"):
            row[key.rsplit("_", 2)[0] + "_relative"] = (
                c.ratio(row[key], base[key]) if base else float("nan")
            )
    return {
        "size_bytes": size,
        "seconds_limit": seconds,
        "runs": runs,
        "loss_applies_to": "both directions (data and ACKs)",
        "ustack_direction": "ustack sends (GET /bytes/N), kernel receives",
        "kernel_loss": "iptables -m statistic --mode random on INPUT in both namespaces, "
        "TSO/GSO/GRO off",
        "netsim": {
            "size_bytes": netsim_size,
            "rate_bit_s": bench_netsim.RATE * 8,
            "rtt_s": bench_netsim.RTT,
            "queue_packets": bench_netsim.QUEUE,
        },
        "rows": rows,
    }


def render(doc: dict[str, Any]) -> str:
    rows = [
        [
            f"{r['loss_percent']:g}",
            r["ustack_mb_s"],
            f"{r['ustack_relative'] * 100:.0f}%",
            r["kernel_mb_s"],
            f"{r['kernel_relative'] * 100:.0f}%",
            r["netsim_mbit"],
            f"{r['netsim_relative'] * 100:.0f}%",
        ]
        for r in doc["rows"]
    ]
    headers = ["loss %", "ustack MB/s", "of 0%", "kernel MB/s", "of 0%", "netsim Mbit/s", "of 0%"]
    return c.table(headers, rows, digits=2)


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    rows = doc["rows"]
    xs = [r["loss_percent"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.plot(xs, [r["ustack_mb_s"] for r in rows], "o-", label="ustack -> kernel (TUN)")
    ax.plot(xs, [r["kernel_mb_s"] for r in rows], "s-", label="kernel -> kernel (veth)")
    ax.plot(xs, [r["netsim_mbit"] / 8 for r in rows], "^--", label="netsim (100 Mbit/s, 10 ms)")
    ax.set_yscale("log")
    ax.set_xlabel("random loss, each direction (%)")
    ax.set_ylabel("goodput (MB/s, log)")
    ax.set_title("Goodput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    for key, label, style in (
        ("ustack_relative", "ustack", "o-"),
        ("kernel_relative", "kernel", "s-"),
        ("netsim_relative", "netsim", "^--"),
    ):
        ax2.plot(xs, [r[key] * 100 for r in rows], style, label=label)
    ax2.set_xlabel("random loss, each direction (%)")
    ax2.set_ylabel("% of own loss-free goodput")
    ax2.set_title("Relative to no loss")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Bulk transfer under random loss (median of {doc['runs']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=None, help=f"bytes per transfer ({SIZE})")
    p.add_argument("--seconds", type=float, default=None, help=f"cap per transfer ({SECONDS})")
    p.add_argument("--loss", default=",".join(f"{x:g}" for x in LOSSES), help="percentages")
    args = p.parse_args()
    c.setup()
    c.need("iptables")
    machine = c.machine()
    print(f"loss: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    print(render(doc))
    path = c.write_json(args.out, "loss", doc)
    plot(doc, args.out / "loss.png")
    print(f"wrote {path} and {args.out / 'loss.png'}")
    return 0 if all(r["ok"] for r in doc["rows"]) else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
