"""Capture golden packets from the Linux kernel through a TUN device.

Run as root: ``python3 tests/wire/golden/capture.py [--out DIR]``. The script re-runs itself under
``unshare -n``, so the TUN device, its address and every packet live in a private network
namespace that disappears when the script exits; the root namespace is never touched.

Inside, the kernel owns 10.7.0.1/24 on a TUN device; 10.7.0.2 is the (imaginary) peer whose
packets this script writes into the TUN fd. Every file saved is a packet the *kernel* built and
sent; the packets written in to provoke it are stimuli, listed in PROVENANCE.md but not saved as
golden.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import select
import shlex
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from ustack.wire import checksum, icmp, ipv4, tcp  # noqa: E402

IFNAME = "ustk0"
LOCAL = "10.7.0.1"  # the kernel
PEER = "10.7.0.2"  # us, writing into the TUN fd
FAR = "10.8.0.5"  # behind a second TUN device with a small MTU, to provoke "fragmentation needed"
SMALL_MTU = 1000
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_TIMEOUT = 3.0
_ENV_FLAG = "USTACK_CAPTURE_IN_NETNS"

Packet = bytes
Pred = Callable[[ipv4.IPv4Packet], bool]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


class Tun:
    def __init__(self) -> None:
        from pytun_pmd3 import TunTapDevice

        self.dev = TunTapDevice(name=IFNAME, flags=IFF_TUN | IFF_NO_PI)
        fd = self.dev.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.fd = fd
        self.stimuli: list[tuple[str, str]] = []

    def write(self, why: str, pkt: bytes) -> None:
        self.stimuli.append((why, pkt.hex()))
        os.write(self.fd, pkt)

    def expect(self, what: str, pred: Pred) -> Packet:
        """The first IPv4 packet the kernel sends that satisfies ``pred`` (others are ignored)."""
        deadline = time.monotonic() + READ_TIMEOUT
        for _ in range(1000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                break
            data = os.read(self.fd, 65536)
            if not data or data[0] >> 4 != 4:
                continue
            pkt = ipv4.parse(data)
            if pred(pkt):
                return data
        raise SystemExit(f"capture: the kernel sent no {what} within {READ_TIMEOUT}s")


def tcp_of(pkt: ipv4.IPv4Packet) -> tcp.TcpSegment | None:
    if pkt.proto != ipv4.PROTO_TCP:
        return None
    return tcp.parse(
        pkt.payload,
        pkt.src,
        pkt.dst,
        pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
    )


def ip_packet(src: str, dst: str, proto: int, body: bytes, ident: int) -> bytes:
    buf = bytearray(ipv4.HEADER_LEN + len(body))
    ipv4.emit(
        buf,
        0,
        src=ipv4.addr_to_int(src),
        dst=ipv4.addr_to_int(dst),
        proto=proto,
        payload_len=len(body),
        ident=ident,
    )
    buf[ipv4.HEADER_LEN :] = body
    return bytes(buf)


def tcp_packet(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    options: bytes = b"",
    payload: bytes = b"",
) -> bytes:
    seg = bytearray(tcp.HEADER_LEN + len(options) + len(payload))
    tcp.emit(
        seg,
        0,
        pseudo=checksum.ipv4_pseudo_header_sum(
            ipv4.addr_to_int(PEER), ipv4.addr_to_int(LOCAL), tcp.PROTO, 0
        ),
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=64240,
        options=options,
        payload=payload,
    )
    return ip_packet(PEER, LOCAL, ipv4.PROTO_TCP, bytes(seg), ident=0x1234)


def echo_packet(src: str, dst: str, ident: int, sequence: int, payload: bytes) -> bytes:
    msg = bytearray(icmp.HEADER_LEN + len(payload))
    icmp.emit_echo(msg, 0, type=icmp.ECHO_REQUEST, ident=ident, sequence=sequence, payload=payload)
    return ip_packet(src, dst, ipv4.PROTO_ICMP, bytes(msg), ident=0x2345)


def capture() -> tuple[dict[str, tuple[str, Packet]], list[tuple[str, str]], dict[str, str]]:
    sh("ip", "link", "set", "lo", "up")
    # No IPv6 chatter (router solicitations, MLD) on the TUN link.
    sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    # Let root open ICMP "ping" sockets so the kernel builds the echo request itself.
    sysctl("net.ipv4.ping_group_range", "0 0")
    tun = Tun()
    sh("ip", "addr", "add", f"{LOCAL}/24", "dev", IFNAME)
    sh("ip", "link", "set", IFNAME, "mtu", "1500", "up")
    settings = {
        k: read_sysctl(k)
        for k in (
            "net.ipv4.tcp_timestamps",
            "net.ipv4.tcp_sack",
            "net.ipv4.tcp_window_scaling",
            "net.ipv4.tcp_ecn",
            "net.ipv4.ip_default_ttl",
        )
    }
    out: dict[str, tuple[str, Packet]] = {}
    local = ipv4.addr_to_int(LOCAL)
    peer = ipv4.addr_to_int(PEER)

    # 1. An active open: connect() sends a SYN; we answer SYN-ACK and the kernel ACKs, sends
    #    data, half-closes with FIN, then aborts with RST (SO_LINGER 0).
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    client.connect_ex((PEER, 80))

    def is_syn_to_80(p: ipv4.IPv4Packet) -> bool:
        s = tcp_of(p)
        return s is not None and s.dst_port == 80 and s.control is tcp.Control.SYN

    syn = tun.expect("SYN", is_syn_to_80)
    out["tcp_syn"] = ("kernel SYN from connect() to 10.7.0.2:80, MTU 1500", syn)
    syn_seg = tcp.parse(
        memoryview(syn)[20:],
        local,
        peer,
        pseudo=checksum.ipv4_pseudo_header_sum(local, peer, tcp.PROTO, 0),
    )
    cport = syn_seg.src_port
    peer_iss = 5000
    ts = syn_seg.options.timestamps
    if ts is None:
        raise SystemExit("capture: the kernel's SYN has no timestamps (net.ipv4.tcp_timestamps?)")
    synack_opts = tcp.TcpOptions(
        mss=1460, wscale=7, sack_permitted=True, timestamps=(777, ts[0])
    ).encode()
    tun.write(
        "SYN-ACK answering tcp_syn",
        tcp_packet(
            80, cport, peer_iss, (syn_seg.seq + 1) & 0xFFFFFFFF, tcp.SYN | tcp.ACK, synack_opts
        ),
    )

    def from_client(flagtest: Callable[[tcp.TcpSegment], bool]) -> Pred:
        def pred(p: ipv4.IPv4Packet) -> bool:
            s = tcp_of(p)
            return s is not None and s.src_port == cport and flagtest(s)

        return pred

    out["tcp_handshake_ack"] = (
        "kernel's third handshake segment (ACK of our SYN-ACK)",
        tun.expect("handshake ACK", from_client(lambda s: s.flags == tcp.ACK and not s.payload)),
    )
    select.select([], [client], [], READ_TIMEOUT)
    client.send(b"hello, ustack\n")
    out["tcp_data"] = (
        "kernel data segment after send(b'hello, ustack\\n')",
        tun.expect("data segment", from_client(lambda s: len(s.payload) > 0)),
    )
    client.shutdown(socket.SHUT_WR)
    out["tcp_fin"] = (
        "kernel FIN after shutdown(SHUT_WR)",
        tun.expect("FIN", from_client(lambda s: s.control is tcp.Control.FIN)),
    )
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    out["tcp_rst_abort"] = (
        "kernel RST after close() with SO_LINGER 0",
        tun.expect("abort RST", from_client(lambda s: s.control is tcp.Control.RST)),
    )

    # 2. A passive open: a SYN to a listening port gets a SYN-ACK.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((LOCAL, 8080))
    server.listen(1)
    syn_opts = tcp.TcpOptions(mss=1400, wscale=5, sack_permitted=True, timestamps=(1000, 0))
    tun.write(
        "SYN to 10.7.0.1:8080 (listening)",
        tcp_packet(40001, 8080, 1, 0, tcp.SYN, syn_opts.encode()),
    )
    out["tcp_synack"] = (
        "kernel SYN-ACK from a listening socket on 8080 (our SYN: mss 1400, wscale 5, sackOK, TS val 1000)",
        tun.expect(
            "SYN-ACK",
            lambda p: (
                (s := tcp_of(p)) is not None and s.src_port == 8080 and s.control is tcp.Control.SYN
            ),
        ),
    )
    server.close()

    # 3. A SYN to a closed port is refused with RST-ACK (RFC 9293 3.10.7.1).
    tun.write("SYN to 10.7.0.1:9 (closed)", tcp_packet(40002, 9, 1000, 0, tcp.SYN))
    out["tcp_rst_closed_port"] = (
        "kernel RST-ACK answering a SYN to closed port 9",
        tun.expect("RST", lambda p: (s := tcp_of(p)) is not None and s.src_port == 9),
    )

    # 4. ICMP echo request built by the kernel (ping socket: the kernel sets id and checksum).
    pinger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    pinger.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + bytes(range(56)), (PEER, 0))
    out["icmp_echo_request"] = (
        "kernel echo request from an ICMP ping socket, seq 1, 56 data bytes 0..55",
        tun.expect("echo request", lambda p: p.proto == ipv4.PROTO_ICMP and p.payload[0] == 8),
    )
    pinger.close()

    # 5. The kernel answering our echo request.
    tun.write("echo request to 10.7.0.1", echo_packet(PEER, LOCAL, 0x4242, 7, b"ustack-ping" * 4))
    out["icmp_echo_reply"] = (
        "kernel echo reply to our request (id 0x4242, seq 7, 44 data bytes)",
        tun.expect("echo reply", lambda p: p.proto == ipv4.PROTO_ICMP and p.payload[0] == 0),
    )

    def unreach(code: int) -> Pred:
        return lambda p: p.proto == ipv4.PROTO_ICMP and p.payload[0] == 3 and p.payload[1] == code

    # 6. UDP to a closed port: port unreachable, quoting our header and 8 bytes.
    udp = struct.pack("!HHHH", 40003, 9, 8 + 12, 0) + b"hello, udp!\n"
    tun.write(
        "UDP to 10.7.0.1:9 (closed)", ip_packet(PEER, LOCAL, ipv4.PROTO_UDP, udp, ident=0x3456)
    )
    out["icmp_port_unreach"] = (
        "kernel port unreachable answering UDP to closed port 9",
        tun.expect("port unreachable", unreach(icmp.PORT_UNREACH)),
    )

    # 7. An unknown transport protocol: protocol unreachable.
    tun.write("IP proto 253 to 10.7.0.1", ip_packet(PEER, LOCAL, 253, b"experiment", ident=0x4567))
    out["icmp_proto_unreach"] = (
        "kernel protocol unreachable answering IP protocol 253",
        tun.expect("protocol unreachable", unreach(icmp.PROTO_UNREACH)),
    )

    # 8. Forwarding a DF datagram onto a smaller-MTU link: fragmentation needed with the MTU.
    sysctl("net.ipv4.ip_forward", "1")
    from pytun_pmd3 import TunTapDevice

    far_dev = TunTapDevice(name="ustk1", flags=IFF_TUN | IFF_NO_PI)
    sh("ip", "addr", "add", "10.8.0.1/24", "dev", "ustk1")
    sh("ip", "link", "set", "ustk1", "mtu", str(SMALL_MTU), "up")
    tun.write(
        "1200-byte DF echo request 10.7.0.2 -> 10.8.0.5 (routed via ustk1, MTU 1000)",
        echo_packet(PEER, FAR, 0x5151, 1, bytes(1200 - 28)),
    )
    out["icmp_frag_needed"] = (
        f"kernel fragmentation-needed (mtu {SMALL_MTU}) when forwarding a 1200-byte DF datagram",
        tun.expect("fragmentation needed", unreach(icmp.FRAG_NEEDED)),
    )
    far_dev.close()
    tun.dev.close()
    return out, tun.stimuli, settings


def write_outputs(
    outdir: Path,
    out: dict[str, tuple[str, Packet]],
    stimuli: list[tuple[str, str]],
    settings: dict[str, str],
    argv: list[str],
) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for name, (_, pkt) in out.items():
        (outdir / f"{name}.hex").write_text(pkt.hex() + "\n")
    uname = platform.uname()
    lines = [
        "# Golden packets: provenance",
        "",
        "Every `*.hex` file here is one IPv4 packet exactly as the Linux kernel sent it, read off a",
        "TUN device (IFF_TUN | IFF_NO_PI, so no packet-information prefix) inside a private network",
        "namespace. Regenerate with the command below; values such as ports, ISNs, timestamps and",
        "IP ids change from run to run, so the tests assert only what is stable.",
        "",
        f"- command: `{shlex.join(argv)}` (re-runs itself under `unshare -n`)",
        f"- date (UTC): {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S')}",
        f"- kernel: `{uname.system} {uname.release} {uname.version} {uname.machine}`",
        f"- setup: kernel owns {LOCAL}/24 on TUN `{IFNAME}` (MTU 1500); the peer {PEER} is this",
        "  script writing into the TUN fd. For `icmp_frag_needed`, `ip_forward=1` and a second",
        f"  TUN device `ustk1` holds 10.8.0.1/24 with MTU {SMALL_MTU}.",
        "- sysctls (namespace defaults, read back): "
        + ", ".join(f"`{k}={v}`" for k, v in settings.items()),
        "",
        "| file | what the kernel was doing | bytes |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{name}.hex` | {why} | {len(pkt)} |" for name, (why, pkt) in out.items()]
    lines += [
        "",
        "## Stimuli written into the TUN device (built with ustack.wire; not golden)",
        "",
    ]
    for why, hexs in stimuli:
        shown = (
            hexs
            if len(hexs) <= 160
            else f"{hexs[:160]}...` ({len(hexs) // 2} bytes, zeros follow)`"
        )
        lines.append(f"- {why}: `{shown}`")
    (outdir / "PROVENANCE.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = sys.argv[1:]
    outdir = Path(__file__).resolve().parent
    if args[:1] == ["--out"] and len(args) == 2:
        outdir = Path(args[1]).resolve()
    elif args:
        raise SystemExit("usage: capture.py [--out DIR]")
    if os.environ.get(_ENV_FLAG) != "1":
        if os.geteuid() != 0:
            raise SystemExit("capture.py needs root (CAP_NET_ADMIN) for unshare -n and TUN")
        env = dict(os.environ, **{_ENV_FLAG: "1"})
        cmd = ["unshare", "-n", sys.executable, str(Path(__file__).resolve()), "--out", str(outdir)]
        raise SystemExit(subprocess.run(cmd, env=env, timeout=60).returncode)
    out, stimuli, settings = capture()
    argv = ["python3", "tests/wire/golden/capture.py"]
    write_outputs(outdir, out, stimuli, settings, argv)
    for name, (_, pkt) in out.items():
        print(f"{name}: {len(pkt)} bytes")


if __name__ == "__main__":
    main()
