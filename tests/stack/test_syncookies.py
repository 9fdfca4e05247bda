"""SYN cookies (RFC 4987 3.6): the cookie itself, and a host's listener using them, sans-IO on
virtual time -- over IPv4 and IPv6."""

from __future__ import annotations

import pytest

from tests.stack.helpers import (
    SERVER_ISN,
    addresses,
    both_families,
    make_host,
    mss,
    segments,
    tcp_packet,
)
from ustack.stack.events import ConnectionAccepted
from ustack.stack.host import Host
from ustack.stack.syncookie import (
    COUNTER_PERIOD,
    LIFETIME,
    MAX_AGE,
    MSS_TABLE,
    TS_OPT_MASK,
    SynCookies,
    decode_tsecr,
    encode_tsval,
    mss_index,
)
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.events import DataReceived, Established
from ustack.tcp.receiver import wscale_for
from ustack.tcp.state import State
from ustack.wire import tcp
from ustack.wire.tcp import TcpOptions

CLIENT_ISN = 7000
KEY = b"k" * 16
CLIENT_TSVAL = 123_456


def cookie_host(family: int, mode: str = "always", **kwargs: object) -> Host:
    cfg = kwargs.pop("config", None) or TcpConfig(syn_cookies=mode)
    return make_host(family, config=cfg, cookie_secret=KEY, **kwargs)


def syn(
    host: Host,
    sport: int = 40000,
    now: float = 0.0,
    *,
    opts: TcpOptions | None = None,
    isn: int = CLIENT_ISN,
    family: int = 4,
) -> list[tcp.TcpSegment]:
    o = opts if opts is not None else TcpOptions(mss=1460)
    host.receive_packet(
        tcp_packet(sport, 80, isn, options=tcp.encode_options(o), family=family), now
    )
    return segments(host, now)


def ack(
    host: Host,
    synack: tcp.TcpSegment | None,
    now: float = 0.0,
    *,
    sport: int = 40000,
    payload: bytes = b"",
    tsecr: int | None = None,
    ack_no: int | None = None,
    window: int = 1000,
    family: int = 4,
) -> list[tcp.TcpSegment]:
    """The client's ACK of a (cookie) SYN,ACK (or of ``ack_no`` - 1); with ``tsecr`` it
    carries timestamps."""
    if ack_no is None:
        assert synack is not None
        ack_no = synack.seq + 1
    options = b""
    if tsecr is not None:
        options = tcp.encode_options(TcpOptions(timestamps=(CLIENT_TSVAL + 1, tsecr)))
    host.receive_packet(
        tcp_packet(
            sport,
            80,
            CLIENT_ISN + 1,
            ack_no,
            tcp.ACK | (tcp.PSH if payload else 0),
            payload=payload,
            options=options,
            window=window,
            family=family,
        ),
        now,
    )
    return segments(host, now)


def peer_tuple(family: int, sport: int) -> tuple[int, int, int, int]:
    """The 4-tuple of the peer's connection from ``sport`` to port 80, as ``Host.lookup`` takes
    it."""
    host, peer = addresses(family)
    return peer, sport, host, 80


def drain(host: Host) -> list[object]:
    out: list[object] = []
    while (ev := host.next_event()) is not None:
        out.append(ev)
    return out


# ----------------------------------------------------------------------------- the cookie


@both_families
def test_cookie_round_trip_gives_back_the_mss_from_the_table(family: int) -> None:
    host, peer = addresses(family)
    jar = SynCookies(KEY)
    tuple_ = (host, 80, peer, 40000)
    for peer_mss, expected in [(1460, 1460), (9000, 1460), (1452, 1440), (1400, 1300), (536, 536)]:
        cookie = jar.make(*tuple_, CLIENT_ISN, peer_mss, 10.0)
        assert jar.check(*tuple_, CLIENT_ISN + 1, cookie + 1, 10.0) == expected
    assert [mss_index(m) for m in (100, 535, 536, 1299, 1300, 1440, 1460, 65535)] == [
        0,
        0,
        0,
        0,
        1,
        2,
        3,
        3,
    ]
    assert MSS_TABLE == (536, 1300, 1440, 1460)


@both_families
def test_cookie_is_bound_to_key_tuple_peer_isn_and_its_own_bits(family: int) -> None:
    host, peer = addresses(family)
    jar = SynCookies(KEY)
    cookie = jar.make(host, 80, peer, 40000, CLIENT_ISN, 1460, 0.0)
    assert jar.check(host, 80, peer, 40000, CLIENT_ISN + 1, cookie + 1, 0.0) == 1460
    assert jar.check(host, 80, peer, 40001, CLIENT_ISN + 1, cookie + 1, 0.0) is None
    assert jar.check(host, 81, peer, 40000, CLIENT_ISN + 1, cookie + 1, 0.0) is None
    assert jar.check(host, 80, peer + 1, 40000, CLIENT_ISN + 1, cookie + 1, 0.0) is None
    assert jar.check(host, 80, peer, 40000, CLIENT_ISN + 2, cookie + 1, 0.0) is None
    assert (
        SynCookies(b"other").check(host, 80, peer, 40000, CLIENT_ISN + 1, cookie + 1, 0.0) is None
    )
    # every single bit of the cookie counts: hash, MSS index and counter bits alike
    for bit in range(32):
        forged = (cookie ^ (1 << bit)) + 1
        assert jar.check(host, 80, peer, 40000, CLIENT_ISN + 1, forged, 0.0) is None, bit


@both_families
def test_cookie_ages_out_and_one_from_the_future_is_refused(family: int) -> None:
    host, peer = addresses(family)
    jar = SynCookies(KEY)
    made = 5 * COUNTER_PERIOD + 1.0
    cookie = jar.make(host, 80, peer, 40000, CLIENT_ISN, 1460, made)

    def check(now: float) -> int | None:
        return jar.check(host, 80, peer, 40000, CLIENT_ISN + 1, cookie + 1, now)

    last_good = (5 + MAX_AGE + 1) * COUNTER_PERIOD - 0.001
    assert check(made) == check(last_good) == 1460
    assert check(last_good + 0.001) is None  # MAX_AGE + 1 ticks on: stale
    assert check(made + 8 * COUNTER_PERIOD) is None  # the counter bits wrapped: still stale
    assert check(made - COUNTER_PERIOD) is None  # made in a tick that has not come yet
    assert last_good - made < LIFETIME


def test_tsval_carries_wscale_and_sack_and_never_runs_ahead_of_the_clock() -> None:
    for clock in (0, 5, 31, 32, 1_000_000, 0xFFFFFFFF):
        for wscale in (None, 0, 7, 14):
            for sack in (False, True):
                tsval = encode_tsval(clock, wscale, sack)
                assert decode_tsecr(tsval) == (wscale, sack)
                behind = (clock - tsval) & 0xFFFFFFFF
                assert behind <= 2 * TS_OPT_MASK + 1, (clock, wscale, sack)
    assert decode_tsecr(0x1F) == (None, True) and decode_tsecr(0x0F) == (None, False)


def test_bad_secrets_and_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="syn_cookies"):
        TcpConfig(syn_cookies="sometimes")
    with pytest.raises(ValueError, match="1 to 32 bytes"):
        SynCookies(b"")
    with pytest.raises(ValueError, match="1 to 32 bytes"):
        make_host(cookie_secret=b"x" * 33)
    # a host with only an isn= source has no key: "always" cannot work, "auto" never sends one
    with pytest.raises(ValueError, match="always"):
        make_host(config=TcpConfig(syn_cookies="always"))


# ----------------------------------------------------------------------------- the host


@both_families
def test_round_trip_with_timestamps_recovers_wscale_and_sack_from_tsecr(family: int) -> None:
    h = cookie_host(family, "always")
    listener = h.listen(80)
    offered = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(CLIENT_TSVAL, 0))
    [synack] = syn(h, opts=offered, now=1.5, family=family)
    # No state at all: nothing on the 4-tuple, nothing half-open, no timer.
    assert h.connections == [] and listener.half_open == 0 and h.next_deadline() is None
    assert synack.control is tcp.Control.SYN and synack.has_ack
    assert synack.ack == CLIENT_ISN + 1 and synack.seq != SERVER_ISN
    assert synack.window == 65535
    o = synack.options
    assert o.mss == mss(family) and o.wscale == wscale_for(h.config.recv_buffer)
    assert o.sack_permitted and o.timestamps is not None and o.timestamps[1] == CLIENT_TSVAL
    tsval = o.timestamps[0]
    assert decode_tsecr(tsval) == (7, True)

    assert ack(h, synack, 1.6, tsecr=tsval, family=family) == []
    evs = drain(h)
    assert [type(e) for e in evs] == [Established, ConnectionAccepted]
    conn = listener.accept()
    assert isinstance(conn, Connection) and conn is evs[0].conn  # type: ignore[attr-defined]
    assert conn.state is State.ESTABLISHED and conn.passive
    assert (conn.iss, conn.irs) == (synack.seq, CLIENT_ISN)
    assert (conn.snd_una, conn.snd_nxt, conn.rcv_nxt) == (synack.seq + 1,) * 2 + (CLIENT_ISN + 1,)
    assert conn.peer_mss == 1460 and conn.snd_wscale == 7 and conn.snd_wnd == 1000 << 7
    assert conn.rcv_wscale == wscale_for(h.config.recv_buffer)
    assert conn.sack_ok and conn.timestamps_ok
    # the peer's 1460 or what our side of the path carries (RFC 9293 3.7.1: 1440 over IPv6),
    # less the timestamps option's 12 bytes (RFC 7323 3.2)
    assert conn.snd_mss == min(1460, mss(family)) - 12
    # Our TSvals go on from the cookie's, never back (the peer's PAWS would drop them).
    conn.send(b"x")
    [data] = segments(h, 1.7)
    assert data.options.timestamps is not None
    assert data.options.timestamps[0] >= tsval and data.options.timestamps[1] == CLIENT_TSVAL + 1
    assert h.stats.nonzero() == {
        "ip_rx": 2,
        **({"ip6_rx": 2} if family == 6 else {}),
        "ip_tx": 2,
        "tcp_rx": 2,
        "syncookies_sent": 1,
        "syncookies_accepted": 1,
        "tcp_passive_opens": 1,
        "tcp_established": 1,
        "tcp_segments_received": 1,
        "tcp_segments_sent": 1,
        "tcp_data_segments_sent": 1,
        "tcp_bytes_sent": 1,
        "listen_queued": 1,
        "listen_accepted": 1,
    }


@both_families
def test_round_trip_without_timestamps_has_no_window_scaling_and_no_sack(family: int) -> None:
    h = cookie_host(family, "always")
    listener = h.listen(80)
    [synack] = syn(h, opts=TcpOptions(mss=1452, wscale=7, sack_permitted=True), family=family)
    # Without timestamps nothing could bring the shift or SACK back: neither is offered.
    assert synack.options == TcpOptions(mss=mss(family))
    assert ack(h, synack, family=family) == []
    conn = listener.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    assert conn.peer_mss == 1440  # 1452 kept as the table's 1440
    assert conn.snd_wscale == 0 and conn.rcv_wscale == 0 and conn.snd_wnd == 1000
    assert not conn.sack_ok and not conn.timestamps_ok
    assert h.stats.syncookies_accepted == 1


@both_families
def test_timestamps_off_in_our_config_means_none_of_the_three(family: int) -> None:
    h = cookie_host(family, config=TcpConfig(syn_cookies="always", timestamps=False))
    listener = h.listen(80)
    full = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(CLIENT_TSVAL, 0))
    [synack] = syn(h, opts=full, family=family)
    assert synack.options == TcpOptions(mss=mss(family))
    ack(h, synack, tsecr=0x17, family=family)  # whatever the TSecr says is not looked at
    conn = listener.accept()
    assert conn is not None and not conn.timestamps_ok and conn.snd_wscale == 0
    assert not conn.sack_ok


@both_families
@pytest.mark.parametrize("how", ["forged", "stale", "other_tuple", "sack_not_offered"])
def test_invalid_cookie_is_answered_with_rst_and_counted(how: str, family: int) -> None:
    cfg = TcpConfig(syn_cookies="always", sack=how != "sack_not_offered")
    h = cookie_host(family, config=cfg)
    listener = h.listen(80)
    [synack] = syn(h, opts=TcpOptions(mss=1460, timestamps=(CLIENT_TSVAL, 0)), family=family)
    assert synack.options.timestamps is not None
    tsecr = synack.options.timestamps[0]
    now, sport, ack_no = 0.0, 40000, synack.seq + 1
    if how == "forged":
        ack_no ^= 1 << 5
    elif how == "stale":
        now = (MAX_AGE + 1) * COUNTER_PERIOD
    elif how == "other_tuple":
        sport = 40001
    else:
        tsecr |= 0x10  # claims SACK, which a host without SACK never offered
    [rst] = ack(h, synack, now, sport=sport, tsecr=tsecr, ack_no=ack_no, family=family)
    assert rst.control is tcp.Control.RST and rst.seq == ack_no and rst.dst_port == sport
    assert h.stats.syncookies_failed == 1 and h.stats.listen_rst_for_ack == 1
    assert h.stats.syncookies_accepted == 0
    assert h.connections == [] and listener.pending == 0 and drain(h) == []


@both_families
def test_stale_limit_is_the_age_limit(family: int) -> None:
    # The same ACK just inside the limit completes the handshake (the stale case above fails
    # only because of the age).
    h = cookie_host(family, "always")
    listener = h.listen(80)
    [synack] = syn(h, family=family)
    ack(h, synack, (MAX_AGE + 1) * COUNTER_PERIOD - 0.01, family=family)
    assert listener.pending == 1 and h.stats.syncookies_failed == 0


@both_families
def test_always_keeps_no_state_and_answers_every_syn(family: int) -> None:
    h = cookie_host(family, "always")
    listener = h.listen(80, backlog=4, syn_backlog=1)
    answers = [syn(h, sport, family=family) for sport in range(40000, 40100)]
    assert all(len(a) == 1 and a[0].control is tcp.Control.SYN for a in answers)
    assert h.connections == [] and listener.half_open == 0
    assert h.stats.syncookies_sent == 100 and h.stats.listen_syn == 0
    assert h.stats.listen_syn_queue_overflow == 0 and h.next_deadline() is None
    # a retransmitted SYN gets the same cookie again (nothing to remember it by)
    assert syn(h, 40000, family=family)[0].seq == answers[0][0].seq


@both_families
def test_never_drops_syn_when_the_queue_is_full(family: int) -> None:
    h = cookie_host(family, "never")
    listener = h.listen(80, syn_backlog=1)
    [synack] = syn(h, 40000, family=family)
    assert synack.seq == SERVER_ISN and listener.half_open == 1
    assert syn(h, 40001, family=family) == []
    assert h.stats.listen_syn_queue_overflow == 1 and h.stats.syncookies_sent == 0
    # and an ACK to the listener is not looked at as a cookie
    [rst] = ack(h, synack, sport=40001, family=family)
    assert rst.control is tcp.Control.RST
    assert h.stats.listen_rst_for_ack == 1 and h.stats.syncookies_failed == 0


@both_families
def test_auto_sends_cookies_only_while_the_syn_queue_is_full(family: int) -> None:
    h = cookie_host(family, "auto")
    listener = h.listen(80, syn_backlog=2)
    # An ACK before any cookie was sent is just a bad ACK (3.10.7.2), not a failed cookie.
    [rst] = ack(h, None, sport=40009, ack_no=12345, family=family)
    assert rst.control is tcp.Control.RST and h.stats.syncookies_failed == 0
    normal = [syn(h, port, family=family)[0] for port in (40000, 40001)]
    assert [s.seq for s in normal] == [SERVER_ISN] * 2 and listener.half_open == 2
    assert h.stats.syncookies_sent == 0 and h.stats.listen_syn == 2
    [cookie] = syn(h, 40002, 1.0, family=family)  # the queue is full now
    assert cookie.seq != SERVER_ISN and listener.half_open == 2
    assert h.stats.syncookies_sent == 1 and h.stats.listen_syn_queue_overflow == 0
    assert listener.cookie_at == 1.0
    ack(h, cookie, 1.1, sport=40002, family=family)
    conn = listener.accept()
    assert conn is not None and conn.remote_port == 40002 and conn.iss == cookie.seq
    # A normal handshake completes as ever, and frees a slot: the next SYN is kept again.
    ack(h, normal[0], 1.2, sport=40000, family=family)
    assert listener.half_open == 1
    [kept] = syn(h, 40003, 1.3, family=family)
    assert kept.seq == SERVER_ISN and listener.half_open == 2
    # While a cookie may still come back, a bad ACK is a failed cookie...
    ack(h, cookie, 2.0, sport=40004, family=family)
    assert h.stats.syncookies_failed == 1
    # ...once none can, it is a bad ACK again.
    ack(h, cookie, 1.0 + LIFETIME + 0.1, sport=40004, family=family)
    assert h.stats.syncookies_failed == 1 and h.stats.listen_rst_for_ack == 3


@both_families
def test_accept_queue_full_drops_the_cookie_ack_until_accept(family: int) -> None:
    h = cookie_host(family, "always")
    listener = h.listen(80, backlog=1)
    [first] = syn(h, 40000, family=family)
    [second] = syn(h, 40001, family=family)
    ack(h, first, sport=40000, family=family)
    assert listener.pending == 1
    assert (
        ack(h, second, sport=40001, family=family) == []
    )  # dropped, no RST: the peer sends it again
    assert h.stats.listen_accept_queue_overflow == 1 and h.stats.syncookies_accepted == 1
    assert h.lookup(*peer_tuple(family, 40001)) is None
    assert listener.accept() is not None
    ack(h, second, 0.5, sport=40001, family=family)
    conn = listener.accept()
    assert conn is not None and conn.remote_port == 40001 and conn.state is State.ESTABLISHED
    assert h.stats.syncookies_accepted == 2 and h.stats.listen_queued == 2


@both_families
def test_data_on_the_cookie_ack_is_delivered(family: int) -> None:
    h = cookie_host(family, "always")
    listener = h.listen(80)
    [synack] = syn(h, family=family)
    out = ack(h, synack, payload=b"hello", family=family)
    evs = drain(h)
    assert [type(e) for e in evs] == [Established, ConnectionAccepted, DataReceived]
    conn = listener.accept()
    assert conn is not None and conn.read() == b"hello"
    assert conn.rcv_nxt == CLIENT_ISN + 1 + 5
    # the data is acknowledged (now or by the delayed-ACK timer)
    if not out:
        deadline = h.next_deadline()
        assert deadline is not None
        h.on_deadline(deadline)
        out = segments(h, deadline)
    assert [(s.flags & tcp.ACK, s.ack) for s in out] == [(tcp.ACK, CLIENT_ISN + 6)]


@both_families
def test_cookie_key_derives_from_the_isn_secret_or_is_given(family: int) -> None:
    def cookie_of(**kwargs: object) -> int:
        h = make_host(family, isn=None, config=TcpConfig(syn_cookies="always"), **kwargs)
        h.listen(80)
        [synack] = syn(h, family=family)
        return synack.seq

    a = cookie_of(secret=b"s" * 16)
    assert cookie_of(secret=b"s" * 16) == a  # deterministic
    assert cookie_of(secret=b"t" * 16) != a
    assert cookie_of(secret=b"s" * 16, cookie_secret=KEY) != a
    # the derived key is not the ISN secret itself
    assert cookie_of(secret=b"s" * 16, cookie_secret=b"s" * 16) != a
