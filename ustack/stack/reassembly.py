"""IPv4 reassembly (RFC 791 3.2, RFC 815), bounded for hostile networks.

Theory of operation. Fragments belong to one datagram when they agree on source, destination,
protocol and identification (RFC 791 3.2: "the combination of source, destination, protocol, and
identification"). Each datagram in progress keeps its fragments as a list of ``(first, last,
data)`` pieces sorted by offset, ``last`` exclusive, and the number of octets it has. Because no
two pieces may overlap (below), the datagram is complete exactly when the final fragment (MF
clear) has fixed its length and the octets held add up to it. We chose this over RFC 815's list
of hole descriptors because overlaps are refused rather than merged: with disjoint pieces a count
answers "complete?", and the pieces are simply copied into place behind the first fragment's
header. Finding a fragment's place is a bisection; a neighbour on either side that reaches into
it is an overlap.

Overlaps are how fragments attack: a later fragment that rewrites octets an earlier one gave (the
TCP flags or ports: RFC 1858 4), or that tells different receivers different stories. RFC 5722
(for IPv6, and Linux does the same for IPv4) answers by discarding the whole datagram "and any
constituent fragments, including those not yet received"; we do that for IPv4 too. The record of
such a datagram stays, holding no data, until its timeout, so every later fragment of it is
dropped (``ip_reasm_discarded``) and the rest can never be reassembled into something else. A
fragment that contradicts the datagram's length (a second final fragment ending elsewhere, or
data beyond the final fragment's end) is the same kind of conflict. An *exact* duplicate of a
piece already held (same offset, same length, same octets) is different: networks duplicate
packets, and a copy cannot change the result, so it is dropped alone (``ip_reasm_duplicate``), as
RFC 8200 4.5 allows for IPv6; anything short of identical is an overlap.

Fragments that no fragmenter produces are dropped alone and counted (``ip_reasm_bad_length``): an
empty fragment, and a fragment other than the last whose length is not a multiple of 8 (RFC 791:
the fragment offset counts 8-octet units, so every fragment but the last carries a whole number
of them). A fragment that would make the datagram longer than 65,535 octets -- the "ping of
death" -- drops the datagram like an overlap (``ip_reasm_too_long``).

Bounds (:class:`~ustack.stack.config.HostConfig`): every datagram must complete within
``reasm_timeout`` of its first fragment to arrive (a fixed time, as RFC 1122 3.3.2 asks, not one
reset by later fragments); a datagram that does not is discarded (``ip_reasm_timeout``) and, if its
first fragment (offset 0) had come, its source gets an ICMP time exceeded, code 1, quoting that
fragment's IP header and first 8 octets (RFC 792, RFC 1122 3.3.2) -- :meth:`on_deadline` returns
those. Memory is charged per datagram record, per piece and per octet, and above
``reasm_max_bytes`` the oldest datagrams are evicted (``ip_reasm_evicted``) to make room, so a
flood of partial datagrams cannot lock reassembly up until it times out. A source with
``reasm_max_per_source`` datagrams in progress loses its oldest for a new one
(``ip_reasm_per_source_limit``), so no single source address can fill the table.

Datagrams are kept in the order they began, which is also the order of their deadlines (the
timeout is fixed and ``now`` never goes backwards), so the next deadline and the oldest datagram
are both at the front of one queue; datagrams that leave early are marked gone and skipped there,
and the queue is rebuilt when the gone outnumber the live.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from typing import Final

from ustack.stack.config import HostConfig
from ustack.tcp.stats import Stats
from ustack.wire import checksum, ipv4

Key = tuple[int, int, int, int]
"""``(src, dst, proto, ident)``: RFC 791's datagram identity."""

# What the bound charges besides the data, roughly what Python spends on the objects: a piece
# is a tuple, a bytes object and two ints in a list (so 8-octet fragments cannot hold twenty
# times the bound); a datagram record is its slots object, its list and its dict entries (so
# records that hold no data, like a discarded datagram's, are bounded too).
PIECE_COST: Final = 160
DATAGRAM_COST: Final = 320
# RFC 791 3.1: the fragment offset is "measured in units of 8 octets (64 bits)".
_FRAGMENT_UNIT = 8
# The first fragment's header plus this much of its data is what ICMP time exceeded quotes.
_QUOTE_DATA = 8
# The largest datagram payload there can be behind the shortest header.
_MAX_PAYLOAD = ipv4.MAX_TOTAL_LEN - ipv4.HEADER_LEN
_HEADER_WORD = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A datagram that timed out after its first fragment came: RFC 1122 3.3.2 wants an ICMP
    time exceeded (code 1) to ``src`` from ``dst``, quoting ``first`` (header + 8 octets)."""

    src: int
    dst: int
    first: bytes


class _Datagram:
    """One datagram in reassembly."""

    __slots__ = (
        "alive",
        "charged",
        "deadline",
        "discarded",
        "end",
        "first",
        "have",
        "key",
        "pieces",
    )

    def __init__(self, key: Key, deadline: float) -> None:
        self.key = key
        self.deadline = deadline
        self.alive = True  # False once it left the table (its queue slot is stale)
        # Sorted by first octet: (first, last exclusive, data). Emptied when discarded.
        self.pieces: list[tuple[int, int, bytes]] = []
        self.have = 0  # octets held
        self.end: int | None = None  # the datagram's payload length, once the last fragment came
        self.first: bytes | None = None  # the offset-0 fragment's header and first 8 octets
        self.charged = DATAGRAM_COST
        self.discarded = False  # dropped (overlap, too long): its fragments now drop too


class Reassembler:
    """Sans-IO IPv4 reassembly; see the module docstring. Counts into the host's ``stats``."""

    def __init__(self, config: HostConfig, stats: Stats) -> None:
        self.timeout = config.reasm_timeout
        self.max_bytes = config.reasm_max_bytes
        self.max_per_source = config.reasm_max_per_source
        self.stats = stats
        self._table: dict[Key, _Datagram] = {}
        # The same datagrams, oldest first, plus stale slots of ones gone (``alive`` False).
        self._queue: deque[_Datagram] = deque()
        # Per source, its datagrams' keys oldest first (insertion-ordered dict, not a set).
        self._by_source: dict[int, dict[Key, None]] = {}
        self.charged = 0  # memory charged, against max_bytes

    def __len__(self) -> int:
        return len(self._table)

    def add(self, pkt: ipv4.IPv4Packet, header: bytes | memoryview, now: float) -> bytearray | None:
        """Take one fragment (``header`` is its IP header as received, options included);
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
        key = (pkt.src, pkt.dst, pkt.proto, pkt.ident)
        dg = self._table.get(key)
        if dg is None:
            dg = self._begin(key, pkt.src, now)
        elif dg.discarded:
            stats.ip_reasm_discarded += 1
            return None
        if last > _MAX_PAYLOAD:
            stats.ip_reasm_too_long += 1
            self._discard(dg)
            return None
        end = dg.end
        pieces = dg.pieces
        if final:
            # The final fragment fixes the length; nothing held may lie beyond it, and another
            # final fragment must have said the same.
            if (end is not None and end != last) or (pieces and pieces[-1][1] > last):
                stats.ip_reasm_overlap += 1
                self._discard(dg)
                return None
        elif end is not None and last > end:
            stats.ip_reasm_overlap += 1
            self._discard(dg)
            return None
        i = bisect_left(pieces, first, key=_first_octet)
        if i < len(pieces):
            p_first, p_last, p_data = pieces[i]
            if p_first == first and p_last == last and p_data == data:
                stats.ip_reasm_duplicate += 1
                return None
            if p_first < last:
                stats.ip_reasm_overlap += 1
                self._discard(dg)
                return None
        if i > 0 and pieces[i - 1][1] > first:
            stats.ip_reasm_overlap += 1
            self._discard(dg)
            return None
        cost = n + PIECE_COST
        if not self._make_room(cost, dg):
            return None
        pieces.insert(i, (first, last, bytes(data)))
        dg.have += n
        dg.charged += cost
        self.charged += cost
        if final:
            dg.end = last
        if first == 0:
            dg.first = bytes(header) + bytes(data[:_QUOTE_DATA])
        if dg.end is not None and dg.have == dg.end and dg.first is not None:
            return self._complete(dg)
        return None

    def next_deadline(self) -> float | None:
        """When the oldest datagram in reassembly times out."""
        front = self._front()
        return front.deadline if front is not None else None

    def on_deadline(self, now: float) -> list[TimedOut]:
        """Discard every datagram past its timeout; return those owed an ICMP time exceeded."""
        owed: list[TimedOut] = []
        stats = self.stats
        while (dg := self._front()) is not None and dg.deadline <= now:
            self._remove(dg)
            if dg.discarded:
                continue  # already counted when it was dropped
            stats.ip_reasm_timeout += 1
            if dg.first is not None:
                src, dst, _proto, _ident = dg.key
                owed.append(TimedOut(src, dst, dg.first))
        return owed

    # -- internals ------------------------------------------------------------------------

    def _begin(self, key: Key, src: int, now: float) -> _Datagram:
        mine = self._by_source.get(src)
        if mine is not None and len(mine) >= self.max_per_source:
            self.stats.ip_reasm_per_source_limit += 1
            self._remove(self._table[next(iter(mine))])
        self._make_room(DATAGRAM_COST, None)
        mine = self._by_source.get(src)  # the source's last datagram may have just gone
        if mine is None:
            mine = self._by_source[src] = {}
        dg = _Datagram(key, now + self.timeout)
        self._table[key] = dg
        self._queue.append(dg)
        mine[key] = None
        self.charged += dg.charged
        return dg

    def _make_room(self, cost: int, keep: _Datagram | None) -> bool:
        """Evict the oldest datagrams other than ``keep`` until ``cost`` more fits the bound;
        if even ``keep`` alone cannot have it, ``keep`` goes too (and False)."""
        while self.charged + cost > self.max_bytes:
            victim = self._front()
            if victim is not None and victim is keep:
                victim = next((d for d in self._queue if d.alive and d is not keep), None)
            if victim is None:
                if keep is not None:
                    self.stats.ip_reasm_evicted += 1
                    self._remove(keep)
                return False
            self.stats.ip_reasm_evicted += 1
            self._remove(victim)
        return True

    def _discard(self, dg: _Datagram) -> None:
        """Drop the datagram's data but keep its record until its timeout (module docstring)."""
        dg.discarded = True
        freed = dg.charged - DATAGRAM_COST
        dg.charged = DATAGRAM_COST
        self.charged -= freed
        dg.pieces = []

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

    def _remove(self, dg: _Datagram) -> None:
        """Take ``dg`` out of the table and its source's list; its queue slot goes stale."""
        if not dg.alive:
            return
        dg.alive = False
        del self._table[dg.key]
        src = dg.key[0]
        mine = self._by_source[src]
        del mine[dg.key]
        if not mine:
            del self._by_source[src]
        self.charged -= dg.charged
        dg.pieces = []
        queue = self._queue
        if len(queue) > 2 * len(self._table) + 64:
            # Too many stale slots (datagrams completed or evicted out of order): rebuild.
            self._queue = deque(d for d in queue if d.alive)

    def _front(self) -> _Datagram | None:
        """The oldest datagram still in reassembly, dropping stale slots on the way."""
        queue = self._queue
        while queue:
            dg = queue[0]
            if dg.alive:
                return dg
            queue.popleft()
        return None


def _first_octet(piece: tuple[int, int, bytes]) -> int:
    return piece[0]
