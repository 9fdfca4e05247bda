"""Goodput of one bulk transfer over a simulated lossy link, in virtual time, per TCP variant.

Two ustack hosts talk over ``ustack.netsim``: 100 Mbit/s each way, 10 ms RTT, a 100-packet
drop-tail queue, and seeded random loss applied to both directions (data and ACKs). For each
loss rate and each TCP *variant* the script moves 10 MB from client to server with three seeds
and reports the median goodput (bytes delivered / virtual time until the last byte arrived).

The variants differ only in their ``TcpConfig``, all measured in the same invocation on the same
seeded paths, so each is the others' reference:

* ``cubic+sack``: CUBIC with HyStart++, SACK, timestamps, RACK and TLP on (the new default);
* ``newreno+sack``: the same loss recovery under NewReno;
* ``cubic-nosack``: CUBIC with SACK, RACK and TLP off (timestamps stay on);
* ``newreno-nosack``: NewReno with SACK, timestamps, RACK, TLP and HyStart++ off: the old stack.

A variant whose congestion controller is not registered (``ustack.tcp.congestion.available()``)
is listed as unavailable and skipped. Per variant and loss rate the table gives the RTOs, the
bytes the sender retransmitted (``tcp_retransmitted_bytes``), the *lost bytes* -- the TCP payload
of the data direction's packets that the path dropped, by queue overflow or random loss
(``SimLinkStats.lost_payload_bytes``) -- and their ratio, which is 1.0 when every loss is repaired
exactly once and grows with spurious or duplicated retransmissions. Two textbook models of
Reno-style TCP are printed next to the goodput: Mathis et al. (MSS/RTT * sqrt(3/2)/sqrt(p)) and
Padhye et al. (which adds retransmission timeouts, T0 = the RTO floor, b = 2 segments per ACK).
The issue's targets are checked for the variant equal to ``TcpConfig()``'s defaults.

No real network and no namespace are involved: nothing is sent, so the script runs anywhere.
Writes bench/results/netsim.json and bench/results/netsim.png.

    python bench/netsim.py [--size BYTES] [--seeds N] [--loss 0,1,5] [--variants a,b]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from ustack.link.fault import FaultConfig, FaultModel
from ustack.netsim import Network, TransferApp
from ustack.stack.host import Host
from ustack.tcp import congestion
from ustack.tcp.config import TcpConfig
from ustack.wire import checksum, ipv4

RATE = 100e6 / 8  # bytes/s
RTT = 0.010
QUEUE = 100  # packets
SIZE = 10_000_000
SEEDS = 3
LOSSES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.10, 0.20)
MAX_VIRTUAL = 20_000.0  # seconds; a run that needs longer is reported as unfinished
A = ipv4.addr_to_int("10.9.0.1")
B = ipv4.addr_to_int("10.9.0.2")

# Every variant names all six settings, so none depends on what TcpConfig's defaults are today.
VARIANTS: dict[str, dict[str, Any]] = {
    "cubic+sack": {"congestion": "cubic", "hystart": True, "sack": True, "timestamps": True,
                   "rack": True, "tlp": True},
    "newreno+sack": {"congestion": "newreno", "hystart": True, "sack": True, "timestamps": True,
                     "rack": True, "tlp": True},
    "cubic-nosack": {"congestion": "cubic", "hystart": True, "sack": False, "timestamps": True,
                     "rack": False, "tlp": False},
    "newreno-nosack": {"congestion": "newreno", "hystart": False, "sack": False,
                       "timestamps": False, "rack": False, "tlp": False},
}  # fmt: skip
# Whose targets are checked when no variant equals TcpConfig(): the one the issue makes default.
INTENDED_DEFAULT = "cubic+sack"
# The targets on this path.
TARGET_LOSS_FREE_MBIT = 90.0
TARGET_ONE_PERCENT_MBIT = 50.0
TARGET_RETRANSMIT_RATIO = 1.1
# Sender counters kept per run in the JSON (names containing any of these).
COUNTER_WORDS = ("retrans", "rto", "dup_ack", "fast", "partial", "recover", "sack", "rack",
                 "tlp", "undo", "spurious", "lost", "hystart", "cwnd")  # fmt: skip


def variant_name(text: str) -> str:
    """``--variants`` spelling: case, spaces and underscores do not matter."""
    return text.strip().lower().replace(" ", "-").replace("_", "-")


def config_for(variant: str | None) -> TcpConfig:
    """``TcpConfig()`` with the variant's settings; None: the defaults as they are."""
    base = TcpConfig()
    return base if variant is None else dataclasses.replace(base, **VARIANTS[variant])


def unavailable(variant: str) -> str | None:
    """Why the variant cannot run here, or None when it can."""
    name = VARIANTS[variant]["congestion"]
    have = congestion.available()
    return None if name in have else f"congestion {name!r} not registered (have {have})"


def default_variant() -> str:
    """The variant whose settings are ``TcpConfig()``'s defaults (else the intended default)."""
    for name in VARIANTS:
        if config_for(name) == TcpConfig():
            return name
    return INTENDED_DEFAULT


def one_run(size: int, loss: float, seed: int, variant: str | None = None) -> dict[str, Any]:
    """One ``size``-byte transfer at ``loss`` (0..1, each direction); ``variant`` None runs
    ``TcpConfig()`` unchanged (what ``bench/loss.py`` compares with ``ustack serve``)."""
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    config = config_for(variant)
    net = Network()
    client = net.add_host(Host(A, config=config, secret=rng.randbytes(16)))
    server = net.add_host(Host(B, config=config, secret=rng.randbytes(16)))
    fault = FaultConfig(drop=loss)
    data_link, ack_link = net.connect(
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

    def all_arrived() -> bool:
        return any(r.eof_at is not None for r in sink.results.values())

    t0 = time.perf_counter()
    done = net.run(all_arrived, max_time=MAX_VIRTUAL)
    real = time.perf_counter() - t0
    result = next(iter(sink.results.values()), None)
    ok = (
        done
        and result is not None
        and result.received == size
        and result.digest == hashlib.sha256(payload).hexdigest()
    )
    virtual = result.eof_at if ok and result is not None and result.eof_at else float("nan")
    st = client.stats
    lost = data_link.stats.lost_payload_bytes
    return {
        "ok": ok,
        "virtual_s": virtual,
        "real_s": real,
        "goodput_mbit": size * 8 / virtual / 1e6 if ok else 0.0,
        "retransmits": st.tcp_retransmits,
        "retransmitted_bytes": st.tcp_retransmitted_bytes,
        "lost_bytes": lost,
        "lost_packets": data_link.stats.lost_payload_packets,
        "retransmitted_per_lost": c.ratio(float(st.tcp_retransmitted_bytes), float(lost)),
        "queue_drops": data_link.stats.queue_drops,
        "fault_lost": data_link.stats.fault_lost,
        "ack_path_lost": ack_link.stats.queue_drops + ack_link.stats.fault_lost,
        "rto_expired": st.tcp_rto_expired,
        "fast_retransmits": st.tcp_fast_retransmits,
        "packets": st.ip_tx + server.stats.ip_tx,
        "sender_counters": {
            k: v for k, v in st.nonzero().items() if any(w in k for w in COUNTER_WORDS)
        },
    }


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


def _guarded_run(size: int, loss: float, seed: int, variant: str) -> dict[str, Any]:
    """``one_run``, but a crash in the stack becomes a failed run, so the other variants and
    loss rates are still measured (the error is kept in the JSON and the exit status is 1)."""
    try:
        return one_run(size, loss, seed, variant)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "virtual_s": float("nan"),
                "real_s": float("nan"), "goodput_mbit": 0.0, "rto_expired": 0,
                "retransmitted_bytes": 0, "lost_bytes": 0}  # fmt: skip


def measure(variant: str, loss: float, size: int, seeds: int) -> dict[str, Any]:
    """One table row: ``seeds`` runs of one variant at one loss rate."""
    runs = [_guarded_run(size, loss, seed, variant) for seed in range(1, seeds + 1)]
    good = [float(r["goodput_mbit"]) for r in runs]
    real = [float(r["real_s"]) for r in runs if not math.isnan(float(r["real_s"]))]
    n = len(runs)
    retransmitted = sum(int(r["retransmitted_bytes"]) for r in runs)
    lost = sum(int(r["lost_bytes"]) for r in runs)
    return {
        "variant": variant,
        "loss": loss,
        "available": True,
        "goodput_mbit_median": statistics.median(good),
        "goodput_mbit_min": min(good),
        "goodput_mbit_max": max(good),
        "virtual_s_median": c.median([float(r["virtual_s"]) for r in runs]),
        "real_s_mean": statistics.mean(real) if real else float("nan"),
        "all_ok": all(bool(r["ok"]) for r in runs),
        "errors": sorted({r["error"] for r in runs if "error" in r}),
        "rto_per_run": sum(int(r["rto_expired"]) for r in runs) / n,
        "retransmitted_bytes_per_run": retransmitted / n,
        "lost_bytes_per_run": lost / n,
        # From the totals over the seeds, so a seed with few losses does not dominate.
        "retransmitted_per_lost": c.ratio(float(retransmitted), float(lost)),
        "runs": runs,
    }


def check_targets(rows: list[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    """The issue's three targets for ``variant``, each with its value and verdict."""
    mine = {r["loss"]: r for r in rows if r["variant"] == variant and r["available"]}
    targets = []
    for loss, want, label in (
        (0.0, TARGET_LOSS_FREE_MBIT, "loss-free goodput"),
        (0.01, TARGET_ONE_PERCENT_MBIT, "goodput at 1 % loss"),
    ):
        row = mine.get(loss)
        value = row["goodput_mbit_median"] if row else float("nan")
        targets.append(
            {
                "target": f"{label} >= {want:g} Mbit/s",
                "value": value,
                "met": None if row is None else bool(value >= want and row["all_ok"]),
            }
        )
    ratios = [
        (r["retransmitted_per_lost"], loss)
        for loss, r in sorted(mine.items())
        if not math.isnan(r["retransmitted_per_lost"])
    ]
    worst = max(ratios, default=(float("nan"), float("nan")))
    targets.append(
        {
            "target": f"retransmitted / lost bytes <= {TARGET_RETRANSMIT_RATIO:g} at every loss rate",
            "value": worst[0],
            "at_loss": worst[1],
            "met": None if not ratios else bool(worst[0] <= TARGET_RETRANSMIT_RATIO),
        }
    )
    return targets


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("pass" if met else "FAIL")


def _target_text(t: dict[str, Any]) -> str:
    text = f"{t['target']}: {c.fmt(t['value'], 2)}"
    if not math.isnan(t.get("at_loss", float("nan"))):
        text += f" (worst, at {t['at_loss'] * 100:g} %)"
    return f"{text} {_verdict(t['met'])}"


def render(doc: dict[str, Any]) -> str:
    default = doc["default_variant"]
    names = [v for v in doc["variants"] if doc["variants"][v]["available"]]
    models = {m["loss"]: m for m in doc["models"]}
    losses = [m["loss"] for m in doc["models"]]
    by_key = {(r["variant"], r["loss"]): r for r in doc["rows"]}
    # 1. Goodput matrix: one column per variant, then the models.
    headers = ["loss %", *(n + ("*" if n == default else "") for n in names), "Mathis", "Padhye"]
    matrix = []
    for loss in losses:
        cells: list[Any] = [f"{loss * 100:g}"]
        for n in names:
            r = by_key[(n, loss)]
            cells.append(f"{r['goodput_mbit_median']:.2f}" + ("" if r["all_ok"] else "!"))
        cells += [models[loss]["mathis_mbit"], models[loss]["padhye_mbit"]]
        matrix.append(cells)
    parts = [
        f"goodput, Mbit/s (median of {doc['seeds']} seeds; * = TcpConfig() default; "
        "! = some runs unfinished)",
        c.table(headers, matrix, digits=2),
        "",
        "per variant: goodput range, RTOs, retransmitted and lost payload bytes per run",
    ]
    # 2. Details, grouped by loss rate so the variants compare line by line.
    headers = ["loss %", "variant", "Mbit/s", "min..max", "RTOs", "rexmit kB", "lost kB",
               "rexmit/lost", "real s/run"]  # fmt: skip
    detail = []
    for loss in losses:
        for i, n in enumerate(names):
            r = by_key[(n, loss)]
            detail.append(
                [
                    f"{loss * 100:g}" if i == 0 else "",
                    n + ("*" if n == default else ""),
                    f"{r['goodput_mbit_median']:.2f}",
                    f"{r['goodput_mbit_min']:.2f}..{r['goodput_mbit_max']:.2f}",
                    f"{r['rto_per_run']:.1f}",
                    r["retransmitted_bytes_per_run"] / 1e3,
                    r["lost_bytes_per_run"] / 1e3,
                    r["retransmitted_per_lost"],
                    r["real_s_mean"],
                ]
            )
    parts.append(c.table(headers, detail, digits=2))
    skipped = [f"{n}: {v['reason']}" for n, v in doc["variants"].items() if not v["available"]]
    if skipped:
        parts.append("unavailable, skipped: " + "; ".join(skipped))
    if default not in doc["variants"]:
        parts.append(f"targets: not checked ({default}, the default, was not among --variants)")
    else:
        status = "" if doc["variants"][default]["available"] else " (unavailable)"
        verdicts = "; ".join(_target_text(t) for t in doc["targets"])
        parts.append(f"targets for {default}{status}: {verdicts}")
    return "\n".join(parts)


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = [m["loss"] * 100 for m in doc["models"]]
    styles = ("o-", "s-", "^-", "v-", "d-", "x-")
    for i, (name, info) in enumerate(doc["variants"].items()):
        if not info["available"]:
            continue
        rows = [r for r in doc["rows"] if r["variant"] == name]
        rx = [r["loss"] * 100 for r in rows]
        label = name + (" (default)" if name == doc["default_variant"] else "")
        line = ax.plot(rx, [r["goodput_mbit_median"] for r in rows], styles[i % 6], label=label)
        ax.fill_between(
            rx,
            [r["goodput_mbit_min"] for r in rows],
            [r["goodput_mbit_max"] for r in rows],
            alpha=0.12,
            color=line[0].get_color(),
        )
        ax2.plot(rx, [r["retransmitted_per_lost"] for r in rows], styles[i % 6], label=label)
    ax.plot(xs, [m["mathis_mbit"] for m in doc["models"]], "k--", lw=1, label="Mathis model")
    ax.plot(xs, [m["padhye_mbit"] for m in doc["models"]], "k:", lw=1, label="Padhye model")
    ax.set_yscale("log")
    ax.set_xlabel("random loss, each direction (%)")
    ax.set_ylabel("goodput (Mbit/s, log)")
    ax.set_title(f"Goodput (median of {doc['seeds']} seeds; band: min..max)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax2.axhline(TARGET_RETRANSMIT_RATIO, color="red", ls="--", lw=1, label="target")
    ax2.axhline(1.0, color="gray", lw=0.8)
    ax2.set_xlabel("random loss, each direction (%)")
    ax2.set_ylabel("retransmitted / lost payload bytes")
    ax2.set_title("Retransmission efficiency")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"{doc['size_bytes'] / 1e6:g} MB over {RATE * 8 / 1e6:g} Mbit/s, {RTT * 1e3:g} ms RTT, "
        f"{QUEUE}-packet queue (netsim, virtual time)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=SIZE, help=f"bytes per transfer ({SIZE})")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"runs per point ({SEEDS})")
    parser.add_argument("--loss", default=",".join(f"{p * 100:g}" for p in LOSSES),
                        help="percentages, each direction")  # fmt: skip
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list from {', '.join(VARIANTS)} (default all)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=c.RESULTS)
    args = parser.parse_args()
    losses = [float(x) / 100 for x in args.loss.split(",")]
    chosen = [variant_name(v) for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    default = default_variant()
    config = TcpConfig()
    mss = min(config.mss or 1500 - 40, 1500 - 40)  # 0: from the link (RFC 9293 3.7.1)
    wmax = config.recv_buffer // mss

    variants = {}
    for name in chosen:
        reason = unavailable(name)
        variants[name] = {
            "config": VARIANTS[name],
            "available": reason is None,
            "reason": reason,
            "default": name == default,
        }
    print(
        f"{args.size / 1e6:g} MB over netsim: {RATE * 8 / 1e6:g} Mbit/s, RTT {RTT * 1e3:g} ms, "
        f"queue {QUEUE}; loss on both directions, median of {args.seeds} seeds; "
        f"checksum={checksum.IMPLEMENTATION}; congestion controllers: {congestion.available()}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for loss in losses:
        for name, info in variants.items():
            if not info["available"]:
                rows.append({"variant": name, "loss": loss, "available": False})
                continue
            row = measure(name, loss, args.size, args.seeds)
            rows.append(row)
            print(
                f"  loss {loss * 100:4g}% {name:15} {row['goodput_mbit_median']:8.2f} Mbit/s, "
                f"rexmit/lost {c.fmt(row['retransmitted_per_lost'], 2)}"
                + ("" if row["all_ok"] else "  (some runs unfinished)")
                + "".join(f"\n    error: {e}" for e in row["errors"]),
                flush=True,
            )
    total = time.perf_counter() - t_all
    doc: dict[str, Any] = {
        "link": {"rate_bit_s": RATE * 8, "rtt_s": RTT, "queue_packets": QUEUE},
        "size_bytes": args.size,
        "seeds": args.seeds,
        "loss_applies_to": "both directions",
        "lost_bytes": "TCP payload of data-direction packets dropped by the queue or the fault "
        "model (SimLinkStats.lost_payload_bytes); retransmitted: the sender's "
        "tcp_retransmitted_bytes",
        "checksum_implementation": checksum.IMPLEMENTATION,
        "congestion_available": congestion.available(),
        "default_variant": default,
        "variants": variants,
        "models": [
            {
                "loss": loss,
                "mathis_mbit": mathis_mbit(loss, mss),
                "padhye_mbit": padhye_mbit(loss, mss, config.rto_min, wmax),
            }
            for loss in losses
        ],
        "total_real_s": total,
        "rows": rows,
    }
    doc["targets"] = check_targets(rows, default) if default in variants else []
    doc["machine"] = c.machine()
    print(render(doc))
    print(f"total real time {total:.1f} s")
    path = c.write_json(args.out, "netsim", doc)
    plot(doc, args.out / "netsim.png")
    print(f"wrote {path} and {args.out / 'netsim.png'}")
    measured = [r for r in rows if r["available"]]
    return 0 if all(r["all_ok"] for r in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
