"""The host's network layer: IPv4 and IPv6 in and out, ICMP and ICMPv6, reassembly; TCP segments
to and from the demux.

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

IPv6 (RFC 8200) beside IPv4, on the same input and output. Addresses are the core's ints (see
:mod:`ustack.wire.addr`): IPv4 plain, IPv6 tagged with bit 128, so one address set and one
4-tuple key serve both and the IPv4 fast path is untouched. Input dispatches on the version
nibble once the IPv4 fast parse has declined a packet; ``ipv6.parse`` walks the extension
headers, and where RFC 8200 wants a Parameter Problem the answer is sent (rate limited like
every error), as it is for an unrecognised Next Header; fragments (atomic ones too) go to the
same reassembler, and the packet it completes is parsed again from the top, at most
``_MAX_REASSEMBLY_NESTING`` times over. TCP gets the RFC 8200 8.1 pseudo-header sum; ICMPv6
echo requests are answered; ICMPv6 errors about our TCP segments go up to the TCP layer in
ICMP's words (Packet Too Big as "fragmentation needed", its MTU never below 1280); Neighbour
Discovery and MLD are counted and dropped -- TUN is a layer-3 point-to-point link. Output for an
IPv6 key writes the fixed header (hop limit from ``HostConfig.ttl``, an RFC 6437 flow label per
connection) and TCP with its pseudo-header sum; offload marks super-segments ``GSO_TCPV6``;
without it, software GSO emits one segment per MSS (no gathered writes for IPv6 yet).

Forward mode (``enable_forwarding``, for ``ustack forward``): the host stands in for every
destination behind its link, as slirp and pasta do. A packet to any unicast address (not only
ours) is taken in -- the "not for us" test is reached only for packets that fail the address
set, so the normal path pays nothing -- TCP goes to the demux's catch-all listener, ICMP and
ICMPv6 echo requests are answered by this host in the destination's name, and UDP (RFC 768, which
a host without forwarding does not speak: it answers protocol unreachable) is parsed, checked and
handed up as ``DatagramReceived`` events for a relay; ``send_udp`` sends the replies back in.
Broadcast, multicast, loopback and unspecified destinations are still dropped as not for us.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sized
from typing import Final, Protocol

from ustack.stack import icmp_errors
from ustack.stack.config import HostConfig
from ustack.stack.isn import Rfc6528Isn
from ustack.stack.reassembly import ParamProblem, Reassembler
from ustack.tcp.connection import OutSegment
from ustack.tcp.stats import Stats
from ustack.wire import checksum, icmp, icmpv6, ipv4, ipv6, tcp, udp, virtio
from ustack.wire.addr import V6
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
    "ipv6_truncated": "ip6_truncated",
    "ipv6_bad_version": "ip6_bad_version",
    "ipv6_jumbogram_unsupported": "ip6_jumbogram",
    "ipv6_jumbo_bad_length": "ip6_jumbogram",
    "ipv6_hop_by_hop_not_first": "ip6_ext_header_malformed",
    "ipv6_too_many_ext_headers": "ip6_ext_header_malformed",
    "ipv6_too_many_options": "ip6_option_dropped",
    "icmpv6_truncated": "icmp6_truncated",
    "icmpv6_bad_checksum": "icmp6_bad_checksum",
    "udp_truncated": "udp_truncated",
    "udp_bad_length": "udp_bad_length",
    "udp_bad_checksum": "udp_bad_checksum",
    "udp_zero_checksum_ipv6": "udp_zero_checksum_ipv6",
}
_PARSE_FALLBACK: Final = (
    ("tcp_option", "tcp_bad_options"),
    ("tcp", "tcp_malformed"),
    ("icmpv6_quote", "icmp6_quote_malformed"),
    ("icmpv6", "icmp6_malformed"),
    ("icmp_quote", "icmp_quote_malformed"),
    ("icmp", "icmp_malformed"),
    ("ipv4", "ip_malformed"),
    ("ipv6_ext_header", "ip6_ext_header_malformed"),
    ("ipv6_option", "ip6_option_dropped"),
    ("ipv6_routing", "ip6_routing_dropped"),
    ("ipv6", "ip6_malformed"),
)

_IP_MAX_ID = 0xFFFF
# The largest TCP payload of a super-segment: an IPv4 datagram is at most 65,535 bytes, less the
# IPv4 header and the longest TCP header.
TSO_MAX = ipv4.MAX_TOTAL_LEN - ipv4.HEADER_LEN - tcp.MAX_HEADER_LEN
_LOOPBACK_NET = 127
_BROADCAST = 0xFFFFFFFF
_MULTICAST_PREFIX = 0xE  # 224.0.0.0/4

# The same for IPv6: the Payload Length counts everything after the 40-byte fixed header, so a
# super-segment's TCP payload is 65,535 octets less the longest TCP header (RFC 8200 3).
TSO_MAX6 = ipv6.MAX_PAYLOAD_LEN - tcp.MAX_HEADER_LEN
_IPV6 = 6  # the version nibble
_UNTAG = V6 - 1  # a tagged IPv6 address -> the 128-bit value the wire modules take
_V6_MULTICAST = 0xFF  # ff00::/8, the top octet (RFC 4291 2.7)
_V6_LOOPBACK = 1  # ::1 (RFC 4291 2.5.3); 0 is the unspecified address (2.5.2)
# A connection counts its path MTU as its MSS plus IPv4's 40 octets of IP and TCP header (see
# Connection._lower_path_mtu); an IPv6 header is 20 octets longer, so an IPv6 path MTU goes up
# to the connection less these 20, and the MSS it computes is the IPv6 MTU less 60.
_V6_EXTRA_HEADER = ipv6.HEADER_LEN - ipv4.HEADER_LEN
# A reassembled IPv6 packet is parsed again from the top, and may be a fragment again (RFC 8200
# does not forbid fragments of fragments); that many levels and no more, so a crafted packet
# cannot make the input recurse without bound.
_MAX_REASSEMBLY_NESTING = 2
# IPv6 headers (with their flow label, a keyed hash per 4-tuple, RFC 6437 3) are remembered
# for this many flows; the memo is simply emptied when full (a header is made again the same,
# so nothing changes).
_HEADS6_MEMO = 4096

# ICMPv6 errors in the vocabulary of ICMP for IPv4 that the TCP layer speaks (RFC 4443 3.1):
# "port unreachable" is the hard error it is for IPv4 (RFC 1122 4.2.3.9); "no route" is a
# network unreachable; every other code (administratively prohibited, beyond scope, address
# unreachable, source policy, reject route) means the host cannot be reached: soft.
_UNREACH6_AS_ICMP: Final = {
    icmpv6.NO_ROUTE: icmp.NET_UNREACH,
    icmpv6.PORT_UNREACH: icmp.PORT_UNREACH,
}
_ICMP6_ERRORS: Final = frozenset(
    {icmpv6.DEST_UNREACH, icmpv6.PACKET_TOO_BIG, icmpv6.TIME_EXCEEDED, icmpv6.PARAM_PROBLEM}
)
# Neighbour Discovery (RFC 4861) and MLD (RFC 2710, RFC 3810): TUN is a point-to-point layer-3
# link with no link-layer addresses to resolve and no router to learn from, so none is answered.
_ICMP6_LINK_TYPES: Final = frozenset(
    {
        icmpv6.MLD_QUERY,
        icmpv6.MLD_REPORT,
        icmpv6.MLD_DONE,
        icmpv6.ROUTER_SOLICITATION,
        icmpv6.ROUTER_ADVERTISEMENT,
        icmpv6.NEIGHBOR_SOLICITATION,
        icmpv6.NEIGHBOR_ADVERTISEMENT,
        icmpv6.REDIRECT,
        icmpv6.MLD2_REPORT,
    }
)


# ICMP error types (RFC 792): no error is ever sent about a datagram carrying one of these.
_ICMP4_ERRORS: Final = frozenset(
    {icmp.DEST_UNREACH, icmp.SOURCE_QUENCH, icmp.REDIRECT, icmp.TIME_EXCEEDED, icmp.PARAM_PROBLEM}
)


def _about_an_error(original: bytes | bytearray | memoryview) -> bool:
    """Whether ``original`` (a packet an ICMP or ICMPv6 error would quote) carries an ICMP error
    message, or an ICMPv6 error or Redirect, about which RFC 1122 3.2.2 and RFC 4443 2.4 (e.1),
    (e.2) forbid sending one -- two hosts must never answer each other's errors forever. The
    packet is looked at as a quote is: extension headers stepped over, nothing judged."""
    mv = memoryview(original)
    if len(mv) < ipv4.HEADER_LEN:
        return False
    if mv[0] >> 4 == _IPV6:
        if len(mv) < ipv6.HEADER_LEN:
            return False
        try:
            chain = ipv6.walk_quoted(mv)
        except ParseError:
            return False  # the upper layer cannot be found: nothing says it is an error
        at = chain.payload_offset
        if chain.proto != ipv6.PROTO_ICMPV6 or at >= len(mv):
            return False
        # RFC 4443 2.1: types 0 to 127 are errors
        return mv[at] < icmpv6.ECHO_REQUEST or mv[at] == icmpv6.REDIRECT
    at = (mv[0] & 0x0F) * 4
    return mv[9] == ipv4.PROTO_ICMP and at < len(mv) and mv[at] in _ICMP4_ERRORS


def _unicast4(addr: int) -> bool:
    """An IPv4 address one host can be: not 0/8 ("this network", RFC 1122 3.2.1.3), loopback,
    multicast, or the limited broadcast."""
    return (
        addr >> 24 != 0
        and addr >> 24 != _LOOPBACK_NET
        and addr >> 28 != _MULTICAST_PREFIX
        and addr != _BROADCAST
    )


UdpSink = Callable[[int, int, int, int, bytes], None]
"""Forward mode's receiver of UDP: ``(src, src_port, dst, dst_port, payload)``."""


def _unicast6(addr: int) -> bool:
    """A tagged IPv6 address a host can have or talk to: not unspecified, loopback or
    multicast."""
    value = addr & _UNTAG
    return (
        addr >> 128 == 1 and value != 0 and value != _V6_LOOPBACK and value >> 120 != _V6_MULTICAST
    )


class IpLayer:
    """The IPv4 and IPv6 network layer of one host; see the module docstring."""

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
        flow_secret: bytes = b"",
    ) -> None:
        v4 = [a for a in addresses if isinstance(a, int) and 0 < a < _BROADCAST]
        v6 = [a for a in addresses if isinstance(a, int) and _unicast6(a)]
        if not addresses or len(v4) + len(v6) != len(addresses):
            raise ValueError(
                "a host needs at least one address: IPv4 as a host-order int, IPv6 as a "
                "tagged int (ustack.wire.addr)"
            )
        if not ipv4.HEADER_LEN + tcp.HEADER_LEN < mtu <= ipv4.MAX_TOTAL_LEN:
            raise ValueError(f"bad MTU {mtu}")
        if v6 and mtu < ipv6.MIN_MTU:
            raise ValueError(f"IPv6 needs an MTU of at least {ipv6.MIN_MTU} (RFC 8200 5)")
        self.addresses: tuple[int, ...] = tuple(addresses)
        self.addresses4: tuple[int, ...] = tuple(v4)
        self.addresses6: tuple[int, ...] = tuple(v6)
        # Both families in one set: a tagged IPv6 int never equals an IPv4 one.
        self._address_set = frozenset(addresses)
        self.mtu = mtu
        # RFC 9293 3.7.1: the MSS that fits the link without fragmenting, per family (an IPv6
        # header is 40 octets: MTU - 60).
        self.link_mss = mtu - ipv4.HEADER_LEN - tcp.HEADER_LEN
        self.link_mss6 = mtu - ipv6.HEADER_LEN - tcp.HEADER_LEN
        # RFC 6437 3: a flow's label is a hash of its 4-tuple under a host secret, the same for
        # every packet of the connection and hard to guess from outside (an empty secret --
        # a host given only an ISN source -- still gives stable labels, just guessable ones).
        # The same keyed 4-tuple hash as the ISNs' (RFC 6528), under its own secret.
        self._flow_hasher = Rfc6528Isn(flow_secret or b"\0")
        # Each IPv6 flow's 40-octet fixed header (flow label, hop limit, addresses), made once
        # and copied into every packet (tcp.emit_ipv6); emptied when full, like a cache.
        self._heads6: dict[Key, bytes] = {}
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
        # IPv6 fragment identifications: a counter offset by a keyed hash of the addresses
        # (RFC 7739 5.3), so they cannot be predicted from outside.
        self._frag6_next = 0
        self._icmp_tokens = float(host_config.icmp_error_burst)
        self._icmp_refill = now
        # IPv4 fragments in reassembly, with their own deadline (see next_deadline).
        self._reasm = Reassembler(host_config, stats)
        self._internal_error_logged = False
        # Forward mode (enable_forwarding): packets to any unicast address are taken in, UDP
        # goes to this sink.
        self._forwarding = False
        self._udp_sink: UdpSink | None = None
        # The TCP layer above (``_tcp``) and its bound methods are set by attach().

    def attach(self, tcp_layer: TcpLayer) -> None:
        """Connect the TCP layer above. Its methods are stored once, bound: the per-packet path
        makes one direct call, with no lookup through another object."""
        self._tcp: TcpLayer = tcp_layer
        self._segment = tcp_layer.segment
        self._icmp_error = tcp_layer.icmp_error
        self._collect = tcp_layer.collect

    def enable_forwarding(self, udp_sink: UdpSink | None = None) -> None:
        """Forward mode (see the module docstring): take in packets to any unicast address,
        and hand UDP datagrams to ``udp_sink`` (``TcpDemux.post_datagram``); without one, UDP
        is answered as an unknown protocol, as before."""
        self._forwarding = True
        self._udp_sink = udp_sink

    def _foreign(self, dst: int) -> bool:
        """Whether a packet to ``dst``, not one of our addresses, is ours to take anyway:
        forward mode, and an address a host could have."""
        return self._forwarding and (_unicast6(dst) if dst >> 128 else _unicast4(dst))

    def source_for(self, remote_addr: int, local_addr: int | None) -> int:
        """The local address of a connection to ``remote_addr``: ``local_addr`` if it is ours
        and of the remote's family (else EADDRNOTAVAIL), by default the first address of that
        family; ValueError for a remote address no host can have."""
        if remote_addr >> 128:
            if not _unicast6(remote_addr):
                raise ValueError("bad remote address or port")
            family = self.addresses6
        elif 0 < remote_addr < _BROADCAST:
            family = self.addresses4
        else:
            raise ValueError("bad remote address or port")
        if local_addr is None:
            if not family:
                raise OSError(errno.EADDRNOTAVAIL, "this host has no address of that family")
            return family[0]
        if local_addr not in family:
            raise OSError(
                errno.EADDRNOTAVAIL, "local address is not one of this host's (of that family)"
            )
        return local_addr

    @property
    def output_pending(self) -> bool:
        """Whether datagrams are queued for the next ``packets_to_send``."""
        return bool(self._out)

    # -- input ------------------------------------------------------------------------------

    def receive_packet(self, buf: bytes | bytearray | memoryview, now: float) -> None:
        """Take one IPv4 or IPv6 datagram from the link. Never raises for bad input."""
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
            if seg.dst not in self._address_set and not self._foreign(seg.dst):
                stats.ip_not_for_us += 1
            elif (
                src == _BROADCAST
                or src >> 28 == _MULTICAST_PREFIX
                or src >> 24 == _LOOPBACK_NET
                or src == 0
                or src in self._address_set
            ):
                stats.ip_bad_source += 1
            else:
                stats.tcp_rx += 1
                self._segment(seg, now)
            return
        if len(buf) and buf[0] >> 4 == _IPV6:
            stats.ip6_rx += 1
            seg = tcp.parse_ipv6(buf, not trusted)
            if seg is None:
                self._receive6(buf, now, trusted, 0)
                return
            # The common IPv6 case in one parse, with the general path's checks and counters.
            if seg.dst not in self._address_set and not self._foreign(seg.dst):
                stats.ip6_not_for_us += 1
            elif not _unicast6(seg.src) or seg.src in self._address_set:
                stats.ip6_bad_source += 1
            else:
                stats.tcp_rx += 1
                self._segment(seg, now)
            return
        pkt = ipv4.parse(buf)
        if pkt.dst not in self._address_set and not self._foreign(pkt.dst):
            stats.ip_not_for_us += 1
            return
        src = pkt.src
        if (
            src == 0
            or src == _BROADCAST
            or src >> 28 == _MULTICAST_PREFIX
            or src >> 24 == _LOOPBACK_NET
            or src in self._address_set
        ):
            # RFC 1122 3.2.1.3: such a source is never a host we could answer. Nor is one of
            # our own addresses: nothing from the link was sent by us, and answering it would
            # be talking to ourselves (Linux drops it as a "martian" source).
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
        elif proto == udp.PROTO and self._udp_sink is not None:
            pseudo = checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, udp.PROTO, 0)
            self._receive_udp(pkt.payload, pkt.src, pkt.dst, pseudo, False, trusted)
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
        self._send_maybe_fragmented(buf, pkt.dst, pkt.src)
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

    def _receive_udp(
        self,
        payload: memoryview,
        src: int,
        dst: int,
        pseudo: int,
        v6: bool,
        trusted: bool,
    ) -> None:
        """Forward mode: a UDP datagram (to any address), checked (RFC 768; RFC 8200 8.1 for
        IPv6) and handed to the relay. A datagram the kernel handed over with its checksum
        left to the device (offload) is the kernel's own and not verified."""
        d = udp.parse(payload, pseudo, ipv6=v6, verify_checksum=not trusted)
        stats = self.stats
        stats.udp_rx += 1
        if d.dst_port == 0 or d.src_port == 0:
            # Port 0 is reserved; a source port 0 asks for no reply, which a relay cannot give.
            stats.udp_bad_port += 1
            return
        assert self._udp_sink is not None
        self._udp_sink(src, d.src_port, dst, d.dst_port, bytes(d.payload))

    def send_udp(self, src: int, src_port: int, dst: int, dst_port: int, payload: bytes) -> bool:
        """Forward mode: queue a UDP datagram from ``src:src_port`` (any address: the relay
        answers in the name of the destination it reached) to ``dst:dst_port``; False (counted)
        if it does not fit the link's MTU unfragmented."""
        v6 = bool(dst >> 128)
        head = ipv6.HEADER_LEN if v6 else ipv4.HEADER_LEN
        length = udp.HEADER_LEN + len(payload)
        if head + length > self.mtu:
            self.stats.forward_udp_too_big += 1
            return False
        if v6:
            buf, at = self._new_ip6(src=src, dst=dst, next_header=udp.PROTO, length=length)
            pseudo = ipv6.pseudo_header_sum(src & _UNTAG, dst & _UNTAG, udp.PROTO, 0)
        else:
            buf, at = self._new_ip(src=src, dst=dst, proto=udp.PROTO, payload_len=length)
            pseudo = checksum.ipv4_pseudo_header_sum(src, dst, udp.PROTO, 0)
        udp.emit(buf, at, src_port=src_port, dst_port=dst_port, payload=payload, pseudo=pseudo)
        self._out.append(buf)
        self.stats.forward_udp_sent += 1
        return True

    # -- IPv6 input -------------------------------------------------------------------------

    def _receive6(
        self, buf: bytes | bytearray | memoryview, now: float, trusted: bool, nesting: int
    ) -> None:
        """One IPv6 packet (RFC 8200): parsed and its extension headers walked by
        :func:`ustack.wire.ipv6.parse`; the checks of the IPv4 path (destination ours, source
        one we could answer), then fragments to reassembly and the upper layer by Next Header.
        ``nesting`` counts how many reassemblies made this packet."""
        stats = self.stats
        try:
            pkt = ipv6.parse(buf)
        except ipv6.ParameterProblem as exc:
            # RFC 8200 4, 4.2, 4.4: discard it and answer with a Parameter Problem pointing at
            # the field (the fixed header is whole: only the walk raises these).
            self._count_parse(exc)
            mv = memoryview(buf)
            src = int.from_bytes(mv[ipv6.OFF_SRC : ipv6.OFF_DST], "big") | V6
            dst = int.from_bytes(mv[ipv6.OFF_DST : ipv6.HEADER_LEN], "big") | V6
            if dst in self._address_set and _unicast6(src):
                self._send_icmp6_error(
                    icmpv6.PARAM_PROBLEM, exc.code, exc.pointer, dst, src, buf, now
                )
            return
        dst = pkt.dst | V6
        if dst not in self._address_set and not self._foreign(dst):
            stats.ip6_not_for_us += 1
            return
        src = pkt.src | V6
        if not _unicast6(src) or src in self._address_set:
            # RFC 4291 2.5.2, 2.7: never the source of a packet a host could answer; nor is an
            # address of ours (see the IPv4 check).
            stats.ip6_bad_source += 1
            return
        if pkt.fragment is not None:
            self._receive_fragment6(pkt, buf, src, dst, now, nesting)
            return
        proto = pkt.proto
        if proto == ipv6.PROTO_TCP:
            stats.tcp_rx += 1
            # TCP is given the RFC 8200 8.1 pseudo-header sum with length 0 (see wire/tcp.py).
            pseudo = 0 if trusted else ipv6.pseudo_header_sum(pkt.src, pkt.dst, ipv6.PROTO_TCP, 0)
            self._segment(
                tcp.parse(pkt.payload, src, dst, pseudo=pseudo, verify_checksum=not trusted), now
            )
        elif proto == ipv6.PROTO_ICMPV6:
            self._receive_icmp6(pkt, src, dst, now)
        elif proto == ipv6.NO_NEXT_HEADER:
            stats.ip6_no_next_header += 1  # RFC 8200 4.7: nothing follows to deliver
        elif proto == udp.PROTO and self._udp_sink is not None:
            pseudo = ipv6.pseudo_header_sum(pkt.src, pkt.dst, udp.PROTO, 0)
            self._receive_udp(pkt.payload, src, dst, pseudo, True, trusted)
        else:
            # RFC 8200 4: "an unrecognized Next Header value ... should send an ICMP Parameter
            # Problem message ... with an ICMP Code value of 1 ... pointing to" that field.
            stats.ip6_unknown_next_header += 1
            self._send_icmp6_error(
                icmpv6.PARAM_PROBLEM,
                icmpv6.UNRECOGNIZED_NEXT_HEADER,
                pkt.proto_pointer,
                dst,
                src,
                buf,
                now,
            )

    def _receive_fragment6(
        self,
        pkt: ipv6.IPv6Packet,
        buf: bytes | bytearray | memoryview,
        src: int,
        dst: int,
        now: float,
        nesting: int,
    ) -> None:
        """A packet with a Fragment header: held for reassembly (an atomic fragment comes back
        at once, RFC 6946); the packet it completes is parsed again from the top."""
        if nesting >= _MAX_REASSEMBLY_NESTING:
            self.stats.ip6_reasm_nested += 1
            return
        result = self._reasm.add6(buf, pkt, now)
        if result is None:
            return
        if isinstance(result, ParamProblem):
            # RFC 8200 4.5, RFC 7112 5: the fragment is dropped and its source told why.
            self._send_icmp6_error(
                icmpv6.PARAM_PROBLEM, result.code, result.pointer, dst, src, buf, now
            )
            return
        self._receive6(result, now, False, nesting + 1)

    def _receive_icmp6(self, pkt: ipv6.IPv6Packet, src: int, dst: int, now: float) -> None:
        stats = self.stats
        stats.icmp6_rx += 1
        # RFC 4443 2.3: the checksum covers the pseudo-header, so the parse needs the addresses.
        msg = icmpv6.parse(pkt.payload, pkt.src, pkt.dst)
        type_ = msg.type
        if type_ == icmpv6.ECHO_REQUEST:
            # RFC 4443 4.2: the reply carries the request's identifier, sequence and data.
            length = icmpv6.HEADER_LEN + len(msg.payload)
            buf, at = self._new_ip6(src=dst, dst=src, next_header=ipv6.PROTO_ICMPV6, length=length)
            icmpv6.emit_echo_reply(
                buf,
                at,
                ident=msg.ident,
                sequence=msg.sequence,
                payload=msg.payload,
                src=pkt.dst,
                dst=pkt.src,
            )
            self._send_maybe_fragmented(buf, dst, src)
            stats.icmp6_echo_replies += 1
        elif type_ in _ICMP6_ERRORS:
            self._receive_icmp6_error(msg, now)
        elif type_ in _ICMP6_LINK_TYPES:
            stats.icmp6_nd_ignored += 1
        else:
            stats.icmp6_ignored += 1  # echo replies, unknown informational or error types

    def _receive_icmp6_error(self, msg: icmpv6.Icmpv6Message, now: float) -> None:
        """An ICMPv6 error about a TCP segment of ours goes up to the TCP layer as the IPv4
        path's do (see :meth:`_receive_icmp_error`), its type and code put in ICMP's words; a
        Packet Too Big becomes "fragmentation needed" with its MTU, never below 1280 (RFC 8201
        4: "a node MUST NOT reduce its estimate of the Path MTU below the IPv6 minimum link
        MTU")."""
        stats = self.stats
        q = icmpv6.parse_quoted(msg)
        local = q.src | V6
        if local not in self._address_set:
            stats.icmp6_quote_not_ours += 1
            return
        if q.next_header != ipv6.PROTO_TCP:
            stats.icmp6_quote_not_tcp += 1
            return
        type_ = msg.type
        mtu = 0
        clamped = False
        if type_ == icmpv6.PACKET_TOO_BIG:
            clamped = msg.mtu < ipv6.MIN_MTU
            mtu = max(msg.mtu, ipv6.MIN_MTU) - _V6_EXTRA_HEADER
            as_type, as_code = icmp.DEST_UNREACH, icmp.FRAG_NEEDED
        elif type_ == icmpv6.DEST_UNREACH:
            as_type = icmp.DEST_UNREACH
            as_code = _UNREACH6_AS_ICMP.get(msg.code, icmp.HOST_UNREACH)
        elif type_ == icmpv6.PARAM_PROBLEM and msg.code == icmpv6.UNRECOGNIZED_NEXT_HEADER:
            # The peer does not know TCP: IPv6's protocol unreachable, a hard error.
            as_type, as_code = icmp.DEST_UNREACH, icmp.PROTO_UNREACH
        elif type_ == icmpv6.PARAM_PROBLEM:
            as_type, as_code = icmp.PARAM_PROBLEM, 0
        else:
            # Hop limit or reassembly time exceeded: the same codes as ICMP's (RFC 4443 3.3).
            as_type, as_code = icmp.TIME_EXCEEDED, msg.code
        key = (q.dst | V6, q.dst_port, local, q.src_port)
        if not self._icmp_error(as_type, as_code, mtu, key, q.seq, now):
            return
        # Counted only for errors a connection took.
        if type_ == icmpv6.PACKET_TOO_BIG:
            stats.icmp6_packet_too_big += 1
            if clamped:
                stats.icmp6_packet_too_big_clamped += 1
        else:
            stats.icmp6_error_delivered += 1

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
            if late.version == _IPV6:
                # RFC 8200 4.5: "an ICMP Time Exceeded -- Fragment Reassembly Time Exceeded
                # message should be sent to the source of that fragment" (fragment zero's).
                self._send_icmp6_error(
                    icmpv6.TIME_EXCEEDED,
                    icmpv6.REASSEMBLY_TIME_EXCEEDED,
                    0,
                    late.dst | V6,
                    late.src | V6,
                    late.first,
                    now,
                )
                continue
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
        """One TCP segment as a datagram of its connection's family. With offload the kernel
        computes the checksum (NEEDS_CSUM), and a payload longer than ``gso_size`` (the MSS for
        these options) is a super-segment the kernel cuts into ``gso_size`` pieces (TSO); with
        ``scatter`` such a segment is returned as (headers, payload), so its payload is not
        copied again."""
        options = tcp.encode_options(s.options)
        payload = s.payload
        hdr = self._hdr
        gather = self._scatter and gso_size != 0 and len(payload) > gso_size
        buf, ip_len, gso_type = self._emit_tcp(key, s, s.flags, options, payload, hdr, gather)
        if (
            hdr
            and self._offload_header(
                buf, gso_type, ip_len, tcp.HEADER_LEN + len(options), gso_size, len(payload)
            )
            and gather
        ):
            return buf, payload
        return buf

    def cut_segment(self, key: Key, s: OutSegment, mss: int, out: list[OutPacket]) -> None:
        """Software GSO: a super-segment (longer than ``mss``) cut into ``mss``-sized wire
        segments, as the kernel does for TSO -- the headers copied, the sequence number
        advanced, PSH and FIN on the last piece only. TCP formed the segment once; only the
        wire work is per packet."""
        options = tcp.encode_options(s.options)
        payload = memoryview(s.payload)
        middle = s.flags & ~(tcp.PSH | tcp.FIN)  # PSH and FIN go on the last piece only
        first, _, _ = self._emit_tcp(key, s, middle, options, payload[:mss], 0, False)
        if key[0] >> 128:
            pieces = tcp.cut_ipv6(first, payload, mss, s.flags, out)  # type: ignore[arg-type]
        else:
            pieces = tcp.cut_ipv4(first, payload, mss, s.flags, out)  # type: ignore[arg-type]
            # the first piece took the next identification, the others the ones after it
            self._ip_id = (self._ip_id + pieces - 1) & _IP_MAX_ID
        stats = self.stats
        # the counters count wire segments, as they would without GSO
        stats.tcp_segments_sent += pieces - 1
        stats.tcp_data_segments_sent += pieces - 1

    def _emit_tcp(
        self,
        key: Key,
        s: OutSegment,
        flags: int,
        options: bytes,
        payload: bytes | memoryview,
        hdr: int,
        headers_only: bool,
    ) -> tuple[bytearray, int, int]:
        """One TCP segment of the connection ``key`` (its sequence number, ACK and window from
        ``s``, with ``flags`` and ``payload``) in a new buffer, behind ``hdr`` octets left for
        a virtio-net header (when set, the checksum is left to the device); IPv4 or IPv6 by
        the key's family. Returns the buffer, the IP header's length and the GSO type."""
        remote_addr, remote_port, local_addr, local_port = key
        tail = tcp.HEADER_LEN + len(options) + (0 if headers_only else len(payload))
        if remote_addr >> 128:
            buf = bytearray(hdr + ipv6.HEADER_LEN + tail)
            tcp.emit_ipv6(
                buf,
                hdr,
                self._head6(key),
                src_port=local_port,
                dst_port=remote_port,
                seq=s.seq,
                ack=s.ack,
                flags=flags,
                window=s.window,
                options=options,
                payload=payload,
                partial_checksum=hdr != 0,
                headers_only=headers_only,
            )
            return buf, ipv6.HEADER_LEN, virtio.GSO_TCPV6
        buf = bytearray(hdr + ipv4.HEADER_LEN + tail)
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
            flags=flags,
            window=s.window,
            options=options,
            payload=payload,
            partial_checksum=hdr != 0,
            headers_only=headers_only,
        )
        return buf, ipv4.HEADER_LEN, virtio.GSO_TCPV4

    # -- IPv6 output ------------------------------------------------------------------------

    def _head6(self, key: Key) -> bytes:
        """The fixed IPv6 header of the flow ``key`` (its Payload Length left 0): our address
        and the peer's, the host's hop limit and, per RFC 6437 3, the flow's 20-bit label, a
        keyed hash of its 4-tuple."""
        head = self._heads6.get(key)
        if head is None:
            if len(self._heads6) >= _HEADS6_MEMO:
                self._heads6.clear()
            remote_addr, remote_port, local_addr, local_port = key
            label = (
                self._flow_hasher.hash(local_addr, local_port, remote_addr, remote_port)
                & ipv6.FLOW_LABEL_MASK
            )
            buf = bytearray(ipv6.HEADER_LEN)
            ipv6.emit(
                buf,
                0,
                src=local_addr & _UNTAG,
                dst=remote_addr & _UNTAG,
                next_header=ipv6.PROTO_TCP,
                payload_len=0,
                hop_limit=self._ttl,
                flow_label=label,
            )
            self._heads6[key] = head = bytes(buf)
        return head

    def _new_ip6(
        self,
        *,
        src: int,
        dst: int,
        next_header: int,
        length: int,
    ) -> tuple[bytearray, int]:
        """A zeroed buffer for one packet (ICMPv6: TCP's come from ``_head6``) with its IPv6
        fixed header written (behind an all-zero virtio-net header with offload); returns the
        buffer and where the payload goes. ``src`` and ``dst`` are tagged."""
        hdr = self._hdr
        buf = bytearray(hdr + ipv6.HEADER_LEN + length)
        ipv6.emit(
            buf,
            hdr,
            src=src & _UNTAG,
            dst=dst & _UNTAG,
            next_header=next_header,
            payload_len=length,
            hop_limit=self._ttl,
        )
        return buf, hdr + ipv6.HEADER_LEN

    def _send_maybe_fragmented(self, buf: bytearray, src: int, dst: int) -> None:
        """Queue a packet this host made whole (an echo reply, from ``src`` to ``dst``). One
        longer than the link MTU -- the answer to a request that came in fragments -- goes out
        in fragments as the request did (RFC 791 3.2; RFC 8200 4.5: in IPv6 only a source
        fragments, and the reply's source is us); TCP never needs this, its MSS fits."""
        hdr = self._hdr
        if len(buf) - hdr <= self.mtu:
            self._out.append(buf)
            return
        packet = memoryview(buf)[hdr:]
        if dst >> 128:
            self._frag6_next = (self._frag6_next + 1) & 0xFFFFFFFF
            ident = (self._frag6_next + self._flow_hasher.hash(src, 0, dst, 0)) & 0xFFFFFFFF
            pieces = ipv6.fragment(packet, self.mtu, ident)
            self.stats.ip6_frag_created += len(pieces)
        else:
            pieces = ipv4.fragment(packet, self.mtu)
            self.stats.ip_frag_created += len(pieces)
        for piece in pieces:
            # with offload, each fragment behind an all-zero virtio-net header (nothing asked)
            self._out.append(bytearray(hdr) + piece if hdr else piece)

    def _offload_header(
        self, buf: bytearray, gso_type: int, ip_len: int, tcp_len: int, gso_size: int, n: int
    ) -> bool:
        """The virtio-net header of a TCP segment we send: NEEDS_CSUM (the field holds the
        pseudo-header sum, the device finishes it) and, for a payload of ``n`` > ``gso_size``
        octets, a super-segment the kernel cuts into ``gso_size`` pieces (True)."""
        if gso_size and n > gso_size:
            self.stats.offload_tx_super += 1
            virtio.emit(
                buf,
                flags=virtio.F_NEEDS_CSUM,
                gso_type=gso_type,
                hdr_len=ip_len + tcp_len,
                gso_size=gso_size,
                csum_start=ip_len,
                csum_offset=virtio.TCP_CSUM_OFFSET,
            )
            return True
        virtio.emit(
            buf, flags=virtio.F_NEEDS_CSUM, csum_start=ip_len, csum_offset=virtio.TCP_CSUM_OFFSET
        )
        return False

    def _send_icmp6_error(
        self,
        type_: int,
        code: int,
        value: int,
        src: int,
        dst: int,
        original: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        """An ICMPv6 error (parameter problem, time exceeded) from ``src`` to ``dst`` (tagged)
        quoting ``original``, through the one token bucket (RFC 4443 2.4 (f) asks for a limit
        as RFC 1812 does for IPv4)."""
        if _about_an_error(original):
            self.stats.icmp_error_about_error += 1
            return
        if not self._icmp_token(now):
            return
        length = icmpv6.HEADER_LEN + icmpv6.quote_length(original)
        buf, at = self._new_ip6(src=src, dst=dst, next_header=ipv6.PROTO_ICMPV6, length=length)
        icmpv6.emit_error(
            buf,
            at,
            type=type_,
            code=code,
            value=value,
            original=original,
            src=src & _UNTAG,
            dst=dst & _UNTAG,
        )
        if type_ == icmpv6.TIME_EXCEEDED:
            self.stats.icmp6_time_exceeded_sent += 1
        else:
            self.stats.icmp6_param_problem_sent += 1
        self._out.append(buf)

    def _icmp_token(self, now: float) -> bool:
        """Take a token from the ICMP error bucket (RFC 1812 4.3.2.8), both families sharing
        it; False (counted) when it is empty."""
        cfg = self.host_config
        self._icmp_tokens = min(
            float(cfg.icmp_error_burst),
            self._icmp_tokens + max(0.0, now - self._icmp_refill) * cfg.icmp_error_rate,
        )
        self._icmp_refill = max(now, self._icmp_refill)
        if self._icmp_tokens < 1.0:
            self.stats.icmp_rate_limited += 1
            return False
        self._icmp_tokens -= 1.0
        return True

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
        if _about_an_error(original):
            self.stats.icmp_error_about_error += 1
            return
        if not self._icmp_token(now):
            return
        length = icmp.HEADER_LEN + icmp.quote_length(original)
        buf, at = self._new_ip(src=src, dst=dst, proto=ipv4.PROTO_ICMP, payload_len=length)
        if type_ == icmp.TIME_EXCEEDED:
            icmp.emit_time_exceeded(buf, at, code=code, original=original)
            self.stats.icmp_time_exceeded_sent += 1
        else:
            icmp.emit_unreachable(buf, at, code=code, original=original)
            self.stats.icmp_unreach_sent += 1
        self._out.append(buf)
