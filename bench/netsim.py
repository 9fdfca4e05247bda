"""Goodput of one bulk transfer over a simulated lossy link, in virtual time.

Two ustack hosts talk over ``ustack.netsim``: 100 Mbit/s each way, 10 ms RTT, a 100-packet
drop-tail queue, and seeded random loss applied to both directions (data and ACKs). For each
loss rate the script moves 10 MB from client to server with three seeds and reports the median
goodput (bytes delivered / virtual time until the last byte arrived). The reference, measured
on the same link in the same run, is a loss-free transfer, and two textbook models of Reno-style
TCP are printed next to it: Mathis et al. (MSS/RTT * sqrt(3/2)/sqrt(p)) and Padhye et al.
(which adds retransmission timeouts, T0 = the RTO floor, b = 2 segments per ACK).

No real network and no namespace are involved: nothing is sent, so the script runs anywhere.
Writes bench/results/netsim.json and bench/results/netsim.png.

    python bench/netsim.py [--size BYTES] [--seeds N] [--loss 0,1,5]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ustack.link.fault import FaultConfig, FaultModel  # noqa: E402
from ustack.netsim import Network, TransferApp  # noqa: E402
from ustack.stack.host import Host  # noqa: E402
from ustack.tcp.config import TcpConfig  # noqa: E402
from ustack.wire import checksum, ipv4  # noqa: E402

RATE = 100e6 / 8  # bytes/s
RTT = 0.010
QUEUE = 100  # packets
LOSSES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.10, 0.20)
MAX_VIRTUAL = 20_000.0  # seconds; a run that needs longer is reported as unfinished
A = ipv4.addr_to_int("10.9.0.1")
B = ipv4.addr_to_int("10.9.0.2")


def one_run(size: int, loss: float, seed: int) -> dict[str, float | int | bool]:
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    config = TcpConfig()
    net = Network()
    client = net.add_host(Host(A, config=config, secret=rng.randbytes(16)))
    server = net.add_host(Host(B, config=config, secret=rng.randbytes(16)))
    fault = FaultConfig(drop=loss)
    net.connect(
        client,
        server,
        bandwidth=RATE,
        delay=RTT / 2,
        queue_limit=QUEUE,
        fault_ab=FaultModel(fault, seed=2 * seed) if loss else None,
        fault_ba=FaultModel(fault, seed=2 * seed + 1) if loss else None,
    )
    sink = TransferApp(server, listener=server.listen(5001))
    source = TransferApp(client, payload)
    net.set_app(server, sink)
    net.set_app(client, source)
    source.add(client.connect(B, 5001, 0.0))
    net.kick(client)

    def all_arrived() -> bool:
        return any(r.eof_at is not None for r in sink.results.values())

    t0 = time.perf_counter()
    done = net.run(all_arrived, max_time=MAX_VIRTUAL)
    real = time.perf_counter() - t0
    result = next(iter(sink.results.values()))
    ok = done and result.received == size and result.digest == _sha(payload)
    virtual = result.eof_at if ok and result.eof_at else float("nan")
    st = client.stats
    return {
        "ok": ok,
        "virtual_s": virtual,
        "real_s": real,
        "goodput_mbit": size * 8 / virtual / 1e6 if ok else 0.0,
        "retransmits": st.tcp_retransmits,
        "rto_expired": st.tcp_rto_expired,
        "fast_retransmits": st.tcp_fast_retransmits,
        "packets": st.ip_tx + server.stats.ip_tx,
    }


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def mathis_mbit(loss: float, mss: int) -> float:
    if loss == 0:
        return RATE * 8 / 1e6
    return min(RATE * 8 / 1e6, mss * 8 / RTT * math.sqrt(1.5 / loss) / 1e6)


def padhye_mbit(loss: float, mss: int, t0: float, wmax: int) -> float:
    """Padhye, Firoiu, Towsley, Kurose (1998), eq. 33, with b = 2."""
    if loss == 0:
        return min(RATE * 8 / 1e6, wmax * mss * 8 / RTT / 1e6)
    b = 2
    denom = RTT * math.sqrt(2 * b * loss / 3) + t0 * min(
        1.0, 3 * math.sqrt(3 * b * loss / 8)
    ) * loss * (1 + 32 * loss * loss)
    pkts = min(wmax / RTT, 1 / denom)
    return min(RATE * 8 / 1e6, pkts * mss * 8 / 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--loss", default=",".join(f"{p * 100:g}" for p in LOSSES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    losses = [float(x) / 100 for x in args.loss.split(",")]
    config = TcpConfig()
    mss = min(config.mss or 1500 - 40, 1500 - 40)  # 0: from the link (RFC 9293 3.7.1)
    wmax = config.recv_buffer // mss

    rows = []
    header = (
        f"{'loss %':>6} {'goodput Mbit/s':>14} {'min..max':>13} {'virtual s':>9} "
        f"{'real s/run':>10} {'rexmit':>6} {'RTOs':>5} {'Mathis':>7} {'Padhye':>7}"
    )
    print(f"10 MB over netsim: {RATE * 8 / 1e6:g} Mbit/s, RTT {RTT * 1e3:g} ms, queue {QUEUE}")
    print(
        f"loss on both directions, median of {args.seeds} seeds; checksum={checksum.IMPLEMENTATION}"
    )
    print(header)
    t_all = time.perf_counter()
    for loss in losses:
        runs = [one_run(args.size, loss, seed) for seed in range(1, args.seeds + 1)]
        good = [float(r["goodput_mbit"]) for r in runs]
        median_run = sorted(runs, key=lambda r: float(r["goodput_mbit"]))[len(runs) // 2]
        row = {
            "loss": loss,
            "goodput_mbit_median": statistics.median(good),
            "goodput_mbit_min": min(good),
            "goodput_mbit_max": max(good),
            "virtual_s_median": statistics.median(float(r["virtual_s"]) for r in runs),
            "real_s_mean": statistics.mean(float(r["real_s"]) for r in runs),
            "all_ok": all(bool(r["ok"]) for r in runs),
            "retransmits_median_run": median_run["retransmits"],
            "rto_expired_median_run": median_run["rto_expired"],
            "mathis_mbit": mathis_mbit(loss, mss),
            "padhye_mbit": padhye_mbit(loss, mss, config.rto_min, wmax),
            "runs": runs,
        }
        rows.append(row)
        print(
            f"{loss * 100:6g} {row['goodput_mbit_median']:14.3f} "
            f"{row['goodput_mbit_min']:6.2f}..{row['goodput_mbit_max']:<6.2f}"
            f"{row['virtual_s_median']:9.1f} {row['real_s_mean']:10.2f} "
            f"{median_run['retransmits']:6} {median_run['rto_expired']:5} "
            f"{row['mathis_mbit']:7.2f} {row['padhye_mbit']:7.3f}"
            + ("" if row["all_ok"] else "  (some runs unfinished)")
        )
    total = time.perf_counter() - t_all
    print(f"total real time {total:.1f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": "netsim",
        "link": {"rate_bit_s": RATE * 8, "rtt_s": RTT, "queue_packets": QUEUE},
        "size_bytes": args.size,
        "seeds": args.seeds,
        "loss_applies_to": "both directions",
        "checksum_implementation": checksum.IMPLEMENTATION,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "total_real_s": total,
        "rows": rows,
    }
    (args.out / "netsim.json").write_text(json.dumps(doc, indent=2) + "\n")
    _plot(rows, args.out / "netsim.png")
    print(f"wrote {args.out / 'netsim.json'} and {args.out / 'netsim.png'}")
    return 0 if all(r["all_ok"] for r in rows) else 1


def _plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(r["loss"]) * 100 for r in rows]  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [r["goodput_mbit_median"] for r in rows], "o-", label="ustack (median of seeds)")
    ax.fill_between(
        xs,
        [float(r["goodput_mbit_min"]) for r in rows],  # type: ignore[arg-type]
        [float(r["goodput_mbit_max"]) for r in rows],  # type: ignore[arg-type]
        alpha=0.2,
    )
    ax.plot(xs, [r["mathis_mbit"] for r in rows], "--", label="Mathis model")
    ax.plot(xs, [r["padhye_mbit"] for r in rows], ":", label="Padhye model (with RTOs)")
    ax.set_yscale("log")
    ax.set_xlabel("random loss, each direction (%)")
    ax.set_ylabel("goodput (Mbit/s, log)")
    ax.set_title("10 MB over 100 Mbit/s, 10 ms RTT (netsim, virtual time)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
