"""SACK (RFC 2018, RFC 2883) and timestamps (RFC 7323) on the receive side, through the wire.

The peer is :class:`kit.Script` with the full fixtures: it offers SACK-permitted and timestamps,
and once both SYNs carried TSopt it stamps every segment from its own 1 ms clock (TSVAL0 at
virtual time 0) and echoes the last TSval we sent. The peer's data is numbered from D0; block
edges are shown relative to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.tcp import kit
from tests.tcp.kit import (
    ACK,
    FIN,
    ISS_A,
    ISS_B,
    PEER_SYN_OPTS_FULL,
    RST,
    SYN,
    TSVAL0,
    Script,
)
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import DataReceived, EofReceived, Reset
from ustack.tcp.state import State
from ustack.wire import tcp as wt

D0 = ISS_B + 1  # the peer's first data byte
S0 = ISS_A + 1  # our first data byte
MSS = 1460  # what the peer advertises
MSS_TS = MSS - 12  # RFC 7323 3.2 / RFC 9293 3.7.1: TSopt takes 12 bytes of every segment
DAY = 86400.0
PAWS_IDLE = 24 * DAY  # RFC 7323 5.5

SACK_ONLY = wt.TcpOptions(mss=MSS, wscale=3, sack_permitted=True)
TS_ONLY = wt.TcpOptions(mss=MSS, wscale=3, timestamps=(TSVAL0, 0))
PLAIN = wt.TcpOptions(mss=MSS, wscale=3)


def ts(x: wt.TcpSegment) -> tuple[int, int]:
    assert x.options.timestamps is not None, f"no TSopt on {x}"
    return x.options.timestamps


def rel(x: wt.TcpSegment) -> tuple[tuple[int, int], ...]:
    """The SACK blocks of one of our segments, relative to the peer's first data byte."""
    return tuple(((a - D0) & 0xFFFFFFFF, (b - D0) & 0xFFFFFFFF) for a, b in x.options.sack_blocks)


def data(s: Script, start: int, n: int, **kw: Any) -> list[wt.TcpSegment]:
    """The peer sends ``n`` bytes of its stream from offset ``start`` (a retransmission or an
    out-of-order segment alike: the script's own next sequence number is not moved)."""
    return s.push(ACK, payload=bytes([start % 251]) * n, seq=D0 + start, **kw)


def delivered_ack(s: Script, start: int, n: int) -> wt.TcpSegment:
    """In-order data and the ACK that answers it: delayed (3.8.6.3), or at once when the data
    ends a silence longer than the RTO (quick-ACK mode, ``Receiver.in_order``)."""
    quick = s.now - s.conn.rcv.last_data > s.conn.rto
    out = data(s, start, n)
    if quick:
        (ack,) = out
    else:
        assert out == []
        (ack,) = s.advance(s.now + 0.5)
    assert ack.ack == D0 + start + n and not ack.payload
    return ack


def wire_room(x: wt.TcpSegment) -> int:
    """Option and payload bytes of a segment: what the peer's MSS bounds."""
    return x.header_length - 20 + len(x.payload)


# ---------------------------------------------------------------- negotiation


def _our_syn(config: TcpConfig | None = None) -> wt.TcpSegment:
    s = kit.closed(config)
    s.conn.open_active(s.now)
    (syn,) = s.out()
    assert syn.control is wt.Control.SYN and not syn.has_ack
    return syn


class TestNegotiation:
    def test_syn_offers_sack_and_timestamps_by_default(self) -> None:
        o = _our_syn().options
        assert o.mss == MSS and o.wscale == 3
        assert o.sack_permitted  # RFC 2018 2
        assert o.timestamps is not None  # RFC 7323 3.2
        assert o.timestamps[1] == 0  # 3.2: TSecr is zero when ACK is not set

    @pytest.mark.parametrize(
        ("sack", "timestamps"),
        [(False, True), (True, False), (False, False)],
        ids=["no-sack", "no-ts", "neither"],
    )
    def test_syn_never_offers_what_config_turns_off(self, sack: bool, timestamps: bool) -> None:
        o = _our_syn(TcpConfig(sack=sack, timestamps=timestamps)).options
        assert o.sack_permitted is sack
        assert (o.timestamps is not None) is timestamps
        assert o.mss == MSS

    @pytest.mark.parametrize(
        ("sack", "timestamps"),
        [(False, False), (True, False), (False, True), (True, True)],
        ids=["none", "sack", "ts", "both"],
    )
    def test_synack_echoes_only_what_the_syn_offered(self, sack: bool, timestamps: bool) -> None:
        s = kit.listen()
        s.now = 0.5
        tsval = s.peer_tsval()
        opts = wt.TcpOptions(
            mss=MSS,
            wscale=3,
            sack_permitted=sack,
            timestamps=(tsval, 0) if timestamps else None,
        )
        (synack,) = s.push(SYN, options=opts, ack=0, window=kit.PEER_SYN_WINDOW, ts=False)
        assert synack.control is wt.Control.SYN and synack.has_ack
        o = synack.options
        assert o.sack_permitted is sack
        assert (o.timestamps is not None) is timestamps
        if o.timestamps is not None:
            assert o.timestamps[1] == tsval  # RFC 7323 3.2: the SYN's TSval is echoed
        assert o.mss == MSS and o.wscale == 3
        s.timestamps = timestamps
        assert s.push(ACK) == []
        c = s.conn
        assert c.state is State.ESTABLISHED
        assert c.sack_ok is sack
        assert c.timestamps_ok is timestamps
        assert c.snd_mss == (MSS_TS if timestamps else MSS)

    @pytest.mark.parametrize(
        ("opts", "sack", "timestamps"),
        [(PLAIN, False, False), (SACK_ONLY, True, False), (TS_ONLY, False, True)],
        ids=["none", "sack", "ts"],
    )
    def test_active_open_uses_what_the_synack_agreed(
        self, opts: wt.TcpOptions, sack: bool, timestamps: bool
    ) -> None:
        s = kit.established_full(TcpConfig(nagle=False), opts=opts)
        c = s.conn
        assert c.sack_ok is sack
        assert c.timestamps_ok is timestamps
        assert c.snd_mss == (MSS_TS if timestamps else MSS)
        c.send(b"x")
        (x,) = s.out()
        assert (x.options.timestamps is not None) is timestamps

    def test_active_open_with_both(self) -> None:
        s = kit.closed()
        s.conn.open_active(s.now)
        (syn,) = s.out()
        s.now = 0.25
        peer = s.peer_tsval()
        opts = PEER_SYN_OPTS_FULL._replace(timestamps=(peer, ts(syn)[0]))
        (ack,) = s.push(SYN | ACK, options=opts, window=kit.PEER_SYN_WINDOW, ts=False)
        assert ack.flags == ACK
        assert ts(ack)[1] == peer  # the ACK of the SYN,ACK echoes its TSval
        assert s.conn.sack_ok and s.conn.timestamps_ok

    def test_passive_open_is_not_talked_into_what_config_turns_off(self) -> None:
        s = kit.syn_received_full(TcpConfig(sack=False, timestamps=False))
        assert not s.timestamps  # the SYN,ACK carried no TSopt, so the peer stops sending it
        assert s.push(ACK) == []
        c = s.conn
        assert c.state is State.ESTABLISHED
        assert not c.sack_ok and not c.timestamps_ok
        assert c.snd_mss == MSS
        (ack,) = data(s, 100, 100)  # out of order, without TSopt: held and ACKed at once
        assert ack.options == wt.NO_OPTIONS  # neither SACK blocks nor timestamps
        assert c.ooo_bytes == 100 and c.stats.tcp_drop_no_timestamp == 0

    def test_active_open_ignores_options_it_did_not_offer(self) -> None:
        # a broken peer answers sackOK and TSopt to a SYN that offered neither
        s = kit.established_full(TcpConfig(sack=False, timestamps=False))
        assert not s.timestamps
        c = s.conn
        assert not c.sack_ok and not c.timestamps_ok
        assert c.snd_mss == MSS
        (ack,) = data(s, 100, 100, ts=True)
        assert ack.options == wt.NO_OPTIONS

    @pytest.mark.parametrize("sack", [True, False], ids=["sack", "no-sack"])
    def test_peer_sack_blocks_count_only_when_negotiated(self, sack: bool) -> None:
        s = kit.established_full(TcpConfig(sack=sack))
        c = s.conn
        c.send(b"x" * 3 * MSS_TS)
        assert len(s.out()) == 3 and c.pipe == 3 * MSS_TS
        s.now = 0.01
        s.push(ACK, ack=S0, sack=[(S0 + 2 * MSS_TS, S0 + 3 * MSS_TS)])  # TSopt and SACK
        if sack:
            assert c.pipe < 3 * MSS_TS  # the SACKed segment left the network (RFC 6675)
        else:
            assert c.pipe == 3 * MSS_TS  # blocks the peer should not have sent are ignored
        assert c.stats.tcp_drop_no_timestamp == 0 and c.stats.tcp_sack_invalid == 0

    @pytest.mark.parametrize("fixture", [kit.established_full, kit.accepted_full])
    def test_data_segments_fill_the_mss_less_timestamps(
        self, fixture: Callable[..., Script]
    ) -> None:
        s = fixture(TcpConfig(nagle=False))
        c = s.conn
        assert c.snd_mss == MSS_TS
        c.send(b"d" * 4000)
        segs = s.out()
        assert [len(x.payload) for x in segs] == [MSS_TS, MSS_TS, 4000 - 2 * MSS_TS]
        assert [wire_room(x) for x in segs[:2]] == [MSS, MSS]


# ---------------------------------------------------------------- timestamps on every segment


class TestTimestampsOnEverySegment:
    def test_every_kind_of_segment_carries_tsopt(self) -> None:
        s = kit.established_full(TcpConfig(keepalive=True, keepalive_idle=10.0))
        c = s.conn
        base = s.ts_echo  # our TSval at time 0 (the handshake ACK's)
        seen: dict[str, wt.TcpSegment] = {}

        s.now = 1.0
        c.send(b"a" * 100)
        (seen["data"],) = s.out()
        assert s.push(ACK, payload=b"b" * 100) == []  # acks our data; our ACK is delayed
        (seen["delayed ack"],) = s.advance(2.0)
        (seen["ooo ack"],) = data(s, 300, 100)
        (seen["duplicate ack"],) = data(s, 0, 100)
        (seen["challenge ack"],) = s.push(SYN, seq=D0 + 50, ts=False)  # RFC 5961 4
        s.seq = D0 + 400
        assert data(s, 100, 200)[0].ack == D0 + 400  # the hole filled: ACKed at once
        (seen["keep-alive"],) = s.advance(20.0)
        assert seen["keep-alive"].seq == c.snd_nxt - 1
        s.push(ACK)
        c.shutdown(s.now)
        (seen["fin"],) = s.out()
        assert seen["fin"].control is wt.Control.FIN

        for kind, x in seen.items():
            assert x.options.timestamps is not None, kind
        # RFC 7323 5.4: a 1 ms clock
        tsvals = {kind: ts(x)[0] - base for kind, x in seen.items()}
        assert tsvals == {
            "data": 1000,
            "delayed ack": 1040,
            "ooo ack": 2000,
            "duplicate ack": 2000,
            "challenge ack": 2000,
            "keep-alive": 12000,
            "fin": 20000,
        }

    def test_zero_window_probe_carries_tsopt(self) -> None:
        s = kit.established_full()
        c = s.conn
        s.now = 0.5
        closing = s.peer_tsval()
        assert s.push(ACK, window=0) == []
        c.send(b"p" * 10)
        assert s.out() == []
        (probe,) = s.fire()
        assert len(probe.payload) == 1
        assert ts(probe)[1] == closing  # it echoes the TSval of the segment closing the window

    def test_rst_never_carries_tsopt(self) -> None:
        s = kit.established_full()
        s.now = 1.0
        s.conn.abort(s.now)
        (rst,) = s.out()
        assert rst.control is wt.Control.RST
        assert rst.options == wt.NO_OPTIONS and rst.header_length == 20

    def test_rst_for_unread_data_on_close_carries_no_tsopt(self) -> None:
        s = kit.established_full()
        s.now = 1.0
        data(s, 0, 100)
        s.conn.close(s.now)
        (rst,) = s.out()
        assert rst.control is wt.Control.RST and rst.options == wt.NO_OPTIONS

    def test_rst_answering_a_bad_ack_carries_no_tsopt(self) -> None:
        s = kit.syn_received_full()
        (rst,) = s.push(ACK, ack=S0 + 5000)
        assert rst.control is wt.Control.RST and rst.options == wt.NO_OPTIONS

    def test_tsecr_is_the_tsval_of_the_segment_that_made_us_ack(self) -> None:
        s = kit.established_full()
        s.now = 1.0
        first = s.peer_tsval()
        assert data(s, 0, 1000) == []  # delayed
        s.now = 1.010
        (ack,) = data(s, 1000, 1000)  # the second full-sized segment: ACK now
        assert ack.ack == D0 + 2000
        # RFC 7323 4.3 (A): the echo is from the earlier segment, not the latest one
        assert ts(ack)[1] == first != s.peer_tsval()

    def test_delayed_ack_timer_echoes_the_segment_it_answers(self) -> None:
        s = kit.established_full()
        s.now = 1.0
        sent = s.peer_tsval()
        ack = delivered_ack(s, 0, 100)
        assert ts(ack)[1] == sent

    def test_out_of_order_segment_does_not_update_ts_recent(self) -> None:
        s = kit.established_full()
        s.now = 1.0
        first = s.peer_tsval()
        delivered_ack(s, 0, 100)
        s.now = 2.0
        (dup,) = data(s, 200, 100)  # SEG.SEQ > Last.ACK.sent
        assert dup.ack == D0 + 100
        assert ts(dup)[1] == first  # RFC 7323 4.3 (C)
        s.now = 3.0
        filler = s.peer_tsval()
        (ack,) = data(s, 100, 100)  # fills the hole: its TSval is taken
        assert ack.ack == D0 + 300
        assert ts(ack)[1] == filler


# ---------------------------------------------------------------- PAWS and TSopt required


def _with_ts_recent(config: TcpConfig | None = None) -> tuple[Script, int]:
    """ESTABLISHED with 100 bytes received at t=1 s and ACKed: TS.Recent is their TSval."""
    s = kit.established_full(config)
    s.now = 1.0
    recent = s.peer_tsval()
    ack = delivered_ack(s, 0, 100)
    assert ts(ack)[1] == recent
    assert s.conn.read() == bytes([0]) * 100
    kit.events(s.conn)
    s.seq = D0 + 100
    return s, recent


class TestPaws:
    def test_old_tsval_is_dropped_and_answered_with_an_ack(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        s.now = 2.0
        (ack,) = data(s, 100, 100, tsval=recent - 1)  # RFC 7323 5.3 R1
        assert ack.ack == D0 + 100 and not ack.payload
        assert ts(ack)[1] == recent  # TS.Recent is untouched
        assert c.readable == 0 and kit.events(c) == []
        assert c.stats.tcp_drop_paws == 1
        # the same bytes with a current TSval are taken (and ACKed at once: a second passed
        # since the last data, longer than the RTO)
        (ack,) = data(s, 100, 100)
        assert ack.ack == D0 + 200
        assert c.readable == 100 and kit.events(c) == [DataReceived(c)]
        assert c.stats.tcp_drop_paws == 1

    def test_an_old_pure_ack_does_not_move_snd_una(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        s.now = 2.0
        c.send(b"a" * 100)
        s.out()
        (ack,) = s.push(ACK, tsval=recent - 1000)
        assert ack.ack == D0 + 100
        assert c.snd_una == S0 and c.stats.tcp_drop_paws == 1
        s.push(ACK)
        assert c.snd_una == S0 + 100

    def test_tsval_equal_to_ts_recent_is_accepted(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        s.now = 2.0
        data(s, 100, 100, tsval=recent)  # R1 rejects only SEG.TSval < TS.Recent
        assert c.readable == 100 and c.stats.tcp_drop_paws == 0

    def test_old_fin_is_dropped(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        (ack,) = s.push(FIN | ACK, tsval=recent - 1)
        assert ack.ack == D0 + 100
        assert c.state is State.ESTABLISHED and kit.events(c) == []
        assert c.stats.tcp_drop_paws == 1
        s.seq = D0 + 100
        (ack,) = s.push(FIN | ACK)
        assert ack.ack == D0 + 101 and kit.events(c) == [EofReceived(c)]

    def test_rst_is_not_subject_to_paws(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        assert s.push(RST, tsval=recent - 1000) == []
        assert c.state is State.CLOSED
        assert kit.events(c)[0] == Reset(c, False)
        assert c.stats.tcp_drop_paws == 0

    def test_rst_without_tsopt_is_accepted(self) -> None:
        s, _ = _with_ts_recent()
        c = s.conn
        assert s.push(RST, ts=False) == []
        assert c.state is State.CLOSED
        assert c.stats.tcp_drop_no_timestamp == 0

    def test_paws_still_applies_just_under_24_days_idle(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        assert s.advance(1.0 + PAWS_IDLE - 1.0) == []
        (ack,) = data(s, 100, 100, tsval=recent - 1)
        assert ack.ack == D0 + 100 and c.readable == 0
        assert c.stats.tcp_drop_paws == 1 and c.stats.tcp_paws_idle_reset == 0

    def test_ts_recent_older_than_24_days_is_not_trusted(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        assert s.advance(1.0 + PAWS_IDLE + 1.0) == []
        old = recent - 1
        # RFC 7323 5.5: accepted, TS.Recent taken from it (ACKed at once after the silence)
        (ack,) = data(s, 100, 100, tsval=old)
        assert c.readable == 100
        assert c.stats.tcp_drop_paws == 0 and c.stats.tcp_paws_idle_reset == 1
        assert ts(ack)[1] == old

    def test_peer_clock_past_its_sign_bit_after_25_idle_days(self) -> None:
        # the peer's 1 ms clock moved 2**31 ms and more: its TSval now looks older than
        # TS.Recent, the case 5.5 exists for
        s, _ = _with_ts_recent()
        c = s.conn
        assert s.advance(25 * DAY) == []
        data(s, 100, 100)
        assert c.readable == 100 and c.stats.tcp_drop_paws == 0
        assert c.stats.tcp_paws_idle_reset == 1
        s.now += 1.0
        data(s, 200, 100)  # and from then on the new era's values are simply newer
        assert c.readable == 200 and c.stats.tcp_paws_idle_reset == 1

    def test_old_duplicate_after_idle_does_not_freeze_the_connection(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        assert s.advance(25 * DAY) == []
        (ack,) = data(s, 0, 100, tsval=recent - 5000)  # entirely below RCV.NXT
        assert ack.ack == D0 + 100
        data(s, 100, 100)  # the peer's genuine next segment, stamped by its clock
        assert c.stats.tcp_drop_paws == 0
        assert c.readable == 100

    def test_peer_tsval_wrapping_past_2_32_is_accepted(self) -> None:
        s = kit.established_full(ts_offset=2**32 - 1500)
        c = s.conn
        s.now = 1.0
        assert s.peer_tsval() == 2**32 - 500
        delivered_ack(s, 0, 100)
        s.now = 2.0
        assert s.peer_tsval() == 500  # wrapped
        ack = delivered_ack(s, 100, 100)
        assert ts(ack)[1] == 500 and c.readable == 200
        # 2**32 - 100 is numerically larger but, modulo 2**32, before 500: an old duplicate
        (ack,) = data(s, 200, 100, tsval=2**32 - 100)
        assert ack.ack == D0 + 200 and c.readable == 200
        assert c.stats.tcp_drop_paws == 1


class TestTimestampRequired:
    def test_segments_without_tsopt_are_dropped_silently(self) -> None:
        s, _ = _with_ts_recent()
        c = s.conn
        s.now = 2.0
        c.send(b"a" * 100)
        s.out()
        assert data(s, 100, 100, ts=False) == []  # RFC 7323 3.2: silently
        assert s.push(ACK, ts=False) == []
        assert s.push(FIN | ACK, seq=D0 + 100, ts=False) == []
        assert c.readable == 0 and c.snd_una == S0 and c.state is State.ESTABLISHED
        assert kit.events(c) == []
        assert c.stats.tcp_drop_no_timestamp == 3
        (ack,) = s.push(FIN | ACK, payload=b"z" * 100, seq=D0 + 100)
        assert ack.ack == D0 + 201 and c.snd_una == S0 + 100
        assert c.state is State.CLOSE_WAIT

    def test_handshake_ack_without_tsopt_is_dropped(self) -> None:
        s = kit.syn_received_full()
        assert s.push(ACK, ts=False) == []
        assert s.conn.state is State.SYN_RECEIVED
        assert s.conn.stats.tcp_drop_no_timestamp == 1
        assert s.push(ACK) == []
        assert s.conn.state is State.ESTABLISHED

    @pytest.mark.parametrize(
        ("config", "opts"),
        [(TcpConfig(timestamps=False), PEER_SYN_OPTS_FULL), (TcpConfig(), SACK_ONLY)],
        ids=["we-declined", "peer-declined"],
    )
    def test_not_required_when_not_negotiated(self, config: TcpConfig, opts: wt.TcpOptions) -> None:
        s = kit.established_full(config, opts=opts)
        c = s.conn
        assert not c.timestamps_ok and not s.timestamps
        data(s, 0, 100)
        assert c.readable == 100 and c.stats.tcp_drop_no_timestamp == 0


# ---------------------------------------------------------------- SACK blocks we send


class TestSackBlocks:
    def test_out_of_order_data_is_acked_at_once_with_a_block(self) -> None:
        s = kit.established_full()
        (ack,) = data(s, 100, 100)
        assert ack.ack == D0
        assert rel(ack) == ((100, 200),)

    @pytest.mark.parametrize(
        ("opts", "acks"), [(kit.PEER_SYN_OPTS_FULL, 3), (TS_ONLY, 5)], ids=["sack", "no-sack"]
    )
    def test_out_of_order_segments_arriving_together_share_acks_only_with_sack(
        self, opts: wt.TcpOptions, acks: int
    ) -> None:
        # Five full segments beyond a hole arrive in one batch (one read from the link) before
        # the host asks for output. With SACK the blocks say everything: an ACK every second
        # segment and one at the end. Without, each is a duplicate ACK that counts (RFC 5681
        # 3.2) and goes on its own.
        s = kit.established_full(opts=opts)
        c = s.conn
        for i in range(5):
            c.receive(s.make(payload=b"o" * MSS, seq=D0 + (i + 1) * MSS), s.now)
        sent = s.out()
        assert len(sent) == acks and all(x.ack == D0 for x in sent)
        if c.sack_ok:
            assert rel(sent[-1]) == ((MSS, 6 * MSS),)

    def test_first_block_is_the_latest_arrival_then_earlier_ones(self) -> None:
        s = kit.established_full()
        steps = [
            (400, ((400, 500),)),
            (200, ((200, 300), (400, 500))),
            (600, ((600, 700), (200, 300), (400, 500))),
            # three blocks fit next to timestamps: the least recent one is left out
            (800, ((800, 900), (600, 700), (200, 300))),
            # joins 200-300 and 400-500: the merged block comes first
            (300, ((200, 500), (800, 900), (600, 700))),
        ]
        for start, blocks in steps:
            (ack,) = data(s, start, 100)
            assert ack.ack == D0
            assert rel(ack) == blocks, start
            assert ack.options.timestamps is not None

    @pytest.mark.parametrize(
        ("config", "opts"),
        [(TcpConfig(timestamps=False), PEER_SYN_OPTS_FULL), (TcpConfig(), SACK_ONLY)],
        ids=["we-declined-ts", "peer-declined-ts"],
    )
    def test_four_blocks_without_timestamps(self, config: TcpConfig, opts: wt.TcpOptions) -> None:
        s = kit.established_full(config, opts=opts)
        acks = [data(s, start, 100)[0] for start in (200, 400, 600, 800, 1000)]
        assert rel(acks[-1]) == ((1000, 1100), (800, 900), (600, 700), (400, 500))
        assert acks[-1].options.timestamps is None
        assert [len(x.options.sack_blocks) for x in acks] == [1, 2, 3, 4, 4]

    def test_adjacent_segments_merge_into_one_block(self) -> None:
        s = kit.established_full()
        assert rel(data(s, 200, 100)[0]) == ((200, 300),)
        assert rel(data(s, 300, 100)[0]) == ((200, 400),)
        assert rel(data(s, 100, 100)[0]) == ((100, 400),)
        assert s.conn.ooo_bytes == 300

    def test_blocks_go_once_the_holes_are_filled(self) -> None:
        s = kit.established_full()
        data(s, 200, 100)
        assert rel(data(s, 500, 100)[0]) == ((500, 600), (200, 300))
        (ack,) = data(s, 0, 200)
        assert ack.ack == D0 + 300
        assert rel(ack) == ((500, 600),)
        (ack,) = data(s, 300, 200)
        assert ack.ack == D0 + 600
        assert ack.options.sack_blocks == ()
        s.seq = D0 + 600
        assert s.push(ACK, payload=b"q" * 100) == []
        (later,) = s.advance(s.now + 0.5)
        assert later.ack == D0 + 700 and later.options.sack_blocks == ()

    @pytest.mark.parametrize(
        ("config", "opts"),
        [(TcpConfig(sack=False), PEER_SYN_OPTS_FULL), (TcpConfig(), TS_ONLY)],
        ids=["we-declined", "peer-declined"],
    )
    def test_no_blocks_when_sack_was_not_negotiated(
        self, config: TcpConfig, opts: wt.TcpOptions
    ) -> None:
        s = kit.established_full(config, opts=opts)
        c = s.conn
        assert not c.sack_ok
        (ack,) = data(s, 200, 100)
        assert ack.ack == D0 and ack.options.sack_blocks == ()
        (ack,) = data(s, 200, 100)  # a duplicate of held data: no D-SACK either
        assert ack.options.sack_blocks == ()
        (ack,) = data(s, 0, 200)
        assert ack.ack == D0 + 300
        (ack,) = data(s, 0, 100)  # below RCV.NXT
        assert ack.ack == D0 + 300
        assert ack.options.sack_blocks == ()
        assert c.stats.tcp_dsack_sent == 0


# ---------------------------------------------------------------- D-SACK


class TestDsack:
    def test_segment_below_rcv_nxt_is_reported_once(self) -> None:
        s = kit.established_full()
        c = s.conn
        delivered_ack(s, 0, 200)
        (ack,) = data(s, 0, 100)  # RFC 2883 4.1.1: a duplicate of data already ACKed
        assert ack.ack == D0 + 200
        assert rel(ack) == ((0, 100),)  # below the ACK number: a D-SACK
        assert c.stats.tcp_dsack_sent == 1
        later = delivered_ack(s, 200, 100)
        assert later.options.sack_blocks == ()  # reported once only
        assert c.stats.tcp_dsack_sent == 1

    def test_duplicate_of_held_data_comes_first_then_its_block(self) -> None:
        s = kit.established_full()
        c = s.conn
        data(s, 200, 100)
        data(s, 300, 100)
        (ack,) = data(s, 300, 100)  # RFC 2883 4.1.2
        assert ack.ack == D0
        assert rel(ack) == ((300, 400), (200, 400))
        assert c.stats.tcp_dsack_sent == 1
        (ack,) = data(s, 600, 100)
        assert rel(ack) == ((600, 700), (200, 400))  # the D-SACK is not repeated

    def test_partly_old_segment_reports_only_the_old_part(self) -> None:
        s = kit.established_full()
        c = s.conn
        delivered_ack(s, 0, 200)
        (ack,) = data(s, 100, 200)  # 100-200 old, 200-300 new
        assert ack.ack == D0 + 300
        assert rel(ack) == ((100, 200),)
        assert c.readable == 300 and c.stats.tcp_dsack_sent == 1

    def test_partly_duplicate_out_of_order_segment(self) -> None:
        s = kit.established_full()
        data(s, 200, 100)
        (ack,) = data(s, 250, 100)  # 250-300 held already, 300-350 new
        assert rel(ack) == ((250, 300), (200, 350))
        assert s.conn.stats.tcp_dsack_sent == 1

    def test_peer_keepalive_is_answered_with_timestamps(self) -> None:
        s, recent = _with_ts_recent()
        c = s.conn
        s.now = 2.0
        (ack,) = s.push(ACK, seq=D0 + 99)  # RFC 1122 4.2.3.6: SEG.SEQ = RCV.NXT - 1, no data
        assert ack.ack == D0 + 100 and ack.options.sack_blocks == ()
        assert ts(ack)[1] == recent  # not acceptable, so TS.Recent stays
        # the variant with one garbage byte is a duplicate byte: a D-SACK
        (ack,) = s.push(ACK, seq=D0 + 99, payload=b"\0")
        assert rel(ack) == ((99, 100),) and c.stats.tcp_dsack_sent == 1

    def test_dsack_and_blocks_within_three(self) -> None:
        s = kit.established_full()
        for start in (200, 400, 600):
            data(s, start, 100)
        (ack,) = data(s, 400, 100)
        # the D-SACK counts against the three blocks that fit next to timestamps
        assert rel(ack) == ((400, 500), (400, 500), (600, 700))

    def test_dsack_goes_out_on_one_data_segment_only(self) -> None:
        s = kit.established_full(TcpConfig(nagle=False))
        c = s.conn
        delivered_ack(s, 0, 200)
        s.now = 1.0
        # a partly old segment arrives; before the host asks for output the application
        # answers with three segments' worth of data (a request/response server does)
        c.receive(s.make(ACK, payload=bytes(200), seq=D0 + 100), s.now)
        c.send(b"r" * 3 * MSS_TS)
        segs = s.out()
        assert len([x for x in segs if x.payload]) >= 2
        # RFC 2883 4: each duplicate is reported in at most one D-SACK block
        assert [rel(x) for x in segs][:2] == [((100, 200),), ()]
        assert all(x.options.sack_blocks == () for x in segs[1:])
        assert c.stats.tcp_dsack_sent == 1

    def test_segments_after_the_dsack_one_are_full_sized(self) -> None:
        s = kit.established_full(TcpConfig(nagle=False))
        c = s.conn
        delivered_ack(s, 0, 200)
        s.now = 1.0
        c.receive(s.make(ACK, payload=bytes(200), seq=D0 + 100), s.now)
        c.send(b"r" * 3 * MSS_TS)
        segs = s.out()
        assert rel(segs[0]) == ((100, 200),)
        assert len(segs[0].payload) == MSS_TS - 12 and wire_room(segs[0]) == MSS
        assert [len(x.payload) for x in segs[1:3]] == [MSS_TS, MSS_TS]


# ---------------------------------------------------------------- options on data segments


class TestOptionsOnDataSegments:
    @pytest.mark.parametrize(
        ("config", "opts", "holes", "payload"),
        [
            (TcpConfig(nagle=False), PEER_SYN_OPTS_FULL, 1, MSS_TS - 12),
            (TcpConfig(nagle=False), PEER_SYN_OPTS_FULL, 2, MSS_TS - 20),
            (TcpConfig(nagle=False), PEER_SYN_OPTS_FULL, 3, MSS_TS - 28),
            (TcpConfig(nagle=False), SACK_ONLY, 4, MSS - 36),
        ],
        ids=["ts+1", "ts+2", "ts+3", "nots+4"],
    )
    def test_sack_blocks_come_off_the_payload(
        self, config: TcpConfig, opts: wt.TcpOptions, holes: int, payload: int
    ) -> None:
        s = kit.established_full(config, opts=opts)
        c = s.conn
        for i in range(holes):
            data(s, 200 * (i + 1), 100)
        c.send(b"s" * 30000)
        segs = s.out()
        assert len(segs) >= 3
        for x in segs:
            assert len(x.options.sack_blocks) == holes
            assert wire_room(x) <= MSS
        assert [len(x.payload) for x in segs[:3]] == [payload] * 3
        assert [wire_room(x) for x in segs[:3]] == [MSS] * 3
        # the holes fill (and the peer acks everything): full-sized segments again
        more = s.push(ACK, payload=bytes(200 * holes + 100), seq=D0)
        assert more[0].ack == D0 + 200 * holes + 100
        assert all(x.options.sack_blocks == () for x in more)
        full = MSS_TS if opts.timestamps is not None else MSS
        assert len(more[0].payload) == full

    def test_retransmission_with_a_block_is_split_to_fit(self) -> None:
        s = kit.established_full()
        c = s.conn
        c.send(b"t" * 2 * MSS_TS)
        assert [len(x.payload) for x in s.out()] == [MSS_TS, MSS_TS]
        (ack,) = data(s, 100, 100, ack=S0)  # we now hold out-of-order data
        assert rel(ack) == ((100, 200),)
        sent = s.run_timers(lambda: c.stats.tcp_retransmits > 0)
        sent += s.out()
        rtx = [x for x in sent if x.payload]
        assert rtx
        for x in rtx:
            assert rel(x) == ((100, 200),)
            assert len(x.payload) <= MSS_TS - 12 and wire_room(x) <= MSS
