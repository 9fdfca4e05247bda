"""The Ethernet/ARP layer between a TAP link and the host: frames in, IPv4 packets up, and back.

Theory of operation. The host speaks IP packets; a TAP device speaks Ethernet II frames. This
layer sits between them and is sans-IO like the rest of ``ustack/stack``: it takes frames and
packets with ``now``, hands back IP payloads, the 14-octet header to put in front of an outgoing
packet, and frames it wants sent (pulled with :meth:`ArpLayer.frames_to_send`); its one deadline
is :meth:`ArpLayer.next_deadline`. The TAP link owns it and does the I/O.

Input (:meth:`ArpLayer.receive`). A frame addressed to neither our MAC nor broadcast is not for
us; one from a group or our own source address is bogus; both are dropped and counted. IPv4
and IPv6 go up as views of the payload; ARP is handled here, and so are IPv6's Neighbor
Solicitations and Advertisements (RFC 4861 7.2), which resolve IPv6 next hops in the same
neighbour cache (keyed by the tagged address) -- so a TAP link carries both families.

ARP follows RFC 826's packet reception algorithm. If the sender's protocol address is already in
the neighbour cache, its hardware address is updated ("merged"); then, if we are the target, the
sender is added if it was not merged, and a request is answered with a reply sent to the
requester's hardware address. RFC 5227's forms fall out of that: a probe (sender 0.0.0.0) for our
address is answered (to 0.0.0.0, as Linux does) and nothing is learned from it; an announcement
(gratuitous ARP) from a neighbour updates an entry we hold and adds none. A packet claiming our
own address is a conflict (RFC 5227 2.4): counted, never learned. At start the layer announces
its own mapping ``ANNOUNCE_NUM`` times, ``ANNOUNCE_INTERVAL`` apart (RFC 5227 2.3); it does not
probe first (2.1.1), because on a TAP link the only other host is the kernel, configured with
another address by the same call.

The neighbour cache is a dict keyed by IPv4 address, bounded (``max_entries``; the oldest
resolved entry is evicted for a new one), with the states Linux uses for ARP, which are RFC
4861 7.3's Neighbour Unreachability Detection states: INCOMPLETE (a request is out; packets
wait), REACHABLE (confirmed within ``reachable_time``, by an ARP packet addressed to us),
STALE (older than that: still used, but the next packet sent to it starts a PROBE of unicast
requests that must be answered within ``max_probes`` tries, or the entry goes), and PROBE. A
STALE entry not used for ``stale_time`` is forgotten when next looked at. An INCOMPLETE
entry's request is retransmitted every ``retrans_time`` up to ``max_requests`` times; then its
waiting packets are dropped and counted, and the entry removed.

Output (:meth:`ArpLayer.resolve`). The next hop of an IPv4 packet is its destination when that
is on the link's subnet, else the gateway (the kernel's address on the TAP link, which routes
for us as it does for TUN). Broadcast and multicast destinations map to group MACs (RFC 1112
6.4) with no resolution. A packet to an unresolved next hop waits in a bounded queue for that
address (RFC 1122 2.3.2.2: keep at least the latest, so a full queue drops its oldest), bounded
in total too.

Every decision bumps one counter in the ``Stats`` block for this layer (``eth_*``, ``arp_*``,
``nd_*``);
the TAP link shares them with the host's ``Stats`` once a stack starts on it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ustack.tcp.stats import Stats
from ustack.wire import addr, arp, ethernet, ipv6, nd
from ustack.wire.errors import ParseError
from ustack.wire.ipv4 import OFF_DST

# RFC 4861 10 REACHABLE_TIME, which Linux's ARP uses as well (base_reachable_time_ms 30000).
REACHABLE_TIME = 30.0
# RFC 4861 10 RETRANS_TIMER; Linux's retrans_time_ms 1000: requests and probes 1 s apart.
RETRANS_TIME = 1.0
# RFC 4861 10 MAX_MULTICAST_SOLICIT; Linux's mcast_solicit 3: broadcast requests before giving up.
MAX_REQUESTS = 3
# RFC 4861 10 MAX_UNICAST_SOLICIT; Linux's ucast_solicit 3: unicast probes of a STALE entry.
MAX_PROBES = 3
# Linux's gc_stale_time: a STALE entry unused for this long is forgotten.
STALE_TIME = 60.0
# Entries in the cache (Linux's gc_thresh3 is 1024; a TAP link has one neighbour).
MAX_ENTRIES = 256
# Packets waiting per unresolved address; RFC 1122 2.3.2.2 asks for at least one (the latest),
# Linux queued 3 before it counted bytes (unres_qlen).
QUEUE_PER_ADDRESS = 3
QUEUE_TOTAL = 64  # packets waiting for all unresolved addresses together
# RFC 5227 1.1: ANNOUNCE_NUM announcements, ANNOUNCE_INTERVAL seconds apart.
ANNOUNCE_NUM = 2
ANNOUNCE_INTERVAL = 2.0

_IPV4_MIN_HEADER = 20
_VERSION_4 = 4
_VERSION_6 = 6
_LIMITED_BROADCAST = 0xFFFFFFFF
_MULTICAST_PREFIX = 0xE0000000  # 224.0.0.0/4 (RFC 5771)
_MULTICAST_MASK = 0xF0000000
_LOOPBACK_PREFIX = 0x7F000000  # 127.0.0.0/8
_LOOPBACK_MASK = 0xFF000000
_ICMPV6_TYPE_AT = ipv6.HEADER_LEN  # an ND message right behind the fixed header
_V6_BITS = 128


class NeighbourState(enum.Enum):
    INCOMPLETE = "INCOMPLETE"
    REACHABLE = "REACHABLE"
    STALE = "STALE"
    PROBE = "PROBE"


@dataclass(slots=True)
class ArpConfig:
    reachable_time: float = REACHABLE_TIME
    retrans_time: float = RETRANS_TIME
    max_requests: int = MAX_REQUESTS
    max_probes: int = MAX_PROBES
    stale_time: float = STALE_TIME
    max_entries: int = MAX_ENTRIES
    queue_per_address: int = QUEUE_PER_ADDRESS
    queue_total: int = QUEUE_TOTAL
    announce_num: int = ANNOUNCE_NUM
    announce_interval: float = ANNOUNCE_INTERVAL

    def __post_init__(self) -> None:
        if not (self.reachable_time > 0 and self.retrans_time > 0 and self.stale_time >= 0):
            raise ValueError("ARP times must be positive")
        if min(self.max_requests, self.max_probes, self.max_entries, self.queue_per_address) < 1:
            raise ValueError("ARP counts and bounds must be at least 1")
        if self.queue_total < self.queue_per_address or self.announce_num < 0:
            raise ValueError("bad ARP queue bound or announcement count")


@dataclass(slots=True)
class Neighbour:
    address: int
    state: NeighbourState
    mac: bytes = ethernet.ZERO_MAC
    header: bytes = b""  # the Ethernet header of an IPv4 packet to it, once the MAC is known
    updated: float = 0.0  # when the state last changed, or the entry was confirmed
    used: float = 0.0  # when a packet was last sent to it
    tries: int = 0  # requests (INCOMPLETE) or probes (PROBE) sent
    pending: deque[bytes] = field(default_factory=deque)


class ArpLayer:
    """Ethernet II and ARP for one interface with MAC ``mac`` and IPv4 address ``address``
    (the core's int), on the subnet ``address/prefixlen`` whose router is ``gateway``."""

    def __init__(
        self,
        mac: bytes,
        address: int,
        *,
        prefixlen: int = 24,
        gateway: int | None = None,
        address6: int | None = None,
        prefixlen6: int = 64,
        gateway6: int | None = None,
        config: ArpConfig | None = None,
        stats: Stats | None = None,
    ) -> None:
        if len(mac) != ethernet.MAC_LEN or ethernet.is_group(mac) or mac == ethernet.ZERO_MAC:
            raise ValueError(f"not a unicast MAC address: {ethernet.mac_to_text(mac)}")
        if not 0 <= prefixlen <= 32 or not 0 <= prefixlen6 <= _V6_BITS:
            raise ValueError(f"bad prefix length {prefixlen} or {prefixlen6}")
        for a6 in (address6, gateway6):
            if a6 is not None and not addr.is_v6(a6):
                raise ValueError("address6 and gateway6 are tagged IPv6 addresses")
        self.mac = bytes(mac)
        self.address = address
        self.config = config if config is not None else ArpConfig()
        self.stats = stats if stats is not None else Stats()
        self._mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
        self._subnet_broadcast = (address & self._mask) | (~self._mask & 0xFFFFFFFF)
        self.gateway = gateway
        # IPv6 (optional): our address, the on-link prefix and the router, all tagged ints;
        # frames to our solicited-node and the all-nodes group MACs are ours too.
        self.address6 = address6
        self.gateway6 = gateway6
        self._mask6 = ((1 << _V6_BITS) - 1) ^ ((1 << (_V6_BITS - prefixlen6)) - 1)
        self._groups: tuple[bytes, ...] = ()
        if address6 is not None:
            self._groups = (
                ethernet.ipv6_multicast_mac(nd.solicited_node(address6)),
                ethernet.ipv6_multicast_mac(nd.ALL_NODES),
            )
        self._cache: dict[int, Neighbour] = {}
        # Addresses with a request or probe out, and when the next one is due.
        self._timers: dict[int, float] = {}
        self._queued = 0  # packets waiting in all pending queues
        self._out: list[bytes] = []
        # The first announcement is due at once: the first on_deadline after start sends it.
        self._announce_at: float | None = 0.0 if self.config.announce_num else None
        self._announced = 0
        self._broadcast_header = ethernet.header(
            ethernet.BROADCAST, self.mac, ethernet.ETHERTYPE_IPV4
        )

    # -- the outside's view --------------------------------------------------------------

    def share_stats(self, stats: Stats) -> None:
        """Count into ``stats`` (the host's) from now on, carrying over what was counted."""
        if stats is self.stats:
            return
        for name, value in self.stats.nonzero().items():
            setattr(stats, name, getattr(stats, name) + value)
        self.stats = stats

    def frames_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        deadline = self._announce_at
        if self._timers:
            first = min(self._timers.values())
            if deadline is None or first < deadline:
                deadline = first
        return deadline

    def neighbours(self, now: float) -> list[dict[str, Any]]:
        """The cache as ``ip neigh`` shows it: address, MAC, state, packets waiting."""
        return [
            {
                "address": addr.to_text(n.address),
                "mac": ethernet.mac_to_text(n.mac) if n.header else None,
                "state": self._state(n, now).value,
                "queued": len(n.pending),
            }
            for n in self._cache.values()
        ]

    def lookup(self, address: int) -> Neighbour | None:
        return self._cache.get(address)

    # -- input -----------------------------------------------------------------------------

    def receive(self, frame: bytes | bytearray | memoryview, now: float) -> memoryview | None:
        """One frame from the link: the IPv4 packet inside it, or None (handled or dropped)."""
        st = self.stats
        st.eth_rx += 1
        try:
            f = ethernet.parse(frame)
        except ParseError as exc:
            if exc.reason == "ethernet_truncated":
                st.eth_truncated += 1
            else:
                st.eth_not_ethernet_ii += 1
            return None
        if f.dst != self.mac and f.dst != ethernet.BROADCAST and f.dst not in self._groups:
            st.eth_not_for_us += 1
            return None
        if ethernet.is_group(f.src) or f.src == self.mac:
            st.eth_bad_source += 1
            return None
        kind = f.ethertype
        if kind == ethernet.ETHERTYPE_IPV4:
            return f.payload
        if kind == ethernet.ETHERTYPE_ARP:
            self._receive_arp(f.payload, now)
        elif kind == ethernet.ETHERTYPE_IPV6:
            if self.address6 is None:
                st.eth_ipv6_unsupported += 1
                return None
            p = f.payload
            if (
                len(p) > _ICMPV6_TYPE_AT
                and p[ipv6.OFF_NEXT_HEADER] == ipv6.PROTO_ICMPV6
                and p[_ICMPV6_TYPE_AT] in (nd.NEIGHBOR_SOLICITATION, nd.NEIGHBOR_ADVERTISEMENT)
            ):
                self._receive_nd(p, f.src, now)
                return None
            return p
        else:
            st.eth_unknown_type += 1
        return None

    def _receive_arp(self, data: memoryview, now: float) -> None:
        st = self.stats
        st.arp_rx += 1
        try:
            pkt = arp.parse(data)
        except ParseError as exc:
            name = exc.reason if hasattr(st, exc.reason) else "arp_malformed"
            setattr(st, name, getattr(st, name) + 1)
            return
        spa = pkt.spa
        if ethernet.is_group(pkt.sha) or pkt.sha == ethernet.ZERO_MAC or not _host_address(spa):
            st.arp_bad_sender += 1
            return
        if spa == self.address:
            # RFC 5227 2.4: another interface claims our address. Never learn it (that would
            # send our own packets to it); count it so an operator can see the conflict.
            st.arp_conflict += 1
            return
        for_us = pkt.tpa == self.address
        # RFC 826: "If the pair <protocol type, sender protocol address> is already in my
        # translation table, update the sender hardware address field of the entry with the
        # new information in the packet and set Merge_flag to true."
        merged = False
        if spa != arp.UNSPECIFIED:
            entry = self._cache.get(spa)
            if entry is not None:
                merged = True
                st.arp_merged += 1
                self._confirm(entry, pkt.sha, now, reachable=for_us)
        if not for_us:
            st.arp_other_target += 1
            return
        # "?Am I the target protocol address? Yes: If Merge_flag is false, add the triplet
        # <protocol type, sender protocol address, sender hardware address> to the table."
        # A probe's sender has no address yet: nothing to add (RFC 5227 2.1.1).
        if not merged and spa != arp.UNSPECIFIED:
            entry = self._new_entry(spa, now)
            if entry is not None:
                st.arp_learned += 1
                self._confirm(entry, pkt.sha, now, reachable=True)
        if pkt.op == arp.OP_REQUEST:
            # "Swap hardware and protocol fields, putting the local hardware and protocol
            # addresses in the sender fields. Set the ar$op field to ares_op$REPLY. Send the
            # packet to the (new) target hardware address."
            if pkt.is_probe:
                st.arp_probes_answered += 1
            else:
                st.arp_requests_answered += 1
            self._send_arp(arp.OP_REPLY, pkt.sha, pkt.sha, spa)
        else:
            st.arp_replies_received += 1

    def _receive_nd(self, packet: memoryview, src_mac: bytes, now: float) -> None:
        """A Neighbor Solicitation or Advertisement (RFC 4861 7.2), validated per 7.1."""
        st = self.stats
        st.nd_rx += 1
        try:
            ip = ipv6.parse(packet)
            if ip.proto != ipv6.PROTO_ICMPV6 or ip.is_fragment:
                raise ParseError("nd_malformed")
            msg = nd.parse(ip.payload, ip.src, ip.dst, ip.hop_limit)
        except ParseError as exc:
            name = exc.reason if exc.reason.startswith("nd_") and hasattr(st, exc.reason) else ""
            name = name or "nd_malformed"
            setattr(st, name, getattr(st, name) + 1)
            return
        assert self.address6 is not None
        target = addr.tag6(msg.target)
        if msg.type == nd.NEIGHBOR_SOLICITATION:
            if target != self.address6:
                st.nd_ns_other_target += 1
                return
            if ip.src == 0:
                # RFC 4862 5.4.3: another node's duplicate address detection for our address;
                # RFC 4861 7.2.4: the answer goes to all-nodes, unsolicited.
                st.nd_dad_answered += 1
                self._send_nd(
                    ethernet.ipv6_multicast_mac(nd.ALL_NODES), addr.tag6(nd.ALL_NODES),
                    self.address6, solicit=False,
                )  # fmt: skip
                return
            source = addr.tag6(ip.src)
            given = msg.lladdr is not None and not ethernet.is_group(msg.lladdr)
            mac = msg.lladdr if given and msg.lladdr is not None else src_mac
            if given:
                # RFC 4861 7.2.3: create the sender's entry STALE, or update it (STALE if the
                # address changed); a solicitation proves nothing about reachability.
                entry = self._cache.get(source)
                if entry is not None:
                    st.nd_merged += 1
                    self._confirm(entry, mac, now, reachable=False)
                else:
                    entry = self._new_entry(source, now)
                    if entry is not None:
                        st.nd_learned += 1
                        self._confirm(entry, mac, now, reachable=False)
            # RFC 4861 7.2.4: answer to the solicitation's source, Solicited and Override set.
            st.nd_ns_answered += 1
            self._send_nd(mac, source, self.address6, solicit=False, solicited=True)
            return
        if target == self.address6:
            st.nd_conflict += 1  # someone advertises our address (RFC 4862 5.4.4)
            return
        entry = self._cache.get(target)
        if entry is None:
            # RFC 4861 7.2.5: "If no entry exists, the advertisement SHOULD be silently
            # discarded."
            st.nd_na_unsolicited += 1
            return
        mac = msg.lladdr if msg.lladdr is not None else entry.mac
        if not entry.header and msg.lladdr is None:
            st.nd_na_no_lladdr += 1
            return
        if entry.header and not msg.override and mac != entry.mac:
            # 7.2.5: Override clear and a different address: keep ours (a STALE at most).
            st.nd_na_ignored += 1
            if entry.state is NeighbourState.REACHABLE:
                entry.state = NeighbourState.STALE
            return
        st.nd_na_received += 1
        self._confirm(entry, mac, now, reachable=msg.solicited)

    def _confirm(self, entry: Neighbour, mac: bytes, now: float, *, reachable: bool) -> None:
        """New information about ``entry``'s hardware address: reachable if the packet was
        addressed to us, else only the address is updated (STALE if it changed, as Linux)."""
        if mac != entry.mac or not entry.header:
            entry.mac = mac
            kind = ethernet.ETHERTYPE_IPV6 if addr.is_v6(entry.address) else ethernet.ETHERTYPE_IPV4
            entry.header = ethernet.header(mac, self.mac, kind)
            if not reachable:
                entry.state = NeighbourState.STALE
                entry.updated = now
        if reachable:
            entry.state = NeighbourState.REACHABLE
            entry.updated = now
        if entry.state is not NeighbourState.INCOMPLETE and entry.state is not NeighbourState.PROBE:
            self._timers.pop(entry.address, None)
            entry.tries = 0
        self._release(entry)

    def _release(self, entry: Neighbour) -> None:
        """Send what waited for ``entry``'s address, oldest first."""
        if not entry.pending:
            return
        header = entry.header
        out = self._out
        n = len(entry.pending)
        while entry.pending:
            out.append(header + entry.pending.popleft())
        self._queued -= n
        self.stats.arp_queue_sent += n

    # -- output ----------------------------------------------------------------------------

    def resolve(self, packet: bytes | bytearray | memoryview, now: float) -> bytes | None:
        """The Ethernet header for IP ``packet``, or None: the packet waits for ARP (a copy is
        kept) or was dropped (counted)."""
        if len(packet) < _IPV4_MIN_HEADER or packet[0] >> 4 != _VERSION_4:
            if len(packet) and packet[0] >> 4 == _VERSION_6:
                return self._resolve6(packet, now)
            self.stats.eth_tx_malformed += 1
            return None
        dst = int.from_bytes(packet[OFF_DST : OFF_DST + 4], "big")
        entry = self._cache.get(dst)
        # The fast path: a confirmed neighbour, the header prebuilt.
        if (
            entry is not None
            and entry.state is NeighbourState.REACHABLE
            and now - entry.updated < self.config.reachable_time
        ):
            entry.used = now
            return entry.header
        if dst & self._mask != self.address & self._mask:
            if (dst & _MULTICAST_MASK) == _MULTICAST_PREFIX:
                return ethernet.header(
                    ethernet.ipv4_multicast_mac(dst), self.mac, ethernet.ETHERTYPE_IPV4
                )
            if dst == _LIMITED_BROADCAST:
                return self._broadcast_header
            if self.gateway is None:
                self.stats.eth_tx_no_route += 1
                return None
            dst = self.gateway  # off the subnet: the router is the next hop
            entry = self._cache.get(dst)
        elif dst == self._subnet_broadcast:
            return self._broadcast_header
        return self._resolve_slow(dst, entry, packet, now)

    def _resolve6(self, packet: bytes | bytearray | memoryview, now: float) -> bytes | None:
        st = self.stats
        if self.address6 is None:
            st.eth_tx_ipv6_unsupported += 1
            return None
        if len(packet) < ipv6.HEADER_LEN:
            st.eth_tx_malformed += 1
            return None
        dst = addr.tag6(int.from_bytes(packet[ipv6.OFF_DST : ipv6.OFF_DST + 16], "big"))
        entry = self._cache.get(dst)
        if (
            entry is not None
            and entry.state is NeighbourState.REACHABLE
            and now - entry.updated < self.config.reachable_time
        ):
            entry.used = now
            return entry.header
        if nd.is_multicast(dst):
            return ethernet.header(
                ethernet.ipv6_multicast_mac(dst), self.mac, ethernet.ETHERTYPE_IPV6
            )
        if dst & self._mask6 != self.address6 & self._mask6:
            if self.gateway6 is None:
                st.eth_tx_no_route += 1
                return None
            dst = self.gateway6  # off the prefix: the router is the next hop
            entry = self._cache.get(dst)
        return self._resolve_slow(dst, entry, packet, now)

    def _resolve_slow(
        self, hop: int, entry: Neighbour | None, packet: bytes | bytearray | memoryview, now: float
    ) -> bytes | None:
        st = self.stats
        if entry is not None:
            state = self._state(entry, now)
            if state is NeighbourState.STALE and now - entry.used >= self.config.stale_time:
                # Unused for gc_stale_time: forget it and resolve afresh.
                st.arp_stale_forgotten += 1
                self._remove(entry)
                entry = None
            elif state is NeighbourState.STALE:
                # RFC 4861 7.3.3 as Linux applies it to ARP: keep sending, and confirm the
                # neighbour with unicast probes (a shortened DELAY: none).
                entry.state = NeighbourState.PROBE
                entry.updated = now
                entry.tries = 1
                st.arp_probes_sent += 1
                self._send_probe(entry)
                self._timers[hop] = now + self.config.retrans_time
            if entry is not None and entry.header:
                entry.used = now
                return entry.header
        if entry is None:
            entry = self._new_entry(hop, now)
            if entry is None:
                st.arp_cache_full += 1
                return None
            entry.tries = 1
            st.arp_requests_sent += 1
            self._send_request(hop)
            self._timers[hop] = now + self.config.retrans_time
        self._enqueue(entry, packet)
        return None

    def _enqueue(self, entry: Neighbour, packet: bytes | bytearray | memoryview) -> None:
        st = self.stats
        cfg = self.config
        if len(entry.pending) >= cfg.queue_per_address:
            # RFC 1122 2.3.2.2: keep the latest; the oldest makes room.
            entry.pending.popleft()
            st.arp_queue_overflow += 1
        elif self._queued >= cfg.queue_total:
            st.arp_queue_total_full += 1
            return
        else:
            self._queued += 1
        entry.pending.append(bytes(packet))  # the host reuses its buffer: keep a copy
        st.arp_queued += 1

    # -- time ------------------------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        cfg = self.config
        if self._announce_at is not None and self._announce_at <= now:
            self._announced += 1
            self.stats.arp_announcements_sent += 1
            self._send_arp(arp.OP_REQUEST, ethernet.BROADCAST, ethernet.ZERO_MAC, self.address)
            self._announce_at = (
                now + cfg.announce_interval if self._announced < cfg.announce_num else None
            )
        due = [a for a, when in self._timers.items() if when <= now]
        for address in due:
            entry = self._cache[address]
            st = self.stats
            if entry.state is NeighbourState.INCOMPLETE:
                if entry.tries < cfg.max_requests:
                    entry.tries += 1
                    st.arp_request_retransmits += 1
                    self._send_request(address)
                    self._timers[address] = now + cfg.retrans_time
                else:
                    # RFC 1122 2.3.2.1's "flood" guard and Linux alike: give up after a few
                    # requests; what waited is dropped (the sender's TCP will retransmit).
                    st.arp_resolution_failed += 1
                    st.arp_unresolved_dropped += len(entry.pending)
                    self._remove(entry)
            elif entry.tries < cfg.max_probes:
                entry.tries += 1
                st.arp_probes_sent += 1
                self._send_probe(entry)
                self._timers[address] = now + cfg.retrans_time
            else:
                st.arp_probe_failed += 1
                self._remove(entry)

    # -- the cache -------------------------------------------------------------------------

    def _state(self, entry: Neighbour, now: float) -> NeighbourState:
        """The entry's state at ``now``: a REACHABLE one turns STALE after reachable_time."""
        if (
            entry.state is NeighbourState.REACHABLE
            and now - entry.updated >= self.config.reachable_time
        ):
            entry.state = NeighbourState.STALE
            self.stats.arp_reachable_expired += 1
        return entry.state

    def _new_entry(self, address: int, now: float) -> Neighbour | None:
        """A new INCOMPLETE entry, evicting the oldest resolved one if the cache is full;
        None if every entry is still being resolved."""
        cache = self._cache
        if len(cache) >= self.config.max_entries:
            victim = next(
                (n for n in cache.values() if n.state is not NeighbourState.INCOMPLETE), None
            )
            if victim is None:
                return None
            self.stats.arp_evicted += 1
            self._remove(victim)
        entry = cache[address] = Neighbour(
            address, NeighbourState.INCOMPLETE, updated=now, used=now
        )
        return entry

    def _remove(self, entry: Neighbour) -> None:
        self._cache.pop(entry.address, None)
        self._timers.pop(entry.address, None)
        self._queued -= len(entry.pending)
        entry.pending.clear()

    def _send_request(self, target: int) -> None:
        """Ask who has ``target``: an ARP request to everyone, or an NS to the target's
        solicited-node group (RFC 4861 7.2.2)."""
        if addr.is_v6(target):
            group = nd.solicited_node(target)
            self._send_nd(ethernet.ipv6_multicast_mac(group), group, target, solicit=True)
        else:
            self._send_arp(arp.OP_REQUEST, ethernet.BROADCAST, ethernet.ZERO_MAC, target)

    def _send_probe(self, entry: Neighbour) -> None:
        """Confirm a STALE neighbour: the same question, unicast to the address we hold."""
        if addr.is_v6(entry.address):
            self._send_nd(entry.mac, entry.address, entry.address, solicit=True)
        else:
            self._send_arp(arp.OP_REQUEST, entry.mac, ethernet.ZERO_MAC, entry.address)

    def _send_nd(
        self, dst_mac: bytes, dst: int, target: int, *, solicit: bool, solicited: bool = False
    ) -> None:
        """An NS or NA from our IPv6 address with our MAC as its link-layer address option."""
        assert self.address6 is not None
        src, dst, target = addr.untag(self.address6), addr.untag(dst), addr.untag(target)
        length = nd.message_len(self.mac)
        buf = bytearray(ethernet.HEADER_LEN + ipv6.HEADER_LEN + length)
        ethernet.emit(buf, 0, dst_mac, self.mac, ethernet.ETHERTYPE_IPV6)
        ipv6.emit(
            buf,
            ethernet.HEADER_LEN,
            src=src,
            dst=dst,
            next_header=ipv6.PROTO_ICMPV6,
            payload_len=length,
            hop_limit=nd.HOP_LIMIT,
        )
        at = ethernet.HEADER_LEN + ipv6.HEADER_LEN
        if solicit:
            nd.emit_solicitation(buf, at, src=src, dst=dst, target=target, lladdr=self.mac)
        else:
            nd.emit_advertisement(
                buf, at, src=src, dst=dst, target=target, lladdr=self.mac, solicited=solicited
            )
        self._out.append(bytes(buf))

    def _send_arp(self, op: int, dst_mac: bytes, tha: bytes, tpa: int) -> None:
        # RFC 894's minimum: 46 octets of data, the 28 of ARP padded with zeros.
        buf = bytearray(ethernet.HEADER_LEN + ethernet.MIN_PAYLOAD)
        ethernet.emit(buf, 0, dst_mac, self.mac, ethernet.ETHERTYPE_ARP)
        arp.emit(buf, ethernet.HEADER_LEN, op=op, sha=self.mac, spa=self.address, tha=tha, tpa=tpa)
        self._out.append(bytes(buf))


def _host_address(address: int) -> bool:
    """Could ``address`` be one interface's? 0.0.0.0 passes (a probe's sender), group and
    loopback addresses do not."""
    return not (
        address == _LIMITED_BROADCAST
        or (address & _MULTICAST_MASK) == _MULTICAST_PREFIX
        or (address & _LOOPBACK_MASK) == _LOOPBACK_PREFIX
    )
