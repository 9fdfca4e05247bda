"""The host's network layer: IPv4 in and out, ICMP, reassembly; TCP segments to and from the demux.

Theory of operation. An :class:`IpLayer` owns the host's IPv4 addresses and MTU. Input
(``receive_packet``): the IPv4 header is parsed and checked (checksum, length, destination is
ours, source is one we could answer); fragments go to the bounded
:class:`~ustack.stack.reassembly.Reassembler`, and a datagram it completes comes back through this
same input as if it had arrived whole; then ICMP echo requests are answered, ICMP errors quoting a
TCP segment of ours go up to the TCP layer (which does RFC 5927's connection and sequence checks,
see :mod:`~ustack.stack.icmp_errors`), other protocols get a rate-limited ICMP protocol
unreachable, and TCP segments are parsed -- with the pseudo-header sum this layer computes (see
:mod:`ustack.wire.tcp`) -- and handed to the TCP demultiplexer
(:class:`~ustack.stack.tcp_demux.TcpDemux`). A well-formed TCP/IPv4 datagram takes a fast path:
both headers in one parse (``tcp.parse_ipv4``), the same checks and counters in the same order,
and one call of the demux's bound method, stored once. Every malformed packet surfaces as a
:class:`~ustack.wire.errors.ParseError`, which is counted by reason in one place; nothing escapes
``receive_packet``.

Output: the demux hands down each segment with its 4-tuple, and this layer builds the datagram
(``build_segment``; a super-segment cut in software, ``cut_segment``, when the link does not
offload), numbering IPv4 identifications; ICMP replies and errors are queued here too, the errors
through one token bucket (RFC 1812 4.3.2.8). ``packets_to_send`` returns this layer's queue and
then the connections' output, which the demux appends.

Offload (``offload=True``, for a TUN device opened with ``IFF_VNET_HDR``): every packet in and out
starts with a :mod:`~ustack.wire.virtio` header. In, a NEEDS_CSUM or DATA_VALID packet skips TCP
checksum verification (the kernel made it or checked it), and a GSO super-segment is just a long
TCP segment. Out, TCP packets are NEEDS_CSUM with only the pseudo-header sum in the checksum
field, and connections send segments of up to ``TSO_MAX`` bytes, marked GSO with the connection's
MSS so the kernel cuts them for the wire (or delivers them whole).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sized
from typing import Final, Protocol

from ustack.stack import icmp_errors
from ustack.stack.config import HostConfig
from ustack.stack.reassembly import Reassembler
from ustack.tcp.connection import OutSegment
from ustack.tcp.stats import Stats
from ustack.wire import checksum, icmp, ipv4, tcp, virtio
from ustack.wire.errors import ParseError

# The host's log keeps the name it had before the split (ustack.fuzz and log configurations
# listen to it).
log = logging.getLogger("ustack.stack.host")

OutPacket = bytearray | tuple[bytearray, bytes | memoryview]
"""A datagram to send: one buffer, or (with ``scatter``) headers and payload for writev(2)."""

Key = tuple[int, int, int, int]
"""``(remote_addr, remote_port, local_addr, local_port)``."""


class TcpLayer(Protocol):
    """What the network layer needs of the TCP layer above it (see :meth:`IpLayer.attach`)."""

    @property
    def want_output(self) -> Sized:
        """Non-empty while ``collect`` may have datagrams to add."""

    def segment(self, seg: tcp.TcpSegment, now: float) -> None:
        """A parsed (and, unless offloaded, verified) segment."""

    def icmp_error(
        self, type_: int, code: int, mtu: int, key: Key, seg_seq: int, now: float
    ) -> bool:
        """An ICMP error quoting a TCP segment of ours: ``(type, code, mtu, quoted 4-tuple,
        quoted sequence number, now)``; True when it went to a connection."""

    def collect(self, out: list[OutPacket], now: float) -> None:
        """Append the connections' datagrams to ``out``."""


# ParseError reasons -> Stats fields. Reasons not listed fall back by prefix (see _count_parse).
_PARSE_COUNTERS: Final = {
    "ipv4_truncated": "ip_truncated",
    "ipv4_bad_checksum": "ip_bad_checksum",
    "ipv4_bad_version": "ip_bad_version",
    "ipv4_bad_ihl": "ip_bad_ihl",
    "ipv4_bad_total_length": "ip_bad_total_length",
    "icmp_truncated": "icmp_truncated",
    "icmp_bad_checksum": "icmp_bad_checksum",
    "tcp_truncated": "tcp_truncated",
    "tcp_bad_data_offset": "tcp_bad_data_offset",
    "tcp_bad_checksum": "tcp_bad_checksum",
    "tcp_bad_flags": "tcp_bad_flags",
    "virtio_truncated": "offload_malformed",
}
_PARSE_FALLBACK: Final = (
    ("tcp_option", "tcp_bad_options"),
    ("tcp", "tcp_malformed"),
    ("icmp_quote", "icmp_quote_malformed"),
    ("icmp", "icmp_malformed"),
    ("ipv4", "ip_malformed"),
)

_IP_MAX_ID = 0xFFFF
# The largest TCP payload of a super-segment: an IPv4 datagram is at most 65,535 bytes, less the
# IPv4 header and the longest TCP header.
TSO_MAX = ipv4.MAX_TOTAL_LEN - ipv4.HEADER_LEN - tcp.MAX_HEADER_LEN
_LOOPBACK_NET = 127
_BROADCAST = 0xFFFFFFFF
_MULTICAST_PREFIX = 0xE  # 224.0.0.0/4


class IpLayer:
    """The IPv4 network layer of one host; see the module docstring."""

    def __init__(
        self,
        addresses: list[int],
        *,
        stats: Stats,
        host_config: HostConfig,
        mtu: int,
        now: float,
        offload: bool,
        scatter: bool,
    ) -> None:
        if not addresses or not all(isinstance(a, int) and 0 < a < _BROADCAST for a in addresses):
            raise ValueError("a host needs at least one IPv4 address (host-order int)")
        if not ipv4.HEADER_LEN + tcp.HEADER_LEN < mtu <= ipv4.MAX_TOTAL_LEN:
            raise ValueError(f"bad MTU {mtu}")
        self.addresses: tuple[int, ...] = tuple(addresses)
        self._address_set = frozenset(addresses)
        self.mtu = mtu
        # RFC 9293 3.7.1: the MSS that fits the link without fragmenting.
        self.link_mss = mtu - ipv4.HEADER_LEN - tcp.HEADER_LEN
        self.stats = stats
        self.host_config = host_config
        # Offload: every packet in and out starts with a virtio-net header (see the module
        # docstring); TCP then sends super-segments of up to TSO_MAX bytes, checksummed by the
        # kernel, and takes the kernel's coalesced ones. ``tso`` tells the demux that a
        # super-segment leaves whole (build_segment with a gso_size) instead of cut_segment.
        self.offload = offload
        self.tso = offload
        self._hdr = virtio.HEADER_LEN if offload else 0
        self._ttl = host_config.ttl
        # Super-segments leave as (headers, payload) pairs the link writes with writev(2): only
        # for a link that can (``gather``), and only with offload (see build_segment).
        self._scatter = scatter and offload
        self._out: list[OutPacket] = []
        self._ip_id = 0
        self._icmp_tokens = float(host_config.icmp_error_burst)
        self._icmp_refill = now
        # IPv4 fragments in reassembly, with their own deadline (see next_deadline).
        self._reasm = Reassembler(host_config, stats)
        self._internal_error_logged = False
        # The TCP layer above (``_tcp``) and its bound methods are set by attach().

    def attach(self, tcp_layer: TcpLayer) -> None:
        """Connect the TCP layer above. Its methods are stored once, bound: the per-packet path
        makes one direct call, with no lookup through another object."""
        self._tcp: TcpLayer = tcp_layer
        self._segment = tcp_layer.segment
        self._icmp_error = tcp_layer.icmp_error
        self._collect = tcp_layer.collect

    def source_for(self, remote_addr: int, local_addr: int | None) -> int:
        """The local address of a connection to ``remote_addr``: ``local_addr`` if it is ours
        (else EADDRNOTAVAIL), by default the first address; ValueError for a remote address no
        host can have."""
        if not 0 < remote_addr < _BROADCAST:
            raise ValueError("bad remote address or port")
        if local_addr is None:
            return self.addresses[0]
        if local_addr not in self._address_set:
            raise OSError(errno.EADDRNOTAVAIL, "local address is not one of this host's")
        return local_addr

    @property
    def output_pending(self) -> bool:
        """Whether datagrams are queued for the next ``packets_to_send``."""
        return bool(self._out)

    # -- input ------------------------------------------------------------------------------

    def receive_packet(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        """Take one IPv4 datagram from the link. Never raises for bad input."""
        self.stats.ip_rx += 1
        try:
            if self._hdr:
                self._receive_offloaded(buf, now)
            else:
                self._receive(buf, now, False)
        except ParseError as exc:
            self._count_parse(exc)
        except Exception:
            # Last resort: a bug must not take the driver down with it. Logged once, counted.
            self.stats.host_internal_error += 1
            if not self._internal_error_logged:
                self._internal_error_logged = True
                log.exception("internal error handling a received packet (logged once)")

    def _receive_offloaded(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        """A packet behind its virtio-net header. NEEDS_CSUM (the kernel built it and left the
        transport checksum to the device: the field holds only the pseudo-header sum) and
        DATA_VALID (already checked) both mean the checksum is not ours to verify; a GSO
        super-segment is simply a TCP segment up to 64 KB long."""
        trusted, gso = virtio.rx_flags(buf)
        stats = self.stats
        if trusted:
            stats.offload_rx_csum_trusted += 1
        if gso:
            stats.offload_rx_super += 1
        self._receive(memoryview(buf)[virtio.HEADER_LEN :], now, trusted)

    def _receive(self, buf: bytes | bytearray | memoryview, now: float, trusted: bool) -> None:
        stats = self.stats
        seg = tcp.parse_ipv4(buf, not trusted)
        if seg is not None:
            # The common case in one parse: a well-formed TCP/IPv4 datagram. The checks and
            # counters are the general path's, in its order.
            src = seg.src
            if seg.dst not in self._address_set:
                stats.ip_not_for_us += 1
            elif (
                src == _BROADCAST
                or src >> 28 == _MULTICAST_PREFIX
                or src >> 24 == _LOOPBACK_NET
                or src == 0
            ):
                stats.ip_bad_source += 1
            else:
                stats.tcp_rx += 1
                self._segment(seg, now)
            return
        pkt = ipv4.parse(buf)
        if pkt.dst not in self._address_set:
            stats.ip_not_for_us += 1
            return
        src = pkt.src
        if (
            src == 0
            or src == _BROADCAST
            or src >> 28 == _MULTICAST_PREFIX
            or src >> 24 == _LOOPBACK_NET
        ):
            # RFC 1122 3.2.1.3: such a source is never a host we could answer.
            stats.ip_bad_source += 1
            return
        if pkt.is_fragment:
            self._receive_fragment(pkt, buf, now)
            return
        proto = pkt.proto
        if proto == ipv4.PROTO_TCP:
            self._receive_tcp(pkt, now, trusted)
        elif proto == ipv4.PROTO_ICMP:
            self._receive_icmp(pkt, now)
        else:
            stats.ip_unknown_protocol += 1
            original = buf if len(buf) == pkt.total_length else memoryview(buf)[: pkt.total_length]
            self._send_unreachable(pkt, icmp.PROTO_UNREACH, original, now)

    def _receive_fragment(
        self, pkt: ipv4.IPv4Packet, buf: bytes | bytearray | memoryview, now: float
    ) -> None:
        """A piece of a fragmented datagram: held for reassembly; the datagram it completes
        goes through the host's input again, as if it had arrived whole (it is no fragment
        now, so this cannot recur). TCP itself never sends fragments (DF, MSS from the MTU)."""
        header = memoryview(buf)[: pkt.header_length]
        whole = self._reasm.add(pkt, header, now)
        if whole is not None:
            self._receive(whole, now, False)

    def _receive_icmp(self, pkt: ipv4.IPv4Packet, now: float) -> None:
        stats = self.stats
        stats.icmp_rx += 1
        msg = icmp.parse(pkt.payload)
        if msg.type != icmp.ECHO_REQUEST:
            if msg.type in icmp_errors.ERROR_TYPES:
                self._receive_icmp_error(msg, now)
            elif msg.type == icmp.SOURCE_QUENCH:
                # RFC 6633 2: "hosts MUST NOT send ... and SHOULD silently discard" it.
                stats.icmp_source_quench += 1
            else:
                stats.icmp_ignored += 1  # echo replies, redirects, timestamps, ...
            return
        # RFC 1122 3.2.2.6: the reply carries the request's identifier, sequence and data.
        length = icmp.HEADER_LEN + len(msg.payload)
        buf, at = self._new_ip(src=pkt.dst, dst=pkt.src, proto=ipv4.PROTO_ICMP, payload_len=length)
        icmp.emit_echo(
            buf,
            at,
            type=icmp.ECHO_REPLY,
            ident=msg.ident,
            sequence=msg.sequence,
            payload=msg.payload,
        )
        self._out.append(buf)
        stats.icmp_echo_replies += 1

    def _receive_icmp_error(self, msg: icmp.IcmpMessage, now: float) -> None:
        """An ICMP error about a TCP segment of ours goes up to the TCP layer, which routes it to
        its connection if RFC 5927 4.1's checks pass (see :mod:`ustack.stack.icmp_errors`); here
        the quote must be of TCP from one of our addresses. Each failed check is a counted drop;
        a malformed quote raises the ParseError counted as ``icmp_quote_malformed``."""
        stats = self.stats
        q = icmp.parse_quoted(msg)
        if q.src not in self._address_set:
            stats.icmp_quote_not_ours += 1
            return
        if q.proto != ipv4.PROTO_TCP:
            stats.icmp_quote_not_tcp += 1
            return
        frag_needed = msg.type == icmp.DEST_UNREACH and msg.code == icmp.FRAG_NEEDED
        mtu = 0
        if frag_needed:
            # RFC 1191 5: a router from before RFC 1191 leaves the next-hop MTU out (0).
            mtu = msg.mtu or icmp_errors.plateau_below(q.total_length)
        key = (q.dst, q.dst_port, q.src, q.src_port)
        if not self._icmp_error(msg.type, msg.code, mtu, key, q.seq, now):
            return
        # Counted only for errors a connection took.
        if frag_needed:
            stats.icmp_frag_needed += 1
            if msg.mtu == 0:
                stats.icmp_frag_needed_plateau += 1
        else:
            stats.icmp_error_delivered += 1

    def _receive_tcp(self, pkt: ipv4.IPv4Packet, now: float, trusted: bool) -> None:
        self.stats.tcp_rx += 1
        src, dst = pkt.src, pkt.dst
        # TCP is given the IPv4 pseudo-header sum (length 0, see wire/tcp.py); it is needed only
        # to verify, and a trusted (offloaded) segment's checksum is the kernel's business.
        pseudo = 0 if trusted else checksum.ipv4_pseudo_header_sum(src, dst, ipv4.PROTO_TCP, 0)
        self._segment(
            tcp.parse(pkt.payload, src, dst, pseudo=pseudo, verify_checksum=not trusted), now
        )

    def _count_parse(self, exc: ParseError) -> None:
        name = _PARSE_COUNTERS.get(exc.reason)
        if name is None:
            name = next((c for p, c in _PARSE_FALLBACK if exc.reason.startswith(p)), "ip_malformed")
        setattr(self.stats, name, getattr(self.stats, name) + 1)

    # -- timers -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When a datagram in reassembly times out: an O(1) look at the oldest one."""
        return self._reasm.next_deadline() if self._reasm else None

    def on_deadline(self, now: float) -> None:
        if not self._reasm:
            return
        for late in self._reasm.on_deadline(now):
            # RFC 1122 3.3.2: "an ICMP Time Exceeded message sent to the source host (if
            # fragment zero has been received)".
            self._send_icmp_error(
                icmp.TIME_EXCEEDED,
                icmp.REASSEMBLY_TIME_EXCEEDED,
                late.dst,
                late.src,
                late.first,
                now,
            )

    # -- output -----------------------------------------------------------------------------

    def packets_to_send(self, now: float) -> list[OutPacket]:
        """Every IPv4 datagram ready to go, each in its own buffer (or, with ``scatter``, a
        super-segment as its headers and its payload, for a gathered write)."""
        out = self._out
        self._out = []
        if self._tcp.want_output:
            self._collect(out, now)
        self.stats.ip_tx += len(out)
        return out

    def send_segment(self, key: Key, s: OutSegment) -> None:
        """Queue one segment the TCP layer made outside a connection's output (a RST, a SYN
        cookie's SYN,ACK, a TIME-WAIT record's answer)."""
        self._out.append(self.build_segment(key, s))

    def _new_ip(self, *, src: int, dst: int, proto: int, payload_len: int) -> tuple[bytearray, int]:
        """A zeroed buffer for one datagram with its IPv4 header written (behind an all-zero
        virtio-net header -- no offload asked -- when offload is on); returns the buffer and
        where the payload goes."""
        hdr = self._hdr
        buf = bytearray(hdr + ipv4.HEADER_LEN + payload_len)
        self._ip_id = (self._ip_id + 1) & _IP_MAX_ID
        ipv4.emit(
            buf,
            hdr,
            src=src,
            dst=dst,
            proto=proto,
            payload_len=payload_len,
            ident=self._ip_id,
            ttl=self._ttl,
        )
        return buf, hdr + ipv4.HEADER_LEN

    def build_segment(self, key: Key, s: OutSegment, gso_size: int = 0) -> OutPacket:
        """One TCP segment as a datagram. With offload the kernel computes the checksum
        (NEEDS_CSUM), and a payload longer than ``gso_size`` (the MSS for these options) is a
        super-segment the kernel cuts into ``gso_size`` pieces (TSO); with ``scatter`` such a
        segment is returned as (headers, payload), so its payload is not copied again."""
        remote_addr, remote_port, local_addr, local_port = key
        options = tcp.encode_options(s.options)
        payload = s.payload
        hlen = tcp.HEADER_LEN + len(options)
        hdr = self._hdr
        gather = self._scatter and gso_size != 0 and len(payload) > gso_size
        buf = bytearray(hdr + ipv4.HEADER_LEN + hlen + (0 if gather else len(payload)))
        self._ip_id = ident = (self._ip_id + 1) & _IP_MAX_ID
        tcp.emit_ipv4(
            buf,
            hdr,
            local_addr,
            remote_addr,
            ident=ident,
            ttl=self._ttl,
            src_port=local_port,
            dst_port=remote_port,
            seq=s.seq,
            ack=s.ack,
            flags=s.flags,
            window=s.window,
            options=options,
            payload=payload,
            partial_checksum=hdr != 0,
            headers_only=gather,
        )
        if hdr:
            if gso_size and len(payload) > gso_size:
                self.stats.offload_tx_super += 1
                virtio.emit(
                    buf,
                    flags=virtio.F_NEEDS_CSUM,
                    gso_type=virtio.GSO_TCPV4,
                    hdr_len=ipv4.HEADER_LEN + hlen,
                    gso_size=gso_size,
                    csum_start=ipv4.HEADER_LEN,
                    csum_offset=virtio.TCP_CSUM_OFFSET,
                )
                if gather:
                    return buf, payload
            else:
                virtio.emit(
                    buf,
                    flags=virtio.F_NEEDS_CSUM,
                    csum_start=ipv4.HEADER_LEN,
                    csum_offset=virtio.TCP_CSUM_OFFSET,
                )
        return buf

    def cut_segment(self, key: Key, s: OutSegment, mss: int, out: list[OutPacket]) -> None:
        """Software GSO: a super-segment cut into ``mss``-sized wire segments, as the kernel
        does for TSO -- the headers copied, the sequence number advanced, PSH and FIN on the
        last piece only. TCP formed the segment once; only the wire work is per packet."""
        remote_addr, remote_port, local_addr, local_port = key
        options = tcp.encode_options(s.options)
        payload = memoryview(s.payload)
        first = bytearray(ipv4.HEADER_LEN + tcp.HEADER_LEN + len(options) + mss)
        ident = (self._ip_id + 1) & _IP_MAX_ID
        tcp.emit_ipv4(
            first,
            0,
            local_addr,
            remote_addr,
            ident=ident,
            ttl=self._ttl,
            src_port=local_port,
            dst_port=remote_port,
            seq=s.seq,
            ack=s.ack,
            flags=s.flags & ~(tcp.PSH | tcp.FIN),  # PSH and FIN go on the last piece only
            window=s.window,
            options=options,
            payload=payload[:mss],
        )
        pieces = tcp.cut_ipv4(first, payload, mss, s.flags, out)  # type: ignore[arg-type]
        self._ip_id = (ident + pieces - 1) & _IP_MAX_ID
        stats = self.stats
        # the counters count wire segments, as they would without GSO
        stats.tcp_segments_sent += pieces - 1
        stats.tcp_data_segments_sent += pieces - 1

    def _send_unreachable(
        self,
        pkt: ipv4.IPv4Packet,
        code: int,
        original: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        self._send_icmp_error(icmp.DEST_UNREACH, code, pkt.dst, pkt.src, original, now)

    def _send_icmp_error(
        self,
        type_: int,
        code: int,
        src: int,
        dst: int,
        original: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        """An ICMP error (destination unreachable or time exceeded) from ``src`` to ``dst``
        quoting ``original``, through the one token bucket of RFC 1812 4.3.2.8."""
        cfg = self.host_config
        self._icmp_tokens = min(
            float(cfg.icmp_error_burst),
            self._icmp_tokens + max(0.0, now - self._icmp_refill) * cfg.icmp_error_rate,
        )
        self._icmp_refill = max(now, self._icmp_refill)
        if self._icmp_tokens < 1.0:
            self.stats.icmp_rate_limited += 1
            return
        self._icmp_tokens -= 1.0
        length = icmp.HEADER_LEN + icmp.quote_length(original)
        buf, at = self._new_ip(src=src, dst=dst, proto=ipv4.PROTO_ICMP, payload_len=length)
        if type_ == icmp.TIME_EXCEEDED:
            icmp.emit_time_exceeded(buf, at, code=code, original=original)
            self.stats.icmp_time_exceeded_sent += 1
        else:
            icmp.emit_unreachable(buf, at, code=code, original=original)
            self.stats.icmp_unreach_sent += 1
        self._out.append(buf)
