"""The per-connection TCP machine (RFC 9293), sans-IO: the ``(state, control)`` dispatcher.

Theory of operation
-------------------
A :class:`Connection` is one TCB. Inputs: ``receive(seg, now)`` for a segment the host has
demultiplexed to it, the application calls, and ``on_deadline(now)``. Outputs are pulled:
``segments_to_send(now)`` returns :class:`OutSegment` tuples (the host adds the IP header and
encodes the options) and ``next_event()`` pops event values. Time is only ever an argument.
When an application call leaves the connection with something to send or a new deadline, it
says so through ``on_change`` (a hook the host sets), so nobody has to remember to "touch" it.

The work is split four ways, and this module only decides *which* rule applies:

* :class:`~ustack.tcp.sender.Sender`: send sequence space, the send buffer, segmentation --
  what goes out, in RFC 6675 NextSeg order -- Nagle and SWS avoidance, persist;
* :class:`~ustack.tcp.receiver.Receiver`: receive sequence space, reassembly, the ACK policy,
  the advertised window, SACK blocks and TS.Recent, and so the options of every segment;
* :class:`~ustack.tcp.recovery.Recovery`: the scoreboard of sent segments, RACK-TLP, RFC 6675
  recovery, undo;
* :class:`~ustack.tcp.timers.Timers`: every deadline, in one list.

Segment arrival follows RFC 9293 3.10.7 in one ``match (state, control)``; every arm starts with
a sentence naming the rule. The synchronized states share the "Otherwise" processing: PAWS
(RFC 7323 5.3), the sequence check, then RST (RFC 5961 3), SYN (RFC 5961 4), ACK (RFC 5961 5;
SACK, loss detection and congestion control), URG, text, FIN. Before all that, header
prediction (``_predicted``) takes ESTABLISHED's two everyday segments -- a pure ACK of new data,
the next in-order data -- straight through, with exactly the general path's effect
(``TcpConfig.header_prediction`` turns it off; tests/tcp/test_fast_path.py proves them equal).
State changes fire a :class:`~ustack.tcp.state.Trigger`; the transition table computes the next
state. Timers are handled in :class:`~ustack.tcp.timers.Timer` order, one ``match`` arm each.
What goes out is pulled by ``segments_to_send``: the handshake's SYNs from here, everything else
from the sender, then keep-alive probes and a pure ACK if one is owed. In-order data only notes
that an ACK is owed, so all the segments the host handled before asking for output share one
cumulative ACK (or the data going out carries it); the ACKs that must stay separate --
duplicate ACKs for out-of-order, old or out-of-window segments, PAWS drops, challenge ACKs --
are built at once, in arrival order, and go out first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Generic, TypeVar, overload

from ustack.tcp import congestion as _cc
from ustack.tcp.config import DEFAULT_PEER_MSS, ETHERNET_MSS, TcpConfig
from ustack.tcp.events import (
    Closed,
    DataReceived,
    EofReceived,
    Established,
    Event,
    Reset,
    TimedOut,
    WriteSpace,
)
from ustack.tcp.receiver import MAX_WINDOW_FIELD, Receiver, wscale_for
from ustack.tcp.recovery import LossState, Recovery
from ustack.tcp.rto import RtoEstimator
from ustack.tcp.sender import OutSegment as OutSegment  # re-exported: part of the API
from ustack.tcp.sender import Sender
from ustack.tcp.state import (
    RECEIVING,
    SENDING,
    SYNCHRONIZED,
    State,
    TimeoutReason,
    Trigger,
    next_state,
)
from ustack.tcp.stats import Stats
from ustack.tcp.timers import Timer, Timers
from ustack.wire import icmp
from ustack.wire import seq as sq
from ustack.wire.tcp import (
    ACK,
    MAX_WSCALE,
    NO_OPTIONS,
    RST,
    SYN,
    URG,
    Control,
    TcpOptions,
    TcpSegment,
)

log = logging.getLogger("ustack.tcp")

# Linux's TCP_MIN_MSS: a peer's MSS option cannot make us send smaller segments than this.
MIN_MSS = 88
# RFC 7323 3.2: the timestamps option costs 12 bytes of every segment (10 + 2 NOPs), which
# RFC 9293 3.7.1 takes off the effective send MSS.
TS_OPTION_BYTES = 12
# RFC 7323 5.4: the timestamp clock ticks between once a millisecond and once a second.
TS_HZ = 1000
# RFC 9293 3.7.1: the MSS is the path MTU less the fixed IPv4 and TCP headers (20 + 20).
IP_TCP_HEADERS = 40
# The smallest path MTU a "fragmentation needed" can make us believe: 576, the datagram every
# host must accept (RFC 1122 3.3.3), so MSS 536. RFC 1191 allows 68, but RFC 5927 7 shows what
# forged ICMP can do with tiny segments; Linux keeps a floor for the same reason (min_pmtu).
PMTU_MIN = 576
# A reneging receiver gets the RTO sooner: max(SRTT/2, this), as Linux does.
RENEGE_RTO_MIN = 0.010

# Output that a timer (or a segment) asked for and the next segments_to_send carries.
_DUE_SYN = 1  # our SYN or SYN,ACK (3.10.1, 3.10.7.2, retransmission)
_DUE_WINDOW_PROBE = 2  # one byte into a zero window (3.8.6.1)
_DUE_KEEPALIVE = 4  # SEG.SEQ = SND.NXT - 1 (RFC 1122 4.2.3.6)
_DUE_TLP = 8  # a tail loss probe (RFC 8985 7.3)

_INF = float("inf")  # an unarmed slot of Timers.at
_T_RETRANSMIT = int(Timer.RETRANSMIT)
_T_PROBE = int(Timer.PROBE)
_T_REORDER = int(Timer.REORDER)
_T_USER_TIMEOUT = int(Timer.USER_TIMEOUT)

Tracer = Callable[["Connection", str, dict[str, Any]], None]
T = TypeVar("T")


def negotiate(config: TcpConfig, syn: TcpOptions) -> tuple[bool, bool, bool]:
    """What a peer's SYN and our config agree on: window scaling (RFC 7323 2.2), SACK
    (RFC 2018 2), timestamps (RFC 7323 3.2) -- each needs both sides to want it."""
    return (
        syn.wscale is not None and config.window_scale,
        syn.sack_permitted and config.sack,
        syn.timestamps is not None and config.timestamps,
    )


def syn_ack_options(
    config: TcpConfig,
    adv_mss: int,
    wscale: bool,
    sack: bool,
    timestamps: tuple[int, int] | None,
) -> TcpOptions:
    """The options of our SYN,ACK: our MSS (3.7.1), and only what the SYN offered too. Shared
    by a connection in SYN-RECEIVED and the host's stateless SYN-cookie SYN,ACK."""
    return TcpOptions(
        mss=adv_mss,
        wscale=wscale_for(config.recv_buffer) if wscale else None,
        sack_permitted=sack,
        timestamps=timestamps,
    )


class _Part(Generic[T]):
    """A read-only attribute of the connection that lives in one of its parts (``"snd.snd_una"``
    reads ``conn.snd.snd_una``): the public names stay where they were before the split."""

    __slots__ = ("_get",)

    def __init__(self, path: str) -> None:
        self._get = attrgetter(path)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Part[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | _Part[T]:
        if obj is None:
            return self
        value: T = self._get(obj)
        return value


class Connection:
    __slots__ = (
        "_chal_count",
        "_chal_start",
        "_data_event_pending",
        "_due",
        "_events",
        "_ka_count",
        "_ka_idle",
        "_ka_interval",
        "_ka_probes",
        "_last_recv",
        "_opt_cache",
        "_out",
        "_reset",
        "_shutdown_pending",
        "_syn_retries",
        "_syn_time",
        "_timers",
        "_tracer",
        "_ts_offset",
        "_ws_ok",
        "adv_mss",
        "cc",
        "config",
        "iss",
        "keepalive",
        "local_addr",
        "local_port",
        "on_change",
        "orphaned",
        "passive",
        "path_mtu",
        "rcv",
        "recovery",
        "remote_addr",
        "remote_port",
        "rtt",
        "snd",
        "soft_error",
        "state",
        "stats",
    )

    def __init__(
        self,
        config: TcpConfig,
        stats: Stats,
        *,
        local_addr: int,
        local_port: int,
        remote_addr: int,
        remote_port: int,
        iss: int,
        now: float,
        congestion: _cc.CongestionControl | None = None,
        ts_offset: int = 0,
    ) -> None:
        self.config = config
        self.adv_mss = config.mss or ETHERNET_MSS  # the MSS we advertise (RFC 9293 3.7.1)
        self.stats = stats
        self.local_addr = local_addr
        self.local_port = local_port
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.state = State.CLOSED
        self.passive = False
        self.orphaned = False
        self.on_change: Callable[[], None] | None = None
        self._tracer: Tracer | None = None
        self.iss = iss & sq.MASK
        self._timers = timers = Timers()
        mss = max(min(DEFAULT_PEER_MSS, self.adv_mss), 1)
        self.snd = Sender(config, stats, timers, self.iss, mss)
        self.rcv = Receiver(config, stats, timers, self.adv_mss)
        self.cc: _cc.CongestionControl = (
            congestion
            if congestion is not None
            else _cc.create(config.congestion, mss, hystart=config.hystart)
        )
        self.recovery = Recovery(config, stats, timers, self.cc, mss)
        self.rtt = RtoEstimator(
            config.rto_initial, config.rto_min, config.rto_max, config.clock_granularity
        )
        self.snd.attach(self.rcv, self.recovery, self.cc, self.rtt)
        self._ts_offset = ts_offset & sq.MASK  # RFC 7323 5.4: a per-connection clock offset
        self._ws_ok = False
        self._due = 0
        self._syn_retries = 0
        self._syn_time = now
        self._reset = False
        self._shutdown_pending = False
        self._out: list[OutSegment] = []  # RSTs and ACKs built while processing input
        # A list, not a deque: a connection rarely holds more than a few events, and an empty
        # deque costs 600 bytes (one per connection, thousands of connections).
        self._events: list[Event] = []
        self._data_event_pending = False
        self._opt_cache: TcpOptions = NO_OPTIONS
        self.keepalive = config.keepalive
        self._ka_idle = config.keepalive_idle
        self._ka_interval = config.keepalive_interval
        self._ka_count = config.keepalive_count
        self._ka_probes = 0
        self._last_recv = now
        self._chal_start = -float("inf")
        self._chal_count = 0
        # RFC 1191 6.1: the path MTU as we know it, at first what our own link takes.
        self.path_mtu = self.adv_mss + IP_TCP_HEADERS
        # RFC 1122 4.2.3.9: the last soft ICMP error, as an errno (0: none); reported only if
        # the connection then times out (Linux's sk_err_soft).
        self.soft_error = 0

    # -- the TCB, read-only views ---------------------------------------------------------------

    @property
    def tracer(self) -> Tracer | None:
        return self._tracer

    @tracer.setter
    def tracer(self, tracer: Tracer | None) -> None:
        self._tracer = tracer
        if tracer is None:
            self.recovery.trace = self.snd.trace = None
        else:

            def trace(kind: str, detail: dict[str, Any]) -> None:
                tracer(self, kind, detail)

            self.recovery.trace = self.snd.trace = trace

    # The TCB under the RFC's names, read from the part that owns each value.
    snd_una: _Part[int] = _Part("snd.snd_una")
    snd_nxt: _Part[int] = _Part("snd.snd_nxt")
    snd_max: _Part[int] = _Part("snd.snd_max")  # one past the highest sent, window probes too
    snd_wnd: _Part[int] = _Part("snd.snd_wnd")
    max_snd_wnd: _Part[int] = _Part("snd.max_snd_wnd")
    snd_wscale: _Part[int] = _Part("snd.snd_wscale")
    snd_mss: _Part[int] = _Part("snd.snd_mss")  # effective: options already taken off
    peer_mss: _Part[int] = _Part("snd.peer_mss")
    nodelay: _Part[bool] = _Part("snd.nodelay")
    send_space: _Part[int] = _Part("snd.buf.free")
    send_queued: _Part[int] = _Part("snd.queued")  # queued and not yet acknowledged
    irs: _Part[int] = _Part("rcv.irs")
    rcv_nxt: _Part[int] = _Part("rcv.rcv_nxt")
    rcv_wnd: _Part[int] = _Part("rcv.rcv_wnd")
    rcv_adv: _Part[int] = _Part("rcv.rcv_adv")
    rcv_wscale: _Part[int] = _Part("rcv.rcv_wscale")
    readable: _Part[int] = _Part("rcv.buf.readable")
    eof_received: _Part[bool] = _Part("rcv.fin_received")
    ooo_pieces: _Part[int] = _Part("rcv.buf.ooo_pieces")
    ooo_bytes: _Part[int] = _Part("rcv.buf.ooo_bytes")
    timestamps_ok: _Part[bool] = _Part("rcv.ts_ok")
    sack_ok: _Part[bool] = _Part("recovery.sack")
    srtt: _Part[float | None] = _Part("rtt.srtt")
    rttvar: _Part[float] = _Part("rtt.rttvar")
    rto: _Part[float] = _Part("rtt.rto")
    cwnd: _Part[int] = _Part("cc.cwnd")
    ssthresh: _Part[int] = _Part("cc.ssthresh")

    @property
    def in_recovery(self) -> bool:
        return self.recovery.state is LossState.RECOVERY

    @property
    def pipe(self) -> int:
        return self.recovery.pipe(self.snd.flight)

    @property
    def timers(self) -> dict[str, float | None]:
        """Every timer's deadline by name, for tests and tracing."""
        return self._timers.as_dict()

    def __repr__(self) -> str:
        return (
            f"<Connection {self.local_port}->{self.remote_port} {self.state} "
            f"una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>"
        )

    # -- application calls ---------------------------------------------------------------------

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def open_active(self, now: float) -> None:
        """Active OPEN (RFC 9293 3.10.1): send SYN with our options."""
        if self.state is not State.CLOSED or self._reset:
            raise OSError("connection is not in CLOSED")
        self.stats.tcp_active_opens += 1
        self._due |= _DUE_SYN
        self._fire(Trigger.OPEN_ACTIVE, now)
        self._changed()

    def open_passive(self, now: float) -> None:
        """Passive OPEN (3.10.1): this TCB waits in LISTEN for the SYN the host feeds it."""
        if self.state is not State.CLOSED or self._reset:
            raise OSError("connection is not in CLOSED")
        self.passive = True
        self.stats.tcp_passive_opens += 1
        self._fire(Trigger.OPEN_PASSIVE, now)

    def open_from_cookie(
        self,
        seg: TcpSegment,
        now: float,
        *,
        peer_mss: int,
        peer_wscale: int | None = None,
        sack: bool = False,
    ) -> None:
        """RFC 4987 3.6: the SYN of this passive open was answered with a SYN cookie and
        forgotten, and ``seg`` is the ACK that returned a valid one (the host checked it; the
        connection was made with ISS = the cookie). The TCB is rebuilt from the ACK: IRS =
        SEG.SEQ - 1, the peer's MSS, window shift and SACK-permitted as the cookie kept them
        (``peer_wscale``/``sack`` only ever come back through timestamps), timestamps if the ACK
        carries one; our SYN,ACK is acknowledged, so LISTEN -> ESTABLISHED at once. Then the ACK
        is processed as in ESTABLISHED: it may carry data, or a FIN."""
        if self.state is not State.LISTEN or self._reset:
            raise OSError("connection is not in LISTEN")
        if seg.ack != sq.add(self.iss, 1) or not seg.has_ack:
            raise ValueError("the segment does not acknowledge this connection's ISS")
        self.stats.tcp_segments_received += 1
        ts = seg.options.timestamps if self.config.timestamps else None
        self._agree(
            sq.add(seg.seq, -1), peer_mss, peer_wscale, sack, None if ts is None else ts[0], now
        )
        snd = self.snd
        snd.una = 1
        snd.advance(1)
        # RFC 7323 2.2: the ACK is no SYN, so its window is scaled already
        snd.snd_wnd = snd.max_snd_wnd = seg.window << snd.snd_wscale
        snd.snd_wl1 = seg.seq
        snd.snd_wl2 = seg.ack
        self._fire(Trigger.RCV_COOKIE_ACK, now)
        self._process_segment(seg, now)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """SEND (3.10.2): queue bytes; returns how many fit in the send buffer."""
        if self._reset:
            raise ConnectionResetError("connection reset by peer")
        snd = self.snd
        if self.state not in _CAN_SEND or snd.fin_queued or self._shutdown_pending:
            raise BrokenPipeError("connection is closed for sending")
        n = snd.queue(data)
        if n:
            self._changed()
        return n

    def read(self, max_bytes: int = -1) -> bytes:
        """RECEIVE (3.10.3): take in-order bytes; may schedule a window update."""
        rcv = self.rcv
        data = rcv.read(max_bytes)
        if data and self.state in RECEIVING and not rcv.ack_now and rcv.window_opened():
            # 3.8.6.2.2: the window opened by enough to be worth announcing
            rcv.ack_now = True
            self.stats.tcp_window_updates += 1
            self._changed()
        return data

    def shutdown(self, now: float) -> None:
        """Half-close: our FIN follows the queued data (CLOSE, 3.10.4)."""
        self._shutdown(now)
        self._changed()

    def _shutdown(self, now: float) -> None:
        state = self.state
        if state is State.LISTEN or state is State.SYN_SENT:
            self._fire(Trigger.CLOSE, now)
        elif state is State.SYN_RECEIVED:
            # 3.10.4: queue the close until ESTABLISHED is reached
            self._shutdown_pending = True
        elif state is State.ESTABLISHED or state is State.CLOSE_WAIT:
            self.snd.queue_fin()
            self._fire(Trigger.CLOSE, now)

    def close(self, now: float) -> None:
        """Shut down and orphan: no more reads; unread data turns the close into a RST."""
        if self.orphaned:
            return
        self.orphaned = True
        if (
            self.rcv.buf.readable
            and self.state in SYNCHRONIZED
            and self.state is not State.TIME_WAIT
        ):
            # RFC 2525 2.17: closing with unread data resets, so the peer learns data was lost
            self.stats.tcp_close_unread_rst += 1
            self._reset_and_close(now)
            self._changed()
            return
        self._shutdown(now)
        if self.state is State.FIN_WAIT_2:
            self._timers.set_once(Timer.FIN_WAIT_2, now + self.config.fin_wait2_timeout)
        self._changed()

    def abort(self, now: float) -> None:
        """ABORT (3.10.5): RST in the states that have told the peer anything, then CLOSED."""
        if self.state is State.CLOSED:
            return
        self.stats.tcp_aborts += 1
        if self.state in _RST_ON_ABORT:
            self._reset_and_close(now)
        else:
            self._fire(Trigger.ABORT, now)
        self._changed()

    def set_nodelay(self, on: bool) -> None:
        """Turn the Nagle algorithm (3.7.4) off (``True``) or on."""
        self.snd.nodelay = on
        self._changed()

    def set_keepalive(
        self,
        on: bool,
        idle: float | None = None,
        interval: float | None = None,
        count: int | None = None,
    ) -> None:
        """Keep-alives (RFC 1122 4.2.3.6), counted from the last segment received."""
        self.keepalive = on
        if idle is not None:
            self._ka_idle = idle
        if interval is not None:
            self._ka_interval = interval
        if count is not None:
            self._ka_count = count
        self._ka_probes = 0
        if on and self.state in _KEEPALIVE:
            self._timers.set(Timer.KEEPALIVE, self._last_recv + self._ka_idle)
        else:
            self._timers.clear(Timer.KEEPALIVE)
        self._changed()

    def set_user_timeout(self, seconds: float | None) -> None:
        """The user timeout (RFC 9293 3.10.1, RFC 5482) of this connection, with Linux's
        TCP_USER_TIMEOUT meaning (tcp(7)): the longest transmitted data may stay unacknowledged,
        or queued data untransmitted behind a zero window, before the connection gives up; with
        keep-alives on, it also replaces their probe count (the connection gives up once the
        peer has been silent that long). ``None`` goes back to counting retries
        (``data_retries``, ``keepalive_count``). A wait already under way is measured from its
        start, as Linux does."""
        if seconds is not None and not seconds > 0:  # NaN too
            raise ValueError(f"user timeout must be a positive number of seconds, not {seconds}")
        snd = self.snd
        snd.user_timeout = seconds
        timers = self._timers
        if (
            seconds is not None
            and self.state in SENDING
            and (snd.flight > 0 or timers.armed(Timer.PERSIST))
        ):
            timers.set(Timer.USER_TIMEOUT, snd.waiting_since + seconds)
        else:
            timers.clear(Timer.USER_TIMEOUT)
        self._changed()

    def next_event(self) -> Event | None:
        if not self._events:
            return None
        ev = self._events.pop(0)
        if type(ev) is DataReceived:
            self._data_event_pending = False
        return ev

    def take_events(self) -> list[Event]:
        """Every pending event at once, oldest first (``next_event`` until None, in one call)."""
        events = self._events
        self._events = []
        self._data_event_pending = False
        return events

    # -- ICMP errors ---------------------------------------------------------------------------

    def icmp_error(self, type_: int, code: int, mtu: int, now: float) -> None:
        """An ICMP error about one of our segments (RFC 1122 4.2.3.9, RFC 5927). The host found
        this connection by the quoted datagram and checked its sequence number (RFC 5927 4.1);
        ``mtu`` is the next-hop MTU of "fragmentation needed" (RFC 1191 4; the host puts in a
        plateau when a router sent 0), else 0."""
        stats = self.stats
        state = self.state
        hard = type_ == icmp.DEST_UNREACH and code in _HARD_UNREACH
        if type_ == icmp.DEST_UNREACH and code == icmp.FRAG_NEEDED:
            # RFC 1191 6.1: no error at all, but a smaller path MTU to send segments for.
            self._lower_path_mtu(mtu)
        elif hard and state is State.SYN_SENT:
            # RFC 1122 4.2.3.9 / RFC 5927 4.1: port or protocol unreachable is a hard error
            # and aborts a connection still opening: "connection refused", as a RST would be.
            stats.tcp_icmp_refused += 1
            self._reset = True
            self._events.append(Reset(self, True))
            self._fire(Trigger.ABORT, now)
        elif hard and state is State.SYN_RECEIVED and self.passive:
            # RFC 5927 4.1: a hard error about our SYN,ACK ends a half-open passive connection
            # nobody has accepted (Linux drops its request); the listener goes on.
            stats.tcp_icmp_synrcvd_dropped += 1
            self._fire(Trigger.ABORT, now)
        else:
            # RFC 1122 4.2.3.9: soft errors "MUST NOT abort the connection", and RFC 5927 4.1
            # treats hard errors as soft once synchronized; remembered, reported on a timeout.
            stats.tcp_icmp_soft_errors += 1
            self.soft_error = icmp.error_errno(type_, code)

    def _lower_path_mtu(self, mtu: int) -> None:
        """RFC 1191 6.1 and 6.5: take a smaller path MTU, lower the effective send MSS to fit,
        and send again at once what was too big -- a router dropped it for its size, not
        because of congestion, so cwnd stays (Linux's "simple retransmit")."""
        stats = self.stats
        clamped = mtu < PMTU_MIN
        if clamped:
            mtu = PMTU_MIN
        if mtu >= self.path_mtu:
            # RFC 1191 6.1: a Datagram Too Big message never raises the estimate.
            stats.tcp_pmtu_not_lower += 1
            return
        if clamped:
            stats.tcp_pmtu_clamped += 1
        else:
            stats.tcp_pmtu_lowered += 1
        self.path_mtu = mtu
        snd = self.snd
        # RFC 9293 3.7.1: the effective MSS also leaves room for the options every segment has
        mss = mtu - IP_TCP_HEADERS - (TS_OPTION_BYTES if self.rcv.ts_ok else 0)
        if mss >= snd.snd_mss:
            return  # the peer's MSS already kept our segments this small
        snd.snd_mss = mss
        cc = self.cc
        cc.mss = mss
        tso = self.config.tso_max
        cc.segment = tso - tso % mss if tso > mss else 0
        stats.tcp_pmtu_retransmits += self.recovery.path_mtu_lowered(mss)

    # -- segment arrival -----------------------------------------------------------------------

    def receive(self, seg: TcpSegment, now: float) -> None:
        """SEGMENT ARRIVES (RFC 9293 3.10.7)."""
        self.stats.tcp_segments_received += 1
        # Header prediction: ESTABLISHED's everyday segments skip the dispatch below (same
        # effect, see _predicted).
        if (
            self.state is State.ESTABLISHED
            and seg.control is Control.NONE
            and self.config.header_prediction
            and self._predicted(seg, now)
        ):
            return
        match (self.state, seg.control):
            case (state, _) if state in _SYNCHRONIZED_OPEN:
                # 3.10.7.4: ESTABLISHED and later share the "Otherwise" processing (first, as
                # the hot path; the arms below are for other states only).
                self._receive_synchronized(seg, now)
            case (State.CLOSED, Control.RST):
                # 3.10.7.1: an incoming RST in CLOSED is discarded.
                self.stats.tcp_drop_closed += 1
            case (State.CLOSED, _):
                # 3.10.7.1: anything else in CLOSED is answered with a RST.
                self.stats.tcp_drop_closed += 1
                self._rst_reply(seg)
            case (State.LISTEN, Control.RST):
                # 3.10.7.2 first check: a RST in LISTEN is ignored.
                self.stats.tcp_drop_listen_rst += 1
            case (State.LISTEN, _) if seg.has_ack:
                # 3.10.7.2 second check: any ACK in LISTEN is bad; <SEQ=SEG.ACK><CTL=RST>.
                self.stats.tcp_drop_listen_ack += 1
                self._rst_reply(seg)
            case (State.LISTEN, Control.SYN):
                # 3.10.7.2 third check: LISTEN -> SYN-RECEIVED, answer with SYN,ACK.
                self._take_syn(seg, now)
                self._due |= _DUE_SYN
                self._fire(Trigger.RCV_SYN, now)
            case (State.LISTEN, _):
                # 3.10.7.2 fourth: no SYN, no RST, no ACK -- drop it.
                self.stats.tcp_drop_listen_no_syn += 1
            case (State.SYN_SENT, Control.RST) if seg.has_ack and not self._syn_acked_by(seg):
                # 3.10.7.3 first check: a RST with an unacceptable ACK is dropped, never answered.
                self.stats.tcp_drop_syn_sent_bad_ack += 1
            case (State.SYN_SENT, _) if seg.has_ack and not self._syn_acked_by(seg):
                # 3.10.7.3 first check: an unacceptable ACK gets <SEQ=SEG.ACK><CTL=RST>.
                self.stats.tcp_drop_syn_sent_bad_ack += 1
                self._rst_reply(seg)
            case (State.SYN_SENT, Control.RST) if seg.has_ack:
                # 3.10.7.3 second check: RST acking our SYN -> CLOSED, "connection refused".
                self.stats.tcp_refused += 1
                self._reset = True
                self._events.append(Reset(self, True))
                self._fire(Trigger.RCV_RST, now)
            case (State.SYN_SENT, Control.RST):
                # 3.10.7.3 second check: a RST without ACK cannot be validated; drop it.
                self.stats.tcp_drop_syn_sent_rst_no_ack += 1
            case (State.SYN_SENT, Control.SYN) if seg.has_ack:
                # 3.10.7.3 fourth check: SYN,ACK acking our SYN -> ESTABLISHED, ACK it. (Data
                # on a SYN,ACK is not taken; the peer sends it again.)
                self._take_syn(seg, now)
                self._syn_acknowledged(seg, now)
                self.rcv.ack_now = True
                self._fire(Trigger.RCV_SYN_ACK, now)
            case (State.SYN_SENT, Control.SYN):
                # 3.10.7.3 fourth check: SYN without ACK is a simultaneous open -> SYN-RECEIVED.
                self._take_syn(seg, now)
                self._due |= _DUE_SYN
                self._syn_retries = 0
                self._timers.clear(Timer.RETRANSMIT)
                self._fire(Trigger.RCV_SYN, now)
            case (State.SYN_SENT, _):
                # 3.10.7.3 fifth: neither SYN nor RST -- drop it.
                self.stats.tcp_drop_syn_sent_no_syn += 1
            case (State.SYN_RECEIVED, Control.SYN) if seg.seq == self.rcv.irs and not seg.has_ack:
                # The peer retransmitted its SYN: our SYN,ACK was lost, send it again.
                self.stats.tcp_synack_retransmits += 1
                self.stats.tcp_retransmits += 1
                self._due |= _DUE_SYN
            case (State.SYN_RECEIVED, Control.SYN) if (
                seg.seq == self.rcv.irs and seg.has_ack and seg.ack == self.snd_nxt
            ):
                # 3.5 figure 7: in a simultaneous open the peer's SYN,ACK acks our SYN.
                self._syn_acknowledged(seg, now)
                self.rcv.ack_now = True
                self._fire(Trigger.RCV_SYN_ACK, now)
                self._run_pending_shutdown(now)
            case (State.SYN_RECEIVED, _):
                # 3.10.7.4: anything else in SYN-RECEIVED takes the "Otherwise" processing.
                self._receive_synchronized(seg, now)
            case _:
                self.stats.tcp_drop_unexpected += 1

    def _predicted(self, seg: TcpSegment, now: float) -> bool:
        """Header prediction (Jacobson's 4BSD fast path; RFC 9293 3.10.7.4 is what it
        shortcuts). In ESTABLISHED nearly every segment is one of three kinds:

        * a pure ACK of new data: SEG.SEQ = RCV.NXT, no text, SND.UNA < SEG.ACK =< SND.NXT,
          the window unchanged, no SACK blocks, no loss being repaired;
        * the next in-order data: SEG.SEQ = RCV.NXT, SEG.ACK = SND.UNA (nothing new acked),
          the window unchanged, the text within RCV.WND, nothing held out of order;
        * both at once (request/response traffic: the next request acknowledges the last
          response), the ACK processed first;

        each with nothing unusual: no URG, and only a Timestamps option (when negotiated, with
        SEG.TSval >= TS.Recent, so PAWS passes outright) or no option at all. Such a segment
        is processed here, without the checks that cannot fire for it, with exactly the
        general path's effect on the TCB, timers, events, counters and output (a property test
        feeds both the same input). Anything else returns False and has changed nothing."""
        if not seg.has_ack or seg.flags & URG:
            return False
        rcv = self.rcv
        seg_seq = seg.seq
        if seg_seq != rcv.rcv_nxt:
            return False
        opts = seg.options
        ts = opts.timestamps
        if rcv.ts_ok:
            if (
                ts is None
                or sq.lt(ts[0], rcv.ts_recent)
                or opts.sack_blocks
                or opts.mss is not None
                or opts.wscale is not None
                or opts.sack_permitted
            ):
                return False
        elif opts is not NO_OPTIONS:
            return False
        snd = self.snd
        wnd = seg.window << snd.snd_wscale
        if wnd != snd.snd_wnd:
            return False
        ack = seg.ack
        snd_una = snd.snd_una
        payload = seg.payload
        n = len(payload)
        if n and (n > rcv.rcv_wnd or rcv.buf.has_ooo or rcv.ooo_fin is not None or self.orphaned):
            return False
        # SND.UNA < SEG.ACK =< SND.NXT as a signed distance, not two circle comparisons: with
        # nothing in flight an ACK exactly 2**31 away is both "after" SND.UNA and "before"
        # SND.NXT (wire/seq), and taking it would move SND.UNA back by 2**31 (the fuzzer's find;
        # the general path drops it as an ACK of data never sent).
        if (n == 0 or ack != snd_una) and (
            ack == snd_una
            or not 0 < sq.sub(ack, snd_una) <= snd.nxt - snd.una
            or self.recovery.state is not LossState.OPEN
        ):
            return False
        # The segment is ours: the general path's steps, in its order.
        if ts is not None:
            rcv.update_ts_recent(seg_seq, ts[0], now)  # RFC 7323 4.3
        self._last_recv = now
        if self.keepalive:
            self._ka_probes = 0
            self._timers.set(Timer.KEEPALIVE, now + self._ka_idle)
        snd.persist_unanswered = 0
        if n and ack == snd_una:
            snd.update_window(seg_seq, ack, wnd)
            self._take_in_order(payload, now)
            self.stats.tcp_fast_path_data += 1
            return True
        una_old = snd.una
        ack_u = una_old + sq.sub(ack, snd_una)
        flight_old = snd.nxt - una_old
        snd.update_window(seg_seq, ack, wnd)
        acked = snd.acked(ack_u)
        tsecr = ts[1] if ts is not None else None
        self._ack_progress(ack, ack_u, una_old, flight_old, acked, [], None, tsecr, now)
        if n:
            # data that also acknowledges ours (a request answering a response): the ACK's
            # processing first, as the fifth check comes before the seventh
            self._take_in_order(payload, now)
            self.stats.tcp_fast_path_data += 1
        else:
            self.stats.tcp_fast_path_acks += 1
        return True

    def _receive_synchronized(self, seg: TcpSegment, now: float) -> None:
        stats = self.stats
        state = self.state
        ctl = seg.control
        rcv = self.rcv
        rcv_nxt = rcv.rcv_nxt
        seg_seq = seg.seq
        plen = len(seg.payload)
        fin = ctl is Control.FIN
        seg_len = plen + (1 if fin or ctl is Control.SYN else 0)
        ts = seg.options.timestamps
        if rcv.ts_ok and (ctl is Control.NONE or fin):
            if ts is None:
                # RFC 7323 3.2: once negotiated, a non-RST segment without TSopt is dropped.
                stats.tcp_drop_no_timestamp += 1
                return
            if rcv.paws_reject(ts[0], now):
                # RFC 7323 5.3 R1: an old duplicate (its TSval is behind TS.Recent) -> ACK, drop.
                stats.tcp_drop_paws += 1
                self._emit_ack(now)
                return
        # First check (3.10.7.4): is the segment acceptable?
        if not rcv.acceptable(seg_seq, seg_len):
            if ctl is Control.RST:
                # RFC 5961 3.2: a RST outside the window is dropped silently.
                stats.tcp_drop_rst_out_of_window += 1
            elif ctl is Control.SYN:
                # RFC 5961 4.2: a SYN gets a challenge ACK whatever its sequence number.
                stats.tcp_drop_syn_synchronized += 1
                self._challenge_ack(now)
            elif state is State.TIME_WAIT and fin:
                # 3.10.7.4 eighth check, TIME-WAIT: a retransmitted FIN is ACKed again and
                # restarts the 2*MSL timeout.
                self._time_wait_refin(now)
            else:
                # 3.10.7.4 first check: an unacceptable segment is answered with an ACK; a
                # duplicate is reported as a D-SACK (RFC 2883).
                end = sq.add(seg_seq, seg_len)
                if plen and sq.le(end, rcv_nxt):
                    stats.tcp_dup_segments += 1
                    rcv.note_duplicate(seg_seq, sq.add(seg_seq, plen))
                else:
                    stats.tcp_drop_out_of_window += 1
                self._emit_ack(now)
            return
        if ts is not None and rcv.ts_ok:
            rcv.update_ts_recent(seg_seq, ts[0], now)
        self._last_recv = now
        if self.keepalive:
            self._ka_probes = 0
            self._timers.set(Timer.KEEPALIVE, now + self._ka_idle)
        match (state, ctl):
            case (State.TIME_WAIT, Control.RST):
                # RFC 1337: a RST in TIME-WAIT is ignored (TIME-WAIT assassination).
                stats.tcp_drop_rst_time_wait += 1
            case (_, Control.RST) if seg_seq != rcv_nxt:
                # RFC 5961 3.2: a RST inside the window but not at RCV.NXT -> challenge ACK.
                self._challenge_ack(now)
            case (State.SYN_RECEIVED, Control.RST) if self.passive:
                # 3.10.7.4 second check: RST of a passive open returns it to LISTEN.
                stats.tcp_synrcvd_back_to_listen += 1
                self._timers.clear_all()
                self._due = 0
                self._fire(Trigger.RCV_RST, now)
            case (State.SYN_RECEIVED, Control.RST):
                # 3.10.7.4 second check: RST of an active open -> CLOSED, "connection refused".
                stats.tcp_refused += 1
                self._reset = True
                self._events.append(Reset(self, True))
                self._fire(Trigger.RCV_RST, now)
            case (_, Control.RST):
                # 3.10.7.4 second check: RST at RCV.NXT -> CLOSED, "connection reset".
                stats.tcp_resets_received += 1
                self._reset = True
                self._events.append(Reset(self, False))
                self._fire(Trigger.RCV_RST, now)
            case (_, Control.SYN):
                # RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK, nothing else.
                stats.tcp_drop_syn_synchronized += 1
                self._challenge_ack(now)
            case (_, _) if not seg.has_ack:
                # 3.10.7.4 fifth check: a segment without ACK is dropped.
                stats.tcp_drop_no_ack += 1
            case (State.SYN_RECEIVED, _) if not (
                sq.lt(self.snd_una, seg.ack) and sq.le(seg.ack, self.snd_nxt)
            ):
                # 3.10.7.4 fifth check: unacceptable ACK in SYN-RECEIVED -> <SEQ=SEG.ACK><RST>.
                stats.tcp_drop_synrcvd_bad_ack += 1
                self._rst_reply(seg)
            case (State.SYN_RECEIVED, _):
                # 3.10.7.4 fifth check: the ACK of our SYN -> ESTABLISHED; go on as there.
                self._syn_acknowledged(seg, now)
                self._fire(Trigger.RCV_ACK, now)
                self._process_segment(seg, now)
                self._run_pending_shutdown(now)
            case (_, Control.NONE | Control.FIN):
                # 3.10.7.4 fifth to eighth checks: ACK, URG, text and FIN.
                self._process_segment(seg, now)
            case _:
                stats.tcp_drop_unexpected += 1

    def _process_segment(self, seg: TcpSegment, now: float) -> None:
        """The fifth to eighth checks of 3.10.7.4 for an acceptable segment with ACK."""
        if not self._on_ack(seg, now):
            return
        stats = self.stats
        state = self.state
        snd = self.snd
        if state in _FIN_SENT and snd.fin_acked:
            match state:
                case State.FIN_WAIT_1:
                    # 3.10.7.4 fifth check, FIN-WAIT-1: our FIN is acked -> FIN-WAIT-2.
                    self._fire(Trigger.RCV_ACK, now)
                    if self.orphaned:
                        self._timers.set(Timer.FIN_WAIT_2, now + self.config.fin_wait2_timeout)
                case State.CLOSING:
                    # 3.10.7.4 fifth check, CLOSING: our FIN is acked -> TIME-WAIT.
                    self._fire(Trigger.RCV_ACK, now)
                    return
                case State.LAST_ACK:
                    # 3.10.7.4 fifth check, LAST-ACK: our FIN is acked -> CLOSED.
                    self._fire(Trigger.RCV_ACK, now)
                    return
                case _:
                    pass
        if seg.urg:
            # 3.10.7.4 sixth check / RFC 6093: urgent data is delivered inline with the rest.
            stats.tcp_urgent_received += 1
        payload = seg.payload
        fin = seg.control is Control.FIN
        if not len(payload) and not fin:
            return
        self._receive_text(seg.seq, payload, fin, now)

    def _receive_text(self, seg_seq: int, payload: memoryview, fin: bool, now: float) -> None:
        """Seventh and eighth checks (3.10.7.4): text and FIN, trimmed to the window."""
        stats = self.stats
        rcv = self.rcv
        rcv_nxt = rcv.rcv_nxt
        front = sq.sub(rcv_nxt, seg_seq)
        if front > 0:
            # bytes before RCV.NXT are old: a duplicate, reported as a D-SACK (RFC 2883)
            if front > len(payload):
                fin = False  # the FIN itself is old
                front = len(payload)
            stats.tcp_dup_bytes_trimmed += front
            if front:
                rcv.note_duplicate(seg_seq, sq.add(seg_seq, front))
                rcv.ack_now = True
            payload = payload[front:]
            seg_seq = rcv_nxt
        offset = sq.sub(seg_seq, rcv_nxt)
        room = rcv.rcv_wnd - offset
        if len(payload) > room:
            # bytes beyond RCV.WND are cut off
            stats.tcp_window_trimmed_bytes += len(payload) - max(room, 0)
            payload = payload[: max(room, 0)]
            fin = False
            rcv.ack_now = True
        state = self.state
        if len(payload):
            if state not in RECEIVING:
                # 3.10.7.4 seventh check: after the peer's FIN there is no more text to accept.
                stats.tcp_drop_data_after_fin += 1
                rcv.ack_now = True
                return
            if self.orphaned:
                # Linux: data for a closed (orphaned) socket is answered with a RST.
                stats.tcp_rst_data_after_close += 1
                self._reset_and_close(now)
                return
            if offset == 0:
                self._take_in_order(payload, now)
            else:
                if rcv.out_of_order(offset, payload):
                    # RFC 5681 4.2: out-of-order data is ACKed at once (every duplicate ACK
                    # counts for a sender without SACK)
                    self._emit_ack(now)
        if fin:
            if state in RECEIVING:
                end = sq.add(seg_seq, len(payload))
                if end == rcv.rcv_nxt:
                    self._receive_fin(now)
                else:
                    # a FIN beyond a hole is remembered and taken when the hole fills
                    rcv.ooo_fin = end
            elif state is State.TIME_WAIT:
                self._time_wait_refin(now)
            else:
                rcv.ack_now = True
        elif rcv.ooo_fin is not None and rcv.ooo_fin == rcv.rcv_nxt and state in RECEIVING:
            self._receive_fin(now)

    def _take_in_order(self, payload: memoryview, now: float) -> None:
        """Seventh check (3.10.7.4): text at RCV.NXT goes to the application. An ACK it makes
        due (3.8.6.3: every second full-sized segment) is only noted; ``segments_to_send``
        builds one cumulative ACK for the whole batch the host read, or data carries it."""
        self.rcv.in_order(payload, now, self.rtt.rto)
        if not self._data_event_pending:
            self._data_event_pending = True
            self._events.append(DataReceived(self))

    def _receive_fin(self, now: float) -> None:
        """Eighth check (3.10.7.4): the peer's FIN reached RCV.NXT."""
        self.rcv.receive_fin()
        self._events.append(EofReceived(self))
        if self.state in _FIN_MOVES:
            self._fire(Trigger.RCV_FIN, now)

    def _time_wait_refin(self, now: float) -> None:
        self.stats.tcp_time_wait_restarted += 1
        self._emit_ack(now)
        self._timers.set(Timer.TIME_WAIT, now + 2 * self.config.msl)

    # -- the ACK: send window, SACK, loss detection, congestion control -----------------------

    def _on_ack(self, seg: TcpSegment, now: float) -> bool:
        """3.10.7.4 fifth check for the synchronized states; False if the segment is dropped."""
        stats = self.stats
        snd = self.snd
        ack = seg.ack
        snd_una = snd.snd_una
        if sq.gt(ack, snd.snd_max):
            # 3.10.7.4 / RFC 5961 5.2: ACK of data never sent -> ACK and drop.
            stats.tcp_drop_ack_unsent += 1
            self._challenge_ack(now)
            return False
        if sq.lt(ack, sq.add(snd_una, -snd.max_snd_wnd)):
            # RFC 5961 5.2: ACK older than SND.UNA - MAX.SND.WND -> ACK and drop.
            stats.tcp_drop_ack_old += 1
            self._challenge_ack(now)
            return False
        snd.persist_unanswered = 0
        if sq.lt(ack, snd_una):
            return True  # an old ACK: nothing to learn from it (3.10.7.4)
        rec = self.recovery
        wnd = seg.window << snd.snd_wscale
        una_old = snd.una
        ack_u = una_old + sq.sub(ack, snd_una)
        flight_old = snd.nxt - una_old
        # RFC 5681 2: a duplicate ACK carries no data, no SYN/FIN, acks SND.UNA while data is
        # outstanding and leaves the window unchanged (answers to window probes are not losses).
        dup = (
            ack_u == una_old
            and not len(seg.payload)
            and seg.control is Control.NONE
            and wnd == snd.snd_wnd
            and flight_old > 0
            and not self._timers.armed(Timer.PERSIST)
        )
        snd.update_window(seg.seq, ack, wnd)
        blocks: list[tuple[int, int]] = []
        dsack: tuple[int, int] | None = None
        opts = seg.options
        if opts.sack_blocks and rec.sack:
            blocks, dsack = rec.sack_info(
                [(snd.unwrap(left), snd.unwrap(right)) for left, right in opts.sack_blocks],
                ack_u,
                snd.nxt,
                snd.una - max(snd.max_snd_wnd, MAX_WINDOW_FIELD),
            )
        if ack_u == una_old and not blocks and dsack is None:
            if dup:
                stats.tcp_dup_acks += 1
                if not rec.sack and rec.reno_dupack(flight_old):
                    rec.enter_recovery(now, flight_old, snd.nxt, "newreno")
            return True
        if ack_u > una_old:
            acked = snd.acked(ack_u)
        else:
            acked = 0
            if dup:
                stats.tcp_dup_acks += 1
        tsecr = opts.timestamps[1] if opts.timestamps is not None and self.rcv.ts_ok else None
        self._ack_progress(ack, ack_u, una_old, flight_old, acked, blocks, dsack, tsecr, now)
        return True

    def _ack_progress(
        self,
        ack: int,
        ack_u: int,
        una_old: int,
        flight_old: int,
        acked: int,
        blocks: list[tuple[int, int]],
        dsack: tuple[int, int] | None,
        tsecr: int | None,
        now: float,
    ) -> None:
        """An ACK that acknowledged (``acked`` bytes, SND.UNA already moved) or SACKed
        something: RTT samples, loss detection, congestion control, timers. Shared by the
        general path and header prediction's pure ACK."""
        snd = self.snd
        rec = self.recovery
        delivered, rtt, ca_rtt = rec.on_ack(una_old, ack_u, snd.nxt, blocks, dsack, now, tsecr)
        if rtt is None and acked and tsecr is not None:
            # RFC 7323 4.1: the echoed TSval times the segment that made the peer ACK, even a
            # retransmitted one (the receiver's TS.Recent rules see to that)
            rtt = ((self._tsval(now) - tsecr) & sq.MASK) / TS_HZ
            if rtt > self.config.rto_max:
                rtt = None  # a TSecr from before a clock jump or from a broken peer
        if rtt is not None:
            self._rtt_sample(rtt, flight_old)
        if self.tracer is not None and (blocks or dsack is not None):
            self._trace_sack(ack, blocks, dsack)
        flight = snd.nxt - snd.una
        rec.maybe_exit(snd.una, now, flight)
        if acked and not rec.sack:
            rec.reno_ack(acked)
        if rec.sack and (rec.rack or rec.state is not LossState.LOSS):
            lost = rec.detect_loss(now, self.rtt.srtt) if rec.rack else rec.detect_loss_dupthresh()
            if lost and rec.state is LossState.OPEN and rec.board.lost_out:
                rec.enter_recovery(now, flight, snd.nxt, "rack" if rec.rack else "dupthresh")
        if delivered and rec.state is not LossState.RECOVERY:
            self.cc.on_ack(
                delivered,
                now,
                flight=flight,
                snd_una=snd.snd_una,
                snd_nxt=snd.snd_nxt,
                rtt=ca_rtt,
                srtt=self.rtt.srtt,
                min_rtt=rec.min_rtt,
                app_limited=not snd.cwnd_limited,
            )
        if rec.tlp_end is not None:
            rec.tlp_ack(ack_u, now, flight_old, dsack is not None)
        timers = self._timers
        if acked:
            # the path works again: an older soft ICMP error no longer explains a timeout
            self.soft_error = 0
            if flight <= 0:
                # RFC 6298 (5.2): everything is acknowledged (the four slots cleared at once,
                # as Timers.clear would: this runs on every ACK that empties the flight)
                at = timers.at
                at[_T_RETRANSMIT] = at[_T_PROBE] = at[_T_REORDER] = at[_T_USER_TIMEOUT] = _INF
            else:
                # RFC 6298 (5.3): new data acknowledged -> restart the timer
                timers.set(Timer.RETRANSMIT, now + self.rtt.rto)
                # ... and the user timeout (tcp(7) TCP_USER_TIMEOUT: progress restarts it)
                snd.waiting_since = now
                if snd.user_timeout is not None:
                    timers.set(Timer.USER_TIMEOUT, now + snd.user_timeout)
                rec.arm_probe(now, self.rtt.srtt, flight, timers.get(Timer.RETRANSMIT))
            if snd.write_blocked and snd.queued <= snd.low_water():
                snd.write_blocked = False
                self._events.append(WriteSpace(self))
        if rec.reneged and flight > 0:
            srtt = self.rtt.srtt or self.rtt.rto
            timers.set(Timer.RETRANSMIT, now + max(srtt / 2, RENEGE_RTO_MIN))

    def _rtt_sample(self, rtt: float, flight: int) -> None:
        """RFC 6298 (2.2)/(2.3) on every ACK of new data; with several samples per round trip,
        alpha and beta are divided by their expected number (RFC 7323 appendix G)."""
        per_rtt = max(-(-flight // (2 * self.snd.snd_mss)), 1)  # ceil(FlightSize / 2*SMSS)
        self.rtt.sample(rtt, per_rtt)
        self.stats.tcp_rtt_samples += 1

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 7: challenge ACKs, at most ``challenge_ack_limit`` per window."""
        cfg = self.config
        if now - self._chal_start >= cfg.challenge_ack_window:
            self._chal_start = now
            self._chal_count = 0
        if self._chal_count >= cfg.challenge_ack_limit:
            self.stats.tcp_challenge_acks_suppressed += 1
            return
        self._chal_count += 1
        self.stats.tcp_challenge_acks += 1
        self._emit_ack(now)

    # -- handshake helpers ---------------------------------------------------------------------

    def _syn_acked_by(self, seg: TcpSegment) -> bool:
        """3.10.7.3: ISS < SEG.ACK =< SND.NXT."""
        return sq.lt(self.iss, seg.ack) and sq.le(seg.ack, self.snd_nxt)

    def _take_syn(self, seg: TcpSegment, now: float) -> None:
        """Record the peer's SYN: IRS, MSS (3.7.1), and the options both sides agree on --
        window scale (RFC 7323 2.2), SACK-permitted (RFC 2018 2), timestamps (RFC 7323 3.2)."""
        opts = seg.options
        ws_ok, sack, ts_ok = negotiate(self.config, opts)
        tsval = opts.timestamps[0] if ts_ok and opts.timestamps is not None else None
        self._agree(seg.seq, opts.mss, opts.wscale if ws_ok else None, sack, tsval, now)
        snd = self.snd
        # RFC 7323 2.2: the window field of a SYN is never scaled
        snd.snd_wnd = seg.window
        snd.max_snd_wnd = seg.window
        snd.snd_wl1 = seg.seq
        snd.snd_wl2 = seg.ack

    def _agree(
        self,
        irs: int,
        peer_mss: int | None,
        peer_wscale: int | None,
        sack: bool,
        tsval: int | None,
        now: float,
    ) -> None:
        """Set up both sequence spaces from what the handshake agreed: the peer's IRS and MSS,
        its window shift (``None``: no scaling either way), SACK, and its first TSval (``None``:
        no timestamps). From a SYN, or from a SYN cookie's ACK (``open_from_cookie``)."""
        cfg = self.config
        snd = self.snd
        self._ws_ok = ws_ok = peer_wscale is not None
        self.rcv.start(irs, wscale_for(cfg.recv_buffer) if ws_ok else None, sack, tsval, now)
        # 3.7.1: without an MSS option the peer can take 536 bytes
        snd.peer_mss = peer_mss if peer_mss is not None else DEFAULT_PEER_MSS
        mss = min(max(snd.peer_mss, MIN_MSS), self.adv_mss)
        if tsval is not None:
            mss -= TS_OPTION_BYTES
        snd.snd_mss = mss = max(mss, 1)
        snd.snd_wscale = min(peer_wscale or 0, MAX_WSCALE)
        rec = self.recovery
        rec.sack = sack
        rec.rack = sack and cfg.rack
        rec.tlp = sack and cfg.tlp
        rec.ts = tsval is not None
        rec.mss = mss
        self._last_recv = now
        self.cc.set_mss(mss, cfg.initial_window)
        if cfg.tso_max > mss:
            self.cc.segment = cfg.tso_max - cfg.tso_max % mss

    def _syn_acknowledged(self, seg: TcpSegment, now: float) -> None:
        """Our SYN is acknowledged (SYN-SENT or SYN-RECEIVED -> ESTABLISHED)."""
        snd = self.snd
        snd.una = 1
        snd.advance(1)
        if self._syn_retries == 0:
            self.rtt.sample(now - self._syn_time)
            self.stats.tcp_rtt_samples += 1
        else:
            self.rtt.after_syn_timeout()
        self._syn_retries = 0
        self._timers.clear(Timer.RETRANSMIT)
        self._due &= ~_DUE_SYN
        if self.state is State.SYN_RECEIVED:
            # the first non-SYN window is scaled (RFC 7323 2.2)
            snd.snd_wnd = seg.window << snd.snd_wscale
            snd.max_snd_wnd = max(snd.max_snd_wnd, snd.snd_wnd)
            snd.snd_wl1 = seg.seq
            snd.snd_wl2 = seg.ack

    def _run_pending_shutdown(self, now: float) -> None:
        if self._shutdown_pending:
            self._shutdown_pending = False
            self._shutdown(now)

    # -- state changes -------------------------------------------------------------------------

    def _fire(self, trigger: Trigger, now: float) -> None:
        """The only place the state changes: the transition table says where ``trigger``
        leads from here."""
        frm = self.state
        to = next_state(frm, trigger, self.passive)
        self.state = to
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s:%d %s -> %s (%s)", self.remote_addr, self.remote_port, frm, to, trigger)
        if self._tracer is not None:
            detail: dict[str, Any] = {"from": frm, "to": to, "trigger": trigger}
            if to is State.ESTABLISHED:
                detail["options"] = {
                    "mss": self.snd.snd_mss,
                    "wscale": self.snd.snd_wscale if self._ws_ok else None,
                    "sack": self.recovery.sack,
                    "timestamps": self.rcv.ts_ok,
                }
            self._tracer(self, "state", detail)
        if to is State.ESTABLISHED:
            self.stats.tcp_established += 1
            self._events.append(Established(self))
            if self.keepalive:
                self._timers.set(Timer.KEEPALIVE, now + self._ka_idle)
        elif to is State.TIME_WAIT:
            # 3.10.8 / RFC 9293 3.6: wait 2*MSL before the TCB is deleted
            self._timers.clear_all()
            self._timers.set(Timer.TIME_WAIT, now + 2 * self.config.msl)
        elif to is State.CLOSED:
            self._timers.clear_all()
            self._due = 0
            self.rcv.ack_now = False
            self.stats.tcp_closed += 1
            self._events.append(Closed(self))

    def _reset_and_close(self, now: float) -> None:
        """Send <SEQ=SND.NXT><CTL=RST> (3.10.5) and go to CLOSED."""
        self.stats.tcp_rsts_sent += 1
        self._out.append(OutSegment(self.snd_nxt, self.rcv_nxt, RST | ACK, 0, NO_OPTIONS, b""))
        self._fire(Trigger.ABORT, now)

    def _rst_reply(self, seg: TcpSegment) -> None:
        """3.10.7.1: the RST that answers a segment (never sent for a RST)."""
        if seg.control is Control.RST:
            return
        self.stats.tcp_rsts_sent += 1
        if seg.has_ack:
            self._out.append(OutSegment(seg.ack, 0, RST, 0, NO_OPTIONS, b""))
        else:
            end = sq.add(seg.seq, seg.seg_len)
            self._out.append(OutSegment(0, end, RST | ACK, 0, NO_OPTIONS, b""))

    def _fail(self, reason: TimeoutReason, now: float) -> None:
        """Give up (RFC 9293 3.8.3 R2, 3.10.1 user timeout, RFC 1122 4.2.3.5): the connection is
        aborted and the application told why."""
        stats = self.stats
        if reason in _RST_ON_GIVE_UP and self.state in _RST_ON_ABORT:
            # Giving up is an ABORT, and 3.10.5 answers ABORT with <SEQ=SND.NXT><CTL=RST>.
            # Linux sends it on a keep-alive timeout (tcp_send_active_reset); we send it on
            # every give-up of a synchronized connection (Linux's retransmission and probe
            # timeouts go silently), so a peer that is alive but unreachable one way -- or
            # that just answers our probes with a zero window -- learns the connection is
            # gone instead of holding it open.
            stats.tcp_rsts_sent += 1
            stats.tcp_timeout_rsts += 1
            self._out.append(OutSegment(self.snd_nxt, self.rcv_nxt, RST | ACK, 0, NO_OPTIONS, b""))
        match reason:
            case TimeoutReason.SYN:
                stats.tcp_timeout_syn += 1
            case TimeoutReason.SYNACK:
                stats.tcp_timeout_synack += 1
            case TimeoutReason.RETRANSMIT:
                stats.tcp_timeout_retransmit += 1
            case TimeoutReason.USER_TIMEOUT:
                stats.tcp_timeout_user += 1
            case TimeoutReason.KEEPALIVE:
                stats.tcp_timeout_keepalive += 1
            case TimeoutReason.FIN_WAIT_2:
                stats.tcp_timeout_fin_wait2 += 1
        self._events.append(TimedOut(self, reason))
        self._fire(Trigger.TIMEOUT, now)

    # -- timers --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers.next()

    def on_deadline(self, now: float) -> None:
        """Run every timer whose deadline has passed, in :class:`Timer` order."""
        timers = self._timers
        for timer in timers.due(now):
            if self.state is State.CLOSED:
                return
            if not timers.armed(timer) or timers.at[timer] > now:
                continue  # an earlier handler moved or cleared it
            timers.clear(timer)
            match timer:
                case Timer.TIME_WAIT:
                    # 3.10.8: 2*MSL elapsed in TIME-WAIT -> CLOSED
                    self.stats.tcp_time_wait_expired += 1
                    self._fire(Trigger.TIMEOUT, now)
                case Timer.FIN_WAIT_2:
                    # an orphaned FIN-WAIT-2 gives up waiting for the peer's FIN (Linux)
                    self._fail(TimeoutReason.FIN_WAIT_2, now)
                case Timer.USER_TIMEOUT:
                    # 3.10.1 / RFC 5482: data stayed unacknowledged, or queued behind a zero
                    # window (the persist timer running), longer than the user timeout
                    if self.state in SENDING and (
                        self.snd.flight > 0 or timers.armed(Timer.PERSIST)
                    ):
                        self._fail(TimeoutReason.USER_TIMEOUT, now)
                case Timer.RETRANSMIT:
                    self._on_retransmit_timeout(now)
                case Timer.REORDER:
                    # RFC 8985 6.3: the reordering window ran out for a segment
                    self._on_reorder_timeout(now)
                case Timer.PROBE:
                    # RFC 8985 7.3: two round trips of silence -> a tail loss probe
                    if self.state in SENDING and self.snd.flight > 0:
                        self._due |= _DUE_TLP
                case Timer.PERSIST:
                    self._on_persist_timeout(now)
                case Timer.KEEPALIVE:
                    self._on_keepalive_timeout(now)
                case Timer.DELAYED_ACK:
                    # 3.8.6.3: the delayed-ACK timer expired
                    self.stats.tcp_delayed_acks += 1
                    self.rcv.ack_now = True

    def _on_retransmit_timeout(self, now: float) -> None:
        stats = self.stats
        cfg = self.config
        state = self.state
        if state is State.SYN_SENT or state is State.SYN_RECEIVED:
            syn_sent = state is State.SYN_SENT
            if self._syn_retries >= (cfg.syn_retries if syn_sent else cfg.synack_retries):
                self._fail(TimeoutReason.SYN if syn_sent else TimeoutReason.SYNACK, now)
                return
            if syn_sent:
                stats.tcp_syn_retransmits += 1
            else:
                stats.tcp_synack_retransmits += 1
            stats.tcp_rto_expired += 1
            stats.tcp_retransmits += 1
            self._syn_retries += 1
            self.rtt.back_off()  # RFC 6298 (5.5)
            self._due |= _DUE_SYN
            if self._tracer is not None:
                self._tracer(
                    self,
                    "retransmit",
                    {"seq": self.iss, "len": 0, "fin": False, "syn": True, "reason": "syn"},
                )
            return
        snd = self.snd
        if state not in SENDING or snd.flight <= 0:
            return
        rec = self.recovery
        # a user timeout replaces the retry count (its own timer gives up), as in Linux
        if snd.user_timeout is None and rec.rto_streak >= cfg.data_retries:
            self._fail(TimeoutReason.RETRANSMIT, now)
            return
        # RFC 6298 (5.4)-(5.6), RFC 5681 3.1 (4): collapse cwnd; resend what is lost
        rec.on_rto(now, snd.una, snd.nxt, snd.flight)
        stats.tcp_rto_expired += 1
        self.rtt.back_off()
        # (5.4) the earliest unacknowledged segment goes out whatever cwnd and pipe say;
        # (5.6) the timer restarts with the backed-off RTO
        rec.force_rtx = True
        self._timers.set(Timer.RETRANSMIT, now + self.rtt.rto)
        self._due &= ~_DUE_TLP
        if self._tracer is not None:
            self._tracer(
                self,
                "rto",
                {"rto": self.rtt.rto, "backoff": self.rtt.backoff, "cwnd": self.cc.cwnd},
            )

    def _on_reorder_timeout(self, now: float) -> None:
        rec = self.recovery
        if self.state not in SENDING or not rec.rack:
            return
        if rec.detect_loss(now, self.rtt.srtt) and rec.state is LossState.OPEN:
            rec.enter_recovery(now, self.snd.flight, self.snd.nxt, "rack")

    def _on_persist_timeout(self, now: float) -> None:
        if self.state not in SENDING:
            return
        match self.snd.persist_timeout(now):
            case None:
                # probes went unanswered as often as data retransmissions may (tcp_retries2)
                self._fail(TimeoutReason.RETRANSMIT, now)
            case True:
                self._due |= _DUE_WINDOW_PROBE
            case False:
                pass

    def _on_keepalive_timeout(self, now: float) -> None:
        if not self.keepalive or self.state not in _KEEPALIVE:
            return
        snd = self.snd
        if snd.flight > 0 or snd.unsent > 0:
            # data is in flight or queued: retransmission handles a dead peer
            self._timers.set(Timer.KEEPALIVE, now + self._ka_idle)
            return
        user_timeout = snd.user_timeout
        if (
            self._ka_probes >= self._ka_count
            if user_timeout is None
            # tcp(7) TCP_USER_TIMEOUT overrides the probe count: give up once a probe has
            # gone out and the peer has been silent for the user timeout (Linux's
            # tcp_keepalive_timer checks this when the next probe is due)
            else self._ka_probes > 0 and now - self._last_recv >= user_timeout
        ):
            self._fail(TimeoutReason.KEEPALIVE, now)
            return
        self._ka_probes += 1
        self._due |= _DUE_KEEPALIVE
        self.stats.tcp_keepalive_probes += 1
        self._timers.set(Timer.KEEPALIVE, now + self._ka_interval)

    # -- output --------------------------------------------------------------------------------

    def segments_to_send(self, now: float) -> list[OutSegment]:
        """Everything to transmit now; the window field is already scaled down."""
        out = self._out
        if out:
            self._out = []
        else:
            out = []
        state = self.state
        if state is State.CLOSED or state is State.LISTEN:
            self.stats.tcp_segments_sent += len(out)
            return out
        acked = False
        if state is State.SYN_SENT or state is State.SYN_RECEIVED:
            if self._due & _DUE_SYN:
                self._send_syn(out, now)
                acked = state is State.SYN_RECEIVED
            if state is State.SYN_SENT:
                self.stats.tcp_segments_sent += len(out)
                return out
        elif state in SENDING:
            due = self._due
            self._due &= ~(_DUE_WINDOW_PROBE | _DUE_TLP)
            tsval = self._tsval(now) if self.rcv.ts_ok else -1
            acked = self.snd.output(
                now, out, tsval, bool(due & _DUE_WINDOW_PROBE), bool(due & _DUE_TLP)
            )
        rcv = self.rcv
        if self._due & _DUE_KEEPALIVE:
            # RFC 1122 4.2.3.6: an empty segment with SEG.SEQ = SND.NXT - 1 makes the peer ACK
            self._due &= ~_DUE_KEEPALIVE
            out.append(self._ack_segment(now, sq.add(self.snd_nxt, -1)))
            acked = True
        if rcv.ack_now and not acked:
            out.append(self._ack_segment(now))
            self.stats.tcp_acks_sent += 1
            acked = True
        if acked:
            rcv.ack_sent()
        self.stats.tcp_segments_sent += len(out)
        return out

    def _tsval(self, now: float) -> int:
        return (int(now * TS_HZ) + self._ts_offset) & sq.MASK

    def _syn_options(self, now: float) -> TcpOptions:
        """SYN: everything we support (RFC 9293 3.7.1, RFC 7323, RFC 2018); SYN,ACK: only what
        the peer's SYN offered too."""
        cfg = self.config
        if self.state is State.SYN_SENT:
            return TcpOptions(
                mss=self.adv_mss,
                wscale=wscale_for(cfg.recv_buffer) if cfg.window_scale else None,
                sack_permitted=cfg.sack,
                timestamps=(self._tsval(now), 0) if cfg.timestamps else None,
            )
        rcv = self.rcv
        return syn_ack_options(
            cfg,
            self.adv_mss,
            self._ws_ok,
            rcv.sack_ok,
            (self._tsval(now), rcv.ts_recent) if rcv.ts_ok else None,
        )

    def _send_syn(self, out: list[OutSegment], now: float) -> None:
        self._due &= ~_DUE_SYN
        rcv = self.rcv
        if self.state is State.SYN_SENT:
            flags, ack, win = SYN, 0, rcv.syn_window()
        else:
            flags, ack, win = SYN | ACK, rcv.rcv_nxt, rcv.syn_window()
        out.append(OutSegment(self.iss, ack, flags, win, self._syn_options(now), b""))
        self.snd.advance(1)
        if self._syn_retries == 0:
            self._syn_time = now
        self._timers.set_once(Timer.RETRANSMIT, now + self.rtt.rto)

    def _ack_segment(self, now: float, seq: int | None = None) -> OutSegment:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> with the window and options as of now."""
        rcv = self.rcv
        return OutSegment(
            self.snd_nxt if seq is None else seq,
            rcv.rcv_nxt,
            ACK,
            rcv.window_field(),
            rcv.options(self._tsval(now)),
            b"",
        )

    def _emit_ack(self, now: float) -> None:
        """An ACK of its own, queued now: duplicate ACKs must not merge (RFC 5681 4.2)."""
        self._out.append(self._ack_segment(now))
        self.stats.tcp_acks_sent += 1
        self.rcv.ack_sent()

    def _trace_sack(
        self, ack: int, blocks: list[tuple[int, int]], dsack: tuple[int, int] | None
    ) -> None:
        assert self._tracer is not None
        wrap = self.snd.wrap
        shown = ([dsack] if dsack is not None else []) + blocks
        self._tracer(
            self,
            "sack",
            {
                "ack": ack,
                "blocks": [[wrap(a), wrap(b)] for a, b in shown],
                "dsack": dsack is not None,
            },
        )


# The synchronized states after the handshake.
_SYNCHRONIZED_OPEN = SYNCHRONIZED - {State.SYN_RECEIVED}
# 3.10.2: SEND is accepted (queued) from SYN-SENT on, until our FIN is queued.
_CAN_SEND = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT})
# 3.10.5: ABORT sends a RST in these states; in the others the peer has nothing to reset.
_RST_ON_ABORT = frozenset(
    {State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT}
)
# RFC 1122 4.2.3.9: the destination-unreachable codes that are hard errors (besides "fragmentation
# needed", which RFC 1191 turned into path MTU discovery).
_HARD_UNREACH = frozenset({icmp.PROTO_UNREACH, icmp.PORT_UNREACH})
# States in which an ACK of our FIN moves the machine on (3.10.7.4 fifth check).
_FIN_SENT = frozenset({State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK})
# States the peer's FIN moves on (3.10.7.4 eighth check).
_FIN_MOVES = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
# Timeouts that abort a synchronized connection, so _fail sends the RST of ABORT (3.10.5).
_RST_ON_GIVE_UP = frozenset(
    {TimeoutReason.RETRANSMIT, TimeoutReason.USER_TIMEOUT, TimeoutReason.KEEPALIVE}
)
# Keep-alives are sent while the connection may otherwise sit idle forever.
_KEEPALIVE = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_2})
