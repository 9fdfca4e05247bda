"""Interop with Linux's TCP at 5 % loss: SACK and timestamps negotiated and used, both ways.

Each test moves 20 MB of seeded pseudo-random bytes over the TUN device in its own namespace,
one direction per test, with ustack's seeded fault injector dropping 5 % of the packets in
*both* directions (data and ACKs), and checks the SHA-256 at the receiver. Three oracles then
say the features really worked with a real peer, not just that the bytes arrived:

* the capture (read with scapy): both SYNs offer SACK-permitted and Timestamps, every later
  segment carries a timestamp, and the receiver's ACKs carry SACK blocks;
* ustack's counters: the recovery machinery that should have run did (and RTOs stayed rare);
* the kernel's own view: ``TCP_INFO`` on its socket (which options it agreed to) and the
  namespace's ``TcpExt`` counters (did it run SACK recovery, discard any of our SACK blocks,
  drop any of our segments by PAWS).

The capture is taken *inside* the injector, ``FaultyLink(PcapTap(tun))``: it is what a tcpdump
on the kernel's side of the TUN device would show. Every ustack segment in it reached the
kernel, so "ustack's ACKs carry SACK blocks" means the kernel received those blocks; every kernel
segment in it is one the kernel sent, including the 5 % ustack never saw.

Timers: ustack runs ``tun_config()`` (RTO floor 50 ms, delayed ACK 5 ms). The TUN RTT is well
under a millisecond, so the WAN-tuned defaults (200 ms floor, 40 ms delayed ACK) would only turn
each loss the ACKs cannot reveal into an idle link; the rest of the TUN tier uses the same. The kernel keeps its stock settings (200 ms RTO floor): with SACK, RACK and
TLP on both sides it should rarely need an RTO, and it is the peer we interoperate with as
shipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from ustack import Stack
from ustack.link.fault import FaultConfig, FaultModel
from ustack.link.faulty import FaultyLink
from ustack.link.netns import NetNamespace
from ustack.link.pcap import PcapTap, PcapWriter

from .conftest import (
    KERNEL,
    SAFETY,
    STACK,
    MakeStack,
    MiB,
    kernel_connect,
    kernel_server,
    needs_tun,
    states,
    tun_config,
    until,
)

pytestmark = [pytest.mark.tun, needs_tun]

SIZE = 20 * MiB
LOSS = 0.05
PORT = 5001
# Bound on one 20 MB transfer (a few seconds here): only a hung or collapsing stack nears it.
TRANSFER_BOUND = 2 * SAFETY
# Headers only: the largest IPv4 + TCP header is 120 bytes; payload is checked by SHA-256.
SNAPLEN = 128
# Linux's tcp_info layout (include/uapi/linux/tcp.h): tcpi_options is byte 5,
# tcpi_total_retrans the u32 at offset 100.
TCP_INFO_LEN = 104
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
# ustack's RTO may fire now and then (when every ACK of a flight, or the tail-loss probe, is
# lost too), but SACK/RACK recovery must carry the load: at least this many losses detected from
# ACKs (``tcp_fast_retransmits`` counts segments resent because ACKs showed them lost) per RTO.
FAST_PER_RTO = 10
# A sender that reads the receiver's SACK blocks resends almost only what was lost: the
# duplicates the receiver reports (D-SACK) stay under this share of the retransmissions. A sender
# that ignored them would resend SACKed data after every RTO (go-back-N), far more than this.
SPURIOUS_SHARE = 0.1


def _before(a: int, b: int) -> bool:
    """``a < b`` in 32-bit sequence (and timestamp) space."""
    return 0 < (b - a) % 2**32 < 2**31


def _payload(seed: str) -> bytes:
    return random.Random(seed).randbytes(SIZE)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Lossy:
    """The link wrapper: 5 % seeded loss each way, with the capture taken under the injector."""

    capture: Path
    model_out: FaultModel = field(init=False)
    model_in: FaultModel = field(init=False)
    faulty: FaultyLink = field(init=False)

    def wrap(self, tun: Any) -> FaultyLink:
        faults = FaultConfig(drop=LOSS)
        self.model_out = FaultModel(faults, seed=f"{self.capture.stem}-out")
        self.model_in = FaultModel(faults, seed=f"{self.capture.stem}-in")
        tap = PcapTap(tun, PcapWriter(self.capture, snaplen=SNAPLEN))
        self.faulty = FaultyLink(tap, model_out=self.model_out, model_in=self.model_in)
        return self.faulty


@dataclass(frozen=True)
class Segment:
    by_kernel: bool
    flags: str
    seq: int
    ack: int
    length: int  # payload bytes (from the IP header: the capture is truncated)
    options: dict[str, Any]


def _segments(capture: Path, kernel_port: int) -> tuple[int, list[Segment]]:
    """(packets in the capture, the connection's segments in capture order)."""
    packets = rdpcap(str(capture))
    out = []
    for p in packets:
        if TCP not in p or kernel_port not in (p[TCP].sport, p[TCP].dport):
            continue
        ip, tcp = p[IP], p[TCP]
        assert {ip.src, ip.dst} == {KERNEL, STACK}
        out.append(
            Segment(
                by_kernel=ip.src == KERNEL,
                flags=str(tcp.flags),
                seq=tcp.seq,
                ack=tcp.ack,
                length=ip.len - 4 * ip.ihl - 4 * tcp.dataofs,
                options={name: value for name, value in tcp.options},
            )
        )
    return len(packets), out


def _tcp_info(sock: Any) -> tuple[int, int]:
    """(tcpi_options, tcpi_total_retrans) of a kernel socket."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    return raw[5], struct.unpack_from("I", raw, 100)[0]


def _tcp_ext(ns: NetNamespace) -> dict[str, int]:
    """The namespace's TcpExt counters (per namespace, so they count only this test)."""
    lines = ns.call(lambda: Path("/proc/thread-self/net/netstat").read_text().splitlines())
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    raise AssertionError("no TcpExt line in /proc/net/netstat")


def _check_capture(segments: list[Segment], *, receiver_is_kernel: bool) -> tuple[int, int]:
    """The wire-level checks both directions share; returns (ACKs with SACK, D-SACK blocks)
    sent by the receiver."""
    syns = {s.by_kernel: s for s in reversed(segments) if "S" in s.flags}  # each side's first
    assert set(syns) == {True, False}, "a SYN from each side"
    for by_kernel, syn in syns.items():
        assert "SAckOK" in syn.options, f"SYN by {'kernel' if by_kernel else 'ustack'}"
        assert "Timestamp" in syn.options, f"SYN by {'kernel' if by_kernel else 'ustack'}"

    # RFC 7323 3.2: once negotiated, every segment but a RST carries a timestamp; the data
    # segments are the bulk of them.
    later = [s for s in segments if "S" not in s.flags and "R" not in s.flags]
    data = [s for s in later if s.length]
    assert sum(s.length for s in data) >= SIZE
    assert [s for s in later if "Timestamp" not in s.options] == []
    # ustack's clock never runs backwards (the kernel's PAWS check depends on it), and what it
    # echoes is a TSval the kernel really sent.
    ustack_tsvals = [s.options["Timestamp"][0] for s in later if not s.by_kernel]
    assert all(not _before(b, a) for a, b in itertools.pairwise(ustack_tsvals))
    kernel_tsvals = {s.options["Timestamp"][0] for s in segments if s.by_kernel}
    echoed = {s.options["Timestamp"][1] for s in later if not s.by_kernel}
    assert echoed <= kernel_tsvals

    # The receiver's pure ACKs carry SACK blocks (RFC 2018 4): every block lies above the
    # cumulative ACK, except that the first may report a duplicate (RFC 2883 4, a D-SACK): then
    # it lies below the ACK or inside the second block.
    acks = [s for s in later if s.by_kernel == receiver_is_kernel and not s.length]
    sacking = [s for s in acks if "SAck" in s.options]
    assert len(sacking) > 0
    dsacks = 0
    for s in sacking:
        edges = s.options["SAck"]
        blocks = list(zip(edges[::2], edges[1::2], strict=True))
        assert 1 <= len(blocks) <= 4, s
        assert all(_before(left, right) for left, right in blocks), s
        first_left, first_right = blocks[0]
        if not _before(s.ack, first_left) or (
            len(blocks) > 1
            and not _before(first_left, blocks[1][0])
            and not _before(blocks[1][1], first_right)
        ):
            dsacks += 1
            blocks = blocks[1:]
        assert all(_before(s.ack, left) for left, _ in blocks), s
    return len(sacking), dsacks


def _report(what: str, elapsed: float, stack: Stack, lossy: Lossy, **extra: Any) -> None:
    watched = (
        "tcp_retransmits", "tcp_fast_retransmits", "tcp_recoveries", "tcp_rto_expired",
        "tcp_tlp_probes", "tcp_lost_retransmits", "tcp_dsack_received", "tcp_dsack_sent",
        "tcp_ooo_queued", "tcp_quick_acks", "tcp_undo_dsack", "tcp_drop_paws",
        "tcp_sack_invalid", "tcp_rtt_samples",
    )  # fmt: skip
    counters = {name: getattr(stack.stats, name) for name in watched}
    print(
        f"\n{what}: {SIZE / MiB:.0f} MiB in {elapsed:.2f} s, "
        f"{SIZE * 8 / elapsed / 1e6:.1f} Mbit/s goodput; "
        f"injector dropped {lossy.model_in.stats.dropped} in, "
        f"{lossy.model_out.stats.dropped} out\n  ustack: {counters}\n  {extra}"
    )


async def test_kernel_sends_20_mb_to_ustack_with_sack_and_timestamps(
    make_stack: MakeStack, netns: NetNamespace, tmp_path: Path
) -> None:
    lossy = Lossy(tmp_path / "kernel-to-ustack.pcap")
    stack = await make_stack(config=tun_config(), wrap=lossy.wrap)
    listener = await stack.listen(PORT)
    payload = _payload("ustack loss interop: kernel -> ustack")

    async def ustack_receives() -> tuple[int, str]:
        reader, writer = await listener.accept()
        digest, count = hashlib.sha256(), 0
        while chunk := await reader.read(MiB):
            digest.update(chunk)
            count += len(chunk)
        writer.close()
        return count, digest.hexdigest()

    async def kernel_sends() -> tuple[int, tuple[int, int]]:
        reader, writer = await kernel_connect(netns, PORT)
        port = writer.get_extra_info("sockname")[1]
        writer.write(payload)
        writer.write_eof()
        assert await reader.read() == b""  # ustack's FIN: it has read everything
        info = _tcp_info(writer.get_extra_info("socket"))
        writer.close()
        await writer.wait_closed()
        return port, info

    started = time.monotonic()
    (count, digest), (kernel_port, (options, kernel_retrans)) = await asyncio.wait_for(
        asyncio.gather(ustack_receives(), kernel_sends()), TRANSFER_BOUND
    )
    elapsed = time.monotonic() - started
    # ustack closed second: LAST-ACK ends on the kernel's ACK of its FIN (or a retransmission).
    await until(lambda: not states(stack), "ustack's connection to close")
    await stack.aclose()  # flushes the capture
    ext = _tcp_ext(netns)
    kernel = {
        k: ext[k]
        for k in ("TCPSackRecovery", "TCPRenoRecovery", "TCPSackShifted", "TCPSackMerged",
                  "TCPSackShiftFallback", "TCPSACKDiscard", "TCPDSACKRecv", "TCPLossProbes",
                  "TCPLostRetransmit", "TCPTimeouts", "PAWSEstab")
    }  # fmt: skip
    kernel["tcpi_total_retrans"] = kernel_retrans
    _report("kernel -> ustack", elapsed, stack, lossy, kernel=kernel)

    assert (count, digest) == (SIZE, _sha(payload))
    stats = stack.stats
    # The faults happened, both ways: lost data for ustack to reassemble around, lost ACKs.
    assert lossy.model_in.stats.dropped > 100
    assert lossy.model_out.stats.dropped > 100

    # The kernel agreed to both options, by its own account.
    assert options & TCPI_OPT_SACK and options & TCPI_OPT_TIMESTAMPS
    total, segments = _segments(lossy.capture, kernel_port)
    # The tap sits under the injector: it saw every packet the kernel sent and only those of
    # ustack's that the injector let through.
    assert total == lossy.model_in.stats.packets + lossy.faulty.stats.tx_packets
    sacking, dsacks = _check_capture(segments, receiver_is_kernel=False)
    print(f"  capture: {total} packets, {sacking} ustack ACKs with SACK, {dsacks} D-SACKs")

    # ustack as receiver: it queued out-of-order data and ACKed it at once, with SACK blocks
    # (checked on the wire above), and never dropped a kernel segment by PAWS.
    assert stats.tcp_ooo_queued > 0
    assert stats.tcp_quick_acks > 0
    assert stats.tcp_drop_paws == 0
    assert stats.tcp_drop_no_timestamp == 0
    # The kernel understood ustack's blocks: it marked its queue SACKed from them, discarded
    # none as invalid, never fell back to Reno recovery, dropped none of ustack's segments by
    # PAWS, and resent almost nothing ustack already had (what it did resend, ustack D-SACKed).
    assert kernel["TCPSackShifted"] + kernel["TCPSackMerged"] + kernel["TCPSackShiftFallback"] > 0
    assert kernel["TCPSACKDiscard"] == 0
    assert kernel["TCPSackRecovery"] > 0
    assert kernel["TCPRenoRecovery"] == 0
    assert kernel["PAWSEstab"] == 0
    assert kernel_retrans > 0
    assert stats.tcp_dsack_sent <= SPURIOUS_SHARE * kernel_retrans
    # Each D-SACK is sent once, so the kernel cannot have received more than ustack sent.
    assert kernel["TCPDSACKRecv"] <= dsacks <= stats.tcp_dsack_sent


async def test_ustack_sends_20_mb_to_kernel_with_sack_and_timestamps(
    make_stack: MakeStack, netns: NetNamespace, tmp_path: Path
) -> None:
    lossy = Lossy(tmp_path / "ustack-to-kernel.pcap")
    stack = await make_stack(config=tun_config(), wrap=lossy.wrap)
    payload = _payload("ustack loss interop: ustack -> kernel")
    loop = asyncio.get_running_loop()
    received: asyncio.Future[tuple[int, str, tuple[int, int]]] = loop.create_future()

    async def kernel_receives(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest, count = hashlib.sha256(), 0
        while chunk := await reader.read(MiB):
            digest.update(chunk)
            count += len(chunk)
        info = _tcp_info(writer.get_extra_info("socket"))
        writer.close()
        if not received.done():
            received.set_result((count, digest.hexdigest(), info))

    server, port = await kernel_server(netns, kernel_receives)
    try:
        started = time.monotonic()
        reader, writer = await stack.connect(KERNEL, port, timeout=SAFETY)
        writer.write(payload)
        writer.write_eof()
        count, digest, (options, kernel_retrans) = await asyncio.wait_for(received, TRANSFER_BOUND)
        elapsed = time.monotonic() - started
        # The kernel closes after reading everything; ustack, which closed first, ends in
        # TIME-WAIT once it has ACKed the kernel's FIN.
        assert await asyncio.wait_for(reader.read(), SAFETY) == b""
        writer.close()
        await until(lambda: states(stack) in ([], ["TIME-WAIT"]), "ustack's FIN exchange")
    finally:
        server.close()
    await stack.aclose()  # flushes the capture
    ext = _tcp_ext(netns)
    kernel = {
        k: ext[k]
        for k in ("TCPOFOQueue", "TCPDSACKOldSent", "TCPDSACKOfoSent", "TCPSACKDiscard",
                  "PAWSEstab")
    }  # fmt: skip
    kernel["tcpi_total_retrans"] = kernel_retrans
    _report("ustack -> kernel", elapsed, stack, lossy, kernel=kernel)

    assert (count, digest) == (SIZE, _sha(payload))
    stats = stack.stats
    assert lossy.model_in.stats.dropped > 100
    assert lossy.model_out.stats.dropped > 100

    assert options & TCPI_OPT_SACK and options & TCPI_OPT_TIMESTAMPS
    total, segments = _segments(lossy.capture, port)
    assert total == lossy.model_in.stats.packets + lossy.faulty.stats.tx_packets
    sacking, dsacks = _check_capture(segments, receiver_is_kernel=True)
    print(f"  capture: {total} packets, {sacking} kernel ACKs with SACK, {dsacks} D-SACKs")
    # The kernel, as receiver, queued ustack's out-of-order segments and found none of them
    # too old by PAWS.
    assert kernel["TCPOFOQueue"] > 0
    assert kernel["PAWSEstab"] == 0
    kernel_dsacks = kernel["TCPDSACKOldSent"] + kernel["TCPDSACKOfoSent"]

    # ustack as sender: it repaired the losses mostly from the kernel's SACK blocks (RACK /
    # RFC 6675 recovery), with the retransmission timer as the exception, not the rule.
    assert stats.tcp_retransmits > 0
    assert stats.tcp_recoveries > 0
    assert stats.tcp_fast_retransmits > 0
    assert stats.tcp_rto_expired * FAST_PER_RTO < stats.tcp_fast_retransmits
    assert stats.tcp_sack_invalid == 0
    assert stats.tcp_rtt_samples > 0
    # ... and it read the kernel's blocks: it resent almost nothing the kernel already had. The
    # few duplicates there are come from lost ACKs (an RTO after every ACK of a flight, or of
    # its tail-loss probe, was dropped); the kernel reports each with a D-SACK, and ustack
    # parsed the ones that got through: at most those on the wire, at most what the kernel sent.
    assert kernel_dsacks <= SPURIOUS_SHARE * stats.tcp_retransmits
    assert 0 < stats.tcp_dsack_received <= dsacks <= kernel_dsacks
    assert stats.tcp_drop_paws == 0
    assert stats.tcp_drop_no_timestamp == 0
