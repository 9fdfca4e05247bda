"""IP reassembly for both families: IPv4 (RFC 791 3.2, RFC 815) and IPv6 (RFC 8200 4.5, RFC 5722,
RFC 6946, RFC 7112), bounded for hostile networks.

Theory of operation. Fragments belong to one datagram when they agree on its identity, which
each family defines: for IPv4 "the combination of source, destination, protocol, and
identification" (RFC 791 3.2); for IPv6 the source, destination and Fragment Identification
(RFC 8200 4.5: the Next Header is not part of it). The key is tagged with the IP version, so an
IPv4 and an IPv6 datagram whose numbers happen to be equal can never mix. Each datagram in
progress keeps its fragments as a list of ``(first, last, data)`` pieces sorted by offset,
``last`` exclusive, and the number of octets it has. Because no two pieces may overlap (below),
the datagram is complete exactly when the final fragment (MF / M clear) has fixed its length and
the octets held add up to it. We chose this over RFC 815's list of hole descriptors because
overlaps are refused rather than merged: with disjoint pieces a count answers "complete?", and
the pieces are simply copied into place behind the first fragment's header. Finding a fragment's
place is a bisection; a neighbour on either side that reaches into it is an overlap. Everything
from here to the bounds is the same machine for both families; only what a fragment looks like
on the wire and how the whole is put together differ.

Overlaps are how fragments attack: a later fragment that rewrites octets an earlier one gave (the
TCP flags or ports: RFC 1858 4), or that tells different receivers different stories. RFC 5722
(for IPv6, and Linux does the same for IPv4) answers by discarding the whole datagram "and any
constituent fragments, including those not yet received", silently; we do that for both. The
record of such a datagram stays, holding no data, until its timeout, so every later fragment of
it is dropped (``*_reasm_discarded``) and the rest can never be reassembled into something else.
A fragment that contradicts the datagram's length (a second final fragment ending elsewhere, or
data beyond the final fragment's end) is the same kind of conflict. An *exact* duplicate of a
piece already held (same offset, same length, same octets) is different: networks duplicate
packets, and a copy cannot change the result, so it is dropped alone (``*_reasm_duplicate``), as
RFC 8200 4.5 allows; anything short of identical is an overlap.

Fragments that no fragmenter produces are dropped alone and counted (``*_reasm_bad_length``): an
empty fragment, and a fragment other than the last whose length is not a multiple of 8 (the
fragment offset counts 8-octet units, so every fragment but the last carries a whole number of
them). A fragment that would make the datagram longer than 65,535 octets -- the "ping of death"
-- drops the datagram like an overlap (``*_reasm_too_long``): it can never be reassembled
legally, and dropping it frees its memory at once.

IPv6 only (RFC 8200 4.5). The *unfragmentable part* is the IPv6 header and the extension headers
in front of the Fragment header; it is taken from the first fragment (offset 0), whose Fragment
header's Next Header goes into the Next Header field of the last unfragmentable header, with the
Payload Length recomputed, and the fragmentable parts follow in order. The host parses the result
again from the top. Three errors are answered, and :meth:`Reassembler.add6` returns what the
host must send as a :class:`ParamProblem` (it has the fragment to quote): a fragment with M set
whose length is not a multiple of 8 (code 0, pointing at the Payload Length); a fragment that
would make the reassembled Payload Length exceed 65,535 (code 0, pointing at its Fragment
Offset); and a first fragment that does not hold the whole header chain up to and including the
upper-layer header (RFC 7112 5: code 3, pointer 0; ``ip6_reasm_incomplete_chain``), which is
dropped alone. The wire parse (``ustack.wire.ipv6``) already raises the first two for what one
fragment shows; the reassembler checks them again so that any record it is given is safe, and
the too-long check here also counts the extension headers in front of the Fragment header, which
become part of the reassembled Payload Length. An atomic fragment (offset 0, M clear) is a whole
packet: it is "reassembled" from itself at once and never touches the table (RFC 6946 4:
processed "in isolation from any other packets/fragments", so it cannot disturb, or be disturbed
by, a datagram in progress with the same identification).

Bounds (:class:`~ustack.stack.config.HostConfig`): every datagram must complete within its
family's timeout of its first fragment to arrive -- ``reasm_timeout`` for IPv4, ``reasm_timeout6``
(RFC 8200 4.5: 60 s) for IPv6 -- a fixed time, as RFC 1122 3.3.2 asks, not one reset by later
fragments; a datagram that does not is discarded (``*_reasm_timeout``) and, if its first fragment
(offset 0) had come, its source is owed a time exceeded, code 1 (RFC 1122 3.3.2, RFC 8200 4.5),
which :meth:`Reassembler.on_deadline` returns: for IPv4 quoting the first fragment's header and 8
octets (RFC 792), for IPv6 the whole first fragment (the ICMPv6 emitter cuts it to the minimum MTU,
RFC 4443 2.4 (c)). Memory is charged per datagram record, per piece and per octet (for IPv6 also
the first fragment's headers, kept for the reassembled packet), one bound for both families:
above ``reasm_max_bytes`` the oldest datagrams of either family are evicted (``*_reasm_evicted``,
counted by the victim's family) to make room, so a flood of partial datagrams cannot lock
reassembly up until it times out. A source with ``reasm_max_per_source`` datagrams in progress
loses its oldest for a new one (``*_reasm_per_source_limit``), so no single source address can
fill the table; sources are family-tagged too.

Counters are per family (``ip_reasm_*`` for IPv4, ``ip6_reasm_*`` for IPv6), as Linux keeps
``ReasmOKs`` in both ``/proc/net/snmp`` and ``/proc/net/snmp6``: which family is being attacked
through fragments, or is losing them, is what an operator needs to see.

Deadlines. Within one family the timeout is fixed and ``now`` never goes backwards, so the order
datagrams began in is also the order of their deadlines. With two timeouts one queue no longer
has that property (an IPv4 datagram begun after an IPv6 one times out before it), so there is one
queue per family: each is in deadline order, the next deadline is the earlier of the two fronts,
and the oldest datagram (the one eviction takes) is whichever front began first. That keeps every
operation O(1), where a heap would cost a logarithm and still need lazy deletion. Datagrams that
leave early are marked gone and skipped at the front; a queue is rebuilt when its gone outnumber
the live.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ustack.stack.config import HostConfig
from ustack.tcp.stats import Stats
from ustack.wire import checksum, icmpv6, ipv4, ipv6, tcp
from ustack.wire.errors import ParseError

# The IP version a datagram's key is tagged with (the header's own Version field).
IPV4: Final = 4
IPV6: Final = 6

Key = tuple[int, int, int, int, int]
"""``(version, src, dst, proto, ident)``: RFC 791's datagram identity for IPv4; for IPv6 RFC 8200
4.5's source, destination and identification, with ``proto`` fixed at :data:`NO_PROTO`."""

# RFC 8200 4.5: an IPv6 fragment's Next Header is not part of its datagram's identity.
NO_PROTO: Final = -1

# What the bound charges besides the data, roughly what Python spends on the objects: a piece
# is a tuple, a bytes object and two ints in a list (so 8-octet fragments cannot hold twenty
# times the bound); a datagram record is its slots object, its list and its dict entries (so
# records that hold no data, like a discarded datagram's, are bounded too).
PIECE_COST: Final = 160
DATAGRAM_COST: Final = 320
# RFC 791 3.1 and RFC 8200 4.5: the fragment offset is in "units of 8 octets".
_FRAGMENT_UNIT = 8
# The first fragment's header plus this much of its data is what ICMP time exceeded quotes.
_QUOTE_DATA = 8
# The largest datagram payload there can be behind the shortest header.
_MAX_PAYLOAD = ipv4.MAX_TOTAL_LEN - ipv4.HEADER_LEN
_HEADER_WORD = struct.Struct("!H")
_FRAGMENT_HEADER_LEN = 8  # RFC 8200 4.5
_OFF_FRAGMENT_OFFSET = 2  # within the Fragment header: RFC 8200 4.5's pointer for "too long"
# RFC 7112 5: the first fragment must hold the upper-layer header itself, as far as we know its
# length: TCP's fixed header (RFC 9293 3.1), UDP's (RFC 768), ICMPv6's type, code, checksum and
# the 32-bit word every message has (RFC 4443 2.1); Linux asks the same. For any other protocol
# reaching its first octet is all we can check.
_UPPER_HEADER_LEN: Final = {
    ipv6.PROTO_TCP: tcp.HEADER_LEN,
    ipv6.PROTO_UDP: 8,
    ipv6.PROTO_ICMPV6: icmpv6.HEADER_LEN,
}
_COUNTER_PREFIX: Final = {IPV4: "ip_reasm_", IPV6: "ip6_reasm_"}


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A datagram that timed out after its first fragment came: RFC 1122 3.3.2 (RFC 8200 4.5 for
    IPv6) wants a time exceeded (code 1) to ``src`` from ``dst``, quoting ``first``: for IPv4 the
    first fragment's header and 8 octets, for IPv6 the whole first fragment. ``version`` says
    which ICMP to send."""

    src: int
    dst: int
    first: bytes
    version: int = IPV4


@dataclass(frozen=True, slots=True)
class ParamProblem:
    """An ICMPv6 Parameter Problem the host should send to the fragment's source, quoting the
    fragment it gave to :meth:`Reassembler.add6` (RFC 8200 4.5, RFC 7112 5). ``pointer`` is the
    octet offset of the offending field in that fragment."""

    code: int
    pointer: int


class _Datagram:
    """One datagram in reassembly."""

    __slots__ = (
        "alive",
        "began",
        "charged",
        "deadline",
        "discarded",
        "end",
        "first",
        "frag6",
        "have",
        "key",
        "pieces",
    )

    def __init__(self, key: Key, began: float, deadline: float) -> None:
        self.key = key
        self.began = began
        self.deadline = deadline
        self.alive = True  # False once it left the table (its queue slot is stale)
        # Sorted by first octet: (first, last exclusive, data). Emptied when discarded.
        self.pieces: list[tuple[int, int, bytes]] = []
        self.have = 0  # octets held
        self.end: int | None = None  # the datagram's payload length, once the last fragment came
        # The offset-0 fragment's header: for IPv4 with its first 8 octets; for IPv6 the headers
        # up to and including the Fragment header (its data is pieces[0]).
        self.first: bytes | None = None
        self.frag6: ipv6.Fragment | None = None  # IPv6: the offset-0 fragment's Fragment header
        self.charged = DATAGRAM_COST
        self.discarded = False  # dropped (overlap, too long): its fragments now drop too


class Reassembler:
    """Sans-IO IPv4 and IPv6 reassembly; see the module docstring. Counts into the host's
    ``stats``."""

    def __init__(self, config: HostConfig, stats: Stats) -> None:
        self.timeout = config.reasm_timeout
        self.timeout6 = config.reasm_timeout6
        self.max_bytes = config.reasm_max_bytes
        self.max_per_source = config.reasm_max_per_source
        self.stats = stats
        self._timeouts = {IPV4: self.timeout, IPV6: self.timeout6}
        self._table: dict[Key, _Datagram] = {}
        # Per family, the same datagrams oldest (= soonest deadline) first, plus stale slots of
        # ones gone (``alive`` False).
        self._queues: dict[int, deque[_Datagram]] = {IPV4: deque(), IPV6: deque()}
        # Per (version, source), its datagrams' keys oldest first (insertion-ordered dict, not
        # a set).
        self._by_source: dict[tuple[int, int], dict[Key, None]] = {}
        self.charged = 0  # memory charged, against max_bytes

    def __len__(self) -> int:
        return len(self._table)

    def add(self, pkt: ipv4.IPv4Packet, header: bytes | memoryview, now: float) -> bytearray | None:
        """Take one IPv4 fragment (``header`` is its IP header as received, options included);
        return the whole datagram, header fixed, once this fragment completes it."""
        stats = self.stats
        stats.ip_reasm_fragments += 1
        data = pkt.payload
        n = len(data)
        final = not pkt.more_fragments
        if n == 0 or (not final and n % _FRAGMENT_UNIT):
            stats.ip_reasm_bad_length += 1
            return None
        first = pkt.frag_offset
        last = first + n
        key = (IPV4, pkt.src, pkt.dst, pkt.proto, pkt.ident)
        dg = self._table.get(key)
        if dg is None:
            dg = self._begin(key, now)
        elif dg.discarded:
            stats.ip_reasm_discarded += 1
            return None
        if last > _MAX_PAYLOAD:
            stats.ip_reasm_too_long += 1
            self._discard(dg)
            return None
        if not self._place(dg, first, data, final, 0):
            return None
        if first == 0:
            dg.first = bytes(header) + bytes(data[:_QUOTE_DATA])
        if dg.end is not None and dg.have == dg.end and dg.first is not None:
            return self._complete(dg)
        return None

    def add6(
        self, packet: bytes | bytearray | memoryview, pkt: ipv6.IPv6Packet, now: float
    ) -> bytearray | ParamProblem | None:
        """Take one IPv6 packet with a Fragment header (``packet`` as received, ``pkt`` its
        parse). Return the reassembled packet once this fragment completes it (an atomic
        fragment at once), for the host to parse again from the top; or the Parameter Problem
        the host should answer this fragment with; or None (held, or dropped and counted)."""
        frag = pkt.fragment
        if frag is None:
            raise ValueError("add6 takes a packet with a Fragment header")
        mv = memoryview(packet)[: ipv6.HEADER_LEN + pkt.payload_length]
        start = frag.header_offset + _FRAGMENT_HEADER_LEN
        data = mv[start:]
        stats = self.stats
        if frag.atomic:
            # RFC 6946 4: "processed in isolation", so never looked up in or added to the table.
            stats.ip6_reasm_atomic += 1
            return _join6(mv[: frag.header_offset], frag, [(0, len(data), data)], len(data))
        stats.ip6_reasm_fragments += 1
        n = len(data)
        first = frag.offset
        last = first + n
        if frag.more and n % _FRAGMENT_UNIT:
            # RFC 8200 4.5: "the fragment must be discarded and an ICMP Parameter Problem, Code
            # 0, message should be sent ... pointing to the Payload Length field".
            stats.ip6_reasm_bad_length += 1
            return ParamProblem(icmpv6.ERRONEOUS_FIELD, ipv6.OFF_PAYLOAD_LENGTH)
        if n == 0:
            stats.ip6_reasm_bad_length += 1
            return None
        if first == 0 and not _holds_header_chain(mv):
            # RFC 7112 5: "SHOULD discard the packet and MAY send an ICMPv6 error message ...
            # with code 3 ... The Pointer field ... MUST be set to zero".
            stats.ip6_reasm_incomplete_chain += 1
            return ParamProblem(icmpv6.INCOMPLETE_HEADER_CHAIN, 0)
        key = (IPV6, pkt.src, pkt.dst, NO_PROTO, frag.ident)
        dg = self._table.get(key)
        if dg is None:
            dg = self._begin(key, now)
        elif dg.discarded:
            stats.ip6_reasm_discarded += 1
            return None
        # The reassembled Payload Length is the extension headers in front of the Fragment
        # header plus the fragmentable part; RFC 8200 4.5 judges each fragment by its own.
        if frag.header_offset - ipv6.HEADER_LEN + last > ipv6.MAX_PAYLOAD_LEN:
            stats.ip6_reasm_too_long += 1
            self._discard(dg)
            return ParamProblem(icmpv6.ERRONEOUS_FIELD, frag.header_offset + _OFF_FRAGMENT_OFFSET)
        head = mv[:start] if first == 0 else None
        if not self._place(dg, first, data, not frag.more, 0 if head is None else len(head)):
            return None
        if head is not None:
            dg.first = bytes(head)
            dg.frag6 = frag
        if dg.end is not None and dg.have == dg.end and dg.first is not None:
            return self._complete6(dg)
        return None

    def next_deadline(self) -> float | None:
        """When the datagram in reassembly that times out first does."""
        front = self._soonest()
        return front.deadline if front is not None else None

    def on_deadline(self, now: float) -> list[TimedOut]:
        """Discard every datagram past its timeout; return those owed a time exceeded, in the
        order their deadlines fell."""
        owed: list[TimedOut] = []
        while (dg := self._soonest()) is not None and dg.deadline <= now:
            first, pieces = dg.first, dg.pieces
            self._remove(dg)
            if dg.discarded:
                continue  # already counted when it was dropped
            version, src, dst, _proto, _ident = dg.key
            self._count(version, "timeout")
            if first is None:
                continue
            if version == IPV6:
                # The whole first fragment as it came: its headers, then its data (pieces[0]).
                first += pieces[0][2]
            owed.append(TimedOut(src, dst, first, version))
        return owed

    # -- internals ------------------------------------------------------------------------

    def _count(self, version: int, what: str) -> None:
        """Bump the family's ``*_reasm_<what>`` counter (for the paths both families share)."""
        name = _COUNTER_PREFIX[version] + what
        setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _begin(self, key: Key, now: float) -> _Datagram:
        version = key[0]
        source = (version, key[1])
        mine = self._by_source.get(source)
        if mine is not None and len(mine) >= self.max_per_source:
            self._count(version, "per_source_limit")
            self._remove(self._table[next(iter(mine))])
        self._make_room(DATAGRAM_COST, None)
        mine = self._by_source.get(source)  # the source's last datagram may have just gone
        if mine is None:
            mine = self._by_source[source] = {}
        dg = _Datagram(key, now, now + self._timeouts[version])
        self._table[key] = dg
        self._queues[version].append(dg)
        mine[key] = None
        self.charged += dg.charged
        return dg

    def _place(
        self, dg: _Datagram, first: int, data: bytes | memoryview, final: bool, extra: int
    ) -> bool:
        """Put the fragment's ``data`` at octet ``first`` of ``dg``, charging ``extra`` more
        octets kept beside it; False if it was dropped instead (counted, and for a conflict
        the datagram discarded)."""
        version = dg.key[0]
        n = len(data)
        last = first + n
        end = dg.end
        pieces = dg.pieces
        if final:
            # The final fragment fixes the length; nothing held may lie beyond it, and another
            # final fragment must have said the same.
            if (end is not None and end != last) or (pieces and pieces[-1][1] > last):
                self._count(version, "overlap")
                self._discard(dg)
                return False
        elif end is not None and last > end:
            self._count(version, "overlap")
            self._discard(dg)
            return False
        i = bisect_left(pieces, first, key=_first_octet)
        if i < len(pieces):
            p_first, p_last, p_data = pieces[i]
            if p_first == first and p_last == last and p_data == data:
                self._count(version, "duplicate")
                return False
            if p_first < last:
                self._count(version, "overlap")
                self._discard(dg)
                return False
        if i > 0 and pieces[i - 1][1] > first:
            self._count(version, "overlap")
            self._discard(dg)
            return False
        cost = n + PIECE_COST + extra
        if not self._make_room(cost, dg):
            return False
        pieces.insert(i, (first, last, bytes(data)))
        dg.have += n
        dg.charged += cost
        self.charged += cost
        if final:
            dg.end = last
        return True

    def _make_room(self, cost: int, keep: _Datagram | None) -> bool:
        """Evict the oldest datagrams other than ``keep`` until ``cost`` more fits the bound;
        if even ``keep`` alone cannot have it, ``keep`` goes too (and False)."""
        while self.charged + cost > self.max_bytes:
            victim = self._oldest(keep)
            if victim is None:
                if keep is not None:
                    self._count(keep.key[0], "evicted")
                    self._remove(keep)
                return False
            self._count(victim.key[0], "evicted")
            self._remove(victim)
        return True

    def _discard(self, dg: _Datagram) -> None:
        """Drop the datagram's data but keep its record until its timeout (module docstring)."""
        dg.discarded = True
        freed = dg.charged - DATAGRAM_COST
        dg.charged = DATAGRAM_COST
        self.charged -= freed
        dg.pieces = []
        dg.first = None

    def _complete(self, dg: _Datagram) -> bytearray | None:
        first = dg.first
        end = dg.end
        assert first is not None and end is not None
        hlen = len(first) - _QUOTE_DATA
        if hlen + end > ipv4.MAX_TOTAL_LEN:
            # Only the first fragment's header (longer with options) tells the total apart.
            self.stats.ip_reasm_too_long += 1
            self._discard(dg)
            return None
        whole = bytearray(hlen + end)
        whole[:hlen] = first[:hlen]
        # RFC 791 3.2: the reassembled datagram has the first fragment's header, with the total
        # length of the whole and no MF or offset (DF is kept as the sender set it).
        _HEADER_WORD.pack_into(whole, ipv4.OFF_TOTAL_LENGTH, hlen + end)
        flags = _HEADER_WORD.unpack_from(first, ipv4.OFF_FLAGS_FRAGMENT)[0] & ipv4.FLAG_DF
        _HEADER_WORD.pack_into(whole, ipv4.OFF_FLAGS_FRAGMENT, flags)
        _HEADER_WORD.pack_into(whole, ipv4.OFF_CHECKSUM, 0)
        _HEADER_WORD.pack_into(
            whole, ipv4.OFF_CHECKSUM, checksum.internet_checksum(memoryview(whole)[:hlen])
        )
        for p_first, p_last, data in dg.pieces:
            whole[hlen + p_first : hlen + p_last] = data
        self._remove(dg)
        self.stats.ip_reasm_ok += 1
        return whole

    def _complete6(self, dg: _Datagram) -> bytearray | None:
        first, frag, end = dg.first, dg.frag6, dg.end
        assert first is not None and frag is not None and end is not None
        if frag.header_offset - ipv6.HEADER_LEN + end > ipv6.MAX_PAYLOAD_LEN:
            # Each fragment passed with its own headers; the first fragment's, which the whole
            # takes, are longer. No fragment is to blame, so nothing is sent (as Linux).
            self.stats.ip6_reasm_too_long += 1
            self._discard(dg)
            return None
        whole = _join6(memoryview(first)[: frag.header_offset], frag, dg.pieces, end)
        self._remove(dg)
        self.stats.ip6_reasm_ok += 1
        return whole

    def _remove(self, dg: _Datagram) -> None:
        """Take ``dg`` out of the table and its source's list; its queue slot goes stale."""
        if not dg.alive:
            return
        dg.alive = False
        del self._table[dg.key]
        source = (dg.key[0], dg.key[1])
        mine = self._by_source[source]
        del mine[dg.key]
        if not mine:
            del self._by_source[source]
        self.charged -= dg.charged
        dg.pieces = []
        queues = self._queues
        queue = queues[dg.key[0]]
        if len(queue) > 2 * len(self._table) + 64:
            # Too many stale slots (datagrams completed or evicted out of order): rebuild.
            queues[dg.key[0]] = deque(d for d in queue if d.alive)

    def _front(self, version: int) -> _Datagram | None:
        """The family's oldest datagram still in reassembly, dropping stale slots on the way."""
        queue = self._queues[version]
        while queue:
            dg = queue[0]
            if dg.alive:
                return dg
            queue.popleft()
        return None

    def _soonest(self) -> _Datagram | None:
        """The datagram whose deadline comes first: the earlier of the two fronts."""
        v4, v6 = self._front(IPV4), self._front(IPV6)
        if v4 is None or (v6 is not None and v6.deadline < v4.deadline):
            return v6
        return v4

    def _oldest(self, keep: _Datagram | None) -> _Datagram | None:
        """The datagram that began first, ``keep`` aside: the earlier-begun of the two fronts."""
        best: _Datagram | None = None
        for version in (IPV4, IPV6):
            dg = self._front(version)
            if dg is not None and dg is keep:
                dg = next((d for d in self._queues[version] if d.alive and d is not keep), None)
            if dg is not None and (best is None or dg.began < best.began):
                best = dg
        return best


def _join6(
    unfragmentable: memoryview,
    frag: ipv6.Fragment,
    pieces: Sequence[tuple[int, int, bytes | memoryview]],
    end: int,
) -> bytearray:
    """RFC 8200 4.5: the unfragmentable part with the Next Header of its last header set to the
    first fragment's Fragment header's Next Header and the Payload Length recomputed, then the
    fragmentable parts in order."""
    hlen = len(unfragmentable)
    whole = bytearray(hlen + end)
    whole[:hlen] = unfragmentable
    whole[frag.named_at] = frag.next_header
    _HEADER_WORD.pack_into(whole, ipv6.OFF_PAYLOAD_LENGTH, hlen - ipv6.HEADER_LEN + end)
    for p_first, p_last, data in pieces:
        whole[hlen + p_first : hlen + p_last] = data
    return whole


def _holds_header_chain(first: memoryview) -> bool:
    """Whether a first fragment holds the whole header chain (RFC 7112 5): every extension
    header, the Fragment header's followers included, and the upper-layer header."""
    try:
        # Steps over the headers without judging them (as for a quote, bounded by the octets
        # present) and over this fragment's own Fragment header, which has offset 0.
        chain = ipv6.walk_quoted(first)
    except ParseError as e:
        # Only a chain cut short is this fragment's fault here; anything else the walk finds
        # wrong is answered when the reassembled packet is parsed from the top.
        return e.reason != "ipv6_ext_header_truncated"
    if chain.proto == ipv6.NO_NEXT_HEADER:
        return True
    return chain.payload_offset + _UPPER_HEADER_LEN.get(chain.proto, 0) <= len(first)


def _first_octet(piece: tuple[int, int, bytes]) -> int:
    return piece[0]
