"""Bulk TCP throughput through ustack on a TUN device, against the kernel's TCP over veth.

Two directions, each a single connection from a kernel-socket client with 1 MiB buffers:

* **kernel -> ustack**: the client sends to ustack's discard service (port 9) from a 1 MiB
  buffer, then half-closes and waits for the server's FIN, so the clock stops only when every
  byte has been taken in.
* **ustack -> kernel**: the client fetches ``GET /bytes/N`` from ustack's HTTP service and reads
  it into a 1 MiB buffer, spot-checking the pattern at both ends of every read.

Each transfer stops at ``--size`` bytes (100 MB) or ``--seconds`` (20 s), whichever comes first.
The reference is the same client against ``bench/_refserver.py`` in a second namespace over a
veth pair with the same MTU, measured in the same run, interleaved with the ustack transfers.
It shows the client can go much faster than ustack, so the ustack figure is ustack's. The CPU
time the ustack process used during each transfer is recorded too ("ustack CPU", from
/proc/PID/schedstat), with the time it was runnable but waiting for a CPU ("CPU wait"): when
the two add up to about 100 %, ustack's single thread is what limits the rate, and the wait
share is what other work on the machine took from it.

Each MTU is measured with the TUN offloads on (TSO/GRO super-segments of up to 64 KB and
checksum offload through the virtio-net header; the link MTU is still the wire's) and off.

Every row is measured over IPv4 and over IPv6 (``--family 4,6``): the same ``ustack serve``
process answers on 10.7.0.2 and fd00:7::2, the reference veth pair carries fd00:8::1/64 and
fd00:8::2/64 beside its IPv4 addresses, and the transfers of both families are interleaved in
each run. The IPv6 rows show IPv6/IPv4 from the same run, and a closing line per row says whether
IPv6 is within 10 % of IPv4 (issue 11's target: no more than 10 % slower).

    python bench/throughput.py [--quick] [--runs N] [--mtu 1500,65000] [--offload on,off]
                               [--family 4,6]

Writes bench/results/throughput.json and throughput.png.
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

SIZE = 100_000_000
SECONDS = 20.0
QUICK_SIZE = 20_000_000
QUICK_SECONDS = 5.0
MTUS = (1500, 65000)
DIRECTIONS = ("kernel->ustack", "ustack->kernel")
OFFLOADS = ("on", "off")
# MB/s, each direction, by (MTU, offload): issue 9's targets (TSO/GRO through TUN; without it)
TARGETS = {(1500, "on"): 500.0, (1500, "off"): 100.0, (65000, "on"): 500.0, (65000, "off"): 500.0}
DRAIN_TIMEOUT = 20.0  # seconds to wait for the receiver's FIN after the last byte is sent

_SEND_BUF = memoryview(bytes(range(256)) * (c.SOCKET_BUFFER // 256))


def send_bulk(ns: Any, address: str, size: int, seconds: float) -> dict[str, Any]:
    """Send to discard until ``size`` bytes or ``seconds``; the clock stops at the server's FIN."""
    sock = c.connect(ns, address, 9)
    try:
        sent = 0
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while sent < size and time.perf_counter() < deadline:
            sent += sock.send(_SEND_BUF[: min(len(_SEND_BUF), size - sent)])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_TIMEOUT)
        ok = sock.recv(1) == b""
        elapsed = time.perf_counter() - t0
    except OSError as exc:
        return {"bytes": 0, "seconds": float("nan"), "ok": False, "error": str(exc)}
    finally:
        sock.close()
    return {"bytes": sent, "seconds": elapsed, "ok": ok}


def recv_bulk(ns: Any, address: str, size: int, seconds: float) -> dict[str, Any]:
    """``GET /bytes/size`` and read the body until it is complete or ``seconds`` have passed."""
    sock = c.connect(ns, address, 80)
    buf = bytearray(c.SOCKET_BUFFER)
    view = memoryview(buf)
    got = 0
    bad = 0
    try:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        sock.sendall(
            f"GET /bytes/{size} HTTP/1.1\r\nHost: {c.host_header(address)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("connection closed before the response head")
            head += chunk
        head, _, first = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(f"unexpected response: {head[:60]!r}")
        got = len(first)
        while got < size:
            if time.perf_counter() > deadline:
                break
            n = sock.recv_into(view)
            if n == 0:
                break
            # Spot-check: the first and last 8 bytes of each read sit where the pattern says.
            s = got % 251
            e = (got + n - 8) % 251
            if view[:8] != _PATTERN[s : s + 8] or view[n - 8 : n] != _PATTERN[e : e + 8]:
                bad += 1
            got += n
        elapsed = time.perf_counter() - t0
    except OSError as exc:
        return {"bytes": got, "seconds": float("nan"), "ok": False, "error": str(exc)}
    finally:
        sock.close()
    return {"bytes": got, "seconds": elapsed, "ok": bad == 0, "bad_reads": bad}


_PATTERN = bytes(i % 251 for i in range(251 + 16))


def measure(
    direction: str, ns: Any, address: str, size: int, seconds: float, proc: Any = None
) -> dict[str, Any]:
    cpu0, wait0 = proc.sched() if proc is not None else (0.0, 0.0)
    fn = send_bulk if direction == "kernel->ustack" else recv_bulk
    result = fn(ns, address, size, seconds)
    seconds_taken = result["seconds"]
    timed = seconds_taken == seconds_taken  # not NaN: the transfer finished
    result["mb_s"] = result["bytes"] / seconds_taken / c.MB if timed else 0.0
    if proc is not None and timed:
        cpu1, wait1 = proc.sched()
        result["server_cpu"] = (cpu1 - cpu0) / seconds_taken
        result["server_runqueue_wait"] = (wait1 - wait0) / seconds_taken
    return result


def run(args: Any) -> dict[str, Any]:
    runs = c.runs_of(args)
    size = args.size or (QUICK_SIZE if args.quick else SIZE)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    mtus = [int(x) for x in args.mtu.split(",")]
    offloads = [x.strip() for x in args.offload.split(",")]
    families = c.families_of(args)
    rows: list[dict[str, Any]] = []
    for mtu, offload in [(m, o) for m in mtus for o in offloads]:
        with contextlib.ExitStack() as stack:
            us = stack.enter_context(
                c.UstackServe(mtu=mtu, services="discard,http", extra=["--offload", offload])
            )
            veth = stack.enter_context(c.VethPair(mtu, ipv6=6 in families))
            # One reference server per family, each bound to its own address: the IPv4 figure
            # stays that of a plain AF_INET socket, not of an IPv4-mapped one.
            for f in families:
                stack.enter_context(c.RefServer(veth.server, veth.server_address(f)))
            targets = {f: (us.address_of(f), veth.server_address(f)) for f in families}
            samples: dict[tuple[int, str], dict[str, list[dict[str, Any]]]] = {
                (f, d): {"ustack": [], "kernel": []} for f in families for d in DIRECTIONS
            }
            for i in range(runs):
                for d in DIRECTIONS:
                    for f in families:
                        u_addr, k_addr = targets[f]
                        u = measure(d, us.ns, u_addr, size, seconds, us.proc)
                        k = measure(d, veth.client, k_addr, size, seconds)
                        samples[f, d]["ustack"].append(u)
                        samples[f, d]["kernel"].append(k)
                        print(
                            f"  MTU {mtu} offload {offload:3} {d:15} IPv{f} run {i + 1}/{runs}: "
                            f"ustack {u['mb_s']:8.1f} "
                            f"MB/s (cpu {u.get('server_cpu', 0) * 100:3.0f}%), kernel "
                            f"{k['mb_s']:8.1f} MB/s" + ("" if u["ok"] and k["ok"] else "  FAILED"),
                            flush=True,
                        )
            counters = c.ustack_counters(us)
        first = len(rows)
        for f in families:
            for d in DIRECTIONS:
                rows.append(summarise(mtu, offload, d, f, samples[f, d]))
        by_key = {(r["family"], r["direction"]): r for r in rows[first:]}
        for d in DIRECTIONS:
            v4, v6 = by_key.get((4, d)), by_key.get((6, d))
            if v4 is not None and v6 is not None:
                v6["ipv4_ustack_mb_s"] = v4["ustack_mb_s"]
                v6["ipv4_kernel_mb_s"] = v4["kernel_mb_s"]
                v6["ratio_ipv6_ipv4"] = c.ratio(v6["ustack_mb_s"], v4["ustack_mb_s"])
                v6["kernel_ratio_ipv6_ipv4"] = c.ratio(v6["kernel_mb_s"], v4["kernel_mb_s"])
                v6["ipv6_within_tolerance"] = c.within_tolerance(
                    v6["ustack_mb_s"], v4["ustack_mb_s"], higher_is_better=True
                )
        # Average segment sizes over the whole MTU's runs (both families), from ustack's own
        # counters: at a large MTU they show whether the MSS really followed the MTU.
        sent = counters.get("tcp_bytes_sent", 0) / max(counters.get("tcp_data_segments_sent", 0), 1)
        received = counters.get("tcp_bytes_received", 0) / max(
            counters.get("tcp_segments_received", 0), 1
        )
        for row in rows[first:]:
            row["ustack_avg_segment_sent"] = sent
            row["ustack_avg_segment_received"] = received
        rows[-1]["ustack_counters_after"] = counters
    return {
        "size_bytes": size,
        "seconds_limit": seconds,
        "runs": runs,
        "families": families,
        "ipv6_tolerance": c.IPV6_TOLERANCE,
        "rows": rows,
    }


def summarise(
    mtu: int, offload: str, direction: str, family: int, runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """One table row: the medians of one (MTU, offload, direction, family)'s runs."""
    u_runs, k_runs = runs["ustack"], runs["kernel"]
    u_rate = c.median([r["mb_s"] for r in u_runs])
    k_rate = c.median([r["mb_s"] for r in k_runs])
    return {
        "mtu": mtu,
        "offload": offload,
        "direction": direction,
        "family": family,
        "ustack_mb_s": u_rate,
        "kernel_mb_s": k_rate,
        "ratio": c.ratio(u_rate, k_rate),
        "ustack_cpu": c.median([r.get("server_cpu", float("nan")) for r in u_runs]),
        "ustack_runqueue_wait": c.median(
            [r.get("server_runqueue_wait", float("nan")) for r in u_runs]
        ),
        "target_mb_s": TARGETS.get((mtu, offload)),
        "all_ok": all(r["ok"] for r in u_runs + k_runs),
        "ustack_runs": u_runs,
        "kernel_runs": k_runs,
    }


def render(doc: dict[str, Any]) -> str:
    headers = ["MTU", "offload", "direction", "family", "ustack MB/s", "kernel MB/s", "ratio"]
    headers += ["IPv6/IPv4", "ustack CPU", "CPU wait"]
    headers.append("target")
    rows: list[list[Any]] = []
    for r in doc["rows"]:
        v6_v4 = r.get("ratio_ipv6_ipv4")
        rows.append(
            [
                r["mtu"],
                r.get("offload", "off"),
                r["direction"],
                c.family_name(r.get("family", 4)),
                r["ustack_mb_s"],
                r["kernel_mb_s"],
                f"{r['ratio'] * 100:.1f}%",
                "" if v6_v4 is None else f"{v6_v4:.2f}",
                f"{r['ustack_cpu'] * 100:.0f}%",
                f"{r['ustack_runqueue_wait'] * 100:.0f}%",
                (f">= {r['target_mb_s']:g}" if r["target_mb_s"] else "")
                + ("" if r["all_ok"] else " (FAILED runs)"),
            ]
        )
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for r in doc["rows"]:
        if "ustack_avg_segment_sent" in r:
            seen.setdefault((r["mtu"], r.get("offload", "off")), r)
    notes = [
        f"MTU {mtu} offload {offload}: ustack's data segments averaged "
        f"{r['ustack_avg_segment_sent']:.0f} B sent and {r['ustack_avg_segment_received']:.0f} B "
        "received"
        for (mtu, offload), r in seen.items()
    ]
    verdicts = [
        c.verdict_line(
            f"MTU {r['mtu']} offload {r.get('offload', 'off')} {r['direction']} (ustack MB/s)",
            r["ustack_mb_s"],
            r["ipv4_ustack_mb_s"],
            higher_is_better=True,
        )
        + f" [kernel IPv6/IPv4 {c.fmt(r['kernel_ratio_ipv6_ipv4'], 2)}]"
        for r in doc["rows"]
        if "ratio_ipv6_ipv4" in r
    ]
    return "\n".join([c.table(headers, rows), *notes, *verdicts])


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    rows = doc["rows"]
    labels = [
        f"{r['direction']}\nMTU {r['mtu']} {r.get('offload', 'off')}"
        + (" v6" if r.get("family") == 6 else "")
        for r in rows
    ]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 1.0), 4.5))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], [r["ustack_mb_s"] for r in rows], w, label="ustack (TUN)")
    ax.bar([x + w / 2 for x in xs], [r["kernel_mb_s"] for r in rows], w, label="kernel (veth)")
    for x, r in zip(xs, rows, strict=True):
        if r["target_mb_s"]:
            ax.hlines(r["target_mb_s"], x - 0.45, x + 0.45, colors="red", linestyles="--")
        ax.annotate(
            f"{r['ustack_mb_s']:.0f}", (x - w / 2, r["ustack_mb_s"]), ha="center", va="bottom"
        )
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("MB/s (log); red dashes: ustack target")
    ax.set_title(f"Bulk TCP, one connection (median of {doc['runs']})")
    ax.legend()
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=None, help=f"bytes per transfer ({SIZE})")
    p.add_argument("--seconds", type=float, default=None, help=f"time cap per transfer ({SECONDS})")
    p.add_argument("--mtu", default=",".join(map(str, MTUS)))
    p.add_argument(
        "--offload",
        default=",".join(OFFLOADS),
        help="TUN offload modes to measure at each MTU (on,off); 'on' fails if the kernel refuses",
    )
    c.add_family_option(p)
    args = p.parse_args()
    c.setup()
    machine = c.machine()
    print(f"throughput: {c.machine_line(machine)}", flush=True)
    doc = run(args)
    doc["machine"] = machine
    print(render(doc))
    path = c.write_json(args.out, "throughput", doc)
    plot(doc, args.out / "throughput.png")
    print(f"wrote {path} and {args.out / 'throughput.png'}")
    return 0 if all(r["all_ok"] for r in doc["rows"]) else 1


if __name__ == "__main__":
    sys.exit(c.guard(main))
