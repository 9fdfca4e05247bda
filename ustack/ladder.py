"""Textbook ladder diagrams of TCP connections.

Theory of operation: a :class:`Ladder` is fed what crossed the link (raw IPv4 or IPv6 packets,
each with a time and a direction) and what ustack's own connections reported (state changes). It
keeps one :class:`_Flow` per 4-tuple, with addresses as the core's ints (an IPv6 one tagged, see
:mod:`ustack.wire.addr`), so the packets of a flow and its state changes meet under one key.
For ustack's side the states are the ones the machine recorded; for the peer's side (the kernel,
whose TCB we cannot see) they are inferred from the segments it sent and received, applying the
same RFC 9293 transitions a textbook applies when it draws the picture.
Sequence numbers are shown relative to each side's ISN, as tcpdump -S does not and Wireshark does,
because "seq 1" is what a learner expects to read.

Long transfers would drown the handshake and the close, so runs of pure data/ACK segments in the
middle of a flow are folded into one summary line (``max_run`` keeps the first few of each run).
A segment a learner should see breaks the fold: one carrying SACK blocks, and a retransmission.

Options: the SYN and SYN,ACK show their whole option list, because that is the negotiation. Later
segments show only what tells the story of the transfer: SACK blocks, relative like ``ack`` (they
describe the other side's data) and with a D-SACK marked. Timestamps ride on every segment once
negotiated; see :class:`Ladder` for why they are hidden unless asked for.

IPv6: the version nibble picks the parser. The TCP segment sits behind whatever extension headers
the packet carries; a fragment is skipped (nothing on TUN fragments TCP, and its header is only in
the first piece). Addresses are drawn with :func:`ustack.wire.addr.to_text`, an IPv6 one in
brackets before its port (``[fd00:7::2]:80``, RFC 5952 6), and the header line makes room for them.

TUN offloads: with ``header_len`` set, every packet starts with the virtio-net header. A TCP
super-segment (the kernel's GRO/TSO, or ours) is drawn as the one buffer it was, with its length
and how the wire would cut it: ``len=65160 (gso 1448 x 45)``, on its arrow (a ladder of such a
link is drawn wider for it; should it still not fit, on the note line under the arrow).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ustack.wire import addr, arp, ethernet, ipv4, ipv6, nd, virtio
from ustack.wire import seq as sq
from ustack.wire import tcp as tcpw
from ustack.wire.errors import ParseError
from ustack.wire.tcp import Control

# Directions as seen from ustack.
INBOUND = "in"  # peer -> ustack
OUTBOUND = "out"  # ustack -> peer
# A frame of neighbour resolution (a whole Ethernet frame: ARP, or an IPv6 NS/NA) that crossed a
# TAP link: what ``Stack.tap`` hands the packet observer besides IP packets, so one observer
# feeding :meth:`Ladder.packet` draws both.
ARP_INBOUND = "arp-in"
ARP_OUTBOUND = "arp-out"

_WIDTH = 56  # columns of the arrow between the two lifelines
_GSO_EXTRA = 16  # more of them where super-segments are drawn
_VERSION_6 = 6  # the version nibble of an IPv6 header (RFC 8200 3)
LOST = "lost"  # the label of a segment the link lost: the receiver's state cannot follow it


@dataclass(slots=True)
class _Row:
    time: float
    text: str


@dataclass(slots=True)
class _Flow:
    peer: tuple[int, int]
    local: tuple[int, int]
    peer_isn: int | None = None
    local_isn: int | None = None
    peer_state: str = "CLOSED"
    rows: list[_Row] = field(default_factory=list)
    run: int = 0  # length of the current run of plain data/ACK segments
    folded: int = 0
    folded_bytes: int = 0
    fold_start: float = 0.0
    peer_fin_seq: int | None = None  # sequence number of the peer's FIN, once seen
    # The peer is another ustack whose states are recorded (remote_state): never inferred.
    peer_recorded: bool = False
    # Index of the first row of the 4-tuple's current incarnation: a listener's LISTEN goes
    # there, not above an earlier incarnation's rows.
    start: int = 0
    # Window scale shifts from the two SYNs; None until known (RFC 7323 2.2: both or neither).
    peer_wscale: int | None = None
    local_wscale: int | None = None
    # One past the highest sequence number each side has sent: a segment starting below it
    # resends something, which is how Wireshark spots a retransmission too.
    peer_high: int | None = None
    local_high: int | None = None
    # Each side's first TSval: relative timestamps, like relative sequence numbers.
    peer_ts0: int | None = None
    local_ts0: int | None = None


class _Rows(list[_Row]):
    """A flow's rows when the ladder is bounded (``max_rows``): the first half as they came,
    then the latest ones in a ring, so a long connection keeps both its handshake and its
    close. What falls out between them is counted and drawn as one marker row."""

    def __init__(self, limit: int, marker: Callable[[int], str]) -> None:
        super().__init__()
        self.head = max(1, limit // 2)
        self.tail: deque[_Row] = deque(maxlen=max(1, limit - self.head))
        self.elided = 0
        self._marker = marker

    def append(self, row: _Row) -> None:
        if len(self) < self.head and not self.tail:
            super().append(row)
            return
        if len(self.tail) == self.tail.maxlen:
            self.elided += 1
        self.tail.append(row)

    def insert(self, index: int, row: _Row) -> None:  # type: ignore[override]
        super().insert(index, row)
        if len(self) > self.head:
            spill = self.pop()
            if len(self.tail) == self.tail.maxlen:
                self.elided += 1
            else:
                self.tail.appendleft(spill)

    def __iter__(self) -> Iterator[_Row]:
        yield from super().__iter__()
        if self.elided:
            yield _Row(self.tail[0].time, self._marker(self.elided))
        yield from self.tail


def _stamp(seconds: float) -> str:
    """A row's time in the ten columns the header leaves for it: milliseconds below 10 s
    (``1010.000ms``), seconds from there (``  31.010s ``), so that a ladder running for minutes
    -- a back-off, a keep-alive -- keeps its lifelines under the header."""
    ms = seconds * 1000
    if ms < 9999.9995:
        return f"{ms:8.3f}ms"
    return f"{seconds:8.3f}s "


def _endpoint(address: int, port: int) -> str:
    """``10.7.0.2:80``, or ``[fd00:7::2]:80``: an IPv6 address in brackets, so the port's colon
    is not read as part of it (RFC 5952 6)."""
    text = addr.to_text(address)
    return f"[{text}]:{port}" if addr.is_v6(address) else f"{text}:{port}"


def _rel(seq: int, isn: int | None) -> int:
    return (seq - isn) & 0xFFFFFFFF if isn is not None else seq


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width``, broken after a comma if possible, else at a space."""
    lines: list[str] = []
    while len(text) > width:
        cut = text.rfind(",", 0, width) + 1
        if cut <= 0:
            cut = text.rfind(" ", 0, width + 1)
        if cut <= 0:
            cut = width
        lines.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    lines.append(text)
    return lines


def _is_dsack(blocks: tuple[tuple[int, int], ...], ack: int) -> bool:
    """RFC 2883 4: the first block reports a duplicate if the cumulative ACK already covers it,
    or if it lies inside the second block (a duplicate of data above a hole)."""
    left, right = blocks[0]
    if sq.lt(left, ack):
        return True
    return len(blocks) > 1 and sq.ge(left, blocks[1][0]) and sq.le(right, blocks[1][1])


class Ladder:
    """Collects packets and state changes; :meth:`render` draws one ladder per connection.

    ``timestamps=True`` adds ``ts=VAL/ECR`` to every drawn segment after the handshake (TSval
    relative to its sender's first, TSecr to the other side's first), on the arrow when it fits.
    It is off by default: once negotiated, every segment carries the option, and on a link as
    short as the demo's the values barely move (Linux ticks in milliseconds), so they would push
    a note line under many arrows, doubling the diagram, while teaching nothing the time column
    does not already show. The SYN and SYN,ACK still show that timestamps were negotiated.

    ``header_len`` is the link's (``link.header_len``): bytes of virtio-net header before every
    packet handed to :meth:`packet`, 0 for plain IP packets. ``width`` is the arrows' width
    in columns: by default 56, and 72 over an offload link, so that a super-segment's
    ``(gso 1448 x 45)`` fits on its arrow.
    """

    def __init__(
        self,
        *,
        max_run: int = 4,
        peer_name: str = "kernel",
        local_name: str = "ustack",
        timestamps: bool = False,
        header_len: int = 0,
        width: int | None = None,
        infer_peer: bool = True,
        max_rows: int | None = None,
    ):
        self.max_run = max_run
        # A bound on the rows kept per connection (see _Rows), for ladders of a daemon's
        # connections, which may live long and retransmit much; None keeps every row.
        self.max_rows = max_rows
        # False when the peer is a host whose own states are fed in (remote_state), as when
        # two ustack hosts talk: then nothing is inferred, not even before its first change.
        self.infer_peer = infer_peer
        self.timestamps = timestamps
        self.header_len = header_len
        self._width = width if width else _WIDTH + (_GSO_EXTRA if header_len else 0)
        self.peer_name = peer_name
        self.local_name = local_name
        self._flows: dict[tuple[int, int, int, int], _Flow] = {}
        self._order: list[tuple[int, int, int, int]] = []
        self._t0: float | None = None
        # ARP rows seen before any connection: drawn at the top of the next one to start.
        self._arp_rows: list[_Row] = []

    def _flow(self, local: tuple[int, int], peer: tuple[int, int]) -> _Flow:
        key = (local[0], local[1], peer[0], peer[1])
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow(peer=peer, local=local)
            if self.max_rows:
                flow.rows = _Rows(self.max_rows, self._elision)
            self._order.append(key)
            for row in self._arp_rows:  # the address resolution this connection waited for
                flow.rows.append(row)
            self._arp_rows.clear()
        return flow

    def _elision(self, count: int) -> str:
        return self._line(note=f"... {count} rows left out ...")

    def elided(self) -> int:
        """Rows left out so far, over every connection (only with ``max_rows``)."""
        return sum(f.rows.elided for f in self._flows.values() if isinstance(f.rows, _Rows))

    def packet(
        self,
        now: float,
        direction: str,
        packet: bytes | bytearray | memoryview,
        *,
        label: str = "",
    ) -> None:
        """Record one IPv4 or IPv6 packet that crossed the link (``direction``: ``"in"`` or
        ``"out"``), behind its virtio-net header if the ladder was made with ``header_len``.

        ``label`` is drawn with the segment (``lost``, ``cookie``): what the one feeding the
        ladder knows about it and the segment itself cannot say. A labelled segment is never
        folded away."""
        if direction in (ARP_INBOUND, ARP_OUTBOUND):
            self.arp(now, direction[4:], packet)
            return
        gso = 0
        try:
            if self.header_len:
                hdr = virtio.parse(packet)
                if hdr.gso_type & ~virtio.GSO_ECN in (virtio.GSO_TCPV4, virtio.GSO_TCPV6):
                    gso = hdr.gso_size
                packet = memoryview(packet)[self.header_len :]
            if len(packet) and packet[0] >> 4 == _VERSION_6:
                ip6 = ipv6.parse(packet)
                if ip6.proto != ipv6.PROTO_TCP or ip6.is_fragment:
                    return
                src, dst, payload = addr.tag6(ip6.src), addr.tag6(ip6.dst), ip6.payload
            else:
                ip = ipv4.parse(packet)
                if ip.proto != ipv4.PROTO_TCP or ip.is_fragment:
                    return
                src, dst, payload = ip.src, ip.dst, ip.payload
            # The ladder draws what crossed the link, unverified: no pseudo-header sum needed.
            seg = tcpw.parse(payload, src, dst, pseudo=0, verify_checksum=False)
        except ParseError:
            return
        if self._t0 is None:
            self._t0 = now
        if direction == INBOUND:
            flow = self._flow((dst, seg.dst_port), (src, seg.src_port))
        else:
            flow = self._flow((src, seg.src_port), (dst, seg.dst_port))
        self._segment(flow, now, direction, seg, gso, label)

    def arp(self, now: float, direction: str, frame: bytes | bytearray | memoryview) -> None:
        """Record one ARP frame (Ethernet header and all) that crossed a TAP link: a row across
        the ladder in tcpdump's words (``who-has 10.7.0.2? tell 10.7.0.1``, ``10.7.0.2 is-at
        02:..``); an IPv6 Neighbor Solicitation or Advertisement is drawn the same way, marked
        ``ND``. Rows before any connection open the next connection's ladder, which is where a
        textbook draws the exchange (before the first SYN); later ones go to the newest."""
        try:
            f = ethernet.parse(frame)
            if f.ethertype == ethernet.ETHERTYPE_IPV6:
                ip6 = ipv6.parse(f.payload)
                msg = nd.parse(ip6.payload, ip6.src, ip6.dst, ip6.hop_limit)
                target = addr.to_text(addr.tag6(msg.target))
                if msg.type == nd.NEIGHBOR_SOLICITATION:
                    label = f"ND who-has {target}? tell {addr.to_text(addr.tag6(ip6.src))}"
                else:
                    mac = ethernet.mac_to_text(msg.lladdr) if msg.lladdr else "?"
                    label = f"ND {target} is-at {mac}"
            else:
                label = f"ARP {arp.summary(arp.parse(f.payload))}"
        except ParseError:
            return
        if self._t0 is None:
            self._t0 = now
        row = _Row(now, self._line(arrow=(direction, label)))
        if not self._order:
            self._arp_rows.append(row)
            return
        flow = self._flows[self._order[-1]]
        self._flush_fold(flow)
        flow.rows.append(row)

    def state(
        self, now: float, local: tuple[int, int], peer: tuple[int, int], old: str, new: str
    ) -> None:
        """Record a state change of ustack's connection ``local`` <-> ``peer``, each an
        ``(address, port)`` with the address as the core's int (IPv6 tagged)."""
        if self._t0 is None:
            self._t0 = now
        flow = self._flow(local, peer)
        self._flush_fold(flow)
        row = _Row(now, self._line(right=new))
        self._place(flow, row, new)

    def _place(self, flow: _Flow, row: _Row, new: str) -> None:
        if new == "LISTEN" and flow.start < len(flow.rows):
            # A listener's per-SYN TCB is created when the SYN arrives; a textbook draws the
            # listening side in LISTEN before anything happens.
            row.time = min(row.time, flow.rows[flow.start].time)
            flow.rows.insert(flow.start, row)
        else:
            flow.rows.append(row)

    def event(self, now: float, local: tuple[int, int], peer: tuple[int, int], text: str) -> None:
        """Record something a connection reported that no segment shows (a recovery episode
        entered, a timer fired): a note across the ladder. ``local`` and ``peer`` as in
        :meth:`state`."""
        if self._t0 is None:
            self._t0 = now
        flow = self._flow(local, peer)
        self._flush_fold(flow)
        for line in _wrap(f"[{text}]", self._width - 2):
            flow.rows.append(_Row(now, self._line(note=line)))

    def remote_state(
        self, now: float, local: tuple[int, int], peer: tuple[int, int], old: str, new: str
    ) -> None:
        """Record a state change of the *peer's* connection, when the peer is a host whose
        states can be seen (a second ustack): ``local`` and ``peer`` as that connection names
        them, so its own tracer can call this unchanged. The flow's peer states are from then
        on the recorded ones, never inferred."""
        if self._t0 is None:
            self._t0 = now
        flow = self._flow(peer, local)
        flow.peer_recorded = True
        flow.peer_state = new
        self._flush_fold(flow)
        self._place(flow, _Row(now, self._line(new)), new)

    def _peer_state(self, flow: _Flow, now: float, new: str) -> None:
        if not self.infer_peer or flow.peer_recorded:
            return
        if flow.peer_state != new:
            flow.peer_state = new
            self._flush_fold(flow)
            flow.rows.append(_Row(now, self._line(new)))

    def _infer_peer(self, flow: _Flow, direction: str, seg: tcpw.TcpSegment) -> str | None:
        """The peer's next state, inferred from a segment it sent or received (RFC 9293 3.3.2)."""
        st = flow.peer_state
        if seg.control is Control.RST:
            return "CLOSED"
        if direction == INBOUND:  # the peer sent it
            if seg.control is Control.SYN:
                return "SYN-SENT" if not seg.has_ack else "SYN-RECEIVED"
            if seg.control is Control.FIN:
                if st in ("ESTABLISHED", "SYN-RECEIVED"):
                    return "FIN-WAIT-1"
                if st == "CLOSE-WAIT":
                    return "LAST-ACK"
            return None
        # the peer received it
        if seg.control is Control.SYN and not seg.has_ack and st == "CLOSED":
            return "LISTEN"
        if st == "SYN-RECEIVED" and seg.has_ack and seg.control is not Control.SYN:
            st = "ESTABLISHED"
        fin_seq = flow.peer_fin_seq
        if fin_seq is not None and seg.has_ack and seg.ack == (fin_seq + 1) & 0xFFFFFFFF:
            if st == "FIN-WAIT-1":
                st = "FIN-WAIT-2"
            elif st == "LAST-ACK":
                return "CLOSED"
            elif st == "CLOSING":
                return "TIME-WAIT"
        if seg.control is Control.FIN:
            if st == "ESTABLISHED":
                return "CLOSE-WAIT"
            if st == "FIN-WAIT-1":
                return "CLOSING"
            if st == "FIN-WAIT-2":
                return "TIME-WAIT"
        return st if st != flow.peer_state else None

    def _segment(
        self,
        flow: _Flow,
        now: float,
        direction: str,
        seg: tcpw.TcpSegment,
        gso: int = 0,
        label: str = "",
    ) -> None:
        ts = seg.options.timestamps
        if seg.control is Control.SYN:
            # A SYN with another ISN is a new incarnation of the 4-tuple: forget the old one's
            # highest sequence number, or its first segments would all look like retransmissions.
            if direction == INBOUND:
                if seg.seq != flow.peer_isn:
                    if flow.peer_isn is not None and not seg.has_ack:
                        flow.start = len(flow.rows)
                    flow.peer_high = flow.peer_ts0 = None
                flow.peer_isn, flow.peer_wscale = seg.seq, seg.options.wscale
            else:
                if seg.seq != flow.local_isn:
                    flow.local_high = flow.local_ts0 = None
                flow.local_isn, flow.local_wscale = seg.seq, seg.options.wscale
        if ts is not None:
            if direction == INBOUND and flow.peer_ts0 is None:
                flow.peer_ts0 = ts[0]
            elif direction == OUTBOUND and flow.local_ts0 is None:
                flow.local_ts0 = ts[0]
        if seg.control is Control.FIN and direction == INBOUND:
            flow.peer_fin_seq = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
        retransmission = self._track_high(flow, direction, seg)
        plain = (
            seg.control is Control.NONE
            and not seg.options.sack_blocks
            and not retransmission
            and not label
        )
        if direction == OUTBOUND:
            # The peer's view changes when it receives our segment; show the arrow first.
            self._arrow(flow, now, direction, seg, plain, retransmission, gso, label)
            new = self._infer_peer(flow, direction, seg) if label != LOST else None
            if new:
                self._peer_state(flow, now, new)
        else:
            if flow.peer_state == "SYN-SENT" and seg.has_ack and seg.control is not Control.SYN:
                # The peer's ACK of our SYN makes it ESTABLISHED (RFC 9293 3.10.7.3) before
                # anything else the segment does: the same segment may carry its FIN too.
                self._peer_state(flow, now, "ESTABLISHED")
            new = self._infer_peer(flow, direction, seg)
            if new:
                self._peer_state(flow, now, new)
            self._arrow(flow, now, direction, seg, plain, retransmission, gso, label)

    @staticmethod
    def _track_high(flow: _Flow, direction: str, seg: tcpw.TcpSegment) -> bool:
        """Whether ``seg`` resends sequence space its sender already used; remembers the top.

        Seen from ustack's end of the link, a segment the network reordered looks the same;
        the demo's link does not reorder.
        """
        n = seg.seg_len
        if not n:
            return False  # pure ACKs and keepalives without data occupy no sequence space
        high = flow.peer_high if direction == INBOUND else flow.local_high
        end = sq.add(seg.seq, n)
        if high is None or sq.gt(end, high):
            if direction == INBOUND:
                flow.peer_high = end
            else:
                flow.local_high = end
        return high is not None and sq.lt(seg.seq, high)

    def _extras(self, flow: _Flow, direction: str, seg: tcpw.TcpSegment) -> list[str]:
        """The options of a segment after the handshake, in the few words worth drawing."""
        o = seg.options
        out: list[str] = []
        if o.mss is not None or o.wscale is not None or o.sack_permitted:
            # Handshake-only options on a later segment are a peer oddity worth seeing raw.
            odd = tcpw.TcpOptions(mss=o.mss, wscale=o.wscale, sack_permitted=o.sack_permitted)
            out.append(f"<{tcpw.format_options(odd)}>")
        if o.sack_blocks:
            # SACK blocks name the other side's data, so they are relative to its ISN, as the
            # ACK number is.
            isn = flow.local_isn if direction == INBOUND else flow.peer_isn
            blocks = [f"{_rel(a, isn)}-{_rel(b, isn)}" for a, b in o.sack_blocks]
            if seg.has_ack and _is_dsack(o.sack_blocks, seg.ack):
                out.append(f"dsack {blocks.pop(0)}")
            if blocks:
                out.append("sack " + " ".join(blocks))
        if self.timestamps and o.timestamps is not None:
            own, other = (
                (flow.peer_ts0, flow.local_ts0)
                if direction == INBOUND
                else (flow.local_ts0, flow.peer_ts0)
            )
            out.append(f"ts={_rel(o.timestamps[0], own)}/{_rel(o.timestamps[1], other)}")
        return out

    def _arrow(
        self,
        flow: _Flow,
        now: float,
        direction: str,
        seg: tcpw.TcpSegment,
        plain: bool,
        retransmission: bool,
        gso: int = 0,
        mark: str = "",
    ) -> None:
        if plain and flow.run >= self.max_run:
            if not flow.folded:
                flow.fold_start = now
            flow.folded += 1
            flow.folded_bytes += len(seg.payload)
            return
        if plain:
            flow.run += 1
        else:
            self._flush_fold(flow)
        if direction == INBOUND:
            isn, ack_isn, shift = flow.peer_isn, flow.local_isn, flow.peer_wscale
        else:
            isn, ack_isn, shift = flow.local_isn, flow.peer_isn, flow.local_wscale
        window = seg.window
        negotiated = flow.peer_wscale is not None and flow.local_wscale is not None
        if seg.control is not Control.SYN and shift is not None and negotiated:
            window <<= shift  # show the window in bytes, as the receiver reads it
        label = f"{tcpw.flag_string(seg.flags):<3} seq={_rel(seg.seq, isn)}"
        if seg.has_ack:
            label += f" ack={_rel(seg.ack, ack_isn)}"
        label += f" win={window} len={len(seg.payload)}"
        extras = ["retransmission"] if retransmission else []
        if mark:
            extras.insert(0, mark)
        size = len(seg.payload)
        if gso and size > gso:
            extras.insert(0, f"(gso {gso} x {-(-size // gso)})")
        notes: list[str] = []
        if seg.control is Control.SYN:
            if seg.options is not tcpw.NO_OPTIONS:
                notes = _wrap(f"<{tcpw.format_options(seg.options)}>", self._width - 2)
        elif seg.options is not tcpw.NO_OPTIONS:
            extras += self._extras(flow, direction, seg)
        if extras:
            tail = ", ".join(extras)
            # On the arrow when it fits (one line per segment, as without options), else under it.
            if len(label) + 1 + len(tail) <= self._width - 6:
                label += " " + tail
            else:
                notes = _wrap(tail, self._width - 2) + notes
        flow.rows.append(_Row(now, self._line(arrow=(direction, label))))
        for note in notes:
            flow.rows.append(_Row(now, self._line(note=note)))

    def _flush_fold(self, flow: _Flow) -> None:
        flow.run = 0
        if flow.folded:
            text = f"... {flow.folded} more data/ACK segments, {flow.folded_bytes} bytes ..."
            flow.rows.append(_Row(flow.fold_start, self._line(note=text)))
            flow.folded = 0
            flow.folded_bytes = 0

    def _line(
        self,
        left: str = "",
        *,
        right: str = "",
        arrow: tuple[str, str] | None = None,
        note: str = "",
    ) -> str:
        if arrow is not None:
            direction, label = arrow
            body = f" {label} "
            if len(body) > self._width - 4:
                body = body[: self._width - 5] + "~ "
            if direction == INBOUND:  # peer (left) -> ustack (right)
                mid = "--" + body + "-" * (self._width - 3 - len(body)) + ">"
            else:
                mid = "<" + "-" * (self._width - 3 - len(body)) + body + "--"
        elif note:
            mid = note.center(self._width)
        else:
            mid = " " * self._width
        return f"{left:>12} |{mid}| {right}".rstrip()

    def render(self) -> str:
        """The diagrams, one per connection, oldest first."""
        out: list[str] = []
        t0 = self._t0 or 0.0
        for key in self._order:
            flow = self._flows[key]
            self._flush_fold(flow)
            peer = f"{self.peer_name} {_endpoint(*flow.peer)}"
            local = f"{self.local_name} {_endpoint(*flow.local)}"
            # Each name over its lifeline; long IPv6 names may push the right one out, never
            # into the left one.
            left = max(self._width // 2 + 14, len(peer) + 1)
            out.append(f"{'time':>9}  {peer:<{left}}{local:>{self._width // 2}}")
            for row in flow.rows:
                out.append(f"{_stamp(row.time - t0)} {row.text}")
            out.append("")
        if self._arp_rows:  # ARP that no connection followed
            left = self._width // 2 + 14
            peer, local = f"{self.peer_name} (ARP)", f"{self.local_name} (ARP)"
            out.append(f"{'time':>9}  {peer:<{left}}{local:>{self._width // 2}}")
            for row in self._arp_rows:
                out.append(f"{_stamp(row.time - t0)} {row.text}")
            out.append("")
        return "\n".join(out)
