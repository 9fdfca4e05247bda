"""The SYN flood sender of ``bench/synflood.py``: spoofed SYNs from a raw socket (IP_HDRINCL).

It runs as its own process inside the benchmark's client namespace, so that building and
sending packets never starves the legitimate client the benchmark measures at the same time.
Each SYN looks like one from Linux (MSS 1460, SACK permitted, timestamps, window scale 7, in
Linux's option order, DF set, TTL 64) from a random address of ``--source`` (a range that is
none of the namespace's addresses, so answers to it are dropped by the kernel as not its own),
a random port, a random ISN and a random TSval. The kernel fills in the IP identification,
total length and header checksum of an IP_HDRINCL packet (raw(7)); the TCP checksum is ours.

Pacing: ``--rate`` SYNs per second are sent in batches, one batch per ``TICK``, each batch as
large as it takes to catch up with ``rate * elapsed``, so a late wakeup is made up at the next
tick instead of lowering the rate. ``--rate 0`` sends as fast as this process can.

    ip netns exec NS python bench/_synsender.py --dst 10.7.0.2 --port 7 --rate 10000 --seconds 10

Prints ``ready`` just before the first SYN, then, at the end, one JSON line: the SYNs sent, over
how many seconds, and how many ``sendto`` calls failed (a full device queue may say ENOBUFS).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ustack.wire.checksum import internet_checksum, ipv4_pseudo_header_sum

TICK = 0.002  # seconds between batches when paced
CLOCK_EVERY = 64  # SYNs between clock reads when unpaced
IPPROTO_TCP = 6

# The options of a Linux SYN, in Linux's order: MSS 1460, SACK permitted, timestamps (TSval
# patched per SYN, TSecr 0), NOP, window scale 7 (RFC 9293 3.1, RFC 2018, RFC 7323).
_OPTIONS = bytes.fromhex("020405b40402080a000000000000000001030307")
_TCP_LEN = 20 + len(_OPTIONS)
_IP = struct.Struct("!BBHHHBBHII")
_TCP = struct.Struct("!HHIIBBHHH")
_SRC = struct.Struct("!I")  # IP source address, at offset 12
_PORTS_SEQ = struct.Struct("!HHI")  # TCP source port, destination port, sequence number, at 20
_TSVAL = struct.Struct("!I")  # the TSval: after MSS (4), SACK permitted (2) and its kind/len
_CSUM = struct.Struct("!H")  # the TCP checksum, at 20 + 16
_TSVAL_AT = 20 + 20 + 8
_CSUM_AT = 20 + 16
_FLAG_SYN = 0x02
_WINDOW = 64240  # what Linux offers in a SYN with MSS 1460
_DF = 0x4000


class Syns:
    """The flood's SYNs, drawn from a seeded generator: one buffer, patched in place by
    :meth:`next` with a fresh source address (neither the first nor the last of ``source``),
    source port (1024..65535), ISN and TSval, and the TCP checksum to match."""

    def __init__(self, dst: str, port: int, source: str, seed: int) -> None:
        net = ipaddress.IPv4Network(source)
        self.base, self.span = int(net.network_address), net.num_addresses
        if self.span < 3:
            raise ValueError(f"source range {source} is too small")
        self.dst = int(ipaddress.IPv4Address(dst))
        total = 20 + _TCP_LEN
        ip = _IP.pack(0x45, 0, total, 0, _DF, 64, IPPROTO_TCP, 0, 0, self.dst)
        tcp = _TCP.pack(0, port, 0, 0, (_TCP_LEN // 4) << 4, _FLAG_SYN, _WINDOW, 0, 0)
        self.buf = bytearray(ip + tcp + _OPTIONS)
        self.segment = memoryview(self.buf)[20:]
        self.port = port
        rng = random.Random(seed)
        self.bits, self.randrange = rng.getrandbits, rng.randrange

    def next(self) -> bytearray:
        buf = self.buf
        src = self.base + self.randrange(1, self.span - 1)
        _SRC.pack_into(buf, 12, src)
        _PORTS_SEQ.pack_into(buf, 20, 1024 + self.randrange(64512), self.port, self.bits(32))
        _TSVAL.pack_into(buf, _TSVAL_AT, self.bits(32))
        _CSUM.pack_into(buf, _CSUM_AT, 0)
        pseudo = ipv4_pseudo_header_sum(src, self.dst, IPPROTO_TCP, _TCP_LEN)
        _CSUM.pack_into(buf, _CSUM_AT, internet_checksum(self.segment, pseudo))
        return buf


def flood(args: argparse.Namespace) -> dict[str, float | int]:
    syns = Syns(args.dst, args.port, args.source, args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sendto, where, make = sock.sendto, (args.dst, 0), syns.next
    sent = errors = 0
    rate = args.rate
    print("ready", flush=True)
    start = time.monotonic()
    end = start + args.seconds
    now = start
    while now < end:
        due = int(rate * (now - start)) + 1 if rate else sent + CLOCK_EVERY
        while sent < due:
            try:
                sendto(make(), where)
            except OSError:
                errors += 1
            sent += 1
        now = time.monotonic()
        if rate:
            # Sleep to the next tick; the batch after a long sleep is simply larger.
            time.sleep(max(0.0, TICK - (time.monotonic() - now)))
            now = time.monotonic()
    seconds = time.monotonic() - start
    sock.close()
    return {"sent": sent, "seconds": seconds, "errors": errors, "rate": sent / seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dst", required=True, help="the listener's address")
    p.add_argument("--port", type=int, default=7)
    p.add_argument("--rate", type=float, default=10000.0, help="SYNs per second (0: flat out)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--source", default="198.18.0.0/15", help="spoofed source range")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    try:
        result = flood(args)
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
