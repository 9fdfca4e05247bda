"""Goodput against random packet loss, both directions: ustack with the kernel as its peer, the
kernel against itself, and the virtual-time simulator, side by side.

* **ustack**: ``ustack serve --loss P`` drops each packet with probability P in *both*
  directions (data and ACKs) in its seeded fault injector. Two directions, each a single
  connection from a kernel-socket client:

  - **ustack -> kernel** (``--direction send``): the client fetches ``GET /bytes/N``
    (``--size``, 20 MB), so ustack's loss recovery as a sender (fast retransmit, RTO, and
    whatever else the stack has) is what is measured. Complete when all N bytes arrived; the
    pattern is spot-checked on every read.
  - **kernel -> ustack** (``--direction recv``): the client POSTs N bytes to ``/sha256``, so the
    kernel sends and ustack's receiver (reassembly, ACK policy, SACK blocks) shapes the
    recovery. Complete when the answer arrives and names the SHA-256 of what was sent, which
    checks every byte. A transfer cut off early counts the bytes the receiver acknowledged
    (what the client sent minus its ``SIOCOUTQ``).

  Each transfer is capped at ``--seconds``; goodput is the bytes delivered over the time taken.
* **kernel reference**, same run, interleaved with ustack's transfers: the same client and
  transfers over veth to ``bench/_refserver.py`` (which serves both routes), with iptables'
  ``statistic`` match dropping each incoming packet with probability P in both namespaces, i.e.
  the same loss on both directions. Segmentation and receive offloads are off on that veth
  pair, so a dropped packet is one MTU-sized segment, as on ustack's TUN device.
* **netsim**: ``bench/netsim.py``'s virtual-time run of two ustack hosts (``TcpConfig()``'s
  defaults) over a 100 Mbit/s, 10 ms RTT link with the same loss (imported, not
  re-implemented). Its absolute numbers are for that link.

The table gives every series as a share of its own loss-free goodput too. The target, per
direction and loss rate: ustack keeps at least the share of its loss-free goodput that the
kernel keeps in the same run, and every transfer completes. ustack's retransmission and
recovery counters over each direction's transfers go into the JSON.

    python bench/loss.py [--quick] [--runs N] [--loss 0,1,2,5,10] [--direction both|send|recv]

Writes bench/results/loss.json and loss.png.
"""

from __future__ import annotations

import fcntl
import hashlib
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
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
# --direction: what ustack does. "send": ustack -> kernel (GET); "recv": kernel -> ustack (POST).
DIRECTIONS = {"send": "ustack->kernel", "recv": "kernel->ustack"}
# ustack counters kept (as differences over each direction's transfers): names containing these.
COUNTER_WORDS = ("retrans", "rto", "dup", "drop", "ooo", "sack", "rack", "tlp", "undo",
                 "spurious", "recover", "lost", "acks", "bytes")  # fmt: skip

PERIOD = 251  # the body pattern of GET /bytes/N, also what the upload sends: byte i is i % 251
_BLOCK = memoryview(bytes(i % PERIOD for i in range(PERIOD)) * (c.SOCKET_BUFFER // PERIOD + 2))
_DIGESTS: dict[int, str] = {}


def iptables_drop(ns: Any, percent: float) -> None:
    """Drop incoming packets in ``ns`` at random with probability ``percent``/100."""
    if percent <= 0:
        return
    cmd = ["ip", "netns", "exec", ns.name, "iptables", "-A", "INPUT", "-m", "statistic",
           "--mode", "random", "--probability", f"{percent / 100:.4f}", "-j", "DROP"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"iptables failed: {run.stderr.strip()}")


def _body(size: int) -> Iterator[memoryview]:
    """The upload body in pieces of at most one socket buffer: byte ``i`` is ``i % 251``."""
    off = 0
    while off < size:
        n = min(c.SOCKET_BUFFER, size - off)
        start = off % PERIOD
        yield _BLOCK[start : start + n]
        off += n


def body_sha256(size: int) -> str:
    if size not in _DIGESTS:
        h = hashlib.sha256()
        for piece in _body(size):
            h.update(piece)
        _DIGESTS[size] = h.hexdigest()
    return _DIGESTS[size]


def _unacked(sock: socket.socket) -> int:
    """Bytes written to ``sock`` that the peer has not acknowledged (SIOCOUTQ)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def _response_body(sock: socket.socket, deadline: float) -> bytes:
    """Read one HTTP response with a Content-Length body; TimeoutError at ``deadline``."""
    data = b""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("no response before the deadline")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed before the response was complete")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(f"unexpected response: {head[:60]!r}")
        lengths = [
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ]
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise OSError(f"response without a usable Content-Length: {head[:200]!r}")
        if len(body) >= int(lengths[0]):
            return body[: int(lengths[0])]


def upload(ns: Any, address: str, size: int, seconds: float) -> dict[str, Any]:
    """``POST /sha256`` with ``size`` bytes of the pattern; complete when the answer is their
    digest. Cut off at ``seconds``: the bytes the receiver acknowledged by then count."""
    want = body_sha256(size)
    sock = c.connect(ns, address, 80)
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        sock.sendall(
            f"POST /sha256 HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream"
            f"\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        for piece in _body(size):
            while piece:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError("body not sent before the deadline")
                sock.settimeout(left)
                n = sock.send(piece)
                piece = piece[n:]
                sent += n
        answer = _response_body(sock, deadline).decode("ascii", "replace").strip()
        elapsed = time.perf_counter() - t0
    except TimeoutError:
        delivered = max(0, sent - _unacked(sock))
        # Reset rather than close: a graceful close would keep sending the rest in the
        # background, into the next measurement.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return {"bytes": delivered, "seconds": time.perf_counter() - t0, "ok": True,
                "complete": False, "sent": sent}  # fmt: skip
    except OSError as exc:
        sock.close()
        return {"bytes": 0, "seconds": float("nan"), "ok": False, "complete": False,
                "sent": sent, "error": str(exc)}  # fmt: skip
    sock.close()
    ok = answer == want
    result: dict[str, Any] = {
        "bytes": size if ok else 0,
        "seconds": elapsed,
        "ok": ok,
        "complete": ok,
    }
    if not ok:
        result["error"] = f"digest mismatch: got {answer[:64]!r}, want {want}"
    return result


def transfer(direction: str, ns: Any, address: str, size: int, seconds: float) -> dict[str, Any]:
    try:
        r = (recv_bulk if direction == "send" else upload)(ns, address, size, seconds)
    except OSError as exc:  # connect() failed: the handshake did not get through in time
        r = {"bytes": 0, "seconds": float("nan"), "ok": False, "error": f"connect: {exc}"}
    r.setdefault("complete", bool(r["ok"] and r["bytes"] >= size))
    s = r["seconds"]
    r["mb_s"] = r["bytes"] / s / c.MB if s == s and s > 0 else 0.0
    return r


def counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Retransmission-related counters accumulated between two snapshots ({} if one failed)."""
    if not before or not after:
        return {}
    return {
        k: v - int(before.get(k, 0))
        for k, v in after.items()
        if isinstance(v, int) and any(w in k for w in COUNTER_WORDS)
    }


def netsim_point(percent: float, runs: int, size: int) -> dict[str, Any]:
    results = [bench_netsim.one_run(size, percent / 100, seed) for seed in range(1, runs + 1)]
    return {
        "loss_percent": percent,
        "netsim_mbit": c.median([float(r["goodput_mbit"]) for r in results]),
        "all_ok": all(bool(r["ok"]) for r in results),
        "runs": results,
    }


def loss_point(
    percent: float, directions: list[str], runs: int, size: int, seconds: float
) -> list[dict[str, Any]]:
    """Both stacks at one loss rate: one ustack and one veth pair, every direction."""
    # Offloads off at every rate, 0 % included: fault injection works per wire packet (so any
    # loss turns them off), and the loss-free figure each rate is compared with must be taken
    # the same way, as the kernel reference's veth has its offloads off too.
    extra = ["--offload", "off"] + (["--loss", f"{percent:g}", "--seed", "1"] if percent else [])
    rows = []
    with (
        c.UstackServe(mtu=1500, services="http", extra=extra) as us,
        c.VethPair(1500, offloads=False) as veth,
        c.RefServer(veth.server),
    ):
        iptables_drop(veth.client, percent)
        iptables_drop(veth.server, percent)
        for d in directions:
            before = c.ustack_counters(us)
            u_runs: list[dict[str, Any]] = []
            k_runs: list[dict[str, Any]] = []
            for i in range(runs):
                u = transfer(d, us.ns, us.address, size, seconds)
                k = transfer(d, veth.client, veth.server_addr, size, seconds)
                u_runs.append(u)
                k_runs.append(k)
                print(
                    f"  loss {percent:4g}% {DIRECTIONS[d]:14} run {i + 1}/{runs}: ustack "
                    f"{u['mb_s']:8.2f} MB/s{'' if u['complete'] else ' (cut off)'}, kernel "
                    f"{k['mb_s']:8.2f} MB/s{'' if k['complete'] else ' (cut off)'}"
                    + ("" if u["ok"] and k["ok"] else "  ERRORS"),
                    flush=True,
                )
            after = c.ustack_counters(us)
            rows.append(
                {
                    "direction": DIRECTIONS[d],
                    "loss_percent": percent,
                    "ustack_mb_s": c.median([r["mb_s"] for r in u_runs]),
                    "kernel_mb_s": c.median([r["mb_s"] for r in k_runs]),
                    "ustack_complete": sum(bool(r["complete"]) for r in u_runs),
                    "kernel_complete": sum(bool(r["complete"]) for r in k_runs),
                    "runs": runs,
                    "ok": all(r["ok"] for r in u_runs + k_runs),
                    "ustack_runs": u_runs,
                    "kernel_runs": k_runs,
                    "ustack_counters": counter_delta(before, after),
                }
            )
    return rows


def verdict(row: dict[str, Any]) -> tuple[bool | None, str]:
    """The issue's target for one lossy row: (met, why); None for the loss-free baseline."""
    if row["loss_percent"] == 0:
        return None, "baseline"
    u, k = row["ustack_relative"], row["kernel_relative"]
    if u != u or k != k:
        return None, "no 0% baseline"
    problems = []
    if u < k:
        problems.append(f"share {u * 100:.0f}% < {k * 100:.0f}%")
    if row["ustack_complete"] < row["runs"]:
        problems.append(f"{row['ustack_complete']}/{row['runs']} complete")
    return not problems, "pass" if not problems else "FAIL: " + ", ".join(problems)


def run(args: Any) -> dict[str, Any]:
    runs = c.runs_of(args)
    size = args.size or (QUICK_SIZE if args.quick else SIZE)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    netsim_size = QUICK_NETSIM_SIZE if args.quick else NETSIM_SIZE
    losses = [float(x) for x in args.loss.split(",")]
    directions = list(DIRECTIONS) if args.direction == "both" else [args.direction]
    rows: list[dict[str, Any]] = []
    sims: list[dict[str, Any]] = []
    for p in losses:
        rows += loss_point(p, directions, runs, size, seconds)
        sims.append(netsim_point(p, max(runs, 3), netsim_size))
        print(f"  loss {p:4g}% netsim {sims[-1]['netsim_mbit']:8.2f} Mbit/s", flush=True)
    order = list(DIRECTIONS.values())
    rows.sort(key=lambda r: order.index(r["direction"]))  # stable: losses stay in their order
    for d in directions:
        mine = [r for r in rows if r["direction"] == DIRECTIONS[d]]
        base = next((r for r in mine if r["loss_percent"] == 0), None)
        for row in mine:
            for key in ("ustack", "kernel"):
                row[f"{key}_relative"] = (
                    c.ratio(row[f"{key}_mb_s"], base[f"{key}_mb_s"]) if base else float("nan")
                )
            row["target_met"], row["verdict"] = verdict(row)
    base_sim = next((s for s in sims if s["loss_percent"] == 0), None)
    for s in sims:
        s["netsim_relative"] = (
            c.ratio(s["netsim_mbit"], base_sim["netsim_mbit"]) if base_sim else float("nan")
        )
    return {
        "size_bytes": size,
        "seconds_limit": seconds,
        "runs": runs,
        "directions": [DIRECTIONS[d] for d in directions],
        "loss_applies_to": "both directions (data and ACKs)",
        "ustack_transfers": {
            "ustack->kernel": "kernel client GETs /bytes/N from ustack; complete when N bytes "
            "arrived (pattern spot-checked)",
            "kernel->ustack": "kernel client POSTs N bytes to ustack's /sha256; complete when the "
            "answer is the body's SHA-256; cut off: bytes acknowledged (sent - SIOCOUTQ)",
        },
        "kernel_loss": "iptables -m statistic --mode random on INPUT in both namespaces, "
        "TSO/GSO/GRO off",
        "target": "at every lossy rate, per direction: ustack's share of its loss-free goodput "
        ">= the kernel's, and every ustack transfer complete",
        "netsim": {
            "size_bytes": netsim_size,
            "rate_bit_s": bench_netsim.RATE * 8,
            "rtt_s": bench_netsim.RTT,
            "queue_packets": bench_netsim.QUEUE,
            "config": "TcpConfig() defaults",
            "rows": sims,
        },
        "rows": rows,
    }


def render(doc: dict[str, Any]) -> str:
    headers = ["direction", "loss %", "ustack MB/s", "of 0%", "done", "kernel MB/s", "of 0%",
               "done", "target"]  # fmt: skip
    rows = [
        [
            r["direction"],
            f"{r['loss_percent']:g}",
            r["ustack_mb_s"],
            f"{r['ustack_relative'] * 100:.0f}%",
            f"{r['ustack_complete']}/{r['runs']}",
            r["kernel_mb_s"],
            f"{r['kernel_relative'] * 100:.0f}%",
            f"{r['kernel_complete']}/{r['runs']}",
            r["verdict"] + ("" if r["ok"] else " (errors)"),
        ]
        for r in doc["rows"]
    ]
    sims = doc["netsim"]["rows"]
    sim_rows = [
        [
            f"{s['loss_percent']:g}",
            s["netsim_mbit"],
            f"{s['netsim_relative'] * 100:.0f}%",
            "" if s["all_ok"] else "unfinished runs",
        ]
        for s in sims
    ]
    summary = []
    for d in doc["directions"]:
        mine = [r for r in doc["rows"] if r["direction"] == d and r["target_met"] is not None]
        failed = [f"{r['loss_percent']:g} %" for r in mine if not r["target_met"]]
        if not mine:
            summary.append(f"{d}: no lossy rate with a baseline measured")
        else:
            summary.append(f"{d}: " + ("pass" if not failed else "FAIL at " + ", ".join(failed)))
    ns = doc["netsim"]
    return "\n".join(
        [
            c.table(headers, rows, digits=2),
            "",
            f"netsim, two ustack hosts in virtual time ({ns['size_bytes'] / 1e6:g} MB over "
            f"{ns['rate_bit_s'] / 1e6:g} Mbit/s, {ns['rtt_s'] * 1e3:g} ms RTT):",
            c.table(["loss %", "Mbit/s", "of 0%", "note"], sim_rows, digits=2),
            "",
            "target (ustack keeps >= the kernel's share of loss-free goodput, every transfer "
            "completes): " + "; ".join(summary),
        ]
    )


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    directions = doc["directions"]
    sims = doc["netsim"]["rows"]
    sx = [s["loss_percent"] for s in sims]
    fig, axes = plt.subplots(2, len(directions), figsize=(5.8 * len(directions), 8), squeeze=False)
    for col, d in enumerate(directions):
        rows = [r for r in doc["rows"] if r["direction"] == d]
        xs = [r["loss_percent"] for r in rows]
        ax, ax2 = axes[0][col], axes[1][col]
        ax.plot(xs, [r["ustack_mb_s"] for r in rows], "o-", label=f"{d} (ustack, TUN)")
        ax.plot(xs, [r["kernel_mb_s"] for r in rows], "s-", label="kernel -> kernel (veth)")
        ax.plot(sx, [s["netsim_mbit"] / 8 for s in sims], "^--", label="netsim (100 Mbit/s, 10 ms)")
        for r in rows:
            if r["ustack_complete"] < r["runs"]:
                ax.annotate(
                    f"{r['ustack_complete']}/{r['runs']} done",
                    (r["loss_percent"], r["ustack_mb_s"]),
                    fontsize=7,
                    ha="right",
                    xytext=(-4, -12),
                    textcoords="offset points",
                )
        ax.set_yscale("log")
        ax.set_xlabel("random loss, each direction (%)")
        ax.set_ylabel("goodput (MB/s, log)")
        ax.set_title(f"{d}: goodput")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax2.plot(xs, [r["ustack_relative"] * 100 for r in rows], "o-", label="ustack")
        ax2.plot(xs, [r["kernel_relative"] * 100 for r in rows], "s-", label="kernel (target)")
        ax2.plot(sx, [s["netsim_relative"] * 100 for s in sims], "^--", label="netsim")
        ax2.set_xlabel("random loss, each direction (%)")
        ax2.set_ylabel("% of own loss-free goodput")
        ax2.set_title(f"{d}: share of loss-free goodput")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(
        f"Bulk transfer under random loss ({doc['size_bytes'] / 1e6:g} MB, median of {doc['runs']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=None, help=f"bytes per transfer ({SIZE})")
    p.add_argument("--seconds", type=float, default=None, help=f"cap per transfer ({SECONDS})")
    p.add_argument("--loss", default=",".join(f"{x:g}" for x in LOSSES), help="percentages")
    p.add_argument(
        "--direction",
        choices=("both", *DIRECTIONS),
        default="both",
        help="send: ustack -> kernel; recv: kernel -> ustack (default both)",
    )
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
    ok = all(r["ok"] for r in doc["rows"]) and all(s["all_ok"] for s in doc["netsim"]["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
