"""Shared plumbing for the live benchmarks: namespaces, servers, statistics, tables, JSON, charts.

Every benchmark compares ustack with the kernel's own TCP, measured in the same run:

* **ustack** runs as ``ustack serve`` in a subprocess inside a fresh network namespace
  (:class:`UstackServe`). The kernel side of its TUN device (10.7.0.1) is where the benchmark's
  client sockets live, so every byte crosses the kernel's TCP and ustack's.
* **the reference** is two fresh namespaces joined by a veth pair (:class:`VethPair`), the
  client on one side (10.8.0.1) and a kernel-socket server (``bench/_refserver.py``, or nginx
  for connection rates) on the other (10.8.0.2): kernel TCP at both ends, same MTU.

The client runs in the benchmark process itself: sockets are created inside a namespace
(:func:`ns_socket`, :func:`inside`) and then used from the main thread, which never leaves the
root namespace for long. Nothing here touches the root namespace's interfaces or routes.

Cleanup is by context managers, so Ctrl-C, SIGTERM (turned into ``KeyboardInterrupt`` by
:func:`setup`) and errors all remove the namespaces and stop the subprocesses, each by the PID
this process got when starting it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The tree whose ``ustack`` is measured: this one, or another checkout named by USTACK_TREE (to
# measure an older commit with these same benchmarks). It goes first on the path, here and in
# every subprocess, and is the subprocesses' working directory (``python -m`` looks there first).
TREE = Path(os.environ.get("USTACK_TREE") or ROOT).resolve()
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))

from ustack.link.netns import NetNamespace, have_net_admin  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BENCH = ROOT / "bench"
MB = 1e6  # throughput is reported in decimal megabytes per second, like the targets

USTACK_ADDR = "10.7.0.2"
USTACK_PEER = "10.7.0.1"  # the kernel side of the TUN device, where clients live
VETH_CLIENT = "10.8.0.1"
VETH_SERVER = "10.8.0.2"
# The IPv6 twins: ``ustack serve``'s defaults (issue 11) and a /64 for the veth reference.
USTACK_ADDR6 = "fd00:7::2"
USTACK_PEER6 = "fd00:7::1"
VETH_CLIENT6 = "fd00:8::1"
VETH_SERVER6 = "fd00:8::2"
FAMILIES = (4, 6)
# IPv6 is "within 10 % of IPv4" (issue 11's target) when it is no more than 10 % worse: at least
# 0.9 times the IPv4 throughput, at most 1.1 times the IPv4 round trip. Faster is not a miss.
IPV6_TOLERANCE = 0.10
TENTATIVE_TIMEOUT = 5.0  # seconds for a veth IPv6 address to leave the tentative state

START_TIMEOUT = 20.0  # seconds a server gets to say it is listening
STOP_TIMEOUT = 10.0  # seconds a server gets to exit after SIGTERM before SIGKILL
SOCKET_BUFFER = 1 << 20  # the kernel client's SO_SNDBUF/SO_RCVBUF


# -- command line and process setup -----------------------------------------------------------


def parser(description: str, *, runs: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer and smaller runs: a smoke check")
    p.add_argument(
        "--runs", type=int, default=None, help=f"repetitions per figure (default {runs}; quick 1)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="where JSON and PNG files go")
    p.set_defaults(default_runs=runs)
    return p


def add_family_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--family",
        default="4,6",
        help="address families to measure, each row in both (4,6; default both)",
    )


def ipv6_available() -> bool:
    """The kernel has IPv6 (``ipv6.disable=1`` removes /proc/sys/net/ipv6)."""
    return Path("/proc/sys/net/ipv6").is_dir()


def families_of(args: argparse.Namespace) -> list[int]:
    """The ``--family`` list: 4 and/or 6, in that order. IPv6 is left out, with a line saying
    why, when the kernel has none; an unknown family is a usage error."""
    wanted = []
    for item in str(args.family).split(","):
        item = item.strip().lower().removeprefix("ipv")
        if item not in ("4", "6"):
            raise SystemExit(f"--family: {item!r} is not 4 or 6")
        if int(item) not in wanted:
            wanted.append(int(item))
    if 6 in wanted and not ipv6_available():
        print("IPv6 rows skipped: this kernel has no IPv6 (/proc/sys/net/ipv6)", file=sys.stderr)
        wanted.remove(6)
    if not wanted:
        raise SystemExit("--family: nothing left to measure")
    return sorted(wanted)


def family_name(family: int) -> str:
    return f"IPv{family}"


def within_tolerance(v6: float, v4: float, *, higher_is_better: bool) -> bool | None:
    """Issue 11's target for one metric; None when either figure is missing."""
    r = ratio(v6, v4)
    if math.isnan(r):
        return None
    return r >= 1 - IPV6_TOLERANCE if higher_is_better else r <= 1 + IPV6_TOLERANCE


def verdict_line(metric: str, v6: float, v4: float, *, higher_is_better: bool) -> str:
    met = within_tolerance(v6, v4, higher_is_better=higher_is_better)
    word = "-" if met is None else ("met" if met else "not met")
    return (
        f"{metric}: IPv6 {fmt(v6)} vs IPv4 {fmt(v4)} (IPv6/IPv4 {fmt(ratio(v6, v4), 2)}); "
        f"IPv6 within {IPV6_TOLERANCE * 100:.0f} % of IPv4: {word}"
    )


def runs_of(args: argparse.Namespace) -> int:
    if args.runs is not None:
        return max(1, int(args.runs))
    return 1 if args.quick else int(args.default_runs)


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def handle_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)


def setup() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt (so ``with`` blocks clean up) and exit early,
    with a reason, where namespaces or TUN devices cannot be made."""
    handle_signals()
    ok, reason = have_net_admin()
    if not ok:
        print(f"benchmark skipped: {reason}", file=sys.stderr)
        raise SystemExit(2)
    _raise_nofile(65536)


def guard(main: Callable[[], int]) -> int:
    """Run a benchmark's ``main``; Ctrl-C or SIGTERM ends it with exit 130 and one line, after
    the ``with`` blocks have removed its namespaces and stopped its servers."""
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted: namespaces removed, servers stopped", file=sys.stderr)
        return 130


def _raise_nofile(want: int) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"benchmark needs {tool!r} on PATH (apt-get install {tool})")
    return path


# -- machine description -------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    from ustack.aio.loop import uvloop_wanted
    from ustack.wire import checksum

    try:
        import uvloop

        version = getattr(uvloop, "__version__", "?")
        uv = f"on (uvloop {version})" if uvloop_wanted() else "off (USTACK_NO_UVLOOP)"
    except ImportError:
        uv = "off (not installed)"
    impl = checksum.IMPLEMENTATION
    kernel = getattr(checksum, "KERNEL", None)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "uvloop": uv,
        "checksum": f"{impl} ({kernel})" if kernel else impl,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **({"tree": str(TREE)} if TREE != ROOT else {}),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
        f"uvloop {m['uvloop']}, checksum {m['checksum']}, load {m['load_average_1min']}"
        + (f", ustack from {m['tree']}" if "tree" in m else "")
    )


# -- statistics ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was actually observed."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


# -- output --------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_json(out: Path, name: str, doc: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    doc = {"bench": name, "argv": sys.argv[1:], **doc}
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- namespaces and sockets ----------------------------------------------------------------------


def sysctl(ns: NetNamespace, key: str, value: str) -> None:
    """Set a per-namespace sysctl (``net.ipv4.*`` keys are per network namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        Path(path).write_text(value)

    with contextlib.suppress(OSError):
        ns.call(write)


def _client_sysctls(ns: NetNamespace) -> None:
    # Many short connections from one client: use the whole port range, and keep accept
    # queues deep enough that the reference server's backlog is never what limits it.
    sysctl(ns, "net.ipv4.ip_local_port_range", "1024 65000")
    sysctl(ns, "net.core.somaxconn", "8192")
    sysctl(ns, "net.ipv4.tcp_max_syn_backlog", "8192")


def ns_socket(ns: NetNamespace, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A TCP socket that belongs to ``ns`` (created by a helper thread inside it)."""
    return ns.call(lambda: socket.socket(family, socket.SOCK_STREAM))


def address_family(address: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, AF_INET otherwise."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def host_header(address: str) -> str:
    """The ``Host`` value for an address: IPv6 literals go in brackets (RFC 3986 3.2.2)."""
    return f"[{address}]" if ":" in address else address


@contextlib.contextmanager
def inside(ns: NetNamespace) -> Iterator[None]:
    """Move this thread into ``ns`` for a block (to create many sockets cheaply), then back."""
    ns.enter()
    try:
        yield
    finally:
        ns.exit()


def ip(*args: str, ns: NetNamespace | None = None) -> None:
    cmd = ["ip", *(("-n", ns.name) if ns else ()), *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {run.stderr.strip()}")


OFFLOADS = ("tx-tcp-segmentation", "tx-generic-segmentation", "rx-gro")


def disable_offloads(ns: NetNamespace, ifname: str) -> None:
    """Turn off TSO/GSO/GRO so every skb is one wire-sized packet (as on ustack's TUN device,
    which takes no GSO packets): a per-packet drop rule then drops packets, not 64 KB bursts."""

    def apply() -> None:
        from pyroute2.ethtool import Ethtool

        tool = Ethtool()
        try:
            features = tool.get_features(ifname)
            for name in OFFLOADS:
                if name in features.features:
                    features.features[name].enable = False
            tool.set_features(ifname, features)
        finally:
            tool.close()

    ns.call(apply)


def wait_not_tentative(ns: NetNamespace, ifname: str, timeout: float = TENTATIVE_TIMEOUT) -> None:
    """Wait until no global IPv6 address of ``ifname`` is tentative (RFC 4862 5.4: a tentative
    address cannot be bound or used). With ``nodad`` that is at once; the check makes sure."""
    deadline = time.monotonic() + timeout
    cmd = ["ip", "-n", ns.name, "-j", "-6", "addr", "show", "dev", ifname, "scope", "global"]
    while True:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        try:
            infos = [a for link in json.loads(run.stdout) for a in link.get("addr_info", [])]
        except (ValueError, AttributeError):
            infos = []
        if infos and not any(a.get("tentative") or a.get("dadfailed") for a in infos):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ifname} in {ns.name}: IPv6 address still tentative: {infos}")
        time.sleep(0.02)


class VethPair:
    """Two fresh namespaces, ``client`` (10.8.0.1) and ``server`` (10.8.0.2), joined by veth.

    ``offloads=False`` turns segmentation and receive offloads off on both ends. ``ipv6=True``
    adds fd00:8::1/64 and fd00:8::2/64 beside them (``nodad``, and waits until neither is
    tentative)."""

    def __init__(self, mtu: int = 1500, *, offloads: bool = True, ipv6: bool = False) -> None:
        self.mtu = mtu
        self.offloads = offloads
        self.ipv6 = ipv6
        self.client = NetNamespace(prefix="ustack-bench-cli")
        self.server = NetNamespace(prefix="ustack-bench-srv")
        self.client_addr = VETH_CLIENT
        self.server_addr = VETH_SERVER
        self.server_addr6 = VETH_SERVER6 if ipv6 else None

    def server_address(self, family: int) -> str:
        if family == 6:
            if self.server_addr6 is None:
                raise RuntimeError("this veth pair was made without IPv6")
            return self.server_addr6
        return self.server_addr

    def __enter__(self) -> VethPair:
        try:
            self.client.create()
            self.server.create()
            mtu = str(self.mtu)
            ip("link", "add", "vc", "mtu", mtu, "type", "veth",
               "peer", "name", "vs", "mtu", mtu, "netns", self.server.name, ns=self.client)  # fmt: skip
            ip("addr", "add", f"{VETH_CLIENT}/24", "dev", "vc", ns=self.client)
            ip("addr", "add", f"{VETH_SERVER}/24", "dev", "vs", ns=self.server)
            if self.ipv6:
                ip("-6", "addr", "add", f"{VETH_CLIENT6}/64", "dev", "vc", "nodad", ns=self.client)
                ip("-6", "addr", "add", f"{VETH_SERVER6}/64", "dev", "vs", "nodad", ns=self.server)
            ip("link", "set", "vc", "up", ns=self.client)
            ip("link", "set", "vs", "up", ns=self.server)
            if self.ipv6:
                wait_not_tentative(self.client, "vc")
                wait_not_tentative(self.server, "vs")
            if not self.offloads:
                disable_offloads(self.client, "vc")
                disable_offloads(self.server, "vs")
            _client_sysctls(self.client)
            _client_sysctls(self.server)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        # Removing a namespace destroys its end of the veth, and with it the other end.
        self.client.remove()
        self.server.remove()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- subprocesses --------------------------------------------------------------------------------


class Proc:
    """A subprocess this benchmark started, with its output in a log file; stopped by PID."""

    def __init__(self, cmd: Sequence[str], *, name: str, env: dict[str, str] | None = None):
        self.cmd = list(cmd)
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"ustack-bench-{name}-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=TREE,
                env=env,
            )
        self.pid = self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, marker: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.output():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        output = self.output()
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start (exit {self.popen.returncode}):\n{output[-2000:]}"
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        with contextlib.suppress(OSError):
            self.log.unlink()
        return self.popen.returncode

    def rss_kb(self) -> int:
        """VmRSS of the process, in kB (from /proc/PID/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.pid}")

    def sched(self) -> tuple[float, float]:
        """(seconds on a CPU, seconds runnable but waiting for one) from /proc/PID/schedstat.
        The second says how much a busy machine held the process back."""
        fields = Path(f"/proc/{self.pid}/schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TREE), env.get("PYTHONPATH")]))
    return env


class UstackServe:
    """``ustack serve`` in a fresh namespace of its own; clients go to ``self.ns``.

    ``profiled=True`` starts it through ``bench/_profiled.py``, so that :meth:`count` can
    count the Python calls a piece of client work costs it. Timed runs leave it off."""

    def __init__(
        self,
        *,
        mtu: int = 1500,
        services: str = "echo,discard,http",
        extra: Sequence[str] = (),
        profiled: bool = False,
    ) -> None:
        self.mtu = mtu
        self.services = services
        self.extra = list(extra)
        self.ns = NetNamespace(prefix="ustack-bench")
        self.address = USTACK_ADDR
        # Set once ``serve`` says it has both families (it falls back to IPv4 alone where the
        # namespace has no IPv6, and older trees measured through USTACK_TREE have none).
        self.address6: str | None = None
        self.proc: Proc | None = None
        self.profile_dir = Path(tempfile.mkdtemp(prefix="ustack-bench-prof-")) if profiled else None

    def __enter__(self) -> UstackServe:
        try:
            self.ns.create()
            _client_sysctls(self.ns)
            # ``ip netns exec`` execs the command, so the PID is the ustack process itself.
            if self.profile_dir is None:
                ustack = [sys.executable, "-m", "ustack"]
            else:
                ustack = [sys.executable, str(BENCH / "_profiled.py"), str(self.profile_dir / "p")]
            cmd = ["ip", "netns", "exec", self.ns.name, *ustack, "serve", "--no-control",
                   "--mtu", str(self.mtu), "--services", self.services, "--address", USTACK_ADDR,
                   "--peer", USTACK_PEER, "--grace", "1", *self.extra]  # fmt: skip
            self.proc = Proc(cmd, name="ustack", env=_python_env())
            self.proc.wait_for("serving")
            if f" and {USTACK_ADDR6} " in self.proc.output():
                self.address6 = USTACK_ADDR6
        except BaseException:
            self.close()
            raise
        return self

    def address_of(self, family: int) -> str:
        """ustack's address in ``family``; a clear error where ``serve`` runs IPv4 only."""
        if family == 6:
            if self.address6 is None:
                assert self.proc is not None
                raise RuntimeError(
                    "ustack serve runs without IPv6 here:\n" + self.proc.output()[-1000:]
                )
            return self.address6
        return self.address

    def count(
        self, work: Callable[[], int], *, repeats: int = 1, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Run ``work`` (which returns how many operations it did) ``repeats`` times, each in
        its own cProfile window in the ustack process; per operation, the median window's call
        counts (with every window's in ``windows`` and their range in ``calls_per_op_range``).
        How events happen to batch moves a count by a percent or two from window to window."""
        windows = [self._count_once(work, timeout) for _ in range(max(1, repeats))]
        middle = sorted(windows, key=lambda w: w["calls_per_op"])[len(windows) // 2]
        per_op = [w["calls_per_op"] for w in windows]
        return {
            **middle,
            "calls_per_op_range": [min(per_op), max(per_op)],
            "windows": windows,
            "all_operations": all(w["operations"] == windows[0]["operations"] for w in windows),
        }

    def _count_once(self, work: Callable[[], int], timeout: float) -> dict[str, Any]:
        """One cProfile window around ``work``: call counts in total and per operation, and
        the process's CPU time per operation while profiled (inflated by the profiler)."""
        assert self.proc is not None and self.profile_dir is not None, "not started profiled"
        out = self.profile_dir / "p"
        on = self.profile_dir / "p.on"
        for path in (out, on):
            path.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        _wait_path(on, timeout, self.proc)
        cpu0, _ = self.proc.sched()
        n = 0
        try:
            n = work()
        finally:
            os.kill(self.pid, signal.SIGUSR2)
            _wait_path(out, timeout, self.proc)
        cpu1, _ = self.proc.sched()
        from _profiled import read_counts  # bench/ is on the path of every benchmark

        counts = read_counts(out)
        per = max(n, 1)
        return {
            "operations": n,
            "calls": counts["all"],
            "python_calls": counts["python"],
            "builtin_calls": counts["builtin"],
            "calls_per_op": counts["all"] / per,
            "python_calls_per_op": counts["python"] / per,
            "builtin_calls_per_op": counts["builtin"] / per,
            "profiled_cpu_us_per_op": (cpu1 - cpu0) / per * 1e6,
        }

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.ns.remove()
        if self.profile_dir is not None:
            shutil.rmtree(self.profile_dir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_path(path: Path, timeout: float, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not proc.alive():
            raise RuntimeError(f"ustack exited while profiling:\n{proc.output()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ustack did not write {path.name} within {timeout:.0f} s")
        time.sleep(0.005)


class RefServer:
    """``bench/_refserver.py`` (kernel sockets, epoll) in ``ns``: echo 7, discard 9, http 80."""

    def __init__(self, ns: NetNamespace, address: str = VETH_SERVER) -> None:
        self.ns = ns
        self.address = address
        self.proc: Proc | None = None

    def __enter__(self) -> RefServer:
        cmd = ["ip", "netns", "exec", self.ns.name, sys.executable,
               str(BENCH / "_refserver.py"), "--address", self.address]  # fmt: skip
        self.proc = Proc(cmd, name="refserver", env=_python_env())
        self.proc.wait_for("ready")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.stop()


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen {address}:{port} backlog=8192 reuseport;
        root {tmp}/www;
    }}
}}
"""


class Nginx:
    """nginx (one process, one worker: the same one core ustack gets) serving ``files``."""

    def __init__(self, ns: NetNamespace, files: dict[str, bytes], address: str = VETH_SERVER):
        self.ns = ns
        self.files = files
        self.address = address
        self.port = 80
        self.tmp: Path | None = None
        self.proc: Proc | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("nginx") is not None

    def __enter__(self) -> Nginx:
        self.tmp = Path(tempfile.mkdtemp(prefix="ustack-bench-nginx-"))
        try:
            for rel, data in self.files.items():
                path = self.tmp / "www" / rel.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            conf = self.tmp / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=self.tmp, address=self.address, port=self.port))
            cmd = ["ip", "netns", "exec", self.ns.name, need("nginx"),
                   "-p", str(self.tmp), "-e", str(self.tmp / "error.log"), "-c", str(conf)]  # fmt: skip
            self.proc = Proc(cmd, name="nginx")
            deadline = time.monotonic() + START_TIMEOUT
            while not self._listening():
                if not self.proc.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self._errors()}")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise
        return self

    def _errors(self) -> str:
        assert self.tmp is not None and self.proc is not None
        log = self.tmp / "error.log"
        return (log.read_text() if log.exists() else "") + self.proc.output()

    def _listening(self) -> bool:
        sock = ns_socket(self.ns)
        sock.settimeout(0.5)
        try:
            sock.connect((self.address, self.port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- small client helpers ------------------------------------------------------------------------


def connect(ns: NetNamespace, address: str, port: int, *, timeout: float = 10.0) -> socket.socket:
    """A blocking client socket created in ``ns`` (IPv4 or IPv6, as ``address`` is), with 1 MiB
    buffers, connected."""
    sock = ns_socket(ns, address_family(address))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def http_get(ns: NetNamespace, address: str, path: str, *, timeout: float = 10.0) -> bytes:
    """One ``GET`` with ``Connection: close``; returns the body (small responses only)."""
    sock = connect(ns, address, 80, timeout=timeout)
    try:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host_header(address)}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            chunks.append(chunk)
    finally:
        sock.close()
    _head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return body


def ustack_counters(server: UstackServe) -> dict[str, Any]:
    """The running ustack's counters, from its HTTP service's ``/stats.json`` (if it has one)."""
    if "http" not in server.services:
        return {}
    try:
        doc = json.loads(http_get(server.ns, server.address, "/stats.json"))
    except (OSError, ValueError):
        return {}
    counters = doc.get("counters", doc)
    return counters if isinstance(counters, dict) else {}


def bounded(count: int, seconds: float) -> Callable[[int], bool]:
    """``keep_going(i)``: true while ``i < count`` and ``seconds`` have not passed."""
    deadline = time.monotonic() + seconds

    def keep_going(i: int) -> bool:
        return i < count and time.monotonic() < deadline

    return keep_going


def load_result(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def http_body_pattern(size: int) -> bytes:
    """The body ustack's ``GET /bytes/N`` sends: byte ``i`` is ``i % 251``."""
    return bytes(i % 251 for i in range(size))


# -- process and kernel counters (synflood, soak) ------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in brackets and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many file descriptors a process has open (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def kernel_counters(ns: NetNamespace) -> dict[str, int]:
    """The kernel's SNMP and extended counters of ``ns`` (/proc/net/snmp and /proc/net/netstat,
    as seen from a thread inside it), keyed ``Group.Name``: ``TcpExt.SyncookiesSent``,
    ``Ip.InAddrErrors``, ``Tcp.OutRsts``..."""

    def read() -> dict[str, int]:
        out: dict[str, int] = {}
        for name in ("snmp", "netstat"):
            # thread-self, not self: /proc/self/net is the namespace of the process's main
            # thread, and only this helper thread is inside ``ns``.
            lines = Path(f"/proc/thread-self/net/{name}").read_text().splitlines()
            for head, values in zip(lines[::2], lines[1::2], strict=False):
                group, _, keys = head.partition(":")
                for key, value in zip(keys.split(), values.partition(":")[2].split(), strict=False):
                    with contextlib.suppress(ValueError):
                        out[f"{group}.{key}"] = int(value)
        return out

    return ns.call(read)


def kernel_syn_recv(ns: NetNamespace) -> int:
    """Connections (request sockets included) in SYN-RECEIVED in ``ns``: /proc/net/tcp rows in
    state 03, which is how the kernel lists a listener's pending requests."""

    def count() -> int:
        rows = Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]
        return sum(1 for row in rows if row.split()[3] == "03")

    return ns.call(count)


def link_counters(ns: NetNamespace, ifname: str) -> dict[str, int]:
    """An interface's packet counters in ``ns`` (``ip -s -j link``): rx/tx packets and drops."""
    cmd = ["ip", "-n", ns.name, "-s", "-j", "link", "show", "dev", ifname]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    try:
        stats = json.loads(run.stdout)[0]["stats64"]
    except (ValueError, LookupError):
        return {}
    return {
        f"{way}_{key}": int(stats[way][key])
        for way in ("rx", "tx")
        for key in ("packets", "dropped")
        if key in stats.get(way, {})
    }


def sysctl_value(ns: NetNamespace, key: str) -> str | None:
    """Read a per-namespace sysctl back (to check that :func:`sysctl` took)."""
    path = "/proc/sys/" + key.replace(".", "/")

    def read() -> str:
        return Path(path).read_text().strip()

    try:
        return ns.call(read)
    except OSError:
        return None
