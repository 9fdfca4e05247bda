"""Stateful host-level fuzzing: a scripted peer, mutated packets, invariants after every step.

Theory of operation
-------------------
A :class:`Fuzzer` drives one sans-IO :class:`~ustack.stack.host.Host` in virtual time, the way
the asyncio driver would, but with a hostile network on the other side. Three actors share one
seeded :class:`random.Random`, so a seed is a run, byte for byte:

* the **peer** (:class:`_Flow`, one per 4-tuple) is a small, honest TCP: it opens connections to
  the host's listeners, answers the host's active opens (SYN,ACK, a refusal, a simultaneous
  open, or silence), sends data inside the window the host advertised, acknowledges what it got
  in order (with SACK blocks and timestamps when they were negotiated), changes its window,
  closes with FIN and resets with RST. Everything the host sends is fed back to it, so
  handshakes complete and transfers go on;
* the **network** turns a share of the peer's packets into something else before the host sees
  them: bit flips, every header field set to its edge values, option garbage, truncations and
  extensions, checksums broken or recomputed (most mutations recompute them, so the packet gets
  past the checksum and reaches the state machine), IPv4 header damage, fragments, duplicates,
  reordering and replays of old packets, ICMP errors quoting real connections, SYN floods and
  plain garbage. A mutated packet is never committed to the peer's model: the peer goes on as
  if it had been lost;
* **IPv6** is fuzzed as hard as IPv4: unless a profile's MTU is below 1280 (RFC 8200 5) the
  host has IPv6 addresses too, and a share of the flows, active and passive opens and SYN
  floods run over IPv6, with every mutation above. :meth:`Fuzzer._hostile6` adds what only
  IPv6 has: extension-header chains a host must accept (Hop-by-Hop, Destination Options with
  options to skip, Routing with Segments Left 0 of any type, atomic fragments -- delivered as
  the segment, so the peer commits it) and chains with one defect (options of every action
  class, bad padding, Routing type 0 and others with segments left, Hop-by-Hop not first, too
  many or too long headers, unknown upper layers, jumbo options and jumbograms), bad Payload
  Lengths, fragments (overlapping, duplicated, out of order, never completed, tiny first
  fragments per RFC 7112, an unfragmentable part with extension headers, fragments of
  fragments, floods of first fragments from one source), ICMPv6 errors quoting real
  connections (Packet Too Big below and above 1280, every Destination Unreachable code,
  Time Exceeded, Parameter Problem, errors quoting errors), Neighbour Discovery and MLD, echo,
  multicast, loopback, unspecified and our own addresses as sources and destinations, and bit
  flips on top of all of them; bursts of packets that each ask for an ICMP error reach the
  rate limit;
* the **application** accepts (slowly, so accept queues overflow), reads, echoes, sends, half-
  closes, closes, aborts and releases connections, and makes active opens.

Time advances in random steps, sometimes straight to ``host.next_deadline()``; timers run
whenever they are due. After every packet (and every timer run) the checker looks at what
changed -- the connection the packet was for, every packet the host sent -- and every
``SWEEP_EVERY`` packets at the whole host. The invariants are the ones a correct stack keeps
whatever it is sent (see :func:`check_connection`, :class:`Checker`) -- for IPv6 also: every
packet sent parses with good TCP and ICMPv6 checksums, one flow label per 4-tuple, no ICMPv6
error about an ICMPv6 error or to an address that names no single host, no ICMP error of either
family beyond the rate limit, no path MTU below 1280; the first violation stops
the run with a reproducer line (seed, packet index, the packet in hex, its tcpdump-style line).

A run is split into epochs, each with a fresh host built from one of :data:`PROFILES` (small
buffers and short timers, window scaling with a large buffer, no options at all, SYN cookies),
so one seed covers several configurations.

``python -m ustack.fuzz --packets N --seed S [--report FILE]`` runs it and prints packets/s and
a summary: states reached, connections made, counters that moved, drops by reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from ustack.stack.config import HostConfig
from ustack.stack.host import Host, Listener
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.events import Closed
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.tcp.timewait import TimeWait
from ustack.wire import addr, icmp, icmpv6, ipv4, ipv6, tcp
from ustack.wire import seq as sq
from ustack.wire.checksum import internet_checksum, ipv4_pseudo_header_sum
from ustack.wire.errors import ParseError
from ustack.wire.fmt import format_packet
from ustack.wire.tcp import ACK, CWR, ECE, FIN, NO_OPTIONS, PSH, RST, SYN, URG, TcpOptions

HOST_ADDRS = (ipv4.addr_to_int("10.7.0.2"), ipv4.addr_to_int("10.7.0.3"))
PEER_ADDRS4 = tuple(ipv4.addr_to_int(f"10.9.0.{i}") for i in range(1, 7))
ROUTER = ipv4.addr_to_int("10.9.255.254")  # sends ICMP errors about the host's packets
NOT_US = ipv4.addr_to_int("10.7.0.99")
# IPv6 (tagged ints, see ustack.wire.addr): the host's two addresses, the peers', a router, and
# the addresses no packet may come from or be answered to (RFC 4291 2.5.2, 2.5.3, 2.7).
HOST_ADDRS6 = (addr.from_text("fd00:7::2"), addr.from_text("fd00:7::3"))
PEER_ADDRS6 = tuple(addr.from_text(f"fd00:9::{i}") for i in range(1, 7))
ROUTER6 = addr.from_text("fd00:9::fffe")
NOT_US6 = addr.from_text("fd00:7::99")
LINK_LOCAL6 = addr.from_text("fe80::9")  # where ND and MLD come from
ALL_NODES6 = addr.from_text("ff02::1")
BAD_SOURCES6 = (addr.V6, addr.from_text("::1"), ALL_NODES6, addr.from_text("ff0e::fb"))
PEER_ADDRS = PEER_ADDRS4 + PEER_ADDRS6
# The last peer address of each family is a black hole: the host's SYNs to it time out.
_FLOOD6 = addr.from_text("fd00:66::")  # SYN floods come from this /112
BLACK_HOLES = (PEER_ADDRS4[-1], PEER_ADDRS6[-1])
SHARE6_HOSTILE = 0.05  # share of packets from the IPv6-specific generator (see _hostile6)
SHARE6 = 0.45  # share of new flows (either direction) over IPv6 when the host has an address
# Listeners: (port, backlog, syn_backlog) -- small, so both queues overflow.
LISTENERS = ((80, 2, 4), (81, 4, 8))
PEER_SERVER_PORTS = (7000, 7001, 7002)  # where the host's active opens go
PEER_CLIENT_PORTS = range(30000, 30048)  # a small pool: 4-tuples get reused (TIME-WAIT)
HOST_FIXED_PORTS = range(40000, 40004)  # active opens on a chosen port (simultaneous opens)
MAX_FLOWS = 24  # live peer flows at a time, so the host's table stays small and checks cheap
SWEEP_EVERY = 128  # packets between whole-host checks
EPOCH = 25_000  # packets per host (then a fresh host with the next profile)
HISTORY = 8  # valid packets per flow kept for replays

_MASK = sq.MASK
_HALF = sq.HALF
_IP = ipv4.HEADER_LEN
_IP6 = ipv6.HEADER_LEN
_UNTAG = addr.V6 - 1
# The peer's payload bytes are a function of their sequence number, so any range can be sent
# again (a retransmission, a replay) without keeping a buffer.
_PATTERN = bytes((i * 7 + (i >> 8) * 13 + 5) & 0xFF for i in range(65536 + 4096))
_MAX_PAYLOAD = 4096

# Profiles: TcpConfig fields for each epoch's host (a field this TcpConfig lacks is skipped, so
# the harness runs against older and newer trees alike), and the link MTU.
PROFILES: tuple[tuple[str, int, dict[str, Any]], ...] = (
    (
        "small",
        576,
        dict(
            recv_buffer=8192,
            send_buffer=16384,
            send_low_water=4096,
            max_ooo_segments=4,
            msl=1.0,
            fin_wait2_timeout=3.0,
            syn_retries=2,
            synack_retries=2,
            data_retries=4,
            rto_max=4.0,
            persist_max=4.0,
            keepalive=True,
            keepalive_idle=4.0,
            keepalive_interval=1.0,
            keepalive_count=2,
            challenge_ack_limit=4,
            syn_cookies="never",  # a full SYN queue drops (the cookie profile answers)
        ),
    ),
    (
        "scaled",
        1500,
        dict(
            recv_buffer=200_000,
            send_buffer=65536,
            send_low_water=16384,
            max_ooo_segments=16,
            nagle=False,
            congestion="newreno",
            msl=2.0,
            fin_wait2_timeout=4.0,
            syn_retries=3,
            synack_retries=2,
            data_retries=5,
            rto_max=5.0,
            persist_max=5.0,
        ),
    ),
    (
        "plain",
        1500,
        dict(
            recv_buffer=30000,
            send_buffer=30000,
            send_low_water=8192,
            max_ooo_segments=8,
            sack=False,
            timestamps=False,
            window_scale=False,
            header_prediction=False,
            rack=False,
            tlp=False,
            msl=1.5,
            fin_wait2_timeout=3.0,
            syn_retries=2,
            synack_retries=1,
            data_retries=4,
            rto_max=4.0,
            user_timeout=6.0,
            syn_cookies="never",
        ),
    ),
    (
        "cookies",
        1280,
        dict(
            recv_buffer=16384,
            send_buffer=16384,
            send_low_water=4096,
            max_ooo_segments=4,
            syn_cookies="always",
            msl=1.0,
            fin_wait2_timeout=3.0,
            syn_retries=2,
            synack_retries=2,
            data_retries=4,
            rto_max=4.0,
        ),
    ),
)

# HostConfig fields per profile: a small ICMP error bucket in two of them, so the rate limit
# (RFC 4443 2.4 (f)) is reached and the checker's own bucket has something to check.
HOST_PROFILES: dict[str, dict[str, Any]] = {
    "small": dict(icmp_error_rate=20.0, icmp_error_burst=4),
    "cookies": dict(icmp_error_rate=50.0, icmp_error_burst=8, reasm_max_per_source=16),
}

# Peer flow phases.
_SYN_SENT = 0  # the peer sent a SYN and waits for the host's SYN,ACK
_SYN_RCVD = 1  # the host's SYN came in; the peer answers it
_OPEN = 2  # synchronized: data, ACKs, FIN
_CLOSED = 3  # reset, refused, or both FINs done: the 4-tuple may start again


class Violation(Exception):
    """An invariant broke. ``line`` is the reproducer the command line prints."""

    def __init__(self, invariant: str, detail: str, line: str = "") -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail
        self.line = line


# -- invariants ------------------------------------------------------------------------------

# ICMP error types (RFC 792, RFC 1122 3.2.2): what the host may send, and never about.
_ICMP4_ERROR_TYPES = frozenset(
    {icmp.DEST_UNREACH, icmp.SOURCE_QUENCH, icmp.REDIRECT, icmp.TIME_EXCEEDED, icmp.PARAM_PROBLEM}
)
# A connection's path MTU counts IPv4's 40 octets of IP and TCP header (the MSS is path_mtu -
# 40); over IPv6 the headers are 20 octets longer, so its IPv6 path MTU is path_mtu + 20.
_V6_EXTRA = _IP6 - _IP


def _unicast6(a: int) -> bool:
    """A tagged IPv6 address one host can have: not unspecified, loopback or multicast (RFC
    4291 2.5.2, 2.5.3, 2.7)."""
    v = a & _UNTAG
    return a >> 128 == 1 and v > 1 and v >> 120 != 0xFF


_STATES = tuple(State)


def check_connection(conn: Connection) -> list[str]:
    """Everything that must hold for one connection whatever it was sent; one message per
    broken invariant (empty when all is well). Reads the parts directly: it runs after nearly
    every packet."""
    bad: list[str] = []
    state = conn.state
    if not isinstance(state, State):
        bad.append(f"state: {state!r} is not a State")
    snd = conn.snd
    una = snd.una
    nxt = snd.nxt
    # RFC 9293 3.3.1: SND.UNA =< SND.NXT =< SND.MAX, on the sender's unwrapped counters (the
    # 32-bit values the wire carries follow from them while the span stays below 2**31)
    if not 0 <= una <= nxt <= snd.max_sent < una + _HALF:
        bad.append(f"seq: SND.UNA {una} <= SND.NXT {nxt} <= SND.MAX {snd.max_sent} broken")
    cfg = conn.config
    if snd.buf.size > cfg.send_buffer:
        bad.append(f"buffer: send buffer {snd.buf.size} > send_buffer {cfg.send_buffer}")
    rcv = conn.rcv
    buf = rcv.buf
    if buf.has_ooo:
        held = buf.readable + buf.ooo_bytes
        if buf.ooo_pieces > cfg.max_ooo_segments:
            bad.append(f"buffer: {buf.ooo_pieces} out-of-order pieces > {cfg.max_ooo_segments}")
    else:
        held = buf.readable
    if held > cfg.recv_buffer:
        bad.append(f"buffer: receive buffer {held} > recv_buffer {cfg.recv_buffer}")
    wnd = rcv.rcv_wnd
    if not 0 <= wnd <= cfg.recv_buffer:
        bad.append(f"window: RCV.WND {wnd} outside 0..{cfg.recv_buffer}")
    board = conn.recovery.board
    if len(board):
        try:
            board.check(una, nxt)
        except AssertionError as e:
            bad.append(f"scoreboard: {e or 'inconsistent'}")
        # RFC 6675 SetPipe() counts a retransmitted octet twice (once more if it is not
        # presumed lost), so the flight plus what was retransmitted bounds it, not the flight
        pipe = conn.recovery.pipe(nxt - una)
        if not 0 <= pipe <= nxt - una + board.retrans_out:
            bad.append(f"scoreboard: pipe {pipe} outside 0..{nxt - una} + {board.retrans_out}")
    if conn.remote_addr >> 128:
        # RFC 8201 4: a node MUST NOT reduce its estimate of the Path MTU below 1280, so no
        # Packet Too Big takes the MSS below 1220 (a smaller own MSS is the host's choice)
        floor = min(ipv6.MIN_MTU, conn.adv_mss + _IP6 + tcp.HEADER_LEN)
        if conn.path_mtu + _V6_EXTRA < floor:
            bad.append(f"pmtu: IPv6 path MTU {conn.path_mtu + _V6_EXTRA} < {floor}")
    d = conn.next_deadline()
    if d is not None:
        if not d >= 0.0:
            bad.append(f"timer: deadline {d!r}")
        if state is State.CLOSED:
            bad.append(f"timer: a CLOSED connection still has a deadline ({d})")
    return bad


class Checker:
    """The invariants on what the host *sends* and on the host as a whole.

    Per 4-tuple it remembers the right edge of the window the host advertised (SEG.ACK +
    SEG.WND << shift) and the last acknowledgment number, from the segments themselves: RFC 9293
    3.8.6 says the window should not shrink, and RCV.NXT never moves back within one
    incarnation (a SYN from the host starts a new one)."""

    __slots__ = (
        "_addrs",
        "_burst",
        "_peers",
        "_rate",
        "_refill",
        "_tokens",
        "edges",
        "icmp_errors_sent",
        "labels",
        "retractions",
    )

    def __init__(
        self,
        host_addrs: tuple[int, ...],
        peer_addrs: tuple[int, ...] = (),
        host_config: HostConfig | None = None,
        now: float = 0.0,
    ) -> None:
        self._addrs = frozenset(host_addrs)
        self._peers = frozenset(peer_addrs)
        # key -> [right edge, ack, window shift, id of the Connection sending]
        self.edges: dict[tuple[int, int, int, int], list[Any]] = {}
        self.retractions = 0  # sub-scale retractions (RFC 7323 2.4), not violations
        # RFC 6437 3: an IPv6 flow's label is the same on every packet of it; key -> label
        self.labels: dict[tuple[int, int, int, int], int] = {}
        # The ICMP error token bucket (RFC 4443 2.4 (f), RFC 1812 4.3.2.8) as the host was
        # configured: a second bucket, fed the same times, that must never be overdrawn.
        self._rate = host_config.icmp_error_rate if host_config is not None else 0.0
        self._burst = float(host_config.icmp_error_burst) if host_config is not None else 0.0
        self._tokens = self._burst
        self._refill = now
        self.icmp_errors_sent = 0

    def output(
        self, pkt: bytes | bytearray | memoryview, host: Host | None = None, now: float = 0.0
    ) -> tuple[tcp.TcpSegment | None, str | None]:
        """Check one datagram the host sent at ``now``: it parses (good checksums), comes from
        one of the host's addresses, and a TCP segment keeps the window and ACK rules (over
        IPv6 with one flow label per 4-tuple); an ICMP or ICMPv6 error is never about an
        error, never to an address no host has, and never beyond the rate limit. Returns the
        parsed segment (None for ICMP) and a message for a broken invariant."""
        if len(pkt) and pkt[0] >> 4 == 6:
            return self._output6(pkt, host, now)
        seg = tcp.parse_ipv4(pkt)
        if seg is None:
            try:
                ip = ipv4.parse(pkt)
            except ParseError as e:
                return None, f"output: an unparseable datagram ({e.reason})"
            if ip.src not in self._addrs:
                return None, f"output: source {ipv4.int_to_addr(ip.src)} is not ours"
            if ip.is_fragment:
                return None, self._fragment_sent(4, ip.proto, ip.frag_offset, ip.payload, pkt, host)
            if ip.proto == ipv4.PROTO_ICMP:
                try:
                    msg = icmp.parse(ip.payload)
                except ParseError as e:
                    return None, f"output: a bad ICMP message ({e.reason})"
                if msg.type in _ICMP4_ERROR_TYPES:
                    return None, self._error_sent(msg.payload, 4, ip.dst, now)
                return None, None
            if ip.proto != ipv4.PROTO_TCP:
                return None, f"output: protocol {ip.proto}"
            if ip.is_fragment or ip.header_length != _IP:
                return None, "output: a fragment or IP options"
            try:
                ph = ipv4_pseudo_header_sum(ip.src, ip.dst, ipv4.PROTO_TCP, 0)
                tcp.parse(ip.payload, ip.src, ip.dst, pseudo=ph)
            except ParseError as e:
                return None, f"output: a bad TCP segment ({e.reason})"
            return None, "output: a TCP segment the fast parser refuses"
        if seg.src not in self._addrs:
            return seg, f"output: source {ipv4.int_to_addr(seg.src)} is not ours"
        if not pkt[6] & 0x40:
            return seg, "output: TCP without DF"
        return seg, self._tcp_rules(seg, host)

    def _output6(
        self, pkt: bytes | bytearray | memoryview, host: Host | None, now: float
    ) -> tuple[tcp.TcpSegment | None, str | None]:
        seg = tcp.parse_ipv6(pkt)
        if seg is None:
            try:
                ip = ipv6.parse(pkt)
            except ParseError as e:
                return None, f"output: an unparseable IPv6 packet ({e.reason})"
            src = ip.src | addr.V6
            if src not in self._addrs:
                return None, f"output: source {addr.to_text(src)} is not ours"
            if ip.ext_headers == (ipv6.FRAGMENT,) and ip.fragment is not None:
                f = ip.fragment
                return None, self._fragment_sent(6, ip.proto, f.offset, ip.payload, pkt, host)
            if ip.ext_headers:
                return None, f"output: extension headers {ip.ext_headers}"
            if ip.proto == ipv6.PROTO_ICMPV6:
                try:
                    msg = icmpv6.parse(ip.payload, ip.src, ip.dst)
                except ParseError as e:
                    return None, f"output: a bad ICMPv6 message ({e.reason})"
                if msg.is_error:
                    bad = self._error6_fields(msg)
                    if bad is not None:
                        return None, bad
                    return None, self._error_sent(msg.payload, 6, ip.dst | addr.V6, now)
                if msg.type != icmpv6.ECHO_REPLY:
                    return None, f"output: ICMPv6 type {msg.type}"
                if host is not None and len(pkt) > host.mtu:
                    # a request reassembled from fragments is not answered (none are sent)
                    return None, f"output: an ICMPv6 echo reply of {len(pkt)} octets > MTU"
                return None, None
            if ip.proto != ipv6.PROTO_TCP:
                return None, f"output: IPv6 next header {ip.proto}"
            try:
                ph = ipv6.pseudo_header_sum(ip.src, ip.dst, ipv6.PROTO_TCP, 0)
                tcp.parse(ip.payload, ip.src | addr.V6, ip.dst | addr.V6, pseudo=ph)
            except ParseError as e:
                return None, f"output: a bad TCP segment over IPv6 ({e.reason})"
            return None, "output: a TCP/IPv6 segment the fast parser refuses"
        if seg.src not in self._addrs:
            return seg, f"output: source {addr.to_text(seg.src)} is not ours"
        if host is not None and len(pkt) > host.mtu:
            return seg, f"output: a TCP/IPv6 packet of {len(pkt)} octets > MTU {host.mtu}"
        key = (seg.dst, seg.dst_port, seg.src, seg.src_port)
        label = ((pkt[1] & 0x0F) << 16) | (pkt[2] << 8) | pkt[3]
        old = self.labels.setdefault(key, label)
        if old != label:
            return seg, f"flow_label: {old:#x} then {label:#x} on one 4-tuple (RFC 6437 3)"
        return seg, self._tcp_rules(seg, host)

    @staticmethod
    def _fragment_sent(
        version: int,
        proto: int,
        offset: int,
        payload: memoryview,
        pkt: bytes | bytearray | memoryview,
        host: Host | None,
    ) -> str | None:
        """A fragment the host sent: only an echo reply is ever cut (the answer to a request
        that came in fragments), and each piece fits the link."""
        icmp_proto, reply = (
            (ipv4.PROTO_ICMP, icmp.ECHO_REPLY) if version == 4 else (ipv6.PROTO_ICMPV6, 129)
        )
        if proto != icmp_proto:
            return f"output: an IPv{version} fragment of protocol {proto}"
        if offset == 0 and (not payload or payload[0] != reply):
            return f"output: an IPv{version} fragment of something other than an echo reply"
        if host is not None and len(pkt) > host.mtu:
            return f"output: an IPv{version} fragment of {len(pkt)} octets > MTU {host.mtu}"
        return None

    @staticmethod
    def _error6_fields(msg: icmpv6.Icmpv6Message) -> str | None:
        """What the host's own ICMPv6 errors say: a Parameter Problem points inside the packet
        it quotes (RFC 4443 3.4); a reassembly Time Exceeded quotes fragment zero (RFC 8200
        4.5); nothing else is sent (no Packet Too Big or Destination Unreachable: a host that
        forwards nothing has no cause to)."""
        quote = msg.payload
        if msg.type == icmpv6.PARAM_PROBLEM:
            if len(quote) >= _IP6:
                whole = _IP6 + ((quote[4] << 8) | quote[5])
                if not msg.pointer < whole:
                    return f"icmp_error: Parameter Problem pointer {msg.pointer} >= {whole}"
            return None
        if msg.type == icmpv6.TIME_EXCEEDED and msg.code == icmpv6.REASSEMBLY_TIME_EXCEEDED:
            try:
                chain = ipv6.walk_quoted(quote)
            except ParseError as e:
                return f"icmp_error: Time Exceeded quoting a later fragment ({e.reason})"
            if chain.fragment is None:
                return "icmp_error: reassembly Time Exceeded quoting no fragment"
            return None
        return f"icmp_error: ICMPv6 error type {msg.type} code {msg.code} from a host"

    def _error_sent(self, quote: memoryview, version: int, dst: int, now: float) -> str | None:
        """An ICMP (``version`` 4) or ICMPv6 error the host sent to ``dst``, quoting ``quote``:
        RFC 1122 3.2.2 and RFC 4443 2.4 (e) -- never about an error, never to an address that
        names no single host -- and RFC 4443 2.4 (f) -- never beyond the rate limit."""
        self.icmp_errors_sent += 1
        if version == 6:
            if not _unicast6(dst):
                return f"icmp_error: an ICMPv6 error to {addr.to_text(dst)} (RFC 4443 2.4 (e))"
            if len(quote) >= _IP6 and quote[0] >> 4 == 6:
                try:
                    chain = ipv6.walk_quoted(quote)
                except ParseError:
                    chain = None
                at = chain.payload_offset if chain is not None else len(quote)
                if (
                    chain is not None
                    and chain.proto == ipv6.PROTO_ICMPV6
                    and at < len(quote)
                    and (quote[at] < icmpv6.ERROR_TYPE_LIMIT or quote[at] == icmpv6.REDIRECT)
                ):
                    return f"icmp_error: an ICMPv6 error about ICMPv6 type {quote[at]}"
                qsrc = int.from_bytes(quote[ipv6.OFF_SRC : ipv6.OFF_DST], "big") | addr.V6
                if qsrc != dst:
                    return "icmp_error: an ICMPv6 error not sent to the invoking packet's source"
            if _IP6 + icmpv6.HEADER_LEN + len(quote) > ipv6.MIN_MTU:
                return "icmp_error: an ICMPv6 error longer than 1280 octets (RFC 4443 2.4 (c))"
        elif len(quote) >= _IP and quote[9] == ipv4.PROTO_ICMP:
            at = (quote[0] & 0x0F) * 4
            if at < len(quote) and quote[at] in _ICMP4_ERROR_TYPES:
                return f"icmp_error: an ICMP error about ICMP type {quote[at]}"
        if not self._burst:
            return None
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._refill) * self._rate)
        self._refill = max(now, self._refill)
        if self._tokens < 1.0 - 1e-9:
            return f"icmp_rate: an ICMP error sent with {self._tokens:.3f} tokens in the bucket"
        self._tokens -= 1.0
        return None

    def _tcp_rules(self, seg: tcp.TcpSegment, host: Host | None) -> str | None:
        """The window and acknowledgment rules of one TCP segment the host sent."""
        flags = seg.flags
        mss = seg.options.mss
        if flags & SYN and mss is not None and host is not None:
            # RFC 9293 3.7.1: the MSS offered fits the link under this family's headers
            room = host.mtu - (_IP6 if seg.src >> 128 else _IP) - tcp.HEADER_LEN
            if mss > room:
                return f"mss: a SYN offers MSS {mss} > {room} (MTU {host.mtu})"
        if flags & RST or not flags & ACK:
            return None
        key = (seg.dst, seg.dst_port, seg.src, seg.src_port)
        rec = self.edges.get(key)
        c = host.lookup(*key) if host is not None else None
        # the Connection itself, not its id(): a new one may be allocated where an old one was
        cid = c if type(c) is Connection else None
        if flags & SYN:
            # A SYN,ACK starts (or restarts) an incarnation; its window is never scaled.
            self.edges[key] = [sq.add(seg.ack, seg.window), seg.ack, 0, cid]
            return None
        if rec is None or (cid is not None and rec[3] is not cid):
            # The first segment of an incarnation whose SYN,ACK the checker did not see (a
            # SYN cookie's connection): the window so far is what this segment says.
            rec = self.edges[key] = [seg.ack, seg.ack, 0, cid]
        if cid is not None:
            rec[2] = cid.rcv_wscale
        edge = sq.add(seg.ack, seg.window << rec[2])
        ack = seg.ack
        if sq.lt(ack, rec[1]):
            return f"ack: RCV.NXT moved back from {rec[1]} to {ack}"
        rec[1] = ack
        if sq.lt(edge, rec[0]):
            back = sq.sub(rec[0], edge)
            if back < 1 << rec[2]:
                # RFC 7323 2.4 and appendix F: with a scaled window the right edge can retract
                # by less than one unit of the scale ("the TCP sender SHOULD handle this as
                # normal"): ustack rounds the window down rather than offer buffer space it does
                # not have -- rounding up never to retract would let the edge creep forward by
                # a unit per tiny segment while the application reads nothing. Counted.
                self.retractions += 1
                return None
            old = rec[0]
            rec[0] = edge
            return (
                f"window: the right edge moved left by {sq.sub(old, edge)} "
                f"(from {old} to {edge}, shift {rec[2]})"
            )
        rec[0] = edge
        return None

    def host(self, host: Host, owned: int, listeners: list[Listener] | None = None) -> list[str]:
        """The whole host: every connection, the table bounds (``owned`` connections the
        application holds, plus what the listeners' queues may), the next deadline."""
        bad: list[str] = []
        if host.stats.host_internal_error:
            bad.append("host_internal_error: receive_packet swallowed an exception")
        conns = 0
        fresh: float | None = None
        for c in host.connections:
            if isinstance(c, TimeWait):
                d: float | None = c.deadline
            else:
                conns += 1
                bad.extend(f"{m} ({c!r})" for m in check_connection(c))
                d = c.next_deadline()
            if d is not None and (fresh is None or d < fresh):
                fresh = d
        bound = owned
        for lst in listeners if listeners is not None else []:
            if lst.closed:
                continue
            if lst.half_open > lst.syn_backlog:
                bad.append(f"listener {lst.port}: {lst.half_open} half-open > {lst.syn_backlog}")
            if lst.pending > lst.backlog:
                bad.append(f"listener {lst.port}: {lst.pending} pending > {lst.backlog}")
            bound += lst.half_open + lst.pending
        if conns > bound:
            bad.append(f"table: {conns} connections > {bound} (application's + listeners')")
        nd = host.next_deadline()
        if fresh is not None and (nd is None or nd > fresh):
            bad.append(f"timer: next_deadline() {nd} is later than a connection's {fresh}")
        return bad

    def forget_gone(self, host: Host) -> None:
        """Drop the window records of 4-tuples the host no longer tracks (floods leave many)."""
        for key in [k for k in self.edges if host.lookup(*k) is None]:
            del self.edges[key]


# -- the peer ----------------------------------------------------------------------------------


class _Flow:
    """The peer's side of one 4-tuple: a small honest TCP (see the module docstring)."""

    __slots__ = (
        "active_host",
        "fin_rcvd",
        "fin_sent",
        "history",
        "host_edge",
        "host_mss",
        "host_shift",
        "iss",
        "key",
        "last_host",
        "need",
        "offer",
        "ooo",
        "peer_ws",
        "phase",
        "rcv_nxt",
        "sack",
        "snd_nxt",
        "snd_una",
        "ts",
        "ts_off",
        "ts_recent",
        "wnd",
    )

    def __init__(self, key: tuple[int, int, int, int], active_host: bool) -> None:
        self.key = key  # (peer addr, peer port, host addr, host port): the host's view
        self.active_host = active_host
        self.phase = _SYN_SENT
        self.iss = 0
        self.snd_nxt = 0
        self.snd_una = 0
        self.fin_sent = False
        self.rcv_nxt = 0
        self.fin_rcvd = False
        self.need = False  # the host sent something the peer should answer
        self.offer: TcpOptions = NO_OPTIONS  # what the peer's SYN (or SYN,ACK) offered
        self.ts = False
        self.sack = False
        self.peer_ws = 0  # the shift the host applies to our window
        self.host_shift = 0  # the shift we apply to the host's window
        self.host_mss = 536
        self.host_edge = 0
        self.ts_off = 0
        self.ts_recent = 0
        self.wnd = 65535
        self.ooo: tuple[int, int] | None = None  # host data beyond a hole (SACKed)
        self.history: list[bytearray] = []
        self.last_host = b""  # the start of the host's last datagram (ICMP errors quote it)


class _App:
    __slots__ = ("conn", "mode", "shut")

    def __init__(self, conn: Connection, mode: str) -> None:
        self.conn = conn
        self.mode = mode  # echo, sink, lazy (never reads), source (writes a lot)
        self.shut = False


# (kind, code, mtu choices) of the ICMP errors the network sends about the host's packets
_ICMP_KINDS: tuple[tuple[int, int], ...] = (
    (icmp.DEST_UNREACH, icmp.NET_UNREACH),
    (icmp.DEST_UNREACH, icmp.HOST_UNREACH),
    (icmp.DEST_UNREACH, icmp.PROTO_UNREACH),
    (icmp.DEST_UNREACH, icmp.PORT_UNREACH),
    (icmp.DEST_UNREACH, icmp.FRAG_NEEDED),
    (icmp.DEST_UNREACH, icmp.FRAG_NEEDED),
    (icmp.DEST_UNREACH, icmp.FRAG_NEEDED),
    (icmp.DEST_UNREACH, 13),  # administratively prohibited
    (icmp.TIME_EXCEEDED, 0),
    (icmp.TIME_EXCEEDED, 1),
    (12, 0),  # parameter problem
    (4, 0),  # source quench (deprecated, RFC 6633)
    (5, 1),  # redirect
)
# (type, code, value) of the ICMPv6 errors the network sends about the host's IPv6 packets (RFC
# 4443 3; a Packet Too Big's MTU and a Parameter Problem's pointer are drawn when sent), with
# codes and types no RFC defines, and a Redirect (RFC 4861 8), which quotes a packet too.
_ICMP6_KINDS: tuple[tuple[int, int, int], ...] = (
    *((icmpv6.PACKET_TOO_BIG, 0, 0),) * 10,
    *((icmpv6.DEST_UNREACH, code, 0) for code in range(8)),
    (icmpv6.TIME_EXCEEDED, icmpv6.HOP_LIMIT_EXCEEDED, 0),
    (icmpv6.TIME_EXCEEDED, icmpv6.REASSEMBLY_TIME_EXCEEDED, 0),
    *((icmpv6.PARAM_PROBLEM, code, 0) for code in range(5)),
    (5, 0, 0),
    (127, 0, 0),
    (icmpv6.REDIRECT, 0, 0),
)
# Packet Too Big MTUs: below, at and above the IPv6 minimum of 1280 (RFC 8201 4), and absurd.
_MTUS6 = (0, 68, 576, 1000, 1279, 1280, 1281, 1400, 1499, 1500, 9000, 0xFFFFFFFF)
# Informational ICMPv6 types: echo, MLD, ND (RFC 4861), MLDv2, and unassigned ones.
_ICMP6_INFO_TYPES = (
    icmpv6.ECHO_REQUEST,
    icmpv6.ECHO_REQUEST,
    icmpv6.ECHO_REPLY,
    icmpv6.MLD_QUERY,
    icmpv6.MLD_REPORT,
    icmpv6.MLD_DONE,
    icmpv6.ROUTER_SOLICITATION,
    icmpv6.ROUTER_ADVERTISEMENT,
    icmpv6.NEIGHBOR_SOLICITATION,
    icmpv6.NEIGHBOR_ADVERTISEMENT,
    icmpv6.REDIRECT,
    icmpv6.MLD2_REPORT,
    200,
    255,
)
_MTUS = (0, 1, 67, 68, 296, 508, 552, 576, 1000, 1280, 1400, 1499, 1500, 9000, 65535)
_FLAG_EDGES = (
    SYN | FIN,
    SYN | RST,
    RST | FIN,
    SYN | FIN | RST | ACK,
    SYN | ACK,
    SYN,
    FIN,
    0,
    URG,
    PSH,
    ECE | CWR | ACK,
    0xFF,
    RST | ACK,
    RST,
    FIN | ACK | PSH | URG,
)
_MUTATIONS = (
    "bitflip",
    "seq",
    "seq",
    "ack",
    "ack",
    "flags",
    "flags",
    "offset",
    "window",
    "urgent",
    "options",
    "options",
    "sack",
    "timestamps",
    "truncate",
    "extend",
    "ip",
    "ip",
    "checksum",
)
_MUT_RECOMPUTE = 0.8  # share of bit flips and field edits whose checksums are made good again


def _refresh_checksums(p: bytearray) -> None:
    """Make the IPv4 header checksum and (when the lengths allow) the TCP checksum right again
    after a mutation, so the packet reaches the layer the mutation was aimed at."""
    n = len(p)
    if n and p[0] >> 4 == 6:
        _refresh_checksums6(p)
        return
    if n < _IP:
        return
    ihl = (p[0] & 0x0F) << 2
    if _IP <= ihl <= n:
        p[10] = p[11] = 0
        struct.pack_into("!H", p, 10, internet_checksum(memoryview(p)[:ihl]))
    else:
        ihl = _IP
    total = (p[2] << 8) | p[3]
    end = min(total, n)
    if p[9] == ipv4.PROTO_TCP and end - ihl >= tcp.HEADER_LEN:
        src, dst = struct.unpack_from("!II", p, 12)
        p[ihl + 16] = p[ihl + 17] = 0
        seg = memoryview(p)[ihl:end]
        csum = internet_checksum(seg, ipv4_pseudo_header_sum(src, dst, ipv4.PROTO_TCP, end - ihl))
        struct.pack_into("!H", p, ihl + 16, csum)


class Fuzzer:
    """One fuzzing run; see the module docstring. ``run(n)`` sends ``n`` packets."""

    def __init__(self, seed: int = 1, *, epoch: int = EPOCH, profiles: tuple[int, ...] = ()):
        self.seed = seed
        self.rng = random.Random(seed)
        self.epoch = epoch
        self.profiles = profiles or tuple(range(len(PROFILES)))
        self.index = 0  # packets sent so far (the next packet's index)
        self.now = 0.0
        self.totals: dict[str, int] = {}  # counters of finished epochs
        self.states_seen: dict[State, int] = {}
        self.states_seen6: dict[State, int] = {}  # the same, for IPv6 connections only
        self.kinds: dict[str, int] = {}  # packets by generator kind
        self.mutated_reached_tcp = 0  # mutated packets a connection or listener took in
        self.timer_runs = 0
        self.early_wakeups = 0
        self.violations: list[Violation] = []
        self.keep_going = False
        self._digest = hashlib.sha256()
        self._epoch_no = -1
        self._last_pkt: bytes | bytearray = b""
        self._internal: list[str] = []
        self._errors_seen = 0
        self.violation_counts: dict[str, int] = {}
        self._handler = _CaptureHandler(self._internal)
        # the epoch's world, made by _new_epoch
        self.profile = ""
        self.host: Host
        self.checker: Checker
        self.listeners: list[Listener]
        self.flows: dict[tuple[int, int, int, int], _Flow]
        self.window_retractions = 0  # of earlier epochs; see Checker.retractions
        self.icmp_errors_sent = 0  # of earlier epochs; see Checker.icmp_errors_sent
        self.live: list[_Flow]
        self.attention: dict[_Flow, None]
        self.apps: list[_App]
        self.owned: dict[int, Connection]
        self.delayed: list[bytearray]
        self.fragments: list[bytearray]
        self.addrs6: tuple[int, ...]  # the epoch's host's IPv6 addresses (none below MTU 1280)
        self.host_addrs: tuple[int, ...]
        self._new_epoch()

    # -- set-up ---------------------------------------------------------------------------

    def _new_epoch(self) -> None:
        if self._epoch_no >= 0:
            self._add_totals()
            self._sweep()
            self.window_retractions += self.checker.retractions
            self.icmp_errors_sent += self.checker.icmp_errors_sent
        self._epoch_no += 1
        name, mtu, cfg = PROFILES[self.profiles[self._epoch_no % len(self.profiles)]]
        have = {f.name for f in dataclasses.fields(TcpConfig)}
        config = TcpConfig(**{k: v for k, v in cfg.items() if k in have})
        self.profile = name
        # IPv6 needs a link MTU of 1280 (RFC 8200 5): a profile with a smaller one makes an
        # IPv4-only host, which the IPv6 traffic reaches only as packets not for it.
        self.addrs6 = HOST_ADDRS6 if mtu >= ipv6.MIN_MTU else ()
        self.host_addrs = HOST_ADDRS + self.addrs6
        self.host = Host(
            self.host_addrs,
            config=config,
            host_config=HostConfig(**HOST_PROFILES.get(name, {})),
            mtu=mtu,
            secret=self.rng.randbytes(16),
            now=self.now,
        )
        self.checker = Checker(self.host_addrs, PEER_ADDRS, self.host.host_config, self.now)
        self.listeners = [self.host.listen(p, b, syn_backlog=s) for p, b, s in LISTENERS]
        self.flows = {}
        self.live = []  # flows not _CLOSED, for picking
        self.attention = {}  # flows the host sent something to answer
        self.apps = []
        self.owned = {}  # every connection the application holds
        self.delayed = []  # reordered packets, sent later
        self.fragments = []
        self.flood = 0
        self.flood6 = False  # the flood in progress comes over IPv6
        self._frag_ident6 = 0  # the last IPv6 fragment identification (sometimes used again)
        self.burst: list[bytearray] = []  # packets that each ask for an ICMP error, back to back
        self.ip_id = 0
        self._errors_seen = 0

    def _add_totals(self) -> None:
        for k, v in self.host.stats.as_dict().items():
            if v:
                self.totals[k] = self.totals.get(k, 0) + v

    def stats(self) -> dict[str, int]:
        """Every counter summed over the epochs so far, the running one included."""
        out = dict(self.totals)
        for k, v in self.host.stats.as_dict().items():
            if v:
                out[k] = out.get(k, 0) + v
        return {k: out[k] for k in Stats.__dataclass_fields__ if out.get(k)}

    # -- the run --------------------------------------------------------------------------

    def run(self, packets: int) -> None:
        """Send ``packets`` more packets; raises :class:`Violation` on the first broken
        invariant (or collects them all with ``keep_going``)."""
        end = self.index + packets
        logger = logging.getLogger("ustack.stack.host")
        logger.addHandler(self._handler)
        try:
            while self.index < end:
                if self._epoch_no < self.index // self.epoch:
                    self._new_epoch()
                self.step()
        finally:
            logger.removeHandler(self._handler)

    def step(self) -> None:
        """One packet, with the time, timer and application work around it, on the current
        epoch's host (``run`` is what moves on to the next epoch)."""
        rng = self.rng
        self._advance_time()
        if rng.random() < 0.35:
            self._app_step()
        kind, pkt, mutated = self._next_packet()
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self._last_pkt = pkt
        host = self.host
        stats = host.stats
        before = stats.tcp_demuxed + stats.listen_syn + stats.tcp_segments_received
        host.receive_packet(pkt, self.now)
        if mutated and stats.tcp_demuxed + stats.listen_syn + stats.tcp_segments_received != before:
            self.mutated_reached_tcp += 1
        if stats.host_internal_error != self._errors_seen:
            self._errors_seen = stats.host_internal_error
            self._fail(
                "host_internal_error",
                "receive_packet swallowed an exception:\n" + "".join(self._internal[-1:]),
            )
        self._pull()
        key = self._key_of(pkt)
        if key is not None:
            c = host.lookup(*key)
            if isinstance(c, Connection):
                self._check(c)
        self.index += 1
        if self.index % SWEEP_EVERY == 0:
            self._sweep()

    def _advance_time(self) -> None:
        rng = self.rng
        r = rng.random()
        host = self.host
        if r < 0.80:
            self.now += rng.random() * 0.004
        elif r < 0.97:
            self.now += rng.random() * 0.3
        else:
            d = self._call(host.next_deadline)
            self.now = max(self.now, d) if d is not None else self.now + 1.0
        d = self._call(host.next_deadline)
        runs = 0
        while d is not None and d <= self.now:
            now = self.now
            # the connections whose timers are due: the ones to look at afterwards
            due = [
                c
                for c in host.connections
                if type(c) is Connection and (t := c.next_deadline()) is not None and t <= now
            ]
            self._call(host.on_deadline, now)
            self.timer_runs += 1
            self._pull()
            for c in due:
                self._check(c)
            d2 = self._call(host.next_deadline)
            runs += 1
            if d2 is not None and d2 <= self.now:
                self.early_wakeups += 1
                if runs >= 8:
                    self._fail(
                        "timer", f"next_deadline() stays at {d2} <= now {self.now} after 8 runs"
                    )
                    break
            d = d2

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Violation:
            raise
        except Exception:
            self._fail(f"exception in {fn.__name__}", traceback.format_exc())
            return None

    def _pull(self) -> None:
        """Take the host's output: check each datagram, feed TCP segments to the peer."""
        out = self._call(self.host.packets_to_send, self.now)
        if not out:
            return
        checker = self.checker
        digest = self._digest
        host = self.host
        for p in out:
            if isinstance(p, tuple):  # a gathered write: headers and payload
                p = p[0] + bytes(p[1])
            digest.update(p)
            seg, bad = checker.output(p, host, self.now)
            if bad is not None:
                self._fail(bad.split(":", 1)[0], bad + "\n  sent: " + format_packet(p))
            if seg is not None:
                self._peer_input(seg, p)

    def _check(self, c: Connection) -> None:
        state = c.state
        self.states_seen[state] = self.states_seen.get(state, 0) + 1
        if c.remote_addr >> 128:
            self.states_seen6[state] = self.states_seen6.get(state, 0) + 1
        bad = check_connection(c)
        if bad:
            self._fail(bad[0].split(":", 1)[0], "; ".join(bad) + f" ({c!r})")

    def _sweep(self) -> None:
        host = self.host
        live = {id(c) for c in host.connections}
        for k in [k for k in self.owned if k not in live]:
            del self.owned[k]
        for c in host.connections:
            if isinstance(c, Connection):
                s = c.state
                self.states_seen[s] = self.states_seen.get(s, 0) + 1
                if c.remote_addr >> 128:
                    self.states_seen6[s] = self.states_seen6.get(s, 0) + 1
            else:
                self.states_seen[State.TIME_WAIT] = self.states_seen.get(State.TIME_WAIT, 0) + 1
        if any(not lst.closed for lst in self.listeners):
            self.states_seen[State.LISTEN] = self.states_seen.get(State.LISTEN, 0) + 1
        bad = self.checker.host(host, len(self.owned), self.listeners)
        if bad:
            self._fail(bad[0].split(":", 1)[0], "; ".join(bad))
        self.checker.forget_gone(host)

    def _fail(self, invariant: str, detail: str) -> None:
        pkt = self._last_pkt
        line = (
            f"seed={self.seed} packet={self.index} epoch={self._epoch_no} profile={self.profile} "
            f"now={self.now:.6f}\n  packet: {pkt.hex()}\n  {format_packet(pkt)}\n"
            f"  reproduce: python -m ustack.fuzz --seed {self.seed} --packets {self.index + 1}"
        )
        v = Violation(invariant, detail, line)
        seen = self.violation_counts.get(invariant, 0)
        self.violation_counts[invariant] = seen + 1
        if seen < 3:
            self.violations.append(v)  # the first few of each kind, with their reproducers
        if not self.keep_going:
            raise v

    @staticmethod
    def _key_of(pkt: bytearray) -> tuple[int, int, int, int] | None:
        if len(pkt) >= _IP6 + 4 and pkt[0] >> 4 == 6:
            # IPv6: the TCP ports behind the fixed header or, past extension headers, where
            # the walk says the upper layer starts
            if pkt[6] == ipv6.PROTO_TCP:
                at = _IP6
            else:
                try:
                    ip = ipv6.parse(pkt)
                except ParseError:
                    return None
                if ip.proto != ipv6.PROTO_TCP or ip.is_fragment or len(ip.payload) < 4:
                    return None
                at = ip.payload_offset
            src = int.from_bytes(pkt[8:24], "big") | addr.V6
            dst = int.from_bytes(pkt[24:40], "big") | addr.V6
            sport, dport = struct.unpack_from("!HH", pkt, at)
            return (src, sport, dst, dport)
        if len(pkt) < 40 or pkt[0] != 0x45 or pkt[9] != ipv4.PROTO_TCP:
            return None
        src, dst, sport, dport = struct.unpack_from("!IIHH", pkt, 12)
        return (src, sport, dst, dport)

    # -- the application ------------------------------------------------------------------

    def _app_step(self) -> None:
        rng = self.rng
        host = self.host
        now = self.now
        while (ev := host.next_event()) is not None:
            if type(ev) is Closed:
                for i, a in enumerate(self.apps):
                    if a.conn is ev.conn:
                        del self.apps[i]
                        break
        for lst in self.listeners:
            if lst.pending and rng.random() < 0.3:
                c = lst.accept()
                if c is not None:
                    self._adopt(c)
        r = rng.random()
        if r < 0.03 and len(self.live) < MAX_FLOWS:
            self._connect()
        elif r < 0.031:
            # a listener goes away (its queues are reset) and comes back
            i = rng.randrange(len(self.listeners))
            port, backlog, syn_backlog = LISTENERS[i]
            self._app_call(self.listeners[i].close, now)
            self.listeners[i] = host.listen(port, backlog, syn_backlog=syn_backlog)
        if not self.apps:
            return
        a = self.apps[rng.randrange(len(self.apps))]
        c = a.conn
        op = rng.random()
        if op < 0.45:
            if a.mode != "lazy" or rng.random() < 0.05:
                data = self._app_call(c.read, rng.choice((-1, 1, 100, 4096)))
                if data and a.mode == "echo" and not a.shut:
                    self._app_call(c.send, data)
        elif op < 0.65:
            if not a.shut:
                n = 20000 if a.mode == "source" else rng.choice((1, 10, 500, 3000))
                self._app_call(c.send, _PATTERN[:n])
        elif op < 0.72:
            a.shut = True
            self._app_call(c.shutdown, now)
        elif op < 0.78:
            a.shut = True
            self._app_call(c.close, now)
        elif op < 0.80:
            self._app_call(c.abort, now)
        elif op < 0.86:
            if c.orphaned or c.state is State.CLOSED:
                # done with it: the host may keep only a TIME-WAIT record from now on
                self.apps.remove(a)
                self._app_call(host.release, c, now)
        elif op < 0.88:
            self._app_call(c.set_nodelay, rng.random() < 0.5)
        elif op < 0.89:
            self._app_call(c.set_keepalive, True, 2.0, 0.5, 2)
        self._check(c)

    def _adopt(self, c: Connection) -> None:
        self.owned[id(c)] = c
        self.apps.append(_App(c, self.rng.choice(("echo", "echo", "sink", "lazy", "source"))))

    def _app_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """An application call: the documented errors (OSError and its subclasses) are the
        API telling a caller no; anything else is a bug."""
        try:
            return fn(*args)
        except OSError:
            return None
        except Exception:
            self._fail(f"exception in {fn.__name__}", traceback.format_exc())
            return None

    def _connect(self) -> None:
        rng = self.rng
        v6 = self._pick6()
        peer = rng.choice(PEER_ADDRS6 if v6 else PEER_ADDRS4)
        port = rng.choice(PEER_SERVER_PORTS)
        local = rng.choice(HOST_FIXED_PORTS) if rng.random() < 0.3 else None
        local_addr = rng.choice(self.addrs6 if v6 else HOST_ADDRS)
        try:
            c = self.host.connect(peer, port, self.now, local_port=local, local_addr=local_addr)
        except OSError:
            return
        except Exception:
            self._fail("exception in connect", traceback.format_exc())
            return
        self._adopt(c)

    # -- the peer: input --------------------------------------------------------------------

    def _peer_input(self, seg: tcp.TcpSegment, raw: bytes | bytearray) -> None:
        """The peer receives one of the host's segments (a few are 'lost' on the way)."""
        rng = self.rng
        if rng.random() < 0.03:
            return
        key = (seg.dst, seg.dst_port, seg.src, seg.src_port)
        f = self.flows.get(key)
        flags = seg.flags
        if flags & SYN and not flags & ACK and seg.dst in PEER_ADDRS:
            # the host opens a connection to one of the peer's servers (or opens it again);
            # the last peer address is a black hole, so SYN-SENT times out
            if seg.dst in BLACK_HOLES:
                return
            if f is None or f.phase == _CLOSED or not f.active_host or f.phase == _OPEN:
                if f is not None and f in self.live:
                    self.live.remove(f)
                f = self.flows[key] = _Flow(key, True)
                self.live.append(f)
                f.phase = _SYN_RCVD
            f.rcv_nxt = sq.add(seg.seq, 1)
            f.offer = seg.options
            f.host_mss = seg.options.mss or 536
            f.need = True
            self.attention[f] = None
            return
        if f is None:
            return
        f.last_host = bytes(raw[:100])
        if flags & RST:
            self._close_flow(f)
            return
        opts = seg.options
        if flags & SYN:
            # the host's SYN,ACK for the peer's SYN
            if f.phase == _SYN_SENT and seg.ack == sq.add(f.iss, 1):
                f.phase = _OPEN
                # (our SYN may have reached the host mutated, so never committed: it counts)
                f.snd_nxt = f.snd_una = seg.ack
                f.rcv_nxt = sq.add(seg.seq, 1)
                f.ts = f.offer.timestamps is not None and opts.timestamps is not None
                f.sack = f.offer.sack_permitted and opts.sack_permitted
                both_ws = f.offer.wscale is not None and opts.wscale is not None
                f.host_shift = min(opts.wscale or 0, 14) if both_ws else 0
                f.peer_ws = min(f.offer.wscale or 0, 14) if both_ws else 0
                f.host_mss = opts.mss or 536
                f.host_edge = sq.add(seg.ack, seg.window)
                if opts.timestamps is not None:
                    f.ts_recent = opts.timestamps[0]
            f.need = True
            self.attention[f] = None
            return
        if f.phase == _CLOSED:
            return
        if flags & ACK:
            if sq.lt(f.snd_una, seg.ack) and sq.le(seg.ack, f.snd_nxt):
                f.snd_una = seg.ack
            f.host_edge = sq.add(seg.ack, seg.window << f.host_shift)
        if opts.timestamps is not None and f.ts:
            f.ts_recent = opts.timestamps[0]
        n = len(seg.payload)
        fin = bool(flags & FIN)
        if n or fin:
            if seg.seq == f.rcv_nxt:
                f.rcv_nxt = sq.add(f.rcv_nxt, n + (1 if fin else 0))
                if fin:
                    f.fin_rcvd = True
                if f.ooo is not None and sq.le(f.ooo[1], f.rcv_nxt):
                    f.ooo = None
            elif sq.gt(seg.seq, f.rcv_nxt) and n:
                f.ooo = (seg.seq, sq.add(seg.seq, n))
            f.need = True
            self.attention[f] = None
        elif seg.seq != f.rcv_nxt and sq.lt(seg.seq, f.rcv_nxt):
            # a keep-alive or window probe: answer it
            f.need = True
            self.attention[f] = None
        if f.fin_rcvd and f.fin_sent and f.snd_una == f.snd_nxt and not f.need:
            self._close_flow(f)

    def _close_flow(self, f: _Flow) -> None:
        f.phase = _CLOSED
        self.attention.pop(f, None)
        if f in self.live:
            self.live.remove(f)

    # -- the peer and the network: output ---------------------------------------------------

    def _next_packet(self) -> tuple[str, bytearray, bool]:
        rng = self.rng
        if self.flood:
            self.flood -= 1
            return "syn_flood6" if self.flood6 else "syn_flood", self._flood_syn(), False
        if self.burst:
            return "error_burst", self.burst.pop(), True
        if self.fragments and rng.random() < 0.5:
            return "fragment", self.fragments.pop(rng.randrange(len(self.fragments))), True
        r = rng.random()
        if r < 0.035:
            f = self._new_client_flow()
            if f is not None:
                p, commit = self._proposal(f)
                commit()
                return "syn", p, False
        elif r < 0.065:
            f = self._pick_flow()
            if f is not None and f.history:
                return "replay", bytearray(rng.choice(f.history)), True
        elif r < 0.085:
            if self.delayed:
                return "reordered", self.delayed.pop(rng.randrange(len(self.delayed))), False
            f = self._pick_flow()
            if f is not None and f.phase == _OPEN:
                p, commit = self._proposal(f)
                commit()
                self.delayed.append(p)
                self._remember(f, p)
        elif r < 0.125:
            p2 = self._icmp_error()
            if p2 is not None:
                return "icmp", p2, True
        elif r < 0.14:
            f = self._pick_flow()
            if f is not None:
                p, _ = self._proposal(f)
                self._fragment(p)
                if self.fragments:
                    return "fragment", self.fragments.pop(rng.randrange(len(self.fragments))), True
        elif r < 0.152:
            return "garbage", self._garbage(), True
        elif r < 0.154:
            self.flood = rng.randrange(20, 120)
            self.flood6 = self._pick6()
            return "syn_flood6" if self.flood6 else "syn_flood", self._flood_syn(), False
        elif r < 0.154 + (SHARE6_HOSTILE if self.addrs6 else 0.01):
            return self._hostile6()
        elif r < 0.157 + (SHARE6_HOSTILE if self.addrs6 else 0.01):
            self._error_burst()
        f = self._pick_flow()
        if f is None:
            f = self._new_client_flow()
            if f is None:
                return "garbage", self._garbage(), True
        p, commit = self._proposal(f)
        if rng.random() < 0.30:
            kind = rng.choice(_MUTATIONS)
            return "mut_" + kind, self._mutate(kind, f, p), True
        commit()
        self._remember(f, p)
        return "valid", p, False

    def _remember(self, f: _Flow, p: bytearray) -> None:
        h = f.history
        h.append(p)
        if len(h) > HISTORY:
            del h[0]

    def _pick_flow(self) -> _Flow | None:
        rng = self.rng
        if self.attention and rng.random() < 0.7:
            f = next(iter(self.attention))
            del self.attention[f]
            return f
        if self.live:
            return self.live[rng.randrange(len(self.live))]
        return None

    def _new_client_flow(self) -> _Flow | None:
        rng = self.rng
        if len(self.live) >= MAX_FLOWS:
            return None
        v6 = self._pick6()
        key = (
            rng.choice(PEER_ADDRS6 if v6 else PEER_ADDRS4),
            rng.choice(PEER_CLIENT_PORTS),
            rng.choice(self.addrs6 if v6 else HOST_ADDRS),
            rng.choice(LISTENERS)[0] if rng.random() < 0.95 else rng.choice((22, 8080)),
        )
        old = self.flows.get(key)
        if old is not None and old.phase != _CLOSED:
            return None
        f = self.flows[key] = _Flow(key, False)
        # A new incarnation: usually above the old one's sequence space (RFC 6191), so a
        # TIME-WAIT record may let it in; sometimes anywhere.
        if old is not None and rng.random() < 0.7:
            f.iss = sq.add(old.snd_nxt, rng.randrange(1, 1 << 20))
        else:
            f.iss = rng.getrandbits(32)
        f.snd_nxt = f.snd_una = f.iss
        f.ts_off = rng.getrandbits(32)
        f.wnd = rng.choice((65535, 65535, 30000, 4000, 1000))
        f.offer = TcpOptions(
            mss=rng.choice((None, 536, 1460, 1460, 1200, 88, 65535)),
            wscale=rng.choice((None, 0, 2, 7, 14, 15)),
            sack_permitted=rng.random() < 0.7,
            timestamps=(self._tsval(f), 0) if rng.random() < 0.7 else None,
        )
        self.live.append(f)
        return f

    def _pick6(self) -> bool:
        """Whether the next flow is an IPv6 one (never on an IPv4-only host)."""
        return bool(self.addrs6) and self.rng.random() < SHARE6

    def _tsval(self, f: _Flow) -> int:
        return (int(self.now * 1000) + f.ts_off) & _MASK

    def _build(
        self,
        f: _Flow,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes | memoryview = b"",
        options: TcpOptions | bytes = NO_OPTIONS,
        window: int | None = None,
    ) -> bytearray:
        peer, pport, haddr, hport = f.key
        olen = options.encoded_length() if isinstance(options, TcpOptions) else len(options)
        length = tcp.HEADER_LEN + olen + len(payload)
        if peer >> 128:
            # the peer's IPv6 packets: no extension headers (the network adds those), and a
            # flow label of the peer's own, fixed per 4-tuple as RFC 6437 3 asks
            t = _IP6
            p = bytearray(_IP6 + length)
            src, dst = peer & _UNTAG, haddr & _UNTAG
            ipv6.emit(
                p,
                0,
                src=src,
                dst=dst,
                next_header=ipv6.PROTO_TCP,
                payload_len=length,
                flow_label=(pport * 2654435761) & ipv6.FLOW_LABEL_MASK,
            )
            pseudo = ipv6.pseudo_header_sum(src, dst, ipv6.PROTO_TCP, 0)
        else:
            t = _IP
            p = bytearray(_IP + length)
            self.ip_id = (self.ip_id + 1) & 0xFFFF
            ipv4.emit(
                p,
                0,
                src=peer,
                dst=haddr,
                proto=ipv4.PROTO_TCP,
                payload_len=length,
                ident=self.ip_id,
            )
            pseudo = ipv4_pseudo_header_sum(peer, haddr, ipv4.PROTO_TCP, 0)
        tcp.emit(
            p,
            t,
            pseudo=pseudo,
            src_port=pport,
            dst_port=hport,
            seq=seq & _MASK,
            ack=ack & _MASK,
            flags=flags,
            window=f.wnd if window is None else window,
            options=options,
            payload=payload,
        )
        return p

    def _ack_options(self, f: _Flow) -> TcpOptions:
        ts = (self._tsval(f), f.ts_recent) if f.ts else None
        blocks: tuple[tuple[int, int], ...] = ()
        if f.sack and f.ooo is not None:
            blocks = (f.ooo,)
        if ts is None and not blocks:
            return NO_OPTIONS
        return TcpOptions(timestamps=ts, sack_blocks=blocks)

    def _proposal(self, f: _Flow) -> tuple[bytearray, Callable[[], None]]:
        """The peer's next valid packet on ``f`` and what sending it changes in the peer's
        model (applied only if the network delivers it unmutated)."""
        rng = self.rng
        nothing: Callable[[], None] = _nothing
        if f.phase == _SYN_SENT:
            if f.active_host:
                # simultaneous open: our own SYN, as the host's SYN crossed it
                return self._build(f, f.iss, 0, SYN, options=f.offer), nothing

            def sent_syn() -> None:
                f.snd_nxt = sq.add(f.iss, 1)

            return self._build(f, f.iss, 0, SYN, options=f.offer), sent_syn
        if f.phase == _SYN_RCVD:
            # the host's active open: answer SYN,ACK, refuse, cross with a SYN, or stay quiet
            r = rng.random()
            if f.iss == 0:
                f.iss = rng.getrandbits(32)
                f.ts_off = rng.getrandbits(32)
                f.wnd = rng.choice((65535, 65535, 20000, 2000))
            host_offer = f.offer
            if r < 0.08:
                p = self._build(f, 0, f.rcv_nxt, RST | ACK, window=0)
                return p, lambda: self._close_flow(f)
            ws = rng.choice((None, 0, 3, 8)) if host_offer.wscale is not None else None
            ts = (
                (self._tsval(f), host_offer.timestamps[0])
                if host_offer.timestamps and rng.random() < 0.8
                else None
            )
            sack = host_offer.sack_permitted and rng.random() < 0.8
            opts = TcpOptions(
                mss=rng.choice((536, 1460, 1000)), wscale=ws, sack_permitted=sack, timestamps=ts
            )
            if r < 0.13:
                # simultaneous open: a SYN without ACK of our own
                def crossed() -> None:
                    f.phase = _SYN_SENT
                    f.snd_nxt = f.snd_una = sq.add(f.iss, 1)
                    f.offer = opts
                    self._negotiate(f, host_offer, opts)

                return self._build(f, f.iss, 0, SYN, options=opts), crossed
            if r < 0.18:
                # a SYN,ACK acknowledging something the host never sent (3.10.7.3: RST)
                bad = sq.add(f.rcv_nxt, rng.choice((1, 1000, _HALF)))
                return self._build(f, f.iss, bad, SYN | ACK, options=opts), nothing

            def synack() -> None:
                f.phase = _OPEN
                f.snd_nxt = f.snd_una = sq.add(f.iss, 1)
                f.offer = opts
                self._negotiate(f, host_offer, opts)

            return self._build(f, f.iss, f.rcv_nxt, SYN | ACK, options=opts), synack
        if f.phase == _CLOSED:
            return self._build(f, f.snd_nxt, f.rcv_nxt, RST, window=0), nothing
        # synchronized
        opts = self._ack_options(f)
        r = rng.random()
        if f.need and r < 0.6:
            f.need = False

            def acked() -> None:
                if f.fin_rcvd and f.fin_sent and f.snd_una == f.snd_nxt:
                    self._close_flow(f)  # both FINs sent and acknowledged: done

            return self._build(f, f.snd_nxt, f.rcv_nxt, ACK, options=opts), acked
        if f.fin_sent and f.snd_una != f.snd_nxt and r < 0.2:
            # our FIN is not acknowledged yet: send it again
            return self._build(
                f, sq.add(f.snd_nxt, -1), f.rcv_nxt, FIN | ACK, options=opts
            ), nothing
        if r < 0.55 and not f.fin_sent:
            start = f.snd_nxt
            if sq.lt(f.snd_una, f.snd_nxt) and rng.random() < 0.15:
                start = f.snd_una  # a retransmission from SND.UNA (go back N)
            room = sq.sub(f.host_edge, start)
            limit = min(f.host_mss - (12 if f.ts else 0), _MAX_PAYLOAD)
            n = min(max(room, 0), rng.choice((1, 10, 100, limit, limit, limit)))
            if n <= 0:
                return self._build(f, f.snd_nxt, f.rcv_nxt, ACK, options=opts), nothing
            off = start & 0xFFFF
            payload = _PATTERN[off : off + n]
            end = sq.add(start, n)

            def data() -> None:
                if sq.gt(end, f.snd_nxt):
                    f.snd_nxt = end

            flags = ACK | (PSH if rng.random() < 0.5 else 0)
            return self._build(f, start, f.rcv_nxt, flags, payload, opts), data
        if r < 0.70:
            # a window change: closed, small, or open again
            w = rng.choice((0, 1, 100, 2000, 65535, 65535))

            def window() -> None:
                f.wnd = w

            return self._build(f, f.snd_nxt, f.rcv_nxt, ACK, options=opts, window=w), window
        if r < 0.80 and not f.fin_sent:
            seq = f.snd_nxt

            def fin() -> None:
                f.fin_sent = True
                f.snd_nxt = sq.add(seq, 1)

            return self._build(f, seq, f.rcv_nxt, FIN | ACK, options=opts), fin
        if r < 0.83:
            return self._build(
                f, f.snd_nxt, f.rcv_nxt, RST | ACK, window=0
            ), lambda: self._close_flow(f)
        if r < 0.86:
            # a keep-alive: SND.NXT - 1 (RFC 1122 4.2.3.6)
            return self._build(f, sq.add(f.snd_nxt, -1), f.rcv_nxt, ACK, options=opts), nothing
        return self._build(f, f.snd_nxt, f.rcv_nxt, ACK, options=opts), nothing

    def _negotiate(self, f: _Flow, host_syn: TcpOptions, ours: TcpOptions) -> None:
        f.ts = host_syn.timestamps is not None and ours.timestamps is not None
        f.sack = host_syn.sack_permitted and ours.sack_permitted
        both = host_syn.wscale is not None and ours.wscale is not None
        f.host_shift = min(host_syn.wscale or 0, 14) if both else 0
        f.peer_ws = min(ours.wscale or 0, 14) if both else 0
        if host_syn.timestamps is not None:
            f.ts_recent = host_syn.timestamps[0]
        f.host_edge = sq.add(f.snd_nxt, 1024)  # until the host's first ACK says

    def _flood_syn(self) -> bytearray:
        rng = self.rng
        if self.flood6:
            src = _FLOOD6 | rng.getrandbits(16)
            haddr = rng.choice(self.addrs6)
        else:
            src = (10 << 24) | (66 << 16) | rng.getrandbits(16)
            haddr = rng.choice(HOST_ADDRS)
        key = (src, rng.randrange(1024, 65536), haddr, rng.choice(LISTENERS)[0])
        f = _Flow(key, False)
        opts = (
            TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(rng.getrandbits(32), 0))
            if rng.random() < 0.5
            else TcpOptions(mss=536)
        )
        return self._build(f, rng.getrandbits(32), 0, SYN, options=opts)

    # -- mutations ------------------------------------------------------------------------

    def _mutate(self, kind: str, f: _Flow, p: bytearray) -> bytearray:
        rng = self.rng
        v6 = f.key[0] >> 128
        t = _IP6 if v6 else _IP  # where the TCP header starts
        recompute = rng.random() < _MUT_RECOMPUTE
        if kind == "bitflip":
            for _ in range(rng.randrange(1, 5)):
                i = rng.randrange(len(p))
                p[i] ^= 1 << rng.randrange(8)
        elif kind == "seq":
            struct.pack_into("!I", p, t + 4, self._edge(f.snd_nxt, f) & _MASK)
        elif kind == "ack":
            base = f.rcv_nxt if rng.random() < 0.7 else f.snd_una
            struct.pack_into("!I", p, t + 8, self._edge(base, f) & _MASK)
            if rng.random() < 0.5:
                p[t + 13] |= ACK
        elif kind == "flags":
            p[t + 13] = rng.choice(_FLAG_EDGES) if rng.random() < 0.7 else rng.getrandbits(8)
        elif kind == "offset":
            p[t + 12] = (rng.randrange(16) << 4) | (p[t + 12] & 0x0F)
        elif kind == "window":
            struct.pack_into(
                "!H", p, t + 14, rng.choice((0, 1, 2, 0xFFFF, 0x8000, rng.getrandbits(16)))
            )
        elif kind == "urgent":
            p[t + 13] |= URG
            struct.pack_into("!H", p, t + 18, rng.choice((0, 1, 0xFFFF, rng.getrandbits(16))))
        elif kind in ("options", "sack", "timestamps"):
            return self._rebuild_options(kind, f, p)
        elif kind == "truncate":
            cut = rng.randrange(0, len(p))
            del p[cut:]
            if rng.random() < 0.5 and cut >= t:
                # the length field made to agree (IPv4 Total Length, IPv6 Payload Length)
                struct.pack_into("!H", p, 4 if v6 else 2, cut - (_IP6 if v6 else 0))
            else:
                recompute = False
        elif kind == "extend":
            p.extend(rng.randbytes(rng.randrange(1, 64)))
            if rng.random() < 0.5:
                struct.pack_into("!H", p, 4 if v6 else 2, len(p) - (_IP6 if v6 else 0))
            else:
                recompute = False
        elif kind == "ip":
            if v6:
                return self._mutate_ip6(p)
            self._mutate_ip(p)
        elif kind == "checksum":
            if v6 or rng.random() < 0.5:
                p[t + 16] ^= 1 << rng.randrange(8)
            else:
                p[10] ^= 1 << rng.randrange(8)
            return p
        if recompute:
            _refresh_checksums(p)
        return p

    def _edge(self, base: int, f: _Flow) -> int:
        rng = self.rng
        wnd = max(sq.sub(f.host_edge, f.snd_nxt), 0)
        d = rng.choice(
            (
                1,
                -1,
                2,
                -2,
                wnd,
                wnd + 1,
                wnd - 1,
                -wnd,
                65535,
                -65535,
                1 << 20,
                _HALF,
                _HALF - 1,
                _HALF + 1,
                -(1 << 20),
            )
        )
        if rng.random() < 0.1:
            return rng.getrandbits(32)
        return base + d

    def _rebuild_options(self, kind: str, f: _Flow, p: bytearray) -> bytearray:
        """The same segment with other option bytes (good checksums: the garbage must reach
        the option parser and the state machine)."""
        rng = self.rng
        t = _IP6 if f.key[0] >> 128 else _IP
        seq, ack = struct.unpack_from("!II", p, t + 4)
        flags = p[t + 13]
        window = (p[t + 14] << 8) | p[t + 15]
        hlen = (p[t + 12] >> 4) * 4
        payload = bytes(p[t + hlen :])
        raw: bytes
        if kind == "sack":
            una, nxt = f.rcv_nxt, sq.add(f.rcv_nxt, rng.randrange(1, 1 << 16))
            blocks = []
            for _ in range(rng.randrange(1, 4)):
                a = rng.choice(
                    (
                        una,
                        nxt,
                        sq.add(una, -1000),
                        sq.add(una, _HALF),
                        rng.getrandbits(32),
                        sq.add(una, rng.randrange(-3000, 3000)),
                    )
                )
                b = rng.choice(
                    (sq.add(a, rng.randrange(1, 3000)), a, sq.add(a, -10), rng.getrandbits(32))
                )
                blocks.append((a, b))
            ts = (self._tsval(f), f.ts_recent) if f.ts else None
            raw = TcpOptions(sack_blocks=tuple(blocks), timestamps=ts).encode()
            if len(raw) > 40:
                raw = raw[:40]
        elif kind == "timestamps":
            tsval = self._tsval(f)
            choice = rng.randrange(5)
            if choice == 0:
                raw = b""  # no TSopt on a connection that uses them
            elif choice == 1:
                raw = TcpOptions(
                    timestamps=((tsval - rng.randrange(1, 1 << 30)) & _MASK, f.ts_recent)
                ).encode()
            elif choice == 2:
                raw = TcpOptions(timestamps=((tsval + _HALF) & _MASK, rng.getrandbits(32))).encode()
            elif choice == 3:
                raw = TcpOptions(timestamps=(tsval, rng.getrandbits(32))).encode()
            else:
                raw = TcpOptions(timestamps=(0, 0)).encode()
        else:
            kinds = rng.randrange(9)
            if kinds == 0:
                raw = bytes((rng.choice((2, 3, 4, 5, 8, 30, 99, 254)), rng.choice((0, 1))))
            elif kinds == 1:
                raw = bytes((rng.choice((2, 3, 5, 8, 77)), rng.randrange(10, 60), 1, 2))
            elif kinds == 2:
                raw = bytes((rng.choice((99, 253, 254, 30, 34)), 4, 0xDE, 0xAD))
            elif kinds == 3:
                raw = TcpOptions(
                    mss=rng.choice((0, 1, 88, 65535)), wscale=rng.choice((0, 14, 15, 255))
                ).encode()
            elif kinds == 4:
                raw = bytes((1,) * rng.randrange(1, 40))
            elif kinds == 5:
                raw = bytes((0,)) + rng.randbytes(rng.randrange(0, 39))
            elif kinds == 6:
                raw = bytes((4, 2, 4, 2, 4, 2, 4, 3))  # SACK-permitted repeated, then bad
            elif kinds == 7:
                raw = bytes((3, 3, 200, 2, 4, 0, 0, 8, 10)) + bytes(8)  # wscale 200, MSS 0
            else:
                raw = rng.randbytes(rng.randrange(1, 41))
        raw = raw + bytes(-len(raw) % 4)
        if len(raw) > 40:
            raw = raw[:40]
        q = self._build(f, seq, ack, flags, payload, raw, window)
        if rng.random() < 0.05:
            _refresh_checksums(q)
            q[t + 16] ^= 0xFF  # and sometimes a bad checksum on top
        return q

    def _mutate_ip(self, p: bytearray) -> None:
        rng = self.rng
        which = rng.randrange(11)
        if which == 0:
            struct.pack_into(
                "!H", p, 2, rng.choice((0, 19, 20, 39, 40, len(p) - 1, len(p) + 1, 0xFFFF))
            )
        elif which == 1:
            ihl = rng.randrange(16)
            p[0] = 0x40 | ihl
            if ihl > 5 and rng.random() < 0.5:
                # real option bytes (NOPs and an EOL), so the TCP header moves behind them
                extra = (ihl - 5) * 4
                p[_IP:_IP] = bytes((1,) * (extra - 1) + (0,))
                struct.pack_into("!H", p, 2, len(p))
        elif which == 2:
            p[8] = rng.choice((0, 1, 255))
        elif which == 3:
            p[0] = (rng.choice((0, 6, 5, 15)) << 4) | (p[0] & 0x0F)
        elif which == 4:
            # a fragment: MF, an offset, or both
            frag = rng.choice((0x2000, 0x0001, 0x2001, 0x1FFF, 0x6000, 0x4001))
            struct.pack_into("!H", p, 6, frag)
        elif which == 5:
            p[6] &= ~0x40  # DF cleared: fine
        elif which == 6:
            p[9] = rng.choice((ipv4.PROTO_UDP, ipv4.PROTO_ICMP, 0, 41, 255))
        elif which == 7:
            src = rng.choice((0, 0xFFFFFFFF, 0x7F000001, 0xE0000001, HOST_ADDRS[0]))
            struct.pack_into("!I", p, 12, src)
        elif which == 8:
            struct.pack_into("!I", p, 16, rng.choice((NOT_US, 0xFFFFFFFF, 0)))
        elif which == 9:
            p[1] = rng.getrandbits(8)
        else:
            struct.pack_into("!H", p, 4, rng.getrandbits(16))

    def _fragment(self, p: bytearray) -> None:
        """Cut a datagram into IPv4 fragments (at 8-octet boundaries), sometimes overlapping,
        duplicated or incomplete; they go out over the next steps in a random order."""
        if p[0] >> 4 == 6:
            self._fragment6(p)
            return
        rng = self.rng
        body = bytes(p[_IP:])
        if len(body) < 16:
            cuts = [0, len(body)]
        else:
            pieces = rng.randrange(2, 4)
            cuts = sorted(
                {0, len(body), *(rng.randrange(1, len(body) // 8) * 8 for _ in range(pieces - 1))}
            )
        ident = rng.getrandbits(16)
        src, dst = struct.unpack_from("!II", p, 12)
        frags: list[bytearray] = []
        for i in range(len(cuts) - 1):
            a, b = cuts[i], cuts[i + 1]
            if rng.random() < 0.1 and i:
                a -= 8  # overlap the previous piece
            chunk = body[a:b]
            last = i == len(cuts) - 2
            q = bytearray(_IP + len(chunk))
            ipv4.emit(
                q, 0, src=src, dst=dst, proto=p[9], payload_len=len(chunk), ident=ident, df=False
            )
            frag = (a >> 3) | (0 if last else ipv4.FLAG_MF)
            struct.pack_into("!H", q, 6, frag)
            q[_IP:] = chunk
            _refresh_checksums_ip_only(q)
            frags.append(q)
        if frags and rng.random() < 0.15:
            frags.pop(rng.randrange(len(frags)))  # one never arrives
        if frags and rng.random() < 0.15:
            frags.append(bytearray(rng.choice(frags)))  # one arrives twice
        self.fragments.extend(frags)

    def _icmp_error(self) -> bytearray | None:
        """An ICMP error quoting a datagram the host really sent (so it names a live 4-tuple),
        sometimes with the quoted sequence number moved or the quote cut short."""
        rng = self.rng
        cands = [f for f in self.live if f.last_host]
        if not cands:
            if rng.random() < 0.5:
                return None
            peer = rng.choice(PEER_ADDRS4)
            echo = bytearray(_IP + icmp.HEADER_LEN + 8)
            ipv4.emit(
                echo,
                0,
                src=peer,
                dst=rng.choice(HOST_ADDRS),
                proto=ipv4.PROTO_ICMP,
                payload_len=icmp.HEADER_LEN + 8,
            )
            icmp.emit_echo(
                echo,
                _IP,
                type=icmp.ECHO_REQUEST,
                ident=rng.getrandbits(16),
                sequence=1,
                payload=rng.randbytes(8),
            )
            return echo
        f = rng.choice(cands)
        if f.key[0] >> 128:
            return self._icmp6_error(f)
        quote = bytearray(f.last_host)
        if rng.random() < 0.3 and len(quote) >= _IP + 8:
            struct.pack_into(
                "!I", quote, _IP + 4, rng.choice((rng.getrandbits(32), sq.add(f.snd_una, 0)))
            )
        ihl = (quote[0] & 0x0F) << 2 if quote else _IP
        qlen = rng.choice((ihl + 8, ihl + 8, len(quote), ihl + 4, ihl))
        quote = quote[:qlen]
        typ, code = rng.choice(_ICMP_KINDS)
        mtu = rng.choice(_MTUS) if typ == icmp.DEST_UNREACH and code == icmp.FRAG_NEEDED else 0
        length = icmp.HEADER_LEN + len(quote)
        buf = bytearray(_IP + length)
        src = rng.choice((ROUTER, f.key[0]))
        ipv4.emit(buf, 0, src=src, dst=f.key[2], proto=ipv4.PROTO_ICMP, payload_len=length)
        struct.pack_into("!BBHHH", buf, _IP, typ, code, 0, 0, mtu)
        buf[_IP + icmp.HEADER_LEN :] = quote
        struct.pack_into("!H", buf, _IP + 2, internet_checksum(memoryview(buf)[_IP:]))
        if rng.random() < 0.05:
            buf[_IP + 2] ^= 0x10
        return buf

    # -- IPv6: the network's hostile input --------------------------------------------------

    def _hostile6(self) -> tuple[str, bytearray, bool]:
        """One IPv6-specific packet: extension-header chains good and bad, payload lengths and
        jumbograms, fragments, ICMPv6 errors about the host's connections, ND and MLD, echo,
        addresses no host has; (kind, packet, mutated) as :meth:`_next_packet` returns, a
        share of them with bytes flipped on top. A good chain around a good segment is
        delivered as the segment, so the peer commits it."""
        rng = self.rng
        flows = [f for f in self.live if f.key[0] >> 128]
        f = rng.choice(flows) if flows else None
        r = rng.random()
        kind: str
        p: bytearray | None = None
        if f is not None and r < 0.25:
            p, done = self._proposal(f)
            p = self._ext_valid(p)
            if rng.random() < 0.8:
                done()
                self._remember(f, p)
                return "v6_ext_valid", p, False
            kind = "v6_ext_valid"
        elif f is not None and r < 0.45:
            p, _ = self._proposal(f)
            if rng.random() < 0.15:
                # an ICMPv6 error behind the bad chain: no error may be sent about it
                p = self._icmp6_error(f) or p
            kind, p = self._ext_bad(p)
        elif f is not None and r < 0.55:
            p, _ = self._proposal(f)
            kind, p = "v6_payload_length", self._bad_payload_length(p)
        elif r < 0.65:
            src = f.key[0] if f is not None else rng.choice(PEER_ADDRS6)
            whole = self._fragmentable6(f, src)
            if whole is not None:
                self._fragment6(whole)
            if not self.fragments:
                return "v6_fragment", bytearray(), True
            return "v6_fragment", self.fragments.pop(rng.randrange(len(self.fragments))), True
        elif r < 0.78:
            icmp_p = self._icmp6_error(f) if f is not None and f.last_host else None
            kind, p = "v6_icmp_error", icmp_p if icmp_p is not None else self._icmp6_info()
        elif r < 0.90:
            kind, p = "v6_icmp_info", self._icmp6_info()
        elif r < 0.97:
            kind, p = "v6_address", self._addr6_abuse(f)
        else:
            kind, p = "v6_garbage", self._garbage6()
        assert p is not None
        if rng.random() < 0.15:
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(p))
                p[i] ^= 1 << rng.randrange(8)
            if rng.random() < _MUT_RECOMPUTE:
                _refresh_checksums6(p)
            kind += "_mut"
        return kind, p, True

    def _error_burst(self) -> None:
        """Queue packets that each ask for an ICMP or ICMPv6 error -- an unknown Next Header
        (RFC 8200 4), an unknown IPv4 protocol (RFC 1122 3.2.2.1) -- to go out back to back,
        so the host's error rate limit is reached and the checker's bucket tested."""
        rng = self.rng
        for _ in range(rng.randrange(10, 40)):
            if self.addrs6 and rng.random() < 0.6:
                n = rng.randrange(0, 32)
                q = bytearray(_IP6 + n)
                ipv6.emit(
                    q,
                    0,
                    src=rng.choice(PEER_ADDRS6) & _UNTAG,
                    dst=rng.choice(self.addrs6) & _UNTAG,
                    next_header=rng.choice((ipv6.PROTO_UDP, 132, 253)),
                    payload_len=n,
                )
            else:
                n = rng.randrange(0, 32)
                q = bytearray(_IP + n)
                ipv4.emit(
                    q,
                    0,
                    src=rng.choice(PEER_ADDRS4),
                    dst=rng.choice(HOST_ADDRS),
                    proto=rng.choice((47, 132)),
                    payload_len=n,
                )
            self.burst.append(q)

    def _options(self, *, bad: bool = False) -> bytes:
        """TLV options for an Options header: padding and unrecognised options whose two high
        bits say "skip" (RFC 8200 4.2), or with ``bad`` one that drops the packet."""
        rng = self.rng
        out = b""
        for _ in range(rng.randrange(0, 3)):
            which = rng.randrange(3)
            if which == 0:
                out += bytes((ipv6.OPT_PADN, 1, 0))
            elif which == 1:
                n = rng.randrange(0, 9)
                out += bytes((rng.choice((0x05, 0x07, 0x1E, 0x3F, 0x26)), n)) + rng.randbytes(n)
            else:
                out += b"\0"
        if bad:
            action = rng.choice((1, 2, 3, 3))
            otype = (action << 6) | rng.choice((0x01, 0x1E, 0x2A, 0x3E))
            n = rng.randrange(0, 6)
            out += bytes((otype, n)) + rng.randbytes(n)
        return out

    def _ext_valid(self, p: bytearray) -> bytearray:
        """``p`` behind a chain a host must accept: Hop-by-Hop first if at all, Destination
        Options (twice, RFC 8200 4.1), Routing with Segments Left 0 of any type (4.4: ignored),
        an atomic fragment (RFC 6946); options to skip, padding."""
        rng = self.rng
        headers: list[tuple[int, bytes]] = []
        if rng.random() < 0.4:
            headers.append((ipv6.HOPOPTS, _options_header(self._options())))
        middle: list[tuple[int, bytes]] = []
        if rng.random() < 0.5:
            middle.append((ipv6.DSTOPTS, _options_header(self._options())))
        if rng.random() < 0.4:
            rtype = rng.choice((0, 2, 3, 4, 253))
            middle.append((ipv6.ROUTING, _routing_header(rtype, 0, rng.randrange(0, 3))))
        if rng.random() < 0.4:
            middle.append((ipv6.FRAGMENT, _fragment_header(0, False, rng.getrandbits(32))))
        if rng.random() < 0.4:
            middle.append((ipv6.DSTOPTS, _options_header(self._options())))
        rng.shuffle(middle)
        headers += middle
        if not headers:
            headers.append((ipv6.DSTOPTS, _options_header(b"")))
        return _chain(p, headers, p[6])

    def _ext_bad(self, p: bytearray) -> tuple[str, bytearray]:
        """``p`` behind a chain with one defect: an option whose action drops the packet (with
        or without a Parameter Problem), bad padding, too many options, Routing with Segments
        Left (type 0 of RFC 5095, and others), Hop-by-Hop not first, too many or too long
        headers, a header running past the packet, no next header, an unknown upper layer,
        jumbo options."""
        rng = self.rng
        upper = p[6]
        which = rng.randrange(13)
        dst_or_hbh = rng.choice((ipv6.HOPOPTS, ipv6.DSTOPTS))
        if which == 0:
            h = [(dst_or_hbh, _options_header(self._options(bad=True)))]
            return "v6_ext_option", _chain(p, h, upper)
        if which == 1:
            pad = rng.choice((bytes((1, 6)) + bytes(6), bytes((1, 2, 0, 7)), b"\0" * 8))
            return "v6_ext_padding", _chain(p, [(dst_or_hbh, _options_header(pad))], upper)
        if which == 2:
            opts = b"".join(bytes((0x1E, 0)) for _ in range(ipv6.MAX_OPTIONS + 1))
            return "v6_ext_options", _chain(p, [(ipv6.DSTOPTS, _options_header(opts))], upper)
        if which == 3:
            rtype = rng.choice((0, 0, 2, 3, 4, 253))
            h = [(ipv6.ROUTING, _routing_header(rtype, rng.choice((1, 2, 255)), 1))]
            return "v6_ext_routing", _chain(p, h, upper)
        if which == 4:
            h = [
                (ipv6.DSTOPTS, _options_header(b"")),
                (ipv6.HOPOPTS, _options_header(self._options())),
            ]
            return "v6_ext_hbh_late", _chain(p, h, upper)
        if which == 5:
            n = ipv6.MAX_EXTENSION_HEADERS + rng.randrange(1, 4)
            h = [(ipv6.DSTOPTS, _options_header(b"")) for _ in range(n)]
            return "v6_ext_many", _chain(p, h, upper)
        if which == 6:
            # longer than the minimum MTU leaves for a chain (RFC 8504 5.3, RFC 7112)
            big = bytes((0, 200)) + bytes(1606)
            return "v6_ext_long", _chain(p, [(ipv6.DSTOPTS, big)], upper)
        if which == 7:
            # a header whose length runs past the packet (or an option past its header)
            q = _chain(p, [(dst_or_hbh, _options_header(self._options()))], upper)
            if rng.random() < 0.5:
                q[_IP6 + 1] = rng.choice((40, 255))
            else:
                q[_IP6 + 2 : _IP6 + 4] = bytes((0x1E, 200))
            return "v6_ext_truncated", q
        if which == 8:
            h = [(ipv6.DSTOPTS, _options_header(self._options()))]
            return "v6_ext_no_next", _chain(p, h, ipv6.NO_NEXT_HEADER)
        if which == 9:
            nh = rng.choice((ipv6.PROTO_UDP, ipv6.ESP, ipv6.AH, 135, 139, 253))
            if rng.random() < 0.5:
                q = bytearray(p)
                q[6] = nh
                return "v6_unknown_upper", q
            return "v6_unknown_upper", _chain(p, [(ipv6.DSTOPTS, _options_header(b""))], nh)
        if which == 11:
            # atomic fragments in a row: each is processed alone (RFC 6946), one reassembly
            # level each, and the host parses again only so many times
            atomic = (ipv6.FRAGMENT, _fragment_header(0, False, rng.getrandbits(32)))
            return "v6_atomic_nested", _chain(p, [atomic] * rng.randrange(3, 6), upper)
        if which == 10:
            # a Jumbo Payload option (RFC 2675) with a non-zero Payload Length
            jumbo = bytes((ipv6.OPT_JUMBO, 4)) + struct.pack("!I", len(p) + 8)
            return "v6_jumbo_option", _chain(p, [(ipv6.HOPOPTS, _options_header(jumbo))], upper)
        # a jumbogram: Payload Length 0 and the option saying how long it really is
        jumbo = bytes((ipv6.OPT_JUMBO, 4)) + struct.pack("!I", rng.choice((len(p), 70000, 0)))
        q = _chain(p, [(ipv6.HOPOPTS, _options_header(jumbo))], upper)
        q[4] = q[5] = 0
        return "v6_jumbogram", q

    def _bad_payload_length(self, p: bytearray) -> bytearray:
        rng = self.rng
        plen = len(p) - _IP6
        struct.pack_into(
            "!H", p, 4, rng.choice((0, 1, 19, 20, plen - 1, plen + 1, plen + 8, 0xFFFF))
        )
        if rng.random() < 0.3:
            p.extend(rng.randbytes(rng.randrange(1, 40)))  # link padding behind the packet
        if rng.random() < 0.7:
            _refresh_checksums6(p)
        return p

    def _fragmentable6(self, f: _Flow | None, src: int) -> bytearray | None:
        """What the IPv6 fragment generator cuts up: a segment of a live flow (a piece of one,
        so the reassembled packet is a fragment again), an ICMPv6 error, an echo request, or a
        datagram of a protocol the host does not speak; None when it queued a flood of first
        fragments itself."""
        rng = self.rng
        r = rng.random()
        if f is not None and r < 0.05:
            # a fragment of a fragment: reassembled, it is a fragment again (RFC 8200 does not
            # forbid it; the host bounds how often it parses again)
            p, _ = self._proposal(f)
            if rng.random() < 0.5:
                n = max(8, (len(p) - _IP6) // 16 * 8)
                return _chain(
                    p[:_IP6] + p[_IP6 : _IP6 + n],
                    [(ipv6.FRAGMENT, _fragment_header(0, True, rng.getrandbits(32)))],
                    p[6],
                )
            # atomic fragments inside: each reassembly level parses one more Fragment header
            atomic = (ipv6.FRAGMENT, _fragment_header(0, False, rng.getrandbits(32)))
            return _chain(p, [atomic] * rng.randrange(1, 4), p[6])
        if f is not None and r < 0.08 and f.last_host:
            return self._icmp6_error(f) or self._echo6(src, f.key[2], 8)
        if r < 0.1:
            # first fragments of many packets from one source, none ever completed: the
            # per-source and memory bounds of reassembly
            for _ in range(rng.randrange(20, 80)):
                q = self._echo6(src, rng.choice(self.addrs6 or (NOT_US6,)), 24)
                frag = _fragment_header(0, True, rng.getrandbits(32))
                self.fragments.append(_chain(q[: _IP6 + 16], [(ipv6.FRAGMENT, frag)], q[6]))
            return None
        if f is not None and r < 0.6:
            p, _ = self._proposal(f)
            if rng.random() < 0.2:
                # part of the chain in the fragmentable part (RFC 8200 4.5)
                p = _chain(p, [(ipv6.DSTOPTS, _options_header(self._options()))], p[6])
            return p
        dst = rng.choice(self.addrs6 or (NOT_US6,))
        if r < 0.85:
            return self._echo6(src, dst, rng.randrange(0, 3000))
        n = rng.randrange(8, 200)
        q = bytearray(_IP6 + n)
        ipv6.emit(q, 0, src=src & _UNTAG, dst=dst & _UNTAG, next_header=17, payload_len=n)
        q[_IP6:] = rng.randbytes(n)
        return q

    def _echo6(self, src: int, dst: int, size: int) -> bytearray:
        rng = self.rng
        length = icmpv6.HEADER_LEN + size
        q = bytearray(_IP6 + length)
        ipv6.emit(
            q,
            0,
            src=src & _UNTAG,
            dst=dst & _UNTAG,
            next_header=ipv6.PROTO_ICMPV6,
            payload_len=length,
        )
        icmpv6.emit_echo(
            q,
            _IP6,
            type=icmpv6.ECHO_REQUEST,
            ident=rng.getrandbits(16),
            sequence=rng.getrandbits(16),
            payload=_PATTERN[:size],
            src=src & _UNTAG,
            dst=dst & _UNTAG,
        )
        return q

    def _fragment6(self, p: bytearray) -> None:
        """Cut an IPv6 packet (RFC 8200 4.5): the fixed header (sometimes with Hop-by-Hop and
        Routing headers) is the unfragmentable part, the rest is cut at 8-octet boundaries
        behind Fragment headers. Sometimes the pieces
        overlap, one is duplicated or never sent, the first is too small to hold the header
        chain (RFC 7112), a non-last piece has a length not a multiple of 8, a piece reaches
        past octet 65,535, or the identification is one already in use; they go out over the
        next steps in a random order."""
        rng = self.rng
        body = bytes(p[_IP6 : _IP6 + ((p[4] << 8) | p[5])])
        upper = p[6]
        n = len(body)
        if n < 16 or rng.random() < 0.1:
            cuts = [0, n]
        else:
            cuts = sorted(
                {0, n, *(rng.randrange(1, n // 8) * 8 for _ in range(rng.randrange(1, 4)))}
            )
            if rng.random() < 0.15 and n > 8:
                cuts = sorted({0, 8, *cuts})  # a tiny first fragment: part of the TCP header
        ident = self._frag_ident6 if rng.random() < 0.05 else rng.getrandbits(32)
        self._frag_ident6 = ident
        # an unfragmentable part longer than the fixed header (RFC 8200 4.5): Hop-by-Hop and
        # a Routing header with nothing left to route, in front of every Fragment header
        unfrag: list[tuple[int, bytes]] = []
        if rng.random() < 0.2:
            unfrag.append((ipv6.HOPOPTS, _options_header(self._options())))
        if rng.random() < 0.15:
            unfrag.append((ipv6.ROUTING, _routing_header(rng.choice((0, 2, 4)), 0, 1)))
        frags: list[bytearray] = []
        for i in range(len(cuts) - 1):
            a, b = cuts[i], cuts[i + 1]
            last = i == len(cuts) - 2
            r = rng.random()
            if r < 0.06 and i:
                a -= 8  # overlap the previous piece (RFC 5722)
            elif r < 0.09 and not last and b - a > 1:
                b -= rng.randrange(1, min(8, b - a))  # M set, length not a multiple of 8
            offset = a
            if rng.random() < 0.02:
                offset = 0xFFF8 - rng.randrange(0, 64) * 8  # past octet 65,535
            chunk = body[a:b]
            q = _chain(
                p[:_IP6] + chunk,
                [*unfrag, (ipv6.FRAGMENT, _fragment_header(offset, not last, ident))],
                upper,
            )
            frags.append(q)
        if len(frags) > 1 and rng.random() < 0.12:
            frags.pop(rng.randrange(len(frags)))  # one never arrives: the packet times out
        if frags and rng.random() < 0.12:
            frags.append(bytearray(rng.choice(frags)))  # one arrives twice
        self.fragments.extend(frags)

    def _icmp6_error(self, f: _Flow | None) -> bytearray | None:
        """An ICMPv6 error (RFC 4443) quoting a packet the host really sent on ``f`` (so it
        names a live connection): Packet Too Big with MTUs on both sides of 1280, Destination
        Unreachable of every code, Time Exceeded, Parameter Problem; sometimes the quote's
        sequence number moved, cut short, behind extension headers or a later fragment, and
        now and then an error quoting an error, or a Redirect."""
        rng = self.rng
        if f is None or not f.last_host:
            return None
        quote = bytearray(f.last_host)
        if len(quote) < _IP6 + 8:
            return None
        if rng.random() < 0.25:
            struct.pack_into("!I", quote, _IP6 + 4, rng.choice((rng.getrandbits(32), f.snd_una)))
        r = rng.random()
        if r < 0.08:
            quote = _chain(quote, [(ipv6.DSTOPTS, _options_header(self._options()))], quote[6])
        elif r < 0.12:
            frag = _fragment_header(rng.choice((0, 8, 1024)), True, rng.getrandbits(32))
            quote = _chain(quote, [(ipv6.FRAGMENT, frag)], quote[6])
        qlen = rng.choice((len(quote), len(quote), _IP6 + 8, _IP6 + 4, _IP6, _IP6 + 20))
        quote = quote[:qlen]
        typ, code, value = rng.choice(_ICMP6_KINDS)
        if typ == icmpv6.PACKET_TOO_BIG:
            value = rng.choice(_MTUS6)
        elif typ == icmpv6.PARAM_PROBLEM:
            value = rng.choice((0, 6, 40, 0xFFFFFFFF))
        if rng.random() < 0.03:
            # an error about an error (a Time Exceeded quoting this very kind of message)
            inner = bytearray(_IP6 + icmpv6.HEADER_LEN + len(quote))
            ipv6.emit(
                inner,
                0,
                src=f.key[2] & _UNTAG,
                dst=f.key[0] & _UNTAG,
                next_header=ipv6.PROTO_ICMPV6,
                payload_len=icmpv6.HEADER_LEN + len(quote),
            )
            icmpv6.emit_error(
                inner, _IP6, type=icmpv6.TIME_EXCEEDED, code=0, original=quote,
                src=f.key[2] & _UNTAG, dst=f.key[0] & _UNTAG,
            )  # fmt: skip
            quote = inner
        src = rng.choice((ROUTER6, f.key[0]))
        length = icmpv6.HEADER_LEN + len(quote)
        buf = bytearray(_IP6 + length)
        ipv6.emit(
            buf,
            0,
            src=src & _UNTAG,
            dst=f.key[2] & _UNTAG,
            next_header=ipv6.PROTO_ICMPV6,
            payload_len=length,
        )
        struct.pack_into("!BBHI", buf, _IP6, typ, code, 0, value & 0xFFFFFFFF)
        buf[_IP6 + icmpv6.HEADER_LEN :] = quote
        _refresh_checksums6(buf)
        if rng.random() < 0.04:
            buf[_IP6 + 2] ^= 0x10
        return buf

    def _icmp6_info(self) -> bytearray:
        """Neighbour Discovery, MLD, echo requests and replies, unknown types: from a peer, a
        link-local address or a bad source, to the host or to a multicast group."""
        rng = self.rng
        src = rng.choice((LINK_LOCAL6, rng.choice(PEER_ADDRS6), rng.choice(BAD_SOURCES6)))
        dst = ALL_NODES6 if rng.random() < 0.2 else rng.choice(self.addrs6 or (NOT_US6,))
        typ = rng.choice(_ICMP6_INFO_TYPES)
        if typ == icmpv6.ECHO_REQUEST:
            q = self._echo6(src, dst, rng.choice((0, 8, 56, 1200, 1300)))
        else:
            n = rng.choice((0, 4, 16, 20, 24, 28, 40))
            length = icmpv6.HEADER_LEN + n
            q = bytearray(_IP6 + length)
            ipv6.emit(
                q,
                0,
                src=src & _UNTAG,
                dst=dst & _UNTAG,
                next_header=ipv6.PROTO_ICMPV6,
                payload_len=length,
                hop_limit=255,  # RFC 4861 6.1.1: ND messages come with hop limit 255
            )
            q[_IP6] = typ
            q[_IP6 + 1] = rng.choice((0, 0, 1))
            q[_IP6 + icmpv6.HEADER_LEN :] = rng.randbytes(n)
            _refresh_checksums6(q)
        if rng.random() < 0.2:
            # a Hop-by-Hop header with a Router Alert, as MLD carries (RFC 2711)
            q = _chain(q, [(ipv6.HOPOPTS, _options_header(bytes((0x05, 2, 0, 0))))], q[6])
        if rng.random() < 0.04:
            q[_IP6 + 2] ^= 0x01
        return q

    def _addr6_abuse(self, f: _Flow | None) -> bytearray:
        """A segment (or an echo request) from an unspecified, loopback, multicast or our own
        address, or to one that is not ours, sometimes with an option that asks for a
        Parameter Problem even to a multicast destination (RFC 8200 4.2, action 10): no answer
        may ever go to such an address."""
        rng = self.rng
        if f is not None and rng.random() < 0.6:
            p, _ = self._proposal(f)
        else:
            p = self._echo6(rng.choice(PEER_ADDRS6), rng.choice(self.addrs6 or (NOT_US6,)), 16)
        if rng.random() < 0.6:
            bad = rng.choice((*BAD_SOURCES6, *self.addrs6))
            p[8:24] = (bad & _UNTAG).to_bytes(16, "big")
        else:
            bad = rng.choice((ALL_NODES6, NOT_US6, addr.from_text("::1"), addr.V6))
            p[24:40] = (bad & _UNTAG).to_bytes(16, "big")
        if rng.random() < 0.4:
            otype = rng.choice((0x81, 0xC1, 0x41))
            p = _chain(p, [(ipv6.DSTOPTS, _options_header(bytes((otype, 0))))], p[6])
        _refresh_checksums6(p)
        return p

    def _mutate_ip6(self, p: bytearray) -> bytearray:
        """One IPv6 header field of a peer's segment set to an edge value (checksums made good
        again where they can be, so the packet gets past them)."""
        rng = self.rng
        which = rng.randrange(8)
        if which == 0:
            return self._bad_payload_length(p)
        if which == 1:
            p[0] = (rng.choice((0, 4, 5, 7, 15)) << 4) | (p[0] & 0x0F)
        elif which == 2:
            p[7] = rng.choice((0, 1, 255))  # hop limit: a host takes any
        elif which == 3:
            p[6] = rng.choice((0, 17, 43, 44, 58, 59, 60, 50, 253, 255))
        elif which == 4:
            bad = rng.choice((*BAD_SOURCES6, *self.addrs6))
            p[8:24] = (bad & _UNTAG).to_bytes(16, "big")
        elif which == 5:
            bad = rng.choice((ALL_NODES6, NOT_US6, addr.from_text("::ffff:10.7.0.2")))
            p[24:40] = (bad & _UNTAG).to_bytes(16, "big")
        elif which == 6:
            struct.pack_into("!I", p, 0, (6 << 28) | rng.getrandbits(28))  # class and label
        else:
            p = self._ext_valid(p)
        _refresh_checksums6(p)
        return p

    def _garbage6(self) -> bytearray:
        rng = self.rng
        if rng.random() < 0.3:
            return bytearray(b"\x60" + rng.randbytes(rng.randrange(0, 80)))
        n = rng.randrange(0, 60)
        p = bytearray(_IP6 + n)
        ipv6.emit(
            p,
            0,
            src=rng.choice(PEER_ADDRS6) & _UNTAG,
            dst=rng.choice(self.addrs6 or (NOT_US6,)) & _UNTAG,
            next_header=rng.choice((0, 6, 43, 44, 58, 60, 17, 59)),
            payload_len=n,
        )
        p[_IP6:] = rng.randbytes(n)
        if rng.random() < 0.5:
            _refresh_checksums6(p)
        return p

    def _garbage(self) -> bytearray:
        rng = self.rng
        which = rng.randrange(5)
        if which == 4:
            return self._garbage6()
        if which == 0:
            return bytearray(rng.randbytes(rng.randrange(0, 80)))
        length = rng.randrange(0, 60)
        p = bytearray(_IP + length)
        proto = ipv4.PROTO_UDP if which == 1 else rng.choice((ipv4.PROTO_TCP, ipv4.PROTO_ICMP, 47))
        ipv4.emit(
            p,
            0,
            src=rng.choice(PEER_ADDRS4),
            dst=rng.choice(HOST_ADDRS),
            proto=proto,
            payload_len=length,
        )
        p[_IP:] = rng.randbytes(length)
        if which == 3:
            _refresh_checksums(p)
        return p

    # -- the summary ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        stats = self.stats()
        drops = {
            k: v
            for k, v in stats.items()
            if any(
                w in k
                for w in (
                    "drop",
                    "bad",
                    "truncated",
                    "malformed",
                    "overflow",
                    "ignored",
                    "fragment",
                    "not_for_us",
                    "unknown",
                    "rate_limited",
                    "invalid",
                    "suppressed",
                    "paws",
                )
            )
        }
        order = {s: i for i, s in enumerate(_STATES)}
        return {
            "seed": self.seed,
            "packets": self.index,
            "epochs": self._epoch_no + 1,
            "virtual_seconds": round(self.now, 3),
            "states_reached": {
                str(s): self.states_seen[s] for s in sorted(self.states_seen, key=order.__getitem__)
            },
            "states_missing": [str(s) for s in _STATES if s not in self.states_seen],
            "states_reached_ipv6": {
                str(s): self.states_seen6[s]
                for s in sorted(self.states_seen6, key=order.__getitem__)
            },
            "icmp_errors_sent": self.icmp_errors_sent + self.checker.icmp_errors_sent,
            "connections": {
                "established": stats.get("tcp_established", 0),
                "active_opens": stats.get("tcp_active_opens", 0),
                "passive_opens": stats.get("tcp_passive_opens", 0),
            },
            "packets_by_kind": dict(sorted(self.kinds.items())),
            "mutated_reached_tcp": self.mutated_reached_tcp,
            "window_retractions_below_scale": self.window_retractions + self.checker.retractions,
            "timer_runs": self.timer_runs,
            "early_wakeups": self.early_wakeups,
            "drops": drops,
            "counters": stats,
            "output_sha256": self._digest.hexdigest(),
            "violation_counts": dict(self.violation_counts),
            "violations": [
                {"invariant": v.invariant, "detail": v.detail, "where": v.line}
                for v in self.violations
            ],
        }


def _nothing() -> None:
    return None


def _refresh_checksums6(p: bytearray) -> None:
    """The IPv6 twin of :func:`_refresh_checksums`: the TCP or ICMPv6 checksum (over the RFC
    8200 8.1 pseudo-header) made right again behind whatever extension headers the packet has,
    when its lengths let the upper layer be found."""
    n = len(p)
    if n < _IP6:
        return
    end = min(_IP6 + ((p[4] << 8) | p[5]), n)
    try:
        chain = ipv6.walk_quoted(memoryview(p)[:end])
    except ParseError:
        return
    at = chain.payload_offset
    length = end - at
    if chain.fragment is not None and not chain.fragment.atomic:
        return  # a piece: the checksum covers the reassembled packet
    src = int.from_bytes(p[8:24], "big")
    dst = int.from_bytes(p[24:40], "big")
    if chain.proto == ipv6.PROTO_TCP and length >= tcp.HEADER_LEN:
        field = at + 16
    elif chain.proto == ipv6.PROTO_ICMPV6 and length >= icmpv6.HEADER_LEN:
        field = at + icmpv6.OFF_CHECKSUM
    else:
        return
    p[field] = p[field + 1] = 0
    pseudo = ipv6.pseudo_header_sum(src, dst, chain.proto, length)
    struct.pack_into("!H", p, field, internet_checksum(memoryview(p)[at:end], pseudo))


def _options_header(options: bytes) -> bytes:
    """A Hop-by-Hop or Destination Options header (RFC 8200 4.2) holding ``options``, padded to
    a multiple of 8 octets with Pad1 or PadN; its Next Header octet is left 0 for _chain."""
    n = 2 + len(options)
    pad = -n % 8
    if pad == 1:
        options += b"\0"
    elif pad:
        options += bytes((ipv6.OPT_PADN, pad - 2)) + bytes(pad - 2)
    return bytes((0, (n + pad) // 8 - 1)) + options


def _routing_header(rtype: int, segments_left: int, addresses: int = 1) -> bytes:
    """A Routing header (RFC 8200 4.4) of type ``rtype`` with ``addresses`` 16-octet slots."""
    return bytes((0, 2 * addresses, rtype, segments_left)) + bytes(4 + 16 * addresses)


def _fragment_header(offset: int, more: bool, ident: int) -> bytes:
    """A Fragment header (RFC 8200 4.5), ``offset`` in octets."""
    return struct.pack("!BBHI", 0, 0, (offset & 0xFFF8) | int(more), ident)


def _chain(p: bytes | bytearray, headers: list[tuple[int, bytes]], upper: int) -> bytearray:
    """``p`` (an IPv6 packet without extension headers) with ``headers`` -- (Next Header value,
    header bytes) in order -- put between its fixed header and its payload, each naming the
    next, the last naming ``upper``; the Payload Length grows to match. The upper layer's own
    checksum does not change: the pseudo-header does not count extension headers."""
    out = bytearray(p[:_IP6])
    if headers:
        out[6] = headers[0][0]
    for i, (_, h) in enumerate(headers):
        b = bytearray(h)
        b[0] = headers[i + 1][0] if i + 1 < len(headers) else upper
        out += b
    out += p[_IP6:]
    struct.pack_into("!H", out, 4, min(len(out) - _IP6, 0xFFFF))
    return out


def _refresh_checksums_ip_only(p: bytearray) -> None:
    p[10] = p[11] = 0
    struct.pack_into("!H", p, 10, internet_checksum(memoryview(p)[:_IP]))


class _CaptureHandler(logging.Handler):
    """Keeps the traceback the host logs when ``receive_packet`` swallows an exception."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.sink.append("".join(traceback.format_exception(*record.exc_info)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ustack.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=100_000, help="packets to send (default 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", help="write the summary as JSON to this file")
    ap.add_argument(
        "--epoch", type=int, default=EPOCH, help="packets per host (default %(default)s)"
    )
    ap.add_argument(
        "--keep-going", action="store_true", help="report every violation, not only the first"
    )
    args = ap.parse_args(argv)
    fz = Fuzzer(args.seed, epoch=args.epoch)
    fz.keep_going = args.keep_going
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU time too: on a shared machine the wall clock says little
    failed: Violation | None = None
    try:
        fz.run(args.packets)
    except Violation as v:
        failed = v
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    summary = fz.summary()
    summary["seconds"] = round(elapsed, 3)
    summary["cpu_seconds"] = round(cpu, 3)
    summary["packets_per_second"] = round(fz.index / elapsed) if elapsed > 0 else 0
    summary["packets_per_cpu_second"] = round(fz.index / cpu) if cpu > 0 else 0
    print(
        f"{fz.index} packets in {elapsed:.1f} s: {summary['packets_per_second']} packets/s "
        f"({summary['packets_per_cpu_second']} per CPU second; seed {fz.seed})"
    )
    print("states reached: " + ", ".join(f"{s} {n}" for s, n in summary["states_reached"].items()))
    print(
        "states reached over IPv6: "
        + ", ".join(f"{s} {n}" for s, n in summary["states_reached_ipv6"].items())
    )
    if summary["states_missing"]:
        print("states never seen: " + ", ".join(summary["states_missing"]))
    c = summary["connections"]
    print(
        f"connections: {c['established']} established ({c['active_opens']} active opens, {c['passive_opens']} passive)"
    )
    print(
        f"mutated packets that reached TCP: {fz.mutated_reached_tcp}; timer runs: {fz.timer_runs}; "
        f"window retractions below the scale unit (RFC 7323 2.4): "
        f"{summary['window_retractions_below_scale']}"
    )
    print(
        "packets by kind: " + ", ".join(f"{k} {v}" for k, v in summary["packets_by_kind"].items())
    )
    print("drops by reason: " + ", ".join(f"{k} {v}" for k, v in summary["drops"].items()))
    print(
        "counters that moved: "
        + ", ".join(f"{k} {v}" for k, v in summary["counters"].items() if k not in summary["drops"])
    )
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(summary, fh, indent=2)
    for bad in fz.violations:
        print(
            f"\nINVARIANT VIOLATED: {bad.invariant}\n  {bad.detail}\n  {bad.line}", file=sys.stderr
        )
    return 1 if fz.violations or failed else 0


if __name__ == "__main__":
    sys.exit(main())
