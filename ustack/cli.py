"""The ``ustack`` command.

Thin by design: every subcommand parses its arguments, calls the library and turns the library's
errors into one-line messages with a non-zero exit code. Anything a library user would also want
(the stack, the services, the link wrappers, the ladder diagram) lives in the library.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import hashlib
import ipaddress
import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from ustack import __version__

DEFAULT_SERVICES = "echo,discard,chargen,http"
OFFLOAD_CHOICES = ("auto", "on", "off")  # ustack.link.tun.OFFLOAD_MODES, without importing it
EXIT_ERROR = 1
DEMO_SIZE = 300_000  # ustack demo's download
DEMO_MSL = 1.0  # ustack demo's MSL: TIME-WAIT ends while you watch
EXIT_USAGE = 2

log = logging.getLogger("ustack")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _fail(message: str) -> int:
    print(f"ustack: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _percent(text: str) -> float:
    """A probability given in percent (``5`` or ``5%``), returned as a fraction."""
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"percentage out of range 0-100: {text!r}")
    return value / 100.0


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def _ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv6 address: {text!r}") from None


def _mac(text: str) -> str:
    from ustack.wire import ethernet

    try:
        mac = ethernet.mac_from_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if mac[0] & 1 or not any(mac):
        raise argparse.ArgumentTypeError(f"not a unicast MAC address: {text!r}")
    return ethernet.mac_to_text(mac)


def _mtu(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 576 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"MTU must be between 576 and 65535, got {value}")
    return value


def _busy_poll(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of microseconds: {text!r}") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"busy poll must be 0 to 10000 microseconds, got {value}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _ports(text: str) -> list[int]:
    """``"80,7"`` -> ``[80, 7]``: local ports for ``--ladder`` and ``trace --ports``."""
    ports: list[int] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise argparse.ArgumentTypeError(f"bad port {item!r}: use 1-65535")
        ports.append(int(item))
    if not ports:
        raise argparse.ArgumentTypeError("no ports given")
    return ports


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def parse_services(text: str) -> list[tuple[str, int]]:
    """``"echo,http:8080"`` -> ``[("echo", 7), ("http", 8080)]``; raises ValueError with a reason."""
    from ustack.apps import SERVICES

    chosen: list[tuple[str, int]] = []
    ports: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, port_text = item.partition(":")
        if name not in SERVICES:
            raise ValueError(f"unknown service {name!r} (choose from {', '.join(SERVICES)})")
        port = SERVICES[name][0]
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError(f"bad port {port_text!r} for {name}: use 1-65535")
            port = int(port_text)
        if port in ports:
            raise ValueError(
                f"port {port} is already used by {ports[port]}: address already in use"
            )
        ports[port] = name
        chosen.append((name, port))
    if not chosen:
        raise ValueError("no services chosen")
    return chosen


def _checksum_info(_args: argparse.Namespace) -> int:
    from ustack.wire import checksum

    print(f"implementation: {checksum.IMPLEMENTATION}")
    kernel = getattr(checksum, "KERNEL", None)
    if kernel:
        print(f"kernel: {kernel}")
    print(f"reason: {checksum.IMPLEMENTATION_REASON}")
    return 0


class _Tracer:
    """``--trace``: one line per event a connection reports (state changes, retransmissions,
    loss recovery, RTO and TLP firings, arriving SACK blocks).

    Text lines are for people: sequence numbers relative to the connection's ISS, as the ladder
    diagram shows them (SACK blocks and retransmissions are about our own data). JSON lines are
    for programs: one object per line, the detail as the connection gave it (absolute numbers,
    enums as their values) beside ``time``, ``local``, ``remote`` and ``event``; a detail key that
    would overwrite one of those four is renamed ``<event>_<key>`` (the recovery event's
    ``event`` becomes ``recovery_event``).
    """

    def __init__(self, fmt: str, out: TextIO) -> None:
        self.fmt = fmt
        self.out = out

    def __call__(self, conn: Any, kind: str, detail: dict[str, Any]) -> None:
        from ustack.aio.transport import endpoint_text

        local = endpoint_text(conn.local_addr, conn.local_port)
        remote = endpoint_text(conn.remote_addr, conn.remote_port)
        when = time.time()
        if self.fmt == "json":
            from ustack.live import trace_record

            # the same objects as ustack trace --json streams (docs/trace-schema.md)
            line = json.dumps(trace_record(when, local, remote, kind, detail), sort_keys=True)
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1e6):06d}"
            line = f"{stamp} {local} <-> {remote} {_describe(conn, kind, detail)}"
        print(line, file=self.out, flush=True)


def _state_name(state: Any) -> str:
    return str(getattr(state, "value", state))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return getattr(value, "value", value)


def _describe(conn: Any, kind: str, detail: dict[str, Any]) -> str:
    """The text trace's words for one event; anything unexpected prints as key=value."""
    # The tracer runs inside the connection's own packet processing: a detail of a shape this
    # printer does not know must not raise into it, so it degrades to the generic form.
    try:
        formatter = _FORMATTERS.get(kind)
        if formatter is not None:
            return formatter(detail, getattr(conn, "iss", None))
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return " ".join([kind, *(f"{k}={_jsonable(v)}" for k, v in detail.items())])


def _our_seq(seq: int, iss: int | None) -> int:
    return (seq - iss) & 0xFFFFFFFF if isinstance(iss, int) else seq


def _fmt_state(detail: dict[str, Any], _iss: int | None) -> str:
    text = f"{_state_name(detail['from'])} -> {_state_name(detail['to'])}"
    options = detail.get("options")
    if options is not None:
        # What the handshake agreed on, including what it did not: a peer without SACK or
        # timestamps changes how loss recovery behaves.
        wscale = options.get("wscale")
        text += (
            f" (mss {options['mss']}, wscale {'off' if wscale is None else wscale}, "
            f"sack {'on' if options.get('sack') else 'off'}, "
            f"timestamps {'on' if options.get('timestamps') else 'off'})"
        )
    return text


def _fmt_retransmit(detail: dict[str, Any], iss: int | None) -> str:
    text = f"retransmit seq={_our_seq(detail['seq'], iss)} len={detail['len']}"
    text += "".join(f" {flag}" for flag in ("syn", "fin") if detail.get(flag))
    if "reason" in detail:
        text += f" reason={detail['reason']}"
    return text


def _fmt_recovery(detail: dict[str, Any], _iss: int | None) -> str:
    return (
        f"recovery {detail['event']} reason={detail['reason']} cwnd={detail['cwnd']} "
        f"ssthresh={detail['ssthresh']} pipe={detail['pipe']}"
    )


def _fmt_rto(detail: dict[str, Any], _iss: int | None) -> str:
    return f"rto {float(detail['rto']):.3f}s backoff={detail['backoff']} cwnd={detail['cwnd']}"


def _fmt_tlp(detail: dict[str, Any], iss: int | None) -> str:
    what = "new data" if detail["new_data"] else "last segment again"
    return f"tlp seq={_our_seq(detail['seq'], iss)} len={detail['len']} ({what})"


def _fmt_sack(detail: dict[str, Any], iss: int | None) -> str:
    blocks = " ".join(f"{_our_seq(a, iss)}-{_our_seq(b, iss)}" for a, b in detail["blocks"])
    text = f"sack ack={_our_seq(detail['ack'], iss)} blocks {blocks}"
    return text + " (dsack)" if detail.get("dsack") else text


_FORMATTERS: dict[str, Callable[[dict[str, Any], int | None], str]] = {
    "state": _fmt_state,
    "retransmit": _fmt_retransmit,
    "recovery": _fmt_recovery,
    "rto": _fmt_rto,
    "tlp": _fmt_tlp,
    "sack": _fmt_sack,
}


FAULTS_NEED_PLAIN = "fault injection works per wire packet"


def _faults(args: argparse.Namespace) -> dict[str, Any]:
    """The fault options that are set, as ``FaultConfig`` keywords."""
    faults = {
        "drop": args.loss,
        "duplicate": args.duplicate,
        "reorder": args.reorder,
        "corrupt": args.corrupt,
        "delay": args.delay / 1000.0,
    }
    return {key: value for key, value in faults.items() if value}


def _mac_text(link: Any) -> str:
    """ ", MAC 02:..." for a link with a MAC address of its own (TAP, through any wrappers)."""
    while link is not None:
        arp = getattr(link, "arp", None)
        if arp is not None:
            from ustack.wire import ethernet

            return f" MAC {ethernet.mac_to_text(arp.mac)}"
        link = getattr(link, "inner", None)
    return ""


def _offload_text(link: Any, reason: str = "") -> str:
    """The startup line's words for the link's offload state."""
    if getattr(link, "offload", False):
        return "offload: on (TSO/GRO, checksum)"
    return f"offload: off ({reason or getattr(link, 'offload_reason', '') or 'not available'})"


def _open_tun(args: argparse.Namespace, offload: str) -> Any:
    """The TUN device (or with ``--link tap`` the TAP device, Ethernet with ARP and Neighbor
    Discovery) with both families unless ``--no-ipv6``. Where the kernel or the namespace has
    IPv6 disabled (Docker's default) ``serve`` runs on IPv4 alone, saying why, and
    ``args.ipv6`` is cleared so the rest of the startup knows."""
    from ustack.link.errors import LinkError
    from ustack.link.tun import TunLink

    def open_link(v6: bool) -> Any:
        if args.link == "tap":
            from ustack.aio.ethernet import EthernetLink
            from ustack.link.tap import TapLink

            tap = TapLink.open(
                args.name,
                mtu=args.mtu,
                address=args.peer,
                peer=args.address,
                prefixlen=args.prefixlen,
                mac=args.mac,
                address6=f"{args.peer6}/{args.prefixlen6}" if v6 else None,
                peer6=args.address6 if v6 else None,
            )
            return EthernetLink.over(tap)
        return TunLink.open(
            args.name,
            mtu=args.mtu,
            address=args.peer,
            peer=args.address,
            prefixlen=args.prefixlen,
            offload=offload,
            address6=f"{args.peer6}/{args.prefixlen6}" if v6 else None,
            peer6=args.address6 if v6 else None,
        )

    if not args.ipv6:
        return open_link(False)
    try:
        return open_link(True)
    except LinkError as exc:
        if exc.errno != errno.EAFNOSUPPORT:
            raise
        print(f"ustack: warning: IPv4 only: {exc}", file=sys.stderr, flush=True)
        args.ipv6 = False
        return open_link(False)


def _build_link(args: argparse.Namespace) -> tuple[Any, str]:
    """The link ``serve`` runs on, and the words for its offload state."""
    faults = _faults(args)
    offload, reason = args.offload, ""
    if args.link == "tap":
        offload, reason = "off", "TAP carries plain Ethernet frames"
    elif faults:
        # _cmd_serve refused "on" already.
        offload, reason = "off", FAULTS_NEED_PLAIN
    link = _open_tun(args, offload)
    described = _offload_text(link, reason)
    try:
        if faults:
            from ustack.link.fault import FaultConfig, FaultModel
            from ustack.link.faulty import FaultyLink

            config = FaultConfig(**faults)
            link = FaultyLink(
                link,
                model_out=FaultModel(config, seed=f"{args.seed}-out"),
                model_in=FaultModel(config, seed=f"{args.seed}-in"),
            )
        if args.pcap:
            from ustack.link.pcap import PcapTap, PcapWriter

            link = PcapTap(link, PcapWriter(args.pcap))
    except BaseException:
        link.close()
        raise
    return link, described


def _tcp_config(args: argparse.Namespace) -> Any:
    from ustack.tcp.config import TcpConfig

    config = TcpConfig(
        congestion=args.congestion,
        sack=not args.no_sack,
        timestamps=not args.no_timestamps,
        rto_min=args.rto_min / 1000.0,
        syn_cookies=args.syn_cookies,
    )
    if args.msl is not None:
        config.msl = args.msl
    if args.user_timeout:  # 0 = off, as Linux's TCP_USER_TIMEOUT
        config.user_timeout = args.user_timeout
    return config


async def _serve(
    args: argparse.Namespace, services: list[tuple[str, int]], identity: Any = None
) -> int:
    import ustack
    from ustack.apps import SERVICES
    from ustack.control import ControlServer, TraceHub

    loop = asyncio.get_running_loop()
    tracer = _Tracer(args.trace, sys.stderr) if args.trace else None
    link, offload = _build_link(args)
    try:
        # Before the privilege drop: /run/ustack is root's.
        control_sock, control_path, control_note, ladder_out = _open_live(args, identity)
    except BaseException:
        link.close()
        raise
    running_as = ""
    if identity is not None:
        # The device is open and configured and the capture file open: nothing ahead needs
        # root (the device goes away when its fd is closed, which anyone may do).
        from ustack.link.privilege import drop_privileges

        try:
            drop_privileges(identity)
        except BaseException:
            link.close()
            if control_sock is not None:
                control_sock.close()
            raise
        running_as = f", running as user {identity.user} (uid {identity.uid})"
    stack = ustack.Stack(
        link,
        address=args.address,
        address6=args.address6 if args.ipv6 else None,
        config=_tcp_config(args),
        tracer=tracer,
        busy_poll=args.busy_poll / 1e6,
        gso=not args.no_gso,
    )
    stack.start()
    # Live ladders and ``ustack trace``: the hub installs the observers while someone watches.
    hub = TraceHub(stack, base_tracer=tracer)
    if ladder_out is not None:
        hub.add("ladder", args.ladder or None, text=_ladder_printer(ladder_out))
    control = None
    if control_sock is not None:
        control = ControlServer(control_sock, hub, control_path)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def info() -> dict[str, Any]:
        return {"counters": stack.stats.as_dict(), "connections": stack.connections()}

    servers = []
    try:
        if control is not None:
            await control.start()
        for name, port in services:
            handler = SERVICES[name][1](info=info)
            servers.append(await ustack.start_server(handler, port=port, stack=stack))
        _settle_gc()
        listening = " ".join(f"{name}:{port}" for name, port in services)
        addresses, kernel = args.address, f"{args.peer}/{args.prefixlen}"
        if args.ipv6:
            addresses += f" and {args.address6}"
            kernel += f" and {args.peer6}/{args.prefixlen6}"
        print(
            f"ustack {__version__}: serving {listening} on {addresses} "
            f"({args.link.upper()} {args.name}{_mac_text(link)}, kernel side {kernel}, "
            f"MTU {args.mtu}, "
            f"{offload}, {type(loop).__module__.split('.')[0]} loop{running_as}); "
            "Ctrl-C or SIGTERM to stop",
            file=sys.stderr,
            flush=True,
        )
        if control_note:
            print(control_note, file=sys.stderr, flush=True)
        # Until a signal, or until the stack closes by itself (its TUN device deleted).
        stopped = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(stack.wait_closed())
        await asyncio.wait((stopped, lost), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        lost.cancel()
        if stack.link_error is not None:
            print(f"ustack: {stack.link_error}", file=sys.stderr, flush=True)
            return EXIT_ERROR
        print("ustack: stopping: closing connections", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.close()
        await stack.aclose(grace=args.grace)
        # After the connections: the ladders of those closed on the way out are written too.
        hub.close()
        if control is not None:
            await control.aclose()
        elif control_sock is not None:
            control_sock.close()
        if ladder_out is not None and ladder_out is not sys.stdout:
            ladder_out.close()
    return 0


def _open_live(args: argparse.Namespace, identity: Any) -> tuple[Any, str, str, TextIO | None]:
    """``serve``'s control socket (owned by the user it will run as) and ``--ladder`` output:
    (listening socket or None, its path, a warning to print or "", the ladder stream or None).
    The default socket is a convenience: if it cannot be made, serve runs without it, saying
    why; a ``--control PATH`` that cannot be made is an error."""
    from ustack.control import ControlError, bind, default_path

    ladder_out: TextIO | None = None
    if args.ladder is not None:
        if args.ladder_file:
            try:
                ladder_out = open(args.ladder_file, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ValueError(f"--ladder-file {args.ladder_file}: {exc.strerror}") from None
        else:
            ladder_out = sys.stdout
    if not args.control_enabled:
        return None, "", "", ladder_out
    path = args.control or default_path(args.name)
    owner = (identity.uid, identity.gid) if identity is not None else None
    try:
        return bind(path, owner), path, "", ladder_out
    except ControlError as exc:
        if ladder_out is not None and ladder_out is not sys.stdout:
            ladder_out.close()
        if args.control:
            raise ValueError(str(exc)) from None
        return None, "", f"ustack: warning: no control socket (ustack trace): {exc}", ladder_out


def _ladder_printer(out: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        # A closed or full pipe must not take the daemon down: the ladder is lost, not serve.
        try:
            print(text, file=out, flush=True)
        except (OSError, ValueError):
            log.warning("ladder output failed; ladder not written")

    return write


def _cmd_trace(args: argparse.Namespace) -> int:
    from ustack.control import ControlError, default_path, trace

    path = args.control or default_path(args.name)
    mode = "json" if args.json else "ladder"
    try:
        return asyncio.run(trace(path, mode=mode, ports=args.ports, count=args.count))
    except ControlError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # ``ustack trace | head``: the reader is gone, which is how such a pipe ends.
        sys.stderr.close()
        return 0


def _settle_gc() -> None:
    """Everything made while starting up (modules, the stack, the services) lives as long as
    the process: moved out of the collector's reach (``gc.freeze``), so the full collections
    that connection churn triggers now and then do not walk it again each time."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ustack.aio.loop import run
    from ustack.link.errors import LinkError

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        services = parse_services(args.services)
    except ValueError as exc:
        return _fail(str(exc))
    if args.address == args.peer:
        return _fail(f"bad address: the stack and the kernel side both use {args.address}")
    if args.ipv6 and args.address6 == args.peer6:
        return _fail(f"bad address: the stack and the kernel side both use {args.address6}")
    if args.offload == "on" and _faults(args):
        return _fail(
            f"--offload on cannot be combined with --loss, --duplicate, --reorder, --corrupt "
            f"or --delay: {FAULTS_NEED_PLAIN} (use --offload auto or off)"
        )
    if args.ladder_file and args.ladder is None:
        print("ustack: error: --ladder-file needs --ladder", file=sys.stderr)
        return EXIT_USAGE
    if args.mac is not None and args.link != "tap":
        print("ustack: error: --mac needs --link tap", file=sys.stderr)
        return EXIT_USAGE
    if args.link == "tap" and args.offload == "on":
        print("ustack: error: --offload on needs --link tun (TAP has no offloads)", file=sys.stderr)
        return EXIT_USAGE
    identity = None
    if args.user is not None or args.group is not None:
        from ustack.link.privilege import resolve

        if args.user is None:
            print("ustack: error: --group needs --user", file=sys.stderr)
            return EXIT_USAGE
        try:
            identity = resolve(args.user, args.group)
        except LinkError as exc:
            print(f"ustack: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return run(_serve(args, services, identity), use_uvloop=not args.no_uvloop)
    except LinkError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(exc.strerror or str(exc))
    except ValueError as exc:
        return _fail(str(exc))


async def _demo(args: argparse.Namespace) -> int:
    import ustack
    from ustack.apps.httpd import HttpApp, pattern_bytes
    from ustack.ladder import Ladder
    from ustack.link.netns import NetNamespace
    from ustack.link.tun import TunLink
    from ustack.tcp.config import TcpConfig

    loop = asyncio.get_running_loop()
    address, peer = "10.7.0.2", "10.7.0.1"
    address6, peer6 = "fd00:7::2", "fd00:7::1"
    # With --ipv6 the fetches go to the IPv6 address, so the ladder shows IPv6 packets.
    target = f"[{address6}]" if args.ipv6 else address

    def on_packet(direction: str, packet: bytes | bytearray | memoryview, _now: float) -> None:
        # One fine-grained clock for packets and state changes (uvloop's loop.time() moves in
        # whole milliseconds, and the driver's ``now`` is the batch's), so times never run
        # backwards in the diagram.
        ladder.packet(time.monotonic(), direction, packet)

    def tracer(conn: Any, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state":
            ladder.state(
                time.monotonic(),
                (conn.local_addr, conn.local_port),
                (conn.remote_addr, conn.remote_port),
                _state_name(detail["from"]),
                _state_name(detail["to"]),
            )

    config = TcpConfig()
    config.msl = args.msl  # short, so TIME-WAIT ends while you watch
    with NetNamespace(prefix="ustack-demo") as ns:
        print(f"created network namespace {ns.name}", file=sys.stderr)
        if args.link == "tap":
            # Ethernet with ARP (and Neighbor Discovery for IPv6): the ladder draws the
            # neighbour resolution before the first SYN.
            ladder = Ladder(max_run=args.fold, timestamps=args.timestamps)
            stack = ustack.Stack.tap(
                "ustack0",
                address=address,
                peer=peer,
                netns=ns.name,
                address6=address6 if args.ipv6 else None,
                peer6=peer6 if args.ipv6 else None,
                config=config,
                tracer=tracer,
                on_packet=on_packet,
            )
            print(f"TAP device ustack0, ustack's MAC {_mac_text(stack.link)[5:]}", file=sys.stderr)
        else:
            link = TunLink.open(
                "ustack0",
                mtu=1500,
                address=peer,
                peer=address,
                netns=ns.name,
                offload=args.offload,
                address6=f"{peer6}/64" if args.ipv6 else None,
                peer6=address6 if args.ipv6 else None,
            )
            print(_offload_text(link), file=sys.stderr)
            ladder = Ladder(
                max_run=args.fold, timestamps=args.timestamps, header_len=link.header_len
            )
            stack = ustack.Stack(
                link,
                address=address,
                address6=address6 if args.ipv6 else None,
                config=config,
                tracer=tracer,
                on_packet=on_packet,
            )
        async with stack:

            def info() -> dict[str, Any]:
                return {"counters": stack.stats.as_dict(), "connections": stack.connections()}

            server = await ustack.start_server(HttpApp(info=info), port=80, stack=stack)
            all_ok = True
            for path, size in (("/", None), (f"/bytes/{args.size}", args.size)):
                body, client = await _fetch(ns, f"http://{target}{path}")
                line = f"GET {path}: {len(body)} bytes via {client}"
                if size is not None:
                    ok = (
                        hashlib.sha256(body).digest()
                        == hashlib.sha256(pattern_bytes(0, size)).digest()
                    )
                    line += f", SHA-256 {hashlib.sha256(body).hexdigest()[:16]}... " + (
                        "verified" if ok else "MISMATCH"
                    )
                    all_ok = all_ok and ok
                print(line, file=sys.stderr)
            # Let TIME-WAIT (2 * MSL) run out, so the diagram ends in CLOSED.
            deadline = loop.time() + 2 * config.msl + 2.0
            while stack.connections() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            server.close()
        print(ladder.render())
        print(
            f"(ustack side: states recorded by the stack; kernel side: inferred from the "
            f"segments; MSL set to {config.msl:g} s for the demo, so TIME-WAIT lasts "
            f"{2 * config.msl:g} s)"
        )
    print(f"removed network namespace {ns.name}", file=sys.stderr)
    return 0 if all_ok else EXIT_ERROR


async def _fetch(ns: Any, url: str) -> tuple[bytes, str]:
    """GET ``url`` from inside the namespace: with curl if installed, else a Python client."""
    if shutil.which("curl"):
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns.name,
            "curl", "-gsS", "--max-time", "30", "-H", "Connection: close", url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        if proc.returncode:
            raise OSError(f"curl failed: {err.decode(errors='replace').strip()}")
        return out, "curl"
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
    sock = ns.call(lambda: socket.socket(family, socket.SOCK_STREAM))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port or 80))
    reader, writer = await asyncio.open_connection(sock=sock)
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    _head, _, body = data.partition(b"\r\n\r\n")
    return body, "Python sockets"


def _time_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.001 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"time scale must be between 0.001 and 1000: {text!r}")
    return value


def _demo_usage(message: str) -> int:
    print(f"ustack demo: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_demo(args: argparse.Namespace) -> int:
    from ustack.aio.loop import run
    from ustack.link.errors import LinkError

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if args.list or args.scenario is not None:
        from ustack import scenarios

        if args.list:
            print(scenarios.listing())
            return 0
        scenario = scenarios.SCENARIOS.get(args.scenario)
        if scenario is None:
            return _demo_usage(
                f"unknown scenario {args.scenario!r} (ustack demo --list names them)"
            )
        plain_only = [
            flag
            for flag, given in (
                ("--size", args.size != DEMO_SIZE),
                ("--msl", args.msl != DEMO_MSL),
                ("--offload", args.offload != "auto"),
                ("--ipv6", args.ipv6),
                ("--link", args.link != "tun"),
            )
            if given
        ]
        if plain_only:
            return _demo_usage(f"{', '.join(plain_only)}: only for the plain demo, not scenarios")
        if scenario.peer == scenarios.PEER_KERNEL:
            from ustack.link.netns import have_net_admin

            able, why = have_net_admin()
            if not able:
                return _fail(f"scenario {scenario.name!r} needs root for a namespace: {why}")
        options = scenarios.Options(
            time_scale=args.time_scale, fold=args.fold, timestamps=args.timestamps
        )
        try:
            report = run(scenario.run(options), use_uvloop=not args.no_uvloop)
        except LinkError as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(str(exc))
        print(report.text(), end="")
        if not report.ok:
            return _fail(f"scenario {scenario.name!r} did not go as described")
        return 0
    if args.time_scale != 1.0:
        return _demo_usage("--time-scale is for scenarios (ustack demo --list names them)")
    if args.link == "tap" and args.offload == "on":
        return _demo_usage("--offload on needs --link tun (TAP has no offloads)")
    try:
        return run(_demo(args), use_uvloop=not args.no_uvloop)
    except LinkError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return _fail(f"{exc} (the demo needs root to create a network namespace)")
        return _fail(str(exc))
    except OSError as exc:
        return _fail(str(exc))


def _cmd_forward(args: argparse.Namespace) -> int:
    from ustack import forward
    from ustack.aio.loop import run
    from ustack.link.errors import LinkError

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.netns is None and not command:
        print(
            "ustack forward: error: give --netns NAME (an existing namespace) or a command "
            "to run: ustack forward -- CMD [ARGS...]",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.netns is not None and command:
        print(
            "ustack forward: error: --netns and a command do not go together (the command "
            "runs in a namespace of its own)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.netns is not None and (not args.netns or "/" in args.netns or args.netns[0] == "."):
        print(f"ustack forward: error: bad namespace name {args.netns!r}", file=sys.stderr)
        return EXIT_USAGE
    if command and shutil.which(command[0]) is None:
        print(f"ustack forward: error: command not found: {command[0]}", file=sys.stderr)
        return 127
    for ours, theirs, what in (
        (args.gateway, args.address, "address"),
        (args.gateway6, args.address6, "IPv6 address"),
    ):
        if ours == theirs:
            return _fail(f"bad {what}: the namespace and its gateway both use {ours}")
    setup = forward.ForwardSetup(
        netns=args.netns,
        command=command,
        name=args.name,
        mtu=args.mtu,
        address=args.address,
        gateway=args.gateway,
        prefixlen=args.prefixlen,
        ipv6=args.ipv6,
        address6=args.address6,
        gateway6=args.gateway6,
        prefixlen6=args.prefixlen6,
        offload=args.offload,
    )
    config = forward.ForwardConfig(
        connect_timeout=args.connect_timeout,
        map_gateway=args.map_gateway,
        trace=forward.print_trace if args.trace else None,
    )

    def announce(line: str) -> None:
        if not command or args.trace:
            print(f"ustack {__version__}: {line}", file=sys.stderr, flush=True)

    try:
        return run(forward.forward(setup, config, announce=announce), use_uvloop=not args.no_uvloop)
    except LinkError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES) and "needs" not in str(exc):
            return _fail(f"{exc} (ustack forward needs CAP_NET_ADMIN, e.g. run it as root)")
        return _fail(str(exc))
    except OSError as exc:
        return _fail(exc.strerror or str(exc))
    except ValueError as exc:
        return _fail(str(exc))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ustack", description="A userspace TCP/IP stack in Python over a Linux TUN device."
    )
    parser.add_argument("--version", action="version", version=f"ustack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    info = sub.add_parser(
        "checksum-info", help="show which Internet checksum implementation is active and why"
    )
    info.set_defaults(func=_checksum_info)

    serve = sub.add_parser(
        "serve",
        help="run the stack on a TUN device with the built-in services",
        description="Bring up a TUN device and answer on it with the built-in services "
        "until SIGINT/SIGTERM. Then try: curl http://10.7.0.2/ or curl -g 'http://[fd00:7::2]/'",
    )
    serve.add_argument("--name", default="ustack0", help="TUN device name (default ustack0)")
    serve.add_argument(
        "--link",
        choices=("tun", "tap"),
        default="tun",
        help="tun: IP packets (default); tap: Ethernet frames, with ARP and Neighbor Discovery",
    )
    serve.add_argument(
        "--mac", type=_mac, default=None, help="with --link tap: ustack's MAC (default random)"
    )
    serve.add_argument(
        "--address", type=_ipv4, default="10.7.0.2", help="the stack's address (10.7.0.2)"
    )
    serve.add_argument(
        "--peer", type=_ipv4, default="10.7.0.1", help="the kernel side's address (10.7.0.1)"
    )
    serve.add_argument(
        "--prefixlen", type=int, choices=range(8, 31), default=24, metavar="N", help="(24)"
    )
    serve.add_argument(
        "--address6", type=_ipv6, default="fd00:7::2", help="the stack's IPv6 address (fd00:7::2)"
    )
    serve.add_argument(
        "--peer6",
        type=_ipv6,
        default="fd00:7::1",
        help="the kernel side's IPv6 address (fd00:7::1)",
    )
    serve.add_argument(
        "--prefixlen6", type=int, choices=range(8, 128), default=64, metavar="N", help="(64)"
    )
    serve.add_argument(
        "--no-ipv6",
        dest="ipv6",
        action="store_false",
        help="IPv4 only (IPv6 is also left out, with a warning, where the kernel has it disabled)",
    )
    serve.add_argument("--mtu", type=_mtu, default=1500, help="576-65535 (default 1500)")
    serve.add_argument(
        "--services",
        default=DEFAULT_SERVICES,
        help=f"comma-separated NAME[:PORT] list (default {DEFAULT_SERVICES})",
    )
    serve.add_argument(
        "--offload",
        choices=OFFLOAD_CHOICES,
        default="auto",
        help="TUN checksum offload and 64 KB TSO/GRO super-segments: auto (use them if the "
        "kernel agrees; off with fault injection), on (insist), off (default auto)",
    )
    serve.add_argument("--pcap", metavar="FILE", help="record every packet to a pcap file")
    serve.add_argument(
        "--trace",
        nargs="?",
        const="text",
        choices=("text", "json"),
        help="print a line per state change, retransmission, recovery episode, RTO, tail loss "
        "probe and SACK-bearing ACK (text or json lines)",
    )
    serve.add_argument(
        "--congestion",
        choices=("cubic", "newreno"),
        default="cubic",
        help="congestion control (RFC 9438 CUBIC with HyStart++, or RFC 5681/6582 NewReno)",
    )
    serve.add_argument("--no-sack", action="store_true", help="neither offer nor accept SACK")
    serve.add_argument(
        "--rto-min",
        type=_positive,
        default=200.0,
        metavar="MS",
        help="floor of the retransmission timeout (Linux's 200 ms; RFC 6298 says 1000)",
    )
    serve.add_argument(
        "--no-timestamps", action="store_true", help="neither offer nor accept RFC 7323 timestamps"
    )
    serve.add_argument(
        "--syn-cookies",
        choices=("auto", "always", "never"),
        default="auto",
        help="RFC 4987 SYN cookies: only while a listener's SYN queue is full (auto, the "
        "default), for every SYN, or never (a SYN to a full queue is dropped)",
    )
    serve.add_argument(
        "--user-timeout",
        type=_positive,
        default=0.0,
        metavar="SECONDS",
        help="give a connection up (and reset it) once sent data has gone unacknowledged, or "
        "queued data has waited behind a zero window, this long -- also with keep-alives -- "
        "like Linux's TCP_USER_TIMEOUT (0 = off: count retries)",
    )
    serve.add_argument(
        "--user",
        metavar="NAME",
        help="after setting up the TUN device, drop root and run as this user",
    )
    serve.add_argument(
        "--group", metavar="NAME", help="with --user: run as this group (default: the user's)"
    )
    serve.add_argument("--loss", type=_percent, default=0.0, metavar="PCT", help="drop PCT %%")
    serve.add_argument("--duplicate", type=_percent, default=0.0, metavar="PCT")
    serve.add_argument("--reorder", type=_percent, default=0.0, metavar="PCT")
    serve.add_argument("--corrupt", type=_percent, default=0.0, metavar="PCT")
    serve.add_argument("--delay", type=_positive, default=0.0, metavar="MS", help="extra delay")
    serve.add_argument("--seed", type=int, default=1, help="fault injector seed (1)")
    serve.add_argument("--msl", type=_positive, default=None, help="MSL in seconds (30)")
    serve.add_argument("--grace", type=_positive, default=3.0, help="shutdown grace (3 s)")
    serve.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    serve.add_argument(
        "--no-gso",
        action="store_true",
        help="without offloads, TCP forms every segment itself (one MSS each) instead of "
        "super-segments the host cuts up (software GSO); the packets on the wire are the same",
    )
    serve.add_argument(
        "--busy-poll",
        type=_busy_poll,
        default=0,
        metavar="USEC",
        help="after a batch keep reading the TUN device this long before sleeping, trading CPU "
        "for latency (like Linux's busy_poll; 0 = off, at most 10000)",
    )
    serve.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    serve.add_argument(
        "--ladder",
        nargs="?",
        const=[],
        type=_ports,
        metavar="PORT,...",
        help="draw each finished connection's ladder diagram as it closes, folded like the "
        "demo's (only for these local ports, if given; default all)",
    )
    serve.add_argument(
        "--ladder-file", metavar="FILE", help="with --ladder: append the ladders to FILE"
    )
    serve.add_argument(
        "--control",
        metavar="PATH",
        help="the control socket for ustack trace (default /run/ustack/<name>.sock)",
    )
    serve.add_argument(
        "--no-control",
        dest="control_enabled",
        action="store_false",
        help="no control socket: ustack trace cannot attach",
    )
    serve.set_defaults(func=_cmd_serve)

    trace = sub.add_parser(
        "trace",
        help="attach to a running ustack serve: ladders or JSON trace lines of its connections",
        description="Attach to a running ustack serve through its control socket (root or "
        "the user serve runs as) and print each connection made from then on: its ladder "
        "diagram when it finishes, or with --json one JSON object per event (state changes, "
        "segments, retransmissions, RTO, recovery, SACK; schema in docs/trace-schema.md).",
    )
    trace.add_argument(
        "--control", metavar="PATH", help="serve's control socket (default /run/ustack/<name>.sock)"
    )
    trace.add_argument(
        "--name", default="ustack0", help="serve's TUN device, naming the default socket (ustack0)"
    )
    trace.add_argument(
        "--json", action="store_true", help="JSON trace lines instead of ladder diagrams"
    )
    trace.add_argument(
        "--ports", type=_ports, metavar="PORT,...", help="only connections to these local ports"
    )
    trace.add_argument(
        "--count",
        type=_count,
        default=0,
        metavar="N",
        help="exit after N connections have finished (default 0: until serve stops)",
    )
    trace.set_defaults(func=_cmd_trace)

    demo = sub.add_parser(
        "demo",
        help="see it work: HTTP through ustack in a private namespace, as a ladder diagram; "
        "or a textbook scenario (--list)",
    )
    demo.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="run one textbook scenario instead of the HTTP demo (see --list)",
    )
    demo.add_argument(
        "--list", action="store_true", help="name the scenarios, one line each, and exit"
    )
    demo.add_argument(
        "--time-scale",
        type=_time_scale,
        default=1.0,
        metavar="FACTOR",
        help="scenarios: multiply the timers they wait for (back-off, keep-alive, MSL) by "
        "FACTOR; the explanation says so (1)",
    )
    demo.add_argument("--size", type=int, default=DEMO_SIZE, help="download size (300000)")
    demo.add_argument("--msl", type=_positive, default=DEMO_MSL, help="MSL for the demo (1 s)")
    demo.add_argument("--fold", type=int, default=4, help="data segments shown per run (4)")
    demo.add_argument(
        "--timestamps",
        action="store_true",
        help="show every segment's RFC 7323 timestamps (relative TSval/TSecr), not only the SYNs'",
    )
    demo.add_argument(
        "--offload",
        choices=OFFLOAD_CHOICES,
        default="auto",
        help="TUN offloads: auto, on or off (default auto); super-segments show as one arrow",
    )
    demo.add_argument(
        "--ipv6",
        action="store_true",
        help="fetch over IPv6 (http://[fd00:7::2]/) instead of IPv4",
    )
    demo.add_argument(
        "--link",
        choices=("tun", "tap"),
        default="tun",
        help="tap: an Ethernet device, so the ladder starts with ARP (or ND with --ipv6)",
    )
    demo.add_argument("--no-uvloop", action="store_true")
    demo.set_defaults(func=_cmd_demo)

    fwd = sub.add_parser(
        "forward",
        help="give a network namespace its network through ustack (like slirp4netns/pasta)",
        description="Put a TUN device into a network namespace as its default route and relay "
        "every TCP connection and UDP datagram from it over ordinary sockets of the namespace "
        "ustack runs in; ping is answered by ustack itself. Either for an existing namespace "
        "(--netns NAME, until SIGINT/SIGTERM) or for a command run in a namespace of its own "
        "(ustack forward -- CMD ARGS...; exits with its status). Inside, the namespace has "
        "10.0.2.100/24 via 10.0.2.2 and fd00::100/64 via fd00::2; the gateway addresses reach "
        "the host's loopback. Needs CAP_NET_ADMIN.",
    )
    fwd.add_argument("--netns", metavar="NAME", help="an existing namespace (ip netns add NAME)")
    fwd.add_argument("--name", default="ustack0", help="TUN device name inside (ustack0)")
    fwd.add_argument(
        "--address", type=_ipv4, default="10.0.2.100", help="the namespace's address (10.0.2.100)"
    )
    fwd.add_argument(
        "--gateway", type=_ipv4, default="10.0.2.2", help="its gateway, ustack (10.0.2.2)"
    )
    fwd.add_argument(
        "--prefixlen", type=int, choices=range(8, 31), default=24, metavar="N", help="(24)"
    )
    fwd.add_argument(
        "--address6", type=_ipv6, default="fd00::100", help="the namespace's IPv6 (fd00::100)"
    )
    fwd.add_argument(
        "--gateway6", type=_ipv6, default="fd00::2", help="its IPv6 gateway, ustack (fd00::2)"
    )
    fwd.add_argument(
        "--prefixlen6", type=int, choices=range(8, 128), default=64, metavar="N", help="(64)"
    )
    fwd.add_argument("--no-ipv6", dest="ipv6", action="store_false", help="IPv4 only")
    fwd.add_argument("--mtu", type=_mtu, default=1500, help="576-65535 (default 1500)")
    fwd.add_argument(
        "--offload",
        choices=OFFLOAD_CHOICES,
        default="auto",
        help="TUN checksum offload and 64 KB TSO/GRO super-segments (default auto)",
    )
    fwd.add_argument(
        "--connect-timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="how long a connection to a destination may take before the client is refused (10)",
    )
    fwd.add_argument(
        "--no-map-gateway",
        dest="map_gateway",
        action="store_false",
        help="relay connections to the gateway addresses as they are, not to the host's loopback",
    )
    fwd.add_argument(
        "--trace", action="store_true", help="one line per relayed connection and UDP flow"
    )
    fwd.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    fwd.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ARGS",
        help="run CMD in a new namespace through ustack, then exit with its status",
    )
    fwd.set_defaults(func=_cmd_forward)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
