"""Test kit for the TCP machine: segment templates and a back-to-back loop on virtual time.

Every segment a test feeds in and every segment a connection emits goes through the real wire
path (``ustack.wire.tcp.emit`` then ``parse``), so checksums, option encoding and flag
classification are exercised too.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection, OutSegment
from ustack.tcp.events import DataReceived, Event
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.wire import checksum
from ustack.wire import seq as sq
from ustack.wire import tcp as wt

A_ADDR = 0x0A000001
B_ADDR = 0x0A000002
A_PORT = 40000
B_PORT = 80
ISS_A = 1000
ISS_B = 500000

ACK = wt.ACK
SYN = wt.SYN
FIN = wt.FIN
RST = wt.RST
PSH = wt.PSH
URG = wt.URG


def seg(
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = ACK,
    window: int = 65535,
    options: wt.TcpOptions | bytes = b"",
    payload: bytes = b"",
    urgent: int = 0,
    src: int = B_ADDR,
    dst: int = A_ADDR,
    src_port: int = B_PORT,
    dst_port: int = A_PORT,
) -> wt.TcpSegment:
    """A segment template: keyword arguments in, a parsed TcpSegment out (via emit + parse)."""
    if isinstance(options, wt.TcpOptions):
        options = options.encode()
    buf = bytearray(60 + len(payload))
    n = wt.emit(
        buf,
        0,
        pseudo=checksum.ipv4_pseudo_header_sum(src, dst, wt.PROTO, 0),
        src_port=src_port,
        dst_port=dst_port,
        seq=seq & 0xFFFFFFFF,
        ack=ack & 0xFFFFFFFF,
        flags=flags,
        window=window,
        options=options,
        payload=payload,
        urgent=urgent,
    )
    return wt.parse(
        memoryview(buf)[:n], src, dst, pseudo=checksum.ipv4_pseudo_header_sum(src, dst, wt.PROTO, 0)
    )


def wire(conn: Connection, o: OutSegment) -> wt.TcpSegment:
    """What the peer of ``conn`` receives for one of its OutSegments."""
    buf = bytearray(60 + len(o.payload))
    n = wt.emit(
        buf,
        0,
        pseudo=checksum.ipv4_pseudo_header_sum(conn.local_addr, conn.remote_addr, wt.PROTO, 0),
        src_port=conn.local_port,
        dst_port=conn.remote_port,
        seq=o.seq,
        ack=o.ack,
        flags=o.flags,
        window=o.window,
        options=o.options,
        payload=o.payload,
    )
    return wt.parse(
        memoryview(buf)[:n],
        conn.local_addr,
        conn.remote_addr,
        pseudo=checksum.ipv4_pseudo_header_sum(conn.local_addr, conn.remote_addr, wt.PROTO, 0),
    )


def out(conn: Connection, now: float) -> list[wt.TcpSegment]:
    return [wire(conn, o) for o in conn.segments_to_send(now)]


def events(conn: Connection) -> list[Event]:
    evs = []
    while (ev := conn.next_event()) is not None:
        evs.append(ev)
    return evs


def event_types(conn: Connection) -> list[str]:
    return [type(e).__name__ for e in events(conn)]


def new_conn(
    config: TcpConfig | None = None,
    stats: Stats | None = None,
    *,
    iss: int = ISS_A,
    now: float = 0.0,
) -> Connection:
    """Our side of a single-connection test: A talking to B."""
    return Connection(
        config or TcpConfig(),
        stats or Stats(),
        local_addr=A_ADDR,
        local_port=A_PORT,
        remote_addr=B_ADDR,
        remote_port=B_PORT,
        iss=iss,
        now=now,
    )


Filter = Callable[[str, wt.TcpSegment], bool]


@dataclass
class Pair:
    """Two connections wired back to back; A opens actively, B passively.

    ``drop(direction, seg) -> bool`` decides losses ("ab" is A to B). ``delay`` is the one-way
    latency. Received data is read into ``got_a``/``got_b`` unless ``auto_read`` is off;
    ``feed_a`` is written into A's send buffer as space allows (a bulk source).
    """

    cfg_a: TcpConfig = field(default_factory=TcpConfig)
    cfg_b: TcpConfig = field(default_factory=TcpConfig)
    iss_a: int = ISS_A
    iss_b: int = ISS_B
    delay: float = 0.001
    now: float = 0.0
    drop: Filter | None = None
    auto_read: bool = True
    record: bool = False

    def __post_init__(self) -> None:
        self.stats_a = Stats()
        self.stats_b = Stats()
        self.a = Connection(
            self.cfg_a,
            self.stats_a,
            local_addr=A_ADDR,
            local_port=A_PORT,
            remote_addr=B_ADDR,
            remote_port=B_PORT,
            iss=self.iss_a,
            now=self.now,
        )
        self.b = Connection(
            self.cfg_b,
            self.stats_b,
            local_addr=B_ADDR,
            local_port=B_PORT,
            remote_addr=A_ADDR,
            remote_port=A_PORT,
            iss=self.iss_b,
            now=self.now,
        )
        self.got_a = bytearray()
        self.got_b = bytearray()
        self.ev_a: list[Event] = []
        self.ev_b: list[Event] = []
        self.log: list[tuple[float, str, wt.TcpSegment, bool]] = []
        self.feed_a = memoryview(b"")
        self.feed_b = memoryview(b"")
        self._wire: list[tuple[float, int, str, wt.TcpSegment]] = []
        self._n = 0
        self.sent = {"ab": 0, "ba": 0}

    def open(self) -> None:
        self.b.open_passive(self.now)
        self.a.open_active(self.now)

    def handshake(self) -> None:
        self.open()
        self.run(lambda: self.a.state is State.ESTABLISHED and self.b.state is State.ESTABLISHED)

    def _collect(self) -> None:
        for conn, direction in ((self.a, "ab"), (self.b, "ba")):
            for o in conn.segments_to_send(self.now):
                s = wire(conn, o)
                dropped = self.drop is not None and self.drop(direction, s)
                self.sent[direction] += 1
                if self.record:
                    self.log.append((self.now, direction, s, dropped))
                if not dropped:
                    self._n += 1
                    heapq.heappush(self._wire, (self.now + self.delay, self._n, direction, s))

    def _app(self) -> None:
        for conn, evs, got, which in (
            (self.a, self.ev_a, self.got_a, "a"),
            (self.b, self.ev_b, self.got_b, "b"),
        ):
            feed = self.feed_a if which == "a" else self.feed_b
            if len(feed) and conn.state in (
                State.SYN_SENT,
                State.SYN_RECEIVED,
                State.ESTABLISHED,
                State.CLOSE_WAIT,
            ):
                n = conn.send(feed)
                if which == "a":
                    self.feed_a = feed[n:]
                else:
                    self.feed_b = feed[n:]
            while (ev := conn.next_event()) is not None:
                evs.append(ev)
                if self.auto_read and type(ev) is DataReceived:
                    got += conn.read()
            if self.auto_read and conn.readable:
                got += conn.read()

    def step(self) -> bool:
        """One round: apps act, outputs go on the wire, then deliver or advance time.

        Returns False when nothing is left to happen.
        """
        self._app()
        self._collect()
        if self._wire and self._wire[0][0] <= self.now:
            while self._wire and self._wire[0][0] <= self.now:
                _, _, direction, s = heapq.heappop(self._wire)
                (self.b if direction == "ab" else self.a).receive(s, self.now)
            return True
        times = [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        if self._wire:
            times.append(self._wire[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        for conn in (self.a, self.b):
            d = conn.next_deadline()
            if d is not None and d <= self.now:
                conn.on_deadline(self.now)
        return True

    def run(
        self,
        until: Callable[[], bool] | None = None,
        *,
        max_time: float = 10_000.0,
        max_steps: int = 2_000_000,
    ) -> None:
        for _ in range(max_steps):
            if until is not None and until():
                return
            if self.now > max_time:
                raise AssertionError(f"virtual time limit reached at {self.now}")
            if not self.step():
                if until is None or until():
                    return
                raise AssertionError("nothing left to happen before the condition held")
        raise AssertionError("step limit reached")

    def settle(self, seconds: float) -> None:
        """Run until ``seconds`` of virtual time passed (or nothing is left to happen)."""
        end = self.now + seconds
        self.run(lambda: self.now >= end or self._idle(), max_time=end + 1)

    def _idle(self) -> bool:
        return not self._wire and self.a.next_deadline() is None and self.b.next_deadline() is None


# ---------------------------------------------------------------- scripted peer and fixtures

# What a default-config peer puts in its SYN: MSS 1460 and a window scale of 3 (256 KiB buffer).
PEER_SYN_OPTS = wt.TcpOptions(mss=1460, wscale=3)
PEER_SYN_WINDOW = 65535
PEER_WINDOW = 32768  # 256 KiB with a shift of 3, as a default-config peer advertises

# A peer that negotiates everything, as Linux does: SACK-permitted (RFC 2018 2) and timestamps
# (RFC 7323 3.2) as well. Its timestamp clock ticks once a millisecond and reads TSVAL0 at
# virtual time 0: far from 0 and from our own clock, so an echo cannot match it by accident.
# The full fixtures replace the TSval here by the peer's clock (and TSecr by our TSval).
TSVAL0 = 0x10000000
PEER_TS_HZ = 1000
PEER_SYN_OPTS_FULL = wt.TcpOptions(mss=1460, wscale=3, sack_permitted=True, timestamps=(TSVAL0, 0))


@dataclass
class Script:
    """Our connection (A) and a hand-driven peer; ``seq`` is the peer's next sequence number.

    Once ``timestamps`` is on (the full fixtures turn it on when both SYNs carried TSopt), every
    segment the peer makes carries a Timestamps option: TSval from the peer's clock
    (``ts_offset`` plus ``now`` in milliseconds; set ``ts_offset`` to jump or wrap it, or pass
    ``tsval=`` for one segment) and TSecr ``ts_echo``, the last TSval our connection sent (``out``
    keeps it up to date).
    """

    conn: Connection
    now: float = 0.0
    seq: int = ISS_B
    window: int = PEER_WINDOW
    timestamps: bool = False
    ts_offset: int = TSVAL0
    ts_echo: int = 0

    def peer_tsval(self) -> int:
        """The peer's timestamp clock now (RFC 7323 5.4: 1 ms ticks)."""
        return (self.ts_offset + round(self.now * PEER_TS_HZ)) & sq.MASK

    def make(
        self,
        flags: int = ACK,
        *,
        payload: bytes = b"",
        seq: int | None = None,
        ack: int | None = None,
        window: int | None = None,
        options: wt.TcpOptions | bytes = b"",
        urgent: int = 0,
        ts: bool | None = None,
        tsval: int | None = None,
        sack: Sequence[tuple[int, int]] = (),
    ) -> wt.TcpSegment:
        """One peer segment. ``ts`` forces the Timestamps option on or off (default: on when
        ``timestamps`` is, or when ``tsval`` is given; an explicit ``options.timestamps`` wins);
        ``sack`` adds SACK blocks (sequence numbers of our stream, left edge first)."""
        add_ts = ts if ts is not None else (self.timestamps or tsval is not None)
        if add_ts or sack:
            if isinstance(options, bytes):
                if options:
                    raise ValueError("raw option bytes cannot be combined with ts= or sack=")
                options = wt.TcpOptions()
            if sack:
                options = options._replace(
                    sack_blocks=tuple((a & sq.MASK, b & sq.MASK) for a, b in sack)
                )
            if add_ts and options.timestamps is None:
                val = self.peer_tsval() if tsval is None else tsval & sq.MASK
                options = options._replace(timestamps=(val, self.ts_echo))
        return seg(
            seq=self.seq if seq is None else seq,
            ack=self.conn.snd_max if ack is None else ack,
            flags=flags,
            window=self.window if window is None else window,
            options=options,
            payload=payload,
            urgent=urgent,
        )

    def push(
        self,
        flags: int = ACK,
        *,
        payload: bytes = b"",
        seq: int | None = None,
        ack: int | None = None,
        window: int | None = None,
        options: wt.TcpOptions | bytes = b"",
        urgent: int = 0,
        ts: bool | None = None,
        tsval: int | None = None,
        sack: Sequence[tuple[int, int]] = (),
    ) -> list[wt.TcpSegment]:
        """Feed one segment to our connection, then return what it sends.

        Without ``seq`` the segment continues the peer's stream; without ``ack`` it acknowledges
        everything our connection has sent.
        """
        s = self.make(
            flags,
            payload=payload,
            seq=seq,
            ack=ack,
            window=window,
            options=options,
            urgent=urgent,
            ts=ts,
            tsval=tsval,
            sack=sack,
        )
        if seq is None:
            self.seq = (self.seq + s.seg_len) & 0xFFFFFFFF
        self.conn.receive(s, self.now)
        return self.out()

    def out(self) -> list[wt.TcpSegment]:
        segs = out(self.conn, self.now)
        for s in segs:
            if s.options.timestamps is not None:
                self.ts_echo = s.options.timestamps[0]
        return segs

    def advance(self, to: float) -> list[wt.TcpSegment]:
        """Jump to ``to``, firing every deadline on the way; return everything sent."""
        sent: list[wt.TcpSegment] = []
        while True:
            d = self.conn.next_deadline()
            if d is None or d > to:
                break
            self.now = max(self.now, d)
            self.conn.on_deadline(self.now)
            sent += self.out()
        self.now = max(self.now, to)
        return sent

    def fire(self) -> list[wt.TcpSegment]:
        """Jump to the next deadline and fire it."""
        d = self.conn.next_deadline()
        assert d is not None, "no timer armed"
        self.now = max(self.now, d)
        self.conn.on_deadline(self.now)
        return self.out()

    def run_timers(self, until: Callable[[], bool], limit: int = 1000) -> list[wt.TcpSegment]:
        sent: list[wt.TcpSegment] = []
        for _ in range(limit):
            if until():
                return sent
            sent += self.fire()
        raise AssertionError("condition never held")


def closed(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    return Script(new_conn(config, stats))


def listen(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = closed(config, stats)
    s.conn.open_passive(s.now)
    assert s.out() == []
    return s


def syn_sent(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = closed(config, stats)
    s.conn.open_active(s.now)
    (syn,) = s.out()
    assert syn.control is wt.Control.SYN and not syn.has_ack
    return s


def syn_received(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    """Passive: LISTEN + the peer's SYN; our SYN,ACK has gone out."""
    s = listen(config, stats)
    (synack,) = s.push(SYN, options=PEER_SYN_OPTS, window=PEER_SYN_WINDOW, ack=0)
    assert synack.control is wt.Control.SYN and synack.has_ack
    return s


def established(
    config: TcpConfig | None = None,
    stats: Stats | None = None,
    *,
    opts: wt.TcpOptions = PEER_SYN_OPTS,
    syn_window: int = PEER_SYN_WINDOW,
    window: int | None = None,
) -> Script:
    """Active: SYN-SENT + the peer's SYN,ACK; our ACK has gone out.

    ``window`` is what the peer advertises afterwards (default: 256 KiB at its shift).
    """
    s = syn_sent(config, stats)
    if window is not None:
        s.window = window
    elif opts.wscale is None:
        s.window = syn_window
    (ack,) = s.push(SYN | ACK, options=opts, window=syn_window)
    assert ack.flags == ACK
    events(s.conn)
    return s


def _full_opts(s: Script, opts: wt.TcpOptions) -> wt.TcpOptions:
    """``opts`` with the TSval from the peer's clock and TSecr from our last TSval."""
    if opts.timestamps is None:
        return opts
    return opts._replace(timestamps=(s.peer_tsval(), s.ts_echo))


def established_full(
    config: TcpConfig | None = None,
    stats: Stats | None = None,
    *,
    opts: wt.TcpOptions = PEER_SYN_OPTS_FULL,
    syn_window: int = PEER_SYN_WINDOW,
    ts_offset: int = TSVAL0,
) -> Script:
    """Active open with a peer that answers with ``opts`` (default: MSS, window scale, SACK-
    permitted and timestamps). The peer puts timestamps on its later segments when both SYNs
    carried them (its own view of the negotiation, not our TCB's)."""
    s = Script(new_conn(config, stats), ts_offset=ts_offset)
    s.conn.open_active(s.now)
    (syn,) = s.out()
    assert syn.control is wt.Control.SYN and not syn.has_ack
    if opts.wscale is None:
        s.window = syn_window
    offered_ts = syn.options.timestamps is not None
    (ack,) = s.push(SYN | ACK, options=_full_opts(s, opts), window=syn_window, ts=False)
    assert ack.flags == ACK
    s.timestamps = offered_ts and opts.timestamps is not None
    events(s.conn)
    return s


def syn_received_full(
    config: TcpConfig | None = None,
    stats: Stats | None = None,
    *,
    opts: wt.TcpOptions = PEER_SYN_OPTS_FULL,
    ts_offset: int = TSVAL0,
) -> Script:
    """Passive: LISTEN + a SYN with ``opts`` (default: everything); our SYN,ACK has gone out
    and the peer uses timestamps from now on if the SYN,ACK carried them too."""
    s = listen(config, stats)
    s.ts_offset = ts_offset
    (synack,) = s.push(SYN, options=_full_opts(s, opts), window=PEER_SYN_WINDOW, ack=0, ts=False)
    assert synack.control is wt.Control.SYN and synack.has_ack
    s.timestamps = opts.timestamps is not None and synack.options.timestamps is not None
    return s


def accepted_full(
    config: TcpConfig | None = None,
    stats: Stats | None = None,
    *,
    opts: wt.TcpOptions = PEER_SYN_OPTS_FULL,
    ts_offset: int = TSVAL0,
) -> Script:
    """Passive open completed: :func:`syn_received_full` + the peer's ACK (ESTABLISHED)."""
    s = syn_received_full(config, stats, opts=opts, ts_offset=ts_offset)
    assert s.push(ACK) == []
    assert s.conn.state is State.ESTABLISHED
    events(s.conn)
    return s


def fin_wait_1(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = established(config, stats)
    s.conn.shutdown(s.now)
    (fin,) = s.out()
    assert fin.control is wt.Control.FIN
    return s


def fin_wait_2(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = fin_wait_1(config, stats)
    assert s.push(ACK) == []
    return s


def close_wait(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = established(config, stats)
    (ack,) = s.push(FIN | ACK)
    assert ack.flags == ACK
    events(s.conn)
    return s


def last_ack(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = close_wait(config, stats)
    s.conn.shutdown(s.now)
    (fin,) = s.out()
    assert fin.control is wt.Control.FIN
    return s


def closing(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    """Simultaneous close: our FIN is out, the peer's FIN crosses it (acking only our data)."""
    s = fin_wait_1(config, stats)
    (ack,) = s.push(FIN | ACK, ack=s.conn.snd_una)
    assert ack.flags == ACK
    events(s.conn)
    return s


def time_wait(config: TcpConfig | None = None, stats: Stats | None = None) -> Script:
    s = fin_wait_2(config, stats)
    (ack,) = s.push(FIN | ACK)
    assert ack.flags == ACK
    events(s.conn)
    return s


FIXTURES: dict[State, Callable[..., Script]] = {
    State.CLOSED: closed,
    State.LISTEN: listen,
    State.SYN_SENT: syn_sent,
    State.SYN_RECEIVED: syn_received,
    State.ESTABLISHED: established,
    State.FIN_WAIT_1: fin_wait_1,
    State.FIN_WAIT_2: fin_wait_2,
    State.CLOSE_WAIT: close_wait,
    State.CLOSING: closing,
    State.LAST_ACK: last_ack,
    State.TIME_WAIT: time_wait,
}


def snapshot(conn: Connection) -> dict[str, object]:
    """The TCB relative to its ISS/IRS, plus which timers are armed: comparable across runs."""
    return {
        "state": conn.state,
        "snd_una": (conn.snd_una - conn.iss) & 0xFFFFFFFF,
        "snd_nxt": (conn.snd_nxt - conn.iss) & 0xFFFFFFFF,
        "snd_max": (conn.snd_max - conn.iss) & 0xFFFFFFFF,
        "rcv_nxt": (conn.rcv_nxt - conn.irs) & 0xFFFFFFFF,
        "snd_wnd": conn.snd_wnd,
        "rcv_wnd": conn.rcv_wnd,
        "snd_wscale": conn.snd_wscale,
        "rcv_wscale": conn.rcv_wscale,
        "snd_mss": conn.snd_mss,
        "eof_received": conn.eof_received,
        "passive": conn.passive,
        "timers": sorted(k for k, v in conn.timers.items() if v is not None),
    }
