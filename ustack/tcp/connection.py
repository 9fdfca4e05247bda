"""The per-connection TCP machine (RFC 9293), sans-IO.

Theory of operation
-------------------
A :class:`Connection` is one TCB. Inputs: ``receive(seg, now)`` for a segment the host has
demultiplexed to it, the application calls, and ``on_deadline(now)``. Outputs are pulled:
``segments_to_send(now)`` returns :class:`OutSegment` tuples (the host adds the IP and TCP
headers) and ``next_event()`` pops event values. Time is only ever an argument.

Segment arrival follows RFC 9293 3.10.7 in one ``match (state, control)``; every arm starts with a
sentence naming the rule. The synchronized states share the "Otherwise" processing: first the
sequence check (with trimming to the window), then RST (RFC 5961 3), SYN (RFC 5961 4), ACK
(RFC 5961 5; new data acked, duplicate ACKs, window update), URG, text, FIN.

Send side: the send buffer holds the bytes from SND.UNA on, so the byte at sequence number ``s``
is at offset ``s - _buf_seq``. ``snd_nxt`` is where the next segment starts; after an RTO it is
pulled back to ``snd_una`` (go-back-N, RFC 6298 5.4 with RFC 5681 slow start), so ``snd_max``
keeps the highest sequence number sent -- the RFC's SND.NXT wherever an ACK is judged. Our FIN
takes the sequence number after the last byte (``_fin_seq``) once the application shuts down.
Output is decided in one place (``_output_data``): Nagle and sender SWS avoidance (3.7.4,
3.8.6.2.1), the peer's window, ``cwnd``; a zero or too-small window with nothing in flight arms
the persist timer. Loss detection (duplicate ACKs, NewReno's ``recover``, partial ACKs) lives
here; window arithmetic lives in the pluggable congestion controller.

Receive side: in-order bytes go to the receive buffer, out-of-order bytes are held for
reassembly within the advertised window; the advertised right edge never moves left, and only
grows by at least min(buffer/2, MSS) (receiver SWS avoidance, 3.8.6.2.2). ACKs are delayed
(40 ms by default) unless two full-sized segments are unacknowledged, data arrived out of order,
or it filled a hole.

Timers are plain deadlines (float or None); ``next_deadline`` is their minimum.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from ustack.tcp import congestion as _cc
from ustack.tcp.buffers import ReceiveBuffer, SendBuffer
from ustack.tcp.config import DEFAULT_PEER_MSS, ETHERNET_MSS, MAX_WSCALE, TcpConfig
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
from ustack.tcp.rto import RtoEstimator
from ustack.tcp.state import ALLOWED, RECEIVING, SENDING, SYNCHRONIZED, State
from ustack.tcp.stats import Stats
from ustack.wire import seq as sq
from ustack.wire.tcp import ACK, FIN, PSH, RST, SYN, Control, TcpOptions, TcpSegment

log = logging.getLogger("ustack.tcp")

# Linux's TCP_MIN_MSS: a peer's MSS option cannot make us send smaller segments than this.
MIN_MSS = 88
# RFC 7323 2.2: the window field is 16 bits; SYN segments carry it unscaled.
MAX_WINDOW_FIELD = 0xFFFF
# Options we put on data segments (no timestamps, no SACK): subtracted from the MSS (3.7.1).
DATA_OPTION_BYTES = 0
# RFC 5681 3.2: fast retransmit on the third duplicate ACK.
DUPACK_THRESHOLD = 3

_INF = float("inf")

Tracer = Callable[["Connection", str, dict[str, Any]], None]


class OutSegment(NamedTuple):
    """One segment to transmit; ``window`` is the 16-bit wire value, ``options`` encoded."""

    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes | memoryview


def _wscale_for(buffer: int) -> int:
    """The smallest shift that lets the whole receive buffer be advertised (RFC 7323 2.3)."""
    shift = 0
    while (MAX_WINDOW_FIELD << shift) < buffer and shift < MAX_WSCALE:
        shift += 1
    return shift


class Connection:
    __slots__ = (
        "_ack_now",
        "_buf_seq",
        "_chal_count",
        "_chal_start",
        "_data_event_pending",
        "_delack_at",
        "_dupacks",
        "_events",
        "_fin_queued",
        "_fin_received",
        "_fin_seq",
        "_force_send",
        "_fw2_at",
        "_ka_at",
        "_ka_count",
        "_ka_idle",
        "_ka_interval",
        "_ka_probe_due",
        "_ka_probes",
        "_last_recv",
        "_ooo_fin",
        "_out",
        "_partial_acked",
        "_persist_at",
        "_persist_backoff",
        "_persist_unanswered",
        "_probe_due",
        "_rbuf",
        "_rcv_mss",
        "_recover",
        "_reset",
        "_retries",
        "_rtt_seq",
        "_rtt_time",
        "_rtx_at",
        "_rtx_one",
        "_sbuf",
        "_shutdown_pending",
        "_sws_threshold",
        "_syn_due",
        "_syn_options",
        "_syn_time",
        "_tw_at",
        "_unacked_rcv",
        "_unacked_since",
        "_write_blocked",
        "_ws_offered",
        "adv_mss",
        "cc",
        "config",
        "irs",
        "iss",
        "keepalive",
        "local_addr",
        "local_port",
        "max_snd_wnd",
        "nodelay",
        "orphaned",
        "passive",
        "peer_mss",
        "rcv_adv",
        "rcv_nxt",
        "rcv_wscale",
        "remote_addr",
        "remote_port",
        "rtt",
        "snd_max",
        "snd_mss",
        "snd_nxt",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "state",
        "stats",
        "tracer",
        "want_output",
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
        self.tracer: Tracer | None = None
        self.want_output = False
        self.nodelay = not config.nagle
        # send sequence space (RFC 9293 3.3.1)
        self.iss = iss & sq.MASK
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.snd_max = self.iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0  # MAX.SND.WND of RFC 5961 5.2
        self.snd_wscale = 0
        self.rcv_wscale = 0
        self.peer_mss = DEFAULT_PEER_MSS
        self.snd_mss = max(min(DEFAULT_PEER_MSS, self.adv_mss) - DATA_OPTION_BYTES, 1)
        # receive sequence space
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # RCV.NXT + RCV.WND as last advertised; never moves left
        self._sbuf = SendBuffer(config.send_buffer)
        self._buf_seq = sq.add(self.iss, 1)  # sequence number of the send buffer's first byte
        self._rbuf = ReceiveBuffer(config.recv_buffer, config.max_ooo_segments)
        self._sws_threshold = max(min(config.recv_buffer // 2, self.adv_mss), 1)
        self._fin_queued = False
        self._fin_seq = 0
        self._fin_received = False
        self._ooo_fin: int | None = None
        self._shutdown_pending = False
        self._reset = False
        self._ws_offered = config.window_scale
        self._syn_options = b""
        self._syn_due = False
        self._syn_time = now
        self._rtx_one = False
        self._ack_now = False
        self._probe_due = False
        self._ka_probe_due = False
        self._force_send = False
        self._out: list[OutSegment] = []  # RSTs built while processing input
        self._events: deque[Event] = deque()
        self._data_event_pending = False
        self._write_blocked = False
        # timers: absolute deadlines or None
        self._rtx_at: float | None = None
        self._persist_at: float | None = None
        self._delack_at: float | None = None
        self._ka_at: float | None = None
        self._tw_at: float | None = None
        self._fw2_at: float | None = None
        self._retries = 0
        self._unacked_since = now
        self.rtt = RtoEstimator(
            config.rto_initial, config.rto_min, config.rto_max, config.clock_granularity
        )
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self.cc: _cc.CongestionControl = (
            congestion if congestion is not None else _cc.create(config.congestion, self.snd_mss)
        )
        self._dupacks = 0
        self._partial_acked = False
        self._recover = self.iss  # RFC 6582 3.2: initialized to the ISS
        self._persist_backoff = 0
        self._persist_unanswered = 0
        self.keepalive = config.keepalive
        self._ka_idle = config.keepalive_idle
        self._ka_interval = config.keepalive_interval
        self._ka_count = config.keepalive_count
        self._ka_probes = 0
        self._last_recv = now
        self._rcv_mss = min(DEFAULT_PEER_MSS, self.adv_mss)  # largest segment seen from the peer
        self._unacked_rcv = 0  # payload bytes received since we last sent an ACK
        self._chal_start = -_INF
        self._chal_count = 0

    # ------------------------------------------------------------------ properties

    @property
    def srtt(self) -> float | None:
        return self.rtt.srtt

    @property
    def rttvar(self) -> float:
        return self.rtt.rttvar

    @property
    def rto(self) -> float:
        return self.rtt.rto

    @property
    def cwnd(self) -> int:
        return self.cc.cwnd

    @property
    def ssthresh(self) -> int:
        return self.cc.ssthresh

    @property
    def rcv_wnd(self) -> int:
        """RCV.WND: how far beyond RCV.NXT the peer may send (as last advertised)."""
        return max(sq.sub(self.rcv_adv, self.rcv_nxt), 0)

    @property
    def readable(self) -> int:
        return self._rbuf.readable

    @property
    def send_space(self) -> int:
        return self._sbuf.free

    @property
    def send_queued(self) -> int:
        """Bytes queued and not yet acknowledged."""
        return self._sbuf.size

    @property
    def eof_received(self) -> bool:
        return self._fin_received

    @property
    def ooo_pieces(self) -> int:
        return self._rbuf.ooo_pieces

    @property
    def ooo_bytes(self) -> int:
        return self._rbuf.ooo_bytes

    @property
    def timers(self) -> dict[str, float | None]:
        """Every timer's deadline, for tests and tracing."""
        return {
            "retransmit": self._rtx_at,
            "persist": self._persist_at,
            "delayed_ack": self._delack_at,
            "keepalive": self._ka_at,
            "time_wait": self._tw_at,
            "fin_wait_2": self._fw2_at,
        }

    def __repr__(self) -> str:
        return (
            f"<Connection {self.local_port}->{self.remote_port} {self.state} "
            f"una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>"
        )

    # ------------------------------------------------------------------ application calls

    def open_active(self, now: float) -> None:
        """Active OPEN (RFC 9293 3.10.1): send SYN with MSS and window scale options."""
        if self.state is not State.CLOSED or self._reset:
            raise OSError("connection is not in CLOSED")
        self.stats.tcp_active_opens += 1
        self._syn_options = TcpOptions(
            mss=self.adv_mss,
            wscale=_wscale_for(self.config.recv_buffer) if self._ws_offered else None,
        ).encode()
        self._syn_due = True
        self._set_state(State.SYN_SENT, "open_active", now)
        self.want_output = True

    def open_passive(self, now: float) -> None:
        """Passive OPEN (3.10.1): this TCB waits in LISTEN for the SYN the host feeds it."""
        if self.state is not State.CLOSED or self._reset:
            raise OSError("connection is not in CLOSED")
        self.passive = True
        self.stats.tcp_passive_opens += 1
        self._set_state(State.LISTEN, "open_passive", now)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """SEND (3.10.2): queue bytes; returns how many fit in the send buffer."""
        if self._reset:
            raise ConnectionResetError("connection reset by peer")
        if self.state not in _CAN_SEND or self._fin_queued or self._shutdown_pending:
            raise BrokenPipeError("connection is closed for sending")
        n = self._sbuf.write(data)
        if n < len(data):
            self._write_blocked = True
        if n:
            self.want_output = True
        return n

    def read(self, max_bytes: int = -1) -> bytes:
        """RECEIVE (3.10.3): take in-order bytes; may schedule a window update."""
        data = self._rbuf.read(max_bytes)
        if (
            data
            and self.state in RECEIVING
            and not self._ack_now
            and self._rbuf.free() - self.rcv_wnd >= self._sws_threshold
        ):
            # 3.8.6.2.2: the window opened by enough to be worth announcing
            self._ack_now = True
            self.want_output = True
            self.stats.tcp_window_updates += 1
        return data

    def shutdown(self, now: float) -> None:
        """Half-close: our FIN follows the queued data (CLOSE, 3.10.4)."""
        state = self.state
        if state is State.LISTEN or state is State.SYN_SENT:
            self._enter_closed("close", now)
        elif state is State.SYN_RECEIVED:
            # 3.10.4: queue the close until ESTABLISHED is reached
            self._shutdown_pending = True
        elif state is State.ESTABLISHED:
            self._queue_fin()
            self._set_state(State.FIN_WAIT_1, "close", now)
        elif state is State.CLOSE_WAIT:
            self._queue_fin()
            self._set_state(State.LAST_ACK, "close", now)
        self.want_output = True

    def close(self, now: float) -> None:
        """Shut down and orphan: no more reads; unread data turns the close into a RST."""
        if self.orphaned:
            return
        self.orphaned = True
        if self._rbuf.readable and self.state in SYNCHRONIZED and self.state is not State.TIME_WAIT:
            # RFC 2525 2.17: closing with unread data resets, so the peer learns data was lost
            self.stats.tcp_close_unread_rst += 1
            self._reset_and_close(now)
            return
        self.shutdown(now)
        if self.state is State.FIN_WAIT_2 and self._fw2_at is None:
            self._fw2_at = now + self.config.fin_wait2_timeout

    def abort(self, now: float) -> None:
        """ABORT (3.10.5): RST in the states that have told the peer anything, then CLOSED."""
        if self.state is State.CLOSED:
            return
        self.stats.tcp_aborts += 1
        if self.state in _RST_ON_ABORT:
            self._reset_and_close(now)
        else:
            self._enter_closed("abort", now)

    def set_nodelay(self, on: bool) -> None:
        """Turn the Nagle algorithm (3.7.4) off (``True``) or on."""
        self.nodelay = on
        self.want_output = True

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
        self._ka_at = self._last_recv + self._ka_idle if on and self.state in _KEEPALIVE else None

    def next_event(self) -> Event | None:
        if not self._events:
            return None
        ev = self._events.popleft()
        if type(ev) is DataReceived:
            self._data_event_pending = False
        return ev

    # ------------------------------------------------------------------ segment arrival

    def receive(self, seg: TcpSegment, now: float) -> None:
        """SEGMENT ARRIVES (RFC 9293 3.10.7)."""
        self.stats.tcp_segments_received += 1
        self.want_output = True
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
                # RFC 7323 2.2: echo window scale only if the SYN carried it
                self._syn_options = TcpOptions(
                    mss=self.adv_mss, wscale=self.rcv_wscale if self._ws_ok(seg) else None
                ).encode()
                self._syn_due = True
                self._set_state(State.SYN_RECEIVED, "rcv_syn", now)
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
                self._enter_closed("rcv_rst", now)
            case (State.SYN_SENT, Control.RST):
                # 3.10.7.3 second check: a RST without ACK cannot be validated; drop it.
                self.stats.tcp_drop_syn_sent_rst_no_ack += 1
            case (State.SYN_SENT, Control.SYN) if seg.has_ack:
                # 3.10.7.3 fourth check: SYN,ACK acking our SYN -> ESTABLISHED, ACK it. (Data
                # on a SYN,ACK is not taken; the peer sends it again.)
                self._take_syn(seg, now)
                self._syn_acknowledged(seg, now)
                self._ack_now = True
                self._set_state(State.ESTABLISHED, "rcv_syn_ack", now)
            case (State.SYN_SENT, Control.SYN):
                # 3.10.7.3 fourth check: SYN without ACK is a simultaneous open -> SYN-RECEIVED.
                self._take_syn(seg, now)
                if not self._ws_ok(seg):
                    self._syn_options = TcpOptions(mss=self.adv_mss).encode()
                self._syn_due = True
                self._retries = 0
                self._rtx_at = None
                self._set_state(State.SYN_RECEIVED, "rcv_syn", now)
            case (State.SYN_SENT, _):
                # 3.10.7.3 fifth: neither SYN nor RST -- drop it.
                self.stats.tcp_drop_syn_sent_no_syn += 1
            case (State.SYN_RECEIVED, Control.SYN) if seg.seq == self.irs and not seg.has_ack:
                # The peer retransmitted its SYN: our SYN,ACK was lost, send it again.
                self.stats.tcp_synack_retransmits += 1
                self.stats.tcp_retransmits += 1
                self._syn_due = True
            case (State.SYN_RECEIVED, Control.SYN) if (
                seg.seq == self.irs and seg.has_ack and seg.ack == self.snd_max
            ):
                # 3.5 figure 7: in a simultaneous open the peer's SYN,ACK acks our SYN.
                self._syn_acknowledged(seg, now)
                self._ack_now = True
                self._set_state(State.ESTABLISHED, "rcv_syn_ack", now)
                self._run_pending_shutdown(now)
            case (State.SYN_RECEIVED, _):
                # 3.10.7.4: anything else in SYN-RECEIVED takes the "Otherwise" processing.
                self._receive_synchronized(seg, now)
            case _:
                self.stats.tcp_drop_unexpected += 1

    def _receive_synchronized(self, seg: TcpSegment, now: float) -> None:
        stats = self.stats
        state = self.state
        ctl = seg.control
        rcv_nxt = self.rcv_nxt
        seg_seq = seg.seq
        payload = seg.payload
        plen = len(payload)
        fin = ctl is Control.FIN
        seg_len = plen + (1 if fin or ctl is Control.SYN else 0)
        wnd = self.rcv_wnd
        # First check (3.10.7.4): is the segment acceptable? A segment starting exactly at
        # RCV.NXT is, even into a zero window, so that ACKs and window probes are processed.
        if seg_seq == rcv_nxt:
            ok = True
        elif seg_len == 0:
            ok = sq.in_window(seg_seq, rcv_nxt, wnd)
        else:
            ok = wnd > 0 and (
                sq.in_window(seg_seq, rcv_nxt, wnd)
                or sq.in_window(sq.add(seg_seq, seg_len - 1), rcv_nxt, wnd)
            )
        if not ok:
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
                # 3.10.7.4 first check: an unacceptable segment is answered with an ACK.
                if plen and sq.le(sq.add(seg_seq, seg_len), rcv_nxt):
                    stats.tcp_dup_segments += 1
                else:
                    stats.tcp_drop_out_of_window += 1
                self._emit_ack()
            return
        self._last_recv = now
        if self.keepalive:
            self._ka_probes = 0
            self._ka_at = now + self._ka_idle
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
                self._clear_timers()
                self._syn_due = False
                self._set_state(State.LISTEN, "rcv_rst", now)
            case (State.SYN_RECEIVED, Control.RST):
                # 3.10.7.4 second check: RST of an active open -> CLOSED, "connection refused".
                stats.tcp_refused += 1
                self._reset = True
                self._events.append(Reset(self, True))
                self._enter_closed("rcv_rst", now)
            case (_, Control.RST):
                # 3.10.7.4 second check: RST at RCV.NXT -> CLOSED, "connection reset".
                stats.tcp_resets_received += 1
                self._reset = True
                self._events.append(Reset(self, False))
                self._enter_closed("rcv_rst", now)
            case (_, Control.SYN):
                # RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK, nothing else.
                stats.tcp_drop_syn_synchronized += 1
                self._challenge_ack(now)
            case (_, _) if not seg.has_ack:
                # 3.10.7.4 fifth check: a segment without ACK is dropped.
                stats.tcp_drop_no_ack += 1
            case (State.SYN_RECEIVED, _) if not (
                sq.lt(self.snd_una, seg.ack) and sq.le(seg.ack, self.snd_max)
            ):
                # 3.10.7.4 fifth check: unacceptable ACK in SYN-RECEIVED -> <SEQ=SEG.ACK><RST>.
                stats.tcp_drop_synrcvd_bad_ack += 1
                self._rst_reply(seg)
            case (State.SYN_RECEIVED, _):
                # 3.10.7.4 fifth check: the ACK of our SYN -> ESTABLISHED; go on as there.
                self._syn_acknowledged(seg, now)
                self._set_state(State.ESTABLISHED, "rcv_ack", now)
                self._process_segment(seg, now)
                self._run_pending_shutdown(now)
            case (_, Control.NONE | Control.FIN):
                # 3.10.7.4 fifth to eighth checks: ACK, URG, text and FIN.
                self._process_segment(seg, now)
            case _:
                stats.tcp_drop_unexpected += 1

    def _process_segment(self, seg: TcpSegment, now: float) -> None:
        """The fifth to eighth checks of 3.10.7.4 for an acceptable segment with ACK."""
        stats = self.stats
        ack = seg.ack
        una = self.snd_una
        if sq.gt(ack, self.snd_max):
            # 3.10.7.4 / RFC 5961 5.2: ACK of data never sent -> ACK and drop.
            stats.tcp_drop_ack_unsent += 1
            self._challenge_ack(now)
            return
        if sq.lt(ack, sq.add(una, -self.max_snd_wnd)):
            # RFC 5961 5.2: ACK older than SND.UNA - MAX.SND.WND -> ACK and drop.
            stats.tcp_drop_ack_old += 1
            self._challenge_ack(now)
            return
        if sq.le(una, ack):
            wnd = seg.window << self.snd_wscale
            # RFC 5681 2: a duplicate ACK carries no data, no SYN/FIN, acks SND.UNA while data
            # is outstanding and leaves the window unchanged.
            dup = (
                ack == una
                and not len(seg.payload)
                and seg.control is Control.NONE
                and wnd == self.snd_wnd
                and self.snd_max != una
                and self._persist_at is None  # answers to window probes are not losses
            )
            wl1 = self.snd_wl1
            if sq.lt(wl1, seg.seq) or (wl1 == seg.seq and sq.le(self.snd_wl2, ack)):
                # 3.10.7.4 fifth check: update the send window from the newest segment
                self.snd_wnd = wnd
                self.snd_wl1 = seg.seq
                self.snd_wl2 = ack
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
                if wnd and self._persist_at is not None:
                    self._persist_at = None
                    self._persist_backoff = 0
            if ack != una:
                self._ack_advanced(ack, now)
            elif dup:
                self._duplicate_ack()
        self._persist_unanswered = 0
        state = self.state
        if state in _FIN_SENT and self.snd_una == sq.add(self._fin_seq, 1):
            match state:
                case State.FIN_WAIT_1:
                    # 3.10.7.4 fifth check, FIN-WAIT-1: our FIN is acked -> FIN-WAIT-2.
                    self._set_state(State.FIN_WAIT_2, "rcv_ack", now)
                    if self.orphaned:
                        self._fw2_at = now + self.config.fin_wait2_timeout
                case State.CLOSING:
                    # 3.10.7.4 fifth check, CLOSING: our FIN is acked -> TIME-WAIT.
                    self._set_state(State.TIME_WAIT, "rcv_ack", now)
                    return
                case State.LAST_ACK:
                    # 3.10.7.4 fifth check, LAST-ACK: our FIN is acked -> CLOSED.
                    self._enter_closed("rcv_ack", now)
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
        # trim to the window: bytes before RCV.NXT are old, bytes beyond RCV.WND are cut off
        rcv_nxt = self.rcv_nxt
        seg_seq = seg.seq
        front = sq.sub(rcv_nxt, seg_seq)
        if front > 0:
            if front > len(payload):
                fin = False  # the FIN itself is old
                front = len(payload)
            stats.tcp_dup_bytes_trimmed += front
            payload = payload[front:]
            seg_seq = rcv_nxt
        offset = sq.sub(seg_seq, rcv_nxt)
        room = self.rcv_wnd - offset
        if len(payload) > room:
            stats.tcp_window_trimmed_bytes += len(payload) - max(room, 0)
            payload = payload[: max(room, 0)]
            fin = False
            self._ack_now = True
        state = self.state
        if len(payload):
            if state not in RECEIVING:
                # 3.10.7.4 seventh check: after the peer's FIN there is no more text to accept.
                stats.tcp_drop_data_after_fin += 1
                self._ack_now = True
                return
            if self.orphaned:
                # Linux: data for a closed (orphaned) socket is answered with a RST.
                stats.tcp_rst_data_after_close += 1
                self._reset_and_close(now)
                return
            if offset == 0:
                self._receive_in_order(payload, now)
            else:
                self._receive_out_of_order(offset, payload)
        if fin:
            if state in RECEIVING:
                end = sq.add(seg_seq, len(payload))
                if end == self.rcv_nxt:
                    self._receive_fin(now)
                else:
                    # a FIN beyond a hole is remembered and taken when the hole fills
                    self._ooo_fin = end
            elif state is State.TIME_WAIT:
                self._time_wait_refin(now)
            else:
                self._ack_now = True
        elif self._ooo_fin is not None and self._ooo_fin == self.rcv_nxt and state in RECEIVING:
            self._receive_fin(now)

    def _receive_in_order(self, payload: memoryview, now: float) -> None:
        n = len(payload)
        rbuf = self._rbuf
        hole = rbuf.has_ooo
        advanced = rbuf.add_in_order(payload)
        self.rcv_nxt = sq.add(self.rcv_nxt, advanced)
        self.stats.tcp_bytes_received += advanced
        if not self._data_event_pending:
            self._data_event_pending = True
            self._events.append(DataReceived(self))
        if n > self._rcv_mss:
            self._rcv_mss = n
        if hole:
            # RFC 5681 4.2: a segment that fills (part of) a hole is ACKed at once
            self.stats.tcp_quick_acks += 1
            self._ack_now = True
            return
        self._unacked_rcv += n
        if self._unacked_rcv >= 2 * self._rcv_mss or self.config.delayed_ack <= 0:
            # 3.8.6.3: ACK at least every second full-sized segment -- built now, so that a
            # host handling a burst of segments before asking for output still sends one ACK
            # per two segments (the sender's byte counting depends on it)
            self._emit_ack()
        elif self._delack_at is None:
            self._delack_at = now + self.config.delayed_ack

    def _receive_out_of_order(self, offset: int, payload: memoryview) -> None:
        stats = self.stats
        new, dup = self._rbuf.add_out_of_order(offset, payload)
        stats.tcp_dup_bytes_trimmed += dup
        if new < 0:
            stats.tcp_ooo_dropped += 1
        elif new > 0:
            stats.tcp_ooo_queued += 1
        # RFC 5681 4.2: out-of-order data is ACKed at once (a duplicate ACK for fast retransmit)
        stats.tcp_quick_acks += 1
        self._emit_ack()

    def _receive_fin(self, now: float) -> None:
        """Eighth check (3.10.7.4): the peer's FIN reached RCV.NXT."""
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self._ooo_fin = None
        self._fin_received = True
        self._ack_now = True
        self._events.append(EofReceived(self))
        state = self.state
        if state is State.ESTABLISHED:
            self._set_state(State.CLOSE_WAIT, "rcv_fin", now)
        elif state is State.FIN_WAIT_1:
            self._set_state(State.CLOSING, "rcv_fin", now)
        elif state is State.FIN_WAIT_2:
            self._set_state(State.TIME_WAIT, "rcv_fin", now)

    def _time_wait_refin(self, now: float) -> None:
        self.stats.tcp_time_wait_restarted += 1
        self._emit_ack()
        self._tw_at = now + 2 * self.config.msl

    def _ack_advanced(self, ack: int, now: float) -> None:
        """SND.UNA < SEG.ACK =< SND.NXT: new data (or our FIN) is acknowledged."""
        stats = self.stats
        acked = sq.sub(ack, self.snd_una)
        self.snd_una = ack
        if sq.lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        if sq.gt(ack, self._buf_seq):
            n = min(sq.sub(ack, self._buf_seq), self._sbuf.size)
            self._sbuf.consume(n)
            self._buf_seq = sq.add(self._buf_seq, n)
        rtt_seq = self._rtt_seq
        if rtt_seq is not None and sq.ge(ack, rtt_seq):
            # RFC 6298 (2.2)/(2.3); Karn's rule cleared _rtt_seq on any retransmission
            self.rtt.sample(now - self._rtt_time)
            self._rtt_seq = None
            stats.tcp_rtt_samples += 1
        self._retries = 0
        self._unacked_since = now
        flight = sq.sub(self.snd_max, ack)
        cc = self.cc
        restart = True
        if cc.in_recovery:
            if sq.gt(ack, self._recover):
                # RFC 6582 3.2 (3): a full ACK ends fast recovery
                cc.on_exit_recovery(flight)
                stats.tcp_recoveries_completed += 1
                self._dupacks = 0
            else:
                # RFC 6582 3.2 (5): a partial ACK retransmits the next hole; the timer is
                # reset only for the first one ("impatient" variant)
                cc.on_partial_ack(acked)
                stats.tcp_partial_ack_retransmits += 1
                self._rtx_one = True
                restart = not self._partial_acked
                self._partial_acked = True
        else:
            self._dupacks = 0
            cc.on_ack(acked, flight, now)
        if ack == self.snd_max:
            self._rtx_at = None  # RFC 6298 (5.2)
        elif restart:
            self._rtx_at = now + self.rtt.rto  # RFC 6298 (5.3)
        if self._write_blocked and self._sbuf.size <= self._low_water():
            self._write_blocked = False
            self._events.append(WriteSpace(self))

    def _duplicate_ack(self) -> None:
        stats = self.stats
        stats.tcp_dup_acks += 1
        cc = self.cc
        if cc.in_recovery:
            # RFC 5681 3.2 (4): each further duplicate ACK inflates cwnd by one SMSS
            cc.on_recovery_dup_ack()
            return
        self._dupacks += 1
        if self._dupacks == DUPACK_THRESHOLD and sq.gt(self.snd_una, self._recover):
            # RFC 5681 3.2 (2)-(3), RFC 6582 3.2 (2): fast retransmit and enter recovery
            self._recover = sq.add(self.snd_max, -1)
            cc.on_enter_recovery(sq.sub(self.snd_max, self.snd_una))
            self._partial_acked = False
            stats.tcp_fast_retransmits += 1
            self._rtx_one = True

    def _emit_ack(self) -> None:
        """An ACK of its own, queued now: duplicate ACKs must not merge (RFC 5681 4.2)."""
        self._out.append(
            OutSegment(self.snd_max, self.rcv_nxt, ACK, self._window_field(), b"", b"")
        )
        self.stats.tcp_acks_sent += 1
        self._ack_now = False
        self._delack_at = None
        self._unacked_rcv = 0

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
        self._emit_ack()

    # ------------------------------------------------------------------ handshake helpers

    def _syn_acked_by(self, seg: TcpSegment) -> bool:
        """3.10.7.3: ISS < SEG.ACK =< SND.NXT."""
        return sq.lt(self.iss, seg.ack) and sq.le(seg.ack, self.snd_max)

    def _ws_ok(self, seg: TcpSegment) -> bool:
        return seg.options.wscale is not None and self._ws_offered

    def _take_syn(self, seg: TcpSegment, now: float) -> None:
        """Record the peer's SYN: IRS, MSS (3.7.1), window scale (RFC 7323), window."""
        cfg = self.config
        self.irs = seg.seq
        self.rcv_nxt = sq.add(seg.seq, 1)
        opts = seg.options
        # 3.7.1: without an MSS option the peer can take 536 bytes
        self.peer_mss = opts.mss if opts.mss is not None else DEFAULT_PEER_MSS
        self.snd_mss = max(min(max(self.peer_mss, MIN_MSS), self.adv_mss) - DATA_OPTION_BYTES, 1)
        if self._ws_ok(seg):
            # RFC 7323 2.2: scaling is on only if both SYNs carried the option
            self.snd_wscale = min(opts.wscale or 0, MAX_WSCALE)
            self.rcv_wscale = _wscale_for(cfg.recv_buffer)
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        # RFC 7323 2.2: the window field of a SYN is never scaled
        self.snd_wnd = seg.window
        self.max_snd_wnd = seg.window
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self.rcv_adv = sq.add(self.rcv_nxt, self._syn_window())
        self._last_recv = now
        self.cc.set_mss(self.snd_mss, cfg.initial_window)

    def _syn_window(self) -> int:
        return min(self._rbuf.free(), MAX_WINDOW_FIELD)

    def _syn_acknowledged(self, seg: TcpSegment, now: float) -> None:
        """Our SYN is acknowledged (SYN-SENT or SYN-RECEIVED -> ESTABLISHED)."""
        self.snd_una = seg.ack
        if sq.lt(self.snd_nxt, seg.ack):
            self.snd_nxt = seg.ack
        if self._retries == 0:
            self.rtt.sample(now - self._syn_time)
            self.stats.tcp_rtt_samples += 1
        else:
            self.rtt.after_syn_timeout()
        self._retries = 0
        self._rtx_at = None
        self._syn_due = False
        if self.state is State.SYN_RECEIVED:
            # the first non-SYN window is scaled (RFC 7323 2.2)
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
        self._unacked_since = now

    def _run_pending_shutdown(self, now: float) -> None:
        if self._shutdown_pending:
            self._shutdown_pending = False
            self.shutdown(now)

    def _queue_fin(self) -> None:
        self._fin_queued = True
        self._fin_seq = sq.add(self._buf_seq, self._sbuf.size)

    # ------------------------------------------------------------------ state changes

    def _set_state(self, to: State, trigger: str, now: float) -> None:
        """The only place the state changes; refuses anything not in the transition table."""
        frm = self.state
        if (frm, trigger, to) not in ALLOWED:
            raise AssertionError(f"transition {frm} --{trigger}--> {to} is not in the table")
        self.state = to
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s:%d %s -> %s (%s)", self.remote_addr, self.remote_port, frm, to, trigger)
        if self.tracer is not None:
            self.tracer(self, "state", {"from": frm, "to": to, "trigger": trigger})
        if to is State.ESTABLISHED:
            self.stats.tcp_established += 1
            self._events.append(Established(self))
            if self.keepalive:
                self._ka_at = now + self._ka_idle
        elif to is State.TIME_WAIT:
            # 3.10.8 / RFC 9293 3.6: wait 2*MSL before the TCB is deleted
            self._clear_timers()
            self._tw_at = now + 2 * self.config.msl

    def _enter_closed(self, trigger: str, now: float) -> None:
        self._set_state(State.CLOSED, trigger, now)
        self._clear_timers()
        self._syn_due = False
        self._rtx_one = False
        self._probe_due = False
        self._ka_probe_due = False
        self._ack_now = False
        self.stats.tcp_closed += 1
        self._events.append(Closed(self))

    def _clear_timers(self) -> None:
        self._rtx_at = None
        self._persist_at = None
        self._delack_at = None
        self._ka_at = None
        self._tw_at = None
        self._fw2_at = None

    def _reset_and_close(self, now: float) -> None:
        """Send <SEQ=SND.NXT><CTL=RST> (3.10.5) and go to CLOSED."""
        self.stats.tcp_rsts_sent += 1
        self._out.append(OutSegment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
        self._enter_closed("abort", now)

    def _rst_reply(self, seg: TcpSegment) -> None:
        """3.10.7.1: the RST that answers a segment (never sent for a RST)."""
        if seg.control is Control.RST:
            return
        self.stats.tcp_rsts_sent += 1
        if seg.has_ack:
            self._out.append(OutSegment(seg.ack, 0, RST, 0, b"", b""))
        else:
            self._out.append(OutSegment(0, sq.add(seg.seq, seg.seg_len), RST | ACK, 0, b"", b""))

    def _fail(self, reason: str, now: float) -> None:
        stats = self.stats
        if reason == "syn":
            stats.tcp_timeout_syn += 1
        elif reason == "synack":
            stats.tcp_timeout_synack += 1
        elif reason == "retransmit":
            stats.tcp_timeout_retransmit += 1
        elif reason == "user_timeout":
            stats.tcp_timeout_user += 1
        elif reason == "keepalive":
            stats.tcp_timeout_keepalive += 1
        else:
            stats.tcp_timeout_fin_wait2 += 1
        self._events.append(TimedOut(self, reason))
        self._enter_closed("timeout", now)

    def _low_water(self) -> int:
        return min(self.config.send_low_water, self._sbuf.capacity // 2)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        best = _INF
        for t in (
            self._rtx_at,
            self._persist_at,
            self._delack_at,
            self._ka_at,
            self._tw_at,
            self._fw2_at,
        ):
            if t is not None and t < best:
                best = t
        ut = self.config.user_timeout
        if ut is not None and self._rtx_at is not None and self.state in SENDING:
            best = min(best, self._unacked_since + ut)
        return None if best == _INF else best

    def on_deadline(self, now: float) -> None:
        """Run every timer whose deadline has passed."""
        self.want_output = True
        if self._tw_at is not None and now >= self._tw_at:
            # 3.10.8: 2*MSL elapsed in TIME-WAIT -> CLOSED
            self.stats.tcp_time_wait_expired += 1
            self._enter_closed("timeout", now)
            return
        if self._fw2_at is not None and now >= self._fw2_at:
            # an orphaned FIN-WAIT-2 gives up waiting for the peer's FIN (Linux tcp_fin_timeout)
            self._fail("fin_wait_2", now)
            return
        ut = self.config.user_timeout
        if (
            ut is not None
            and self._rtx_at is not None
            and self.state in SENDING
            and now >= self._unacked_since + ut
        ):
            # 3.10.1 / RFC 5482: data stayed unacknowledged longer than the user timeout
            self._fail("user_timeout", now)
            return
        if self._rtx_at is not None and now >= self._rtx_at:
            self._on_retransmit_timeout(now)
            if self.state is State.CLOSED:
                return
        if self._persist_at is not None and now >= self._persist_at:
            self._on_persist_timeout(now)
            if self.state is State.CLOSED:
                return
        if self._ka_at is not None and now >= self._ka_at:
            self._on_keepalive_timeout(now)
            if self.state is State.CLOSED:
                return
        if self._delack_at is not None and now >= self._delack_at:
            # 3.8.6.3: the delayed-ACK timer expired
            self._delack_at = None
            self.stats.tcp_delayed_acks += 1
            self._ack_now = True

    def _on_retransmit_timeout(self, now: float) -> None:
        self._rtx_at = None
        stats = self.stats
        cfg = self.config
        state = self.state
        if state is State.SYN_SENT:
            if self._retries >= cfg.syn_retries:
                self._fail("syn", now)
                return
            stats.tcp_syn_retransmits += 1
        elif state is State.SYN_RECEIVED:
            if self._retries >= cfg.synack_retries:
                self._fail("synack", now)
                return
            stats.tcp_synack_retransmits += 1
        elif state in SENDING:
            if self.snd_una == self.snd_max:
                return
            if cfg.user_timeout is None and self._retries >= cfg.data_retries:
                self._fail("retransmit", now)
                return
            # RFC 5681 3.1 (4) / RFC 6582 3.2 (4): collapse cwnd, remember recover, go back
            self.cc.on_timeout(sq.sub(self.snd_max, self.snd_una), self._retries == 0)
            self._recover = sq.add(self.snd_max, -1)
            self._dupacks = 0
            self._rtx_one = False
            self.snd_nxt = self.snd_una  # RFC 6298 (5.4): resend from the earliest byte
            self._rtt_seq = None  # Karn
        else:
            return
        stats.tcp_rto_expired += 1
        self._retries += 1
        self.rtt.back_off()  # RFC 6298 (5.5)
        if state is State.SYN_SENT or state is State.SYN_RECEIVED:
            stats.tcp_retransmits += 1
            self._syn_due = True
            if self.tracer is not None:
                self.tracer(self, "retransmit", {"seq": self.iss, "len": 0, "syn": True})

    def _persist_interval(self) -> float:
        cfg = self.config
        base = self.rtt.rto * (1 << min(self._persist_backoff, 30))
        return min(max(base, cfg.persist_min), cfg.persist_max)

    def _on_persist_timeout(self, now: float) -> None:
        self._persist_at = None
        if self.state not in SENDING:
            return
        if self._persist_unanswered >= self.config.data_retries:
            # probes went unanswered as often as data retransmissions may (Linux tcp_retries2)
            self._fail("retransmit", now)
            return
        self._persist_unanswered += 1
        self._persist_backoff += 1
        if self.snd_wnd == 0:
            # 3.8.6.1: probe the zero window with one byte
            self._probe_due = True
            self.stats.tcp_window_probes += 1
        else:
            # 3.8.6.2.1 (4): the override timeout sends what the small window allows
            self._force_send = True
        self._persist_at = now + self._persist_interval()

    def _on_keepalive_timeout(self, now: float) -> None:
        self._ka_at = None
        if not self.keepalive or self.state not in _KEEPALIVE:
            return
        if self.snd_max != self.snd_una or sq.sub(self.snd_nxt, self._buf_seq) < self._sbuf.size:
            # data is in flight or queued: retransmission handles a dead peer
            self._ka_at = now + self._ka_idle
            return
        if self._ka_probes >= self._ka_count:
            self._fail("keepalive", now)
            return
        self._ka_probes += 1
        self._ka_probe_due = True
        self.stats.tcp_keepalive_probes += 1
        self._ka_at = now + self._ka_interval

    # ------------------------------------------------------------------ output

    def segments_to_send(self, now: float) -> list[OutSegment]:
        """Everything to transmit now; the window field is already scaled down."""
        self.want_output = False
        out = self._out
        if out:
            self._out = []
        else:
            out = []
        state = self.state
        if state is State.CLOSED or state is State.LISTEN:
            self.stats.tcp_segments_sent += len(out)
            return out
        if state is State.SYN_SENT:
            if self._syn_due:
                self._send_syn(out, now, SYN, 0)
            self.stats.tcp_segments_sent += len(out)
            return out
        acked = False
        win = -1
        if state is State.SYN_RECEIVED:
            if self._syn_due:
                self._send_syn(out, now, SYN | ACK, self.rcv_nxt)
                acked = True
        elif state in SENDING:
            win = self._window_field()
            acked = self._output_data(now, out, win)
        if self._probe_due:
            self._probe_due = False
            if win < 0:
                win = self._window_field()
            payload = self._sbuf.peek(sq.sub(self.snd_una, self._buf_seq), 1)
            if len(payload):
                out.append(OutSegment(self.snd_una, self.rcv_nxt, ACK, win, b"", payload))
                if sq.gt(sq.add(self.snd_una, 1), self.snd_max):
                    self.snd_max = sq.add(self.snd_una, 1)
                acked = True
        if self._ka_probe_due:
            # RFC 1122 4.2.3.6: an empty segment with SEG.SEQ = SND.NXT - 1 makes the peer ACK
            self._ka_probe_due = False
            if win < 0:
                win = self._window_field()
            out.append(OutSegment(sq.add(self.snd_nxt, -1), self.rcv_nxt, ACK, win, b"", b""))
            acked = True
        if self._ack_now and not acked:
            if win < 0:
                win = self._window_field()
            out.append(OutSegment(self.snd_max, self.rcv_nxt, ACK, win, b"", b""))
            self.stats.tcp_acks_sent += 1
            acked = True
        if acked:
            self._ack_now = False
            self._delack_at = None
            self._unacked_rcv = 0
        self.stats.tcp_segments_sent += len(out)
        return out

    def _send_syn(self, out: list[OutSegment], now: float, flags: int, ack: int) -> None:
        self._syn_due = False
        out.append(OutSegment(self.iss, ack, flags, self._syn_window(), self._syn_options, b""))
        self.snd_nxt = self.snd_max = sq.add(self.iss, 1)
        if self._retries == 0:
            self._syn_time = now
        if self._rtx_at is None:
            self._rtx_at = now + self.rtt.rto

    def _window_field(self) -> int:
        """The window to advertise, honouring receiver SWS avoidance (3.8.6.2.2)."""
        free = self._rbuf.free()
        cur = self.rcv_wnd
        win = free if free - cur >= self._sws_threshold else cur
        shift = self.rcv_wscale
        if win > MAX_WINDOW_FIELD << shift:
            win = MAX_WINDOW_FIELD << shift
        # Round up so the scaled window does not pull the right edge back (RFC 7323 2.4), but
        # never past the free buffer space.
        field = min((win + (1 << shift) - 1) >> shift, free >> shift, MAX_WINDOW_FIELD)
        edge = sq.add(self.rcv_nxt, field << shift)
        if sq.gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        return field

    def _output_data(self, now: float, out: list[OutSegment], win: int) -> bool:
        """Send what the windows, Nagle and SWS avoidance allow; True if anything went out."""
        stats = self.stats
        sbuf = self._sbuf
        mss = self.snd_mss
        ack = self.rcv_nxt
        una = self.snd_una
        sent = False
        if self._rtx_one:
            # fast retransmit / partial ACK: resend one segment at SND.UNA, whatever cwnd says
            self._rtx_one = False
            off = sq.sub(una, self._buf_seq)
            n = max(min(mss, sbuf.size - off), 0)
            end = sq.add(una, n)
            fin = self._fin_queued and end == self._fin_seq and sq.gt(self.snd_max, end)
            if n or fin:
                flags = ACK | FIN if fin else ACK
                out.append(OutSegment(una, ack, flags, win, b"", sbuf.peek(off, n)))
                self._count_retransmit(una, n, fin)
                if self._rtx_at is None:
                    self._rtx_at = now + self.rtt.rto
                sent = True
        wnd_limit = min(self.snd_wnd, self.cc.cwnd)
        blocked = False
        loop_sent = False
        while True:
            nxt = self.snd_nxt
            off = sq.sub(nxt, self._buf_seq)
            avail = sbuf.size - off
            if avail <= 0:
                if self._fin_queued and nxt == self._fin_seq:
                    # our FIN goes out once every byte before it has (3.10.4)
                    out.append(OutSegment(nxt, ack, ACK | FIN, win, b"", b""))
                    if sq.lt(nxt, self.snd_max):
                        self._count_retransmit(nxt, 0, True)
                    elif self.snd_max == una:
                        self._unacked_since = now
                    self.snd_nxt = sq.add(nxt, 1)
                    if sq.gt(self.snd_nxt, self.snd_max):
                        self.snd_max = self.snd_nxt
                    if self._rtx_at is None:
                        self._rtx_at = now + self.rtt.rto
                    sent = True
                break
            flight = sq.sub(nxt, una)
            usable = wnd_limit - flight
            n = min(avail, mss, usable)
            if n < mss and n < avail:
                # window-limited: 3.8.6.2.1 (3) sends if it is at least half the largest window
                # the peer offered (Nagle permitting); (4) the persist timer's override
                if n <= 0 or not (
                    self._force_send
                    or ((self.nodelay or flight == 0) and n >= self.max_snd_wnd // 2)
                ):
                    blocked = True
                    break
            elif n < mss and not (
                self.nodelay or flight == 0 or self._fin_queued or self._force_send
            ):
                # 3.7.4 Nagle: a short segment waits while data is unacknowledged
                break
            self._force_send = False
            end = sq.add(nxt, n)
            flags = ACK
            if n == avail:
                flags |= PSH
                if self._fin_queued:
                    flags |= FIN
                    end = sq.add(end, 1)
            out.append(OutSegment(nxt, ack, flags, win, b"", sbuf.peek(off, n)))
            stats.tcp_data_segments_sent += 1
            if sq.lt(nxt, self.snd_max):
                self._count_retransmit(nxt, n, bool(flags & FIN))
            else:
                if self.snd_max == una:
                    self._unacked_since = now  # the user timeout counts from here
                stats.tcp_bytes_sent += n
                if self._rtt_seq is None:
                    self._rtt_seq = end
                    self._rtt_time = now
            self.snd_nxt = end
            if sq.gt(end, self.snd_max):
                self.snd_max = end
            if self._rtx_at is None:
                self._rtx_at = now + self.rtt.rto
            sent = loop_sent = True
            if flags & FIN:
                break
        if loop_sent:
            self._persist_at = None
            self._persist_backoff = 0
        elif (
            blocked
            and self._persist_at is None
            and self._rtx_at is None
            and self.snd_nxt == self.snd_una
        ):
            # 3.8.6.1: nothing in flight and the window keeps us from sending -> persist
            self._persist_at = now + self._persist_interval()
        return sent

    def _count_retransmit(self, seq: int, n: int, fin: bool) -> None:
        stats = self.stats
        stats.tcp_retransmits += 1
        stats.tcp_retransmitted_bytes += n
        if fin:
            stats.tcp_fin_retransmits += 1
        self._rtt_seq = None  # Karn: never time a retransmitted segment
        if self.tracer is not None:
            self.tracer(self, "retransmit", {"seq": seq, "len": n, "fin": fin})


# The synchronized states after the handshake.
_SYNCHRONIZED_OPEN = SYNCHRONIZED - {State.SYN_RECEIVED}
# 3.10.2: SEND is accepted (queued) from SYN-SENT on, until our FIN is queued.
_CAN_SEND = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT})
# 3.10.5: ABORT sends a RST in these states; in the others the peer has nothing to reset.
_RST_ON_ABORT = frozenset(
    {State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT}
)
# States in which an ACK of our FIN moves the machine on (3.10.7.4 fifth check).
_FIN_SENT = frozenset({State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK})
# Keep-alives are sent while the connection may otherwise sit idle forever.
_KEEPALIVE = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_2})
