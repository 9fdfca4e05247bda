"""Scenarios between two ustack hosts on the virtual-time network (see :mod:`._sim`).

Each runner sets the two hosts up, plays the story with calls an application would make (or
by unplugging a host: its ``receive_packet`` made to ignore everything), runs the network
until the story is over, and returns the ladder with its explanation. The times printed are
virtual: a 16 s back-off is drawn 16 s after the previous try, and takes no time to run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ustack.netsim import SimLink
from ustack.scenarios import Options, Report
from ustack.scenarios._sim import CLIENT, SERVER, SimPair
from ustack.stack.events import ConnectionAccepted, HostEvent
from ustack.stack.host import Host
from ustack.tcp.config import RTO_MIN, TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.events import DataReceived, EofReceived, Event
from ustack.tcp.state import State
from ustack.wire import addr
from ustack.wire import seq as sq
from ustack.wire import tcp as tcpw
from ustack.wire.tcp import Control

PORT = 80
LIMIT = 600.0  # virtual seconds: every story here is over long before
MSS = 1460

VIRTUAL = """\
Peer: a second ustack host on ustack's virtual-time network (ustack.netsim); both lifelines
show the states the two machines recorded. Times are virtual, as seen at the right-hand host's
end of a link with a 10 ms one-way delay."""


def _scale_note(opts: Options) -> str:
    if opts.time_scale == 1.0:
        return ""
    return (
        f"\nTimers scaled by {opts.time_scale:g} (--time-scale): every interval above is "
        f"{opts.time_scale:g} times the real one."
    )


class _Apps:
    """What the applications on both hosts do: accept everything, read what arrives (unless
    told not to), send a reply or a bulk payload, and close once the peer has (``close_on_eof``).
    """

    def __init__(self, pair: SimPair) -> None:
        self.pair = pair
        self.accepted: list[Connection] = []
        self.reading = True
        self.close_on_eof = True
        self.payload = b""  # the server sends this on every accepted connection, then FIN
        self.received: dict[int, bytearray] = {}
        pair.set_apps(client=self._event, server=self._event)

    def _event(self, event: Event | HostEvent, now: float) -> None:
        if isinstance(event, ConnectionAccepted):
            conn = event.listener.accept()
            while conn is not None:
                self.accepted.append(conn)
                if self.payload:
                    conn.send(self.payload)
                    conn.shutdown(now)
                conn = event.listener.accept()
            return
        if isinstance(event, HostEvent):
            return
        conn = event.conn
        if isinstance(event, DataReceived) and self.reading:
            self.received.setdefault(id(conn), bytearray()).extend(conn.read())
        elif isinstance(event, EofReceived):
            self.received.setdefault(id(conn), bytearray()).extend(conn.read())
            if self.close_on_eof:
                conn.close(now)


def _closed(*conns: Connection) -> Callable[[], bool]:
    return lambda: all(c.state is State.CLOSED for c in conns)


def _established(*conns: Connection) -> Callable[[], bool]:
    return lambda: all(c.state is State.ESTABLISHED for c in conns)


def _unplug(host: Host) -> None:
    """The host vanishes from the network: whatever reaches it is ignored, unanswered."""

    def ignore(_packet: bytes | bytearray | memoryview, _now: float) -> None:
        return None

    host.receive_packet = ignore


def _server_conn(apps: _Apps) -> Connection:
    if not apps.accepted:
        raise RuntimeError("the server accepted no connection")
    return apps.accepted[0]


async def simultaneous_open(opts: Options) -> Report:
    pair = SimPair(
        client_name="ustack A", server_name="ustack B", fold=opts.fold, timestamps=opts.timestamps
    )
    _Apps(pair)
    a = pair.client.connect(SERVER, 5001, 0.0, local_port=5000)
    b = pair.server.connect(CLIENT, 5000, 0.0, local_port=5001)
    ok = pair.run(_established(a, b), max_time=LIMIT)
    a.close(pair.net.now)
    ok = pair.run(_closed(a, b), max_time=LIMIT) and ok
    explanation = f"""\
Simultaneous open (RFC 9293 3.5, Figure 8): A and B each send a SYN to the other at the same
instant, so each receives a SYN while in SYN-SENT. Each then moves to SYN-RECEIVED and answers
with a SYN,ACK (its own SYN again, now acknowledging the peer's); each SYN,ACK completes the
other side's handshake (3.10.7.4), and both reach ESTABLISHED without a listener anywhere: four
segments instead of three. A then closes first (3.6), so A ends in TIME-WAIT.

{VIRTUAL}"""
    return Report(pair.render(), explanation, ok)


async def simultaneous_close(opts: Options) -> Report:
    pair = SimPair(
        fold=opts.fold, timestamps=opts.timestamps, client_config={"msl": 30.0 * opts.time_scale}
    )
    pair.server.listen(PORT)
    apps = _Apps(pair)
    apps.close_on_eof = False
    client = pair.client.connect(SERVER, PORT, 0.0)
    ok = pair.run(lambda: bool(apps.accepted) and client.state is State.ESTABLISHED, max_time=LIMIT)
    server = _server_conn(apps)
    now = pair.net.now + 0.5
    pair.run(max_time=now)
    client.close(now)
    server.close(now)
    ok = pair.run(_closed(client, server), max_time=LIMIT) and ok
    explanation = f"""\
Simultaneous close (RFC 9293 3.6, Figure 13): both applications close at the same instant, so
both FINs are in flight at once. Each side, in FIN-WAIT-1, receives the other's FIN before the
ACK of its own: it ACKs it and goes to CLOSING (3.10.7.4, eighth check); the ACK of its own FIN
then takes it to TIME-WAIT (3.6.1). Both sides wait 2*MSL in TIME-WAIT, not just one.

{VIRTUAL}{_scale_note(opts)}"""
    return Report(pair.render(), explanation, ok)


async def syn_ack_retries(opts: Options) -> Report:
    scale = opts.time_scale
    pair = SimPair(
        fold=opts.fold,
        timestamps=opts.timestamps,
        # The client's own SYN retransmission would not come before the server gives up.
        client_config={"rto_initial": 1000.0, "rto_max": 1000.0},
        server_config={"rto_initial": 1.0 * scale, "rto_min": min(RTO_MIN, scale)},
    )
    pair.server.listen(PORT)
    _Apps(pair)
    sent: list[float] = []

    def mark(seg: tcpw.TcpSegment) -> str:
        if seg.control is Control.SYN and seg.has_ack:
            sent.append(pair.net.now)
        return ""

    pair.to_client.mark = mark
    _unplug(pair.client)
    pair.client.connect(SERVER, PORT, 0.0)
    # Until the server has given up: it keeps no connection any more.
    pair.run(lambda: bool(sent) and not pair.server.connections, max_time=LIMIT * max(scale, 0.01))
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    ok = len(sent) == 6 and all(abs(g - scale * 2**i) < 1e-6 for i, g in enumerate(gaps))
    times = ", ".join(f"{t:g}" for t in sent)
    explanation = f"""\
SYN,ACK retransmission (RFC 9293 3.8.1 with RFC 6298 (2.1), (5.5); 3.10.7.2): the client sends a
SYN and then goes silent (its host unplugged). The server, in SYN-RECEIVED, retransmits its
SYN,ACK each time the retransmission timer expires, and doubles the timer every time: the
initial RTO is 1 s and there is no RTT sample yet. After SYNACK_RETRIES (5, Linux's
tcp_synack_retries) retransmissions it gives up and the half-open connection is deleted.
SYN,ACKs sent at {times} s; intervals {", ".join(f"{g:g}" for g in gaps)} s.

{VIRTUAL}{_scale_note(opts)}"""
    return Report(pair.render(), explanation, ok)


async def keepalive(opts: Options) -> Report:
    scale = opts.time_scale
    idle, interval, count = 20.0 * scale, 5.0 * scale, 3
    pair = SimPair(
        fold=opts.fold,
        timestamps=opts.timestamps,
        server_config={
            "keepalive": True,
            "keepalive_idle": idle,
            "keepalive_interval": interval,
            "keepalive_count": count,
        },
    )
    pair.server.listen(PORT)
    apps = _Apps(pair)

    def mark(seg: tcpw.TcpSegment) -> str:
        server = apps.accepted[0] if apps.accepted else None
        if (
            server is not None
            and seg.control is Control.NONE
            and len(seg.payload) <= 1
            and seg.seq == sq.add(server.snd_nxt, -1)
        ):
            return "keep-alive probe"
        return ""

    pair.to_client.mark = mark
    client = pair.client.connect(SERVER, PORT, 0.0)
    ok = pair.run(_established(client), max_time=LIMIT)
    client.send(b"hello")
    # The first probe is answered; then the client's host vanishes before the second.
    ok = pair.run(lambda: pair.server.stats.tcp_keepalive_probes >= 1, max_time=LIMIT) and ok
    pair.run(max_time=pair.net.now + interval / 2)
    _unplug(pair.client)
    server = _server_conn(apps)
    ok = pair.run(_closed(server), max_time=LIMIT) and ok
    probes = pair.server.stats.tcp_keepalive_probes
    ok = ok and pair.server.stats.tcp_timeout_keepalive == 1
    explanation = f"""\
Keep-alive (RFC 9293 3.8.4, RFC 1122 4.2.3.6): the server's connection has keep-alives on, its
idle time shortened from the default 2 hours to {idle:g} s, probing every {interval:g} s, giving up
after {count} unanswered probes. A probe is an ACK with SEG.SEQ = SND.NXT - 1: a sequence number
the peer has already seen, so a live peer must answer it with an ACK (3.10.7.4, first check).
The first probe is answered. Then the client's host vanishes (unplugged, so nothing answers,
not even a RST): {probes - 1} probes go unanswered, and the server resets the connection and
deletes it (3.10.5, ABORT). The client never learns: it still shows ESTABLISHED -- a half-open
connection (3.5.2).

{VIRTUAL}{_scale_note(opts)}"""
    return Report(pair.render(), explanation, ok)


async def loss(opts: Options) -> Report:
    pair = SimPair(
        fold=opts.fold,
        timestamps=opts.timestamps,
        # Without RACK-TLP, loss is detected by the RFC 6675 DupThresh rule, as textbooks draw.
        server_config={"rack": False, "tlp": False, "nagle": False},
    )
    pair.server.listen(PORT)
    apps = _Apps(pair)
    apps.payload = bytes(20 * MSS)
    data_seen = [0]

    def drop(seg: tcpw.TcpSegment) -> bool:
        if seg.payload:
            data_seen[0] += 1
            return data_seen[0] == 3  # the third data segment, its first transmission only
        return False

    pair.to_client.drop = drop
    client = pair.client.connect(SERVER, PORT, 0.0)
    ok = pair.run(
        lambda: bool(apps.accepted) and _closed(client, apps.accepted[0])(), max_time=LIMIT
    )
    got = bytes(next(iter(apps.received.values()), b""))
    stats = pair.server.stats
    ok = ok and got == apps.payload and stats.tcp_recoveries == 1
    explanation = f"""\
Fast retransmit and SACK loss recovery (RFC 9293 3.8.1; RFC 5681 3.2; RFC 2018; RFC 6675): the
server sends {len(apps.payload)} bytes and the link drops the third data segment once. Every
segment after the hole makes the client send a duplicate ACK carrying a SACK block for the data
above the hole (RFC 2018). At the third duplicate ACK (DupThresh, RFC 6675 5) the server enters
loss recovery: it halves its congestion window (RFC 5681 3.2) and retransmits the missing
segment at once, without waiting for the retransmission timer; the cumulative ACK then jumps
over everything the SACK blocks had reported, and recovery ends. The client got all
{len(got)} bytes intact; {stats.tcp_retransmits} segment(s) retransmitted, {stats.tcp_rto_expired}
retransmission timeouts.

{VIRTUAL}"""
    return Report(pair.render(), explanation, ok)


async def zero_window(opts: Options) -> Report:
    scale = opts.time_scale
    pair = SimPair(
        fold=opts.fold,
        timestamps=opts.timestamps,
        client_config={"recv_buffer": 4 * MSS},
        server_config={"nagle": False, "persist_min": 0.2 * scale, "rto_min": 0.2 * scale},
    )
    pair.server.listen(PORT)
    apps = _Apps(pair)
    apps.payload = bytes(8 * MSS)
    apps.reading = False  # the client's application stops reading
    pair.to_client.mark = lambda seg: (
        "zero-window probe"
        if apps.accepted and seg.payload and apps.accepted[0].snd_wnd == 0
        else ""
    )
    closed = [False]

    def window(seg: tcpw.TcpSegment) -> str:
        # The ACK that closes the window and the one that opens it again tell the story.
        if seg.control is not Control.NONE or seg.payload or closed[0] == (seg.window == 0):
            return ""
        closed[0] = seg.window == 0
        return "window closed" if closed[0] else "window update"

    pair.to_server.mark = window
    client = pair.client.connect(SERVER, PORT, 0.0)
    ok = pair.run(lambda: pair.server.stats.tcp_window_probes >= 3, max_time=LIMIT)
    probes = pair.server.stats.tcp_window_probes
    # The application reads again: the window opens and the client says so.
    apps.reading = True
    apps.received.setdefault(id(client), bytearray()).extend(client.read())
    pair.net.run(max_time=pair.net.now)
    ok = pair.run(lambda: client.state in (State.TIME_WAIT, State.CLOSED), max_time=LIMIT) and ok
    got = bytes(apps.received.get(id(client), b""))
    ok = ok and got == apps.payload
    explanation = f"""\
Zero window and persist probes (RFC 9293 3.8.6.1; 3.7.4): the client's application stops
reading, so its receive buffer ({4 * MSS} bytes) fills and it advertises a window of 0. The
server, with data left to send and nothing in flight, starts the persist timer and sends a
one-byte window probe each time it fires, backing off as the retransmission timer does; the
client ACKs each probe but keeps its window closed (the byte is not accepted). Window probes
must never make the sender give up while they are answered. After {probes} probes the
application reads again: the client sends a window update (3.8.6.2.2), and the rest of the
{len(apps.payload)} bytes flows.

{VIRTUAL}{_scale_note(opts)}"""
    return Report(pair.render(), explanation, ok)


SPOOFED = [addr.from_text(f"198.51.100.{i}") for i in range(1, 9)]


async def syn_flood(opts: Options) -> Report:
    syn_backlog = 4
    pair = SimPair(fold=opts.fold, timestamps=opts.timestamps)
    listener = pair.server.listen(PORT, backlog=8, syn_backlog=syn_backlog)
    apps = _Apps(pair)
    # The spoofed sources: one host owning them all that never answers, on its own link (not
    # drawn); its SYNs are never retransmitted within the story.
    spoofer = Host(SPOOFED, config=TcpConfig(rto_initial=1000.0, rto_max=1000.0), secret=b"spoofer")
    pair.net.add_host(spoofer)
    pair.net.add_link(spoofer, pair.server, SimLink("spoofed>server", delay=0.010))
    pair.net.add_link(pair.server, spoofer, SimLink("server>spoofed", delay=0.010))
    _unplug(spoofer)

    def mark(seg: tcpw.TcpSegment) -> str:
        # A SYN,ACK for which the server keeps no connection can only be a cookie.
        if (
            seg.control is Control.SYN
            and seg.has_ack
            and pair.server.lookup(CLIENT, seg.dst_port, SERVER, seg.src_port) is None
        ):
            return "cookie"
        return ""

    pair.to_client.mark = mark
    for source in SPOOFED:
        spoofer.connect(SERVER, PORT, 0.0, local_addr=source)
    pair.run(max_time=0.05)
    queued = listener.half_open
    cookies_before = pair.server.stats.syncookies_sent
    client = pair.client.connect(SERVER, PORT, pair.net.now)
    ok = pair.run(lambda: bool(apps.accepted), max_time=LIMIT)
    client.send(b"hello")
    client.close(pair.net.now)
    ok = pair.run(_closed(client, *apps.accepted), max_time=LIMIT) and ok
    stats = pair.server.stats
    ok = ok and stats.syncookies_accepted == 1 and apps.accepted[0].state is State.CLOSED
    explanation = f"""\
SYN flood and SYN cookies (RFC 4987 3.6; RFC 9293 3.10.7.2 and 7): a burst of {len(SPOOFED)} SYNs
from spoofed addresses (198.51.100.1-{len(SPOOFED)}, not drawn; nothing there answers) reaches a
listener whose SYN-RECEIVED queue holds {syn_backlog}. The first {queued} fill it; from then on the
server answers each SYN with a cookie SYN,ACK ({cookies_before} to the spoofed sources) and keeps
no state at all: the initial sequence number is the cookie, a keyed hash of the 4-tuple, a time
counter and the MSS. When the real client's SYN comes, it too gets a cookie SYN,ACK (drawn
"cookie"); its ACK returns the cookie as SEG.ACK - 1, the server checks it and only then makes
the connection, straight into ESTABLISHED. Counters: syncookies_sent={stats.syncookies_sent},
syncookies_accepted={stats.syncookies_accepted}.

{VIRTUAL}"""
    return Report(pair.render(), explanation, ok)


SCENARIOS_BY_NAME = {
    "simultaneous-open": simultaneous_open,
    "simultaneous-close": simultaneous_close,
    "syn-ack-retries": syn_ack_retries,
    "keepalive": keepalive,
    "loss": loss,
    "zero-window": zero_window,
    "syn-flood": syn_flood,
}
