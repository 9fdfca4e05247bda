"""Addresses wider than 32 bits in the places that pack them: RFC 6528 ISNs (and the hash behind
timestamp offsets and ephemeral ports), SYN cookies, and TIME-WAIT keys.

An IPv6 address in the core is tagged ``addr | 1 << 128``. IPv4 results must stay byte for byte
what they were: the vectors below were taken from the tree before addresses were widened.
"""

from __future__ import annotations

import pytest

from tests.stack.test_host_layers import LOCAL6, REMOTE6, FakeIp, segment
from ustack.stack.config import HostConfig
from ustack.stack.events import ConnectionAccepted
from ustack.stack.isn import Rfc6528Isn, pack_four_tuple
from ustack.stack.network import OutPacket
from ustack.stack.syncookie import SynCookies
from ustack.stack.tcp_demux import TcpDemux
from ustack.tcp.config import TcpConfig
from ustack.tcp.events import Established
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.tcp.timewait import TimeWait, pack_key, unpack_key
from ustack.wire import seq, tcp

TAG = 1 << 128
# (local_addr, local_port, remote_addr, remote_port), IPv4
V4_TUPLES = [
    (0x0A000002, 80, 0x0A000001, 40000),
    (0xC0A80101, 443, 0x08080808, 1),
    (1, 1, 0xFFFFFFFE, 65535),
]
# From the tree before the change, secret b"k" * 16: (hash, ISN at now=12.5).
ISN_VECTORS = [(0xDF57C7F7, 0xDF8776FF), (0xCCF726CE, 0xCD26D5D6), (0xA728288E, 0xA757D796)]
# SynCookies(b"c" * 16).make(*tuple, peer_isn=0x12345678, peer_mss=1460, now=1000.0)
COOKIE_VECTORS = [0xFE92E265, 0xFE0C4F35, 0xF879D934]
# pack_key(remote_addr, remote_port, local_addr, local_port)
KEY_VECTORS = [
    0x0A0000019C400A0000020050,
    0x80808080001C0A8010101BB,
    0xFFFFFFFEFFFF000000010001,
]
# fd00:7::2 -> fd00:7::1, and a second remote with the same low 32 bits as REMOTE6
OTHER6 = TAG | 0xFD00_0008 << 96 | 1
V6_TUPLE = (LOCAL6, 80, REMOTE6, 40000)


@pytest.mark.parametrize(("four", "expected"), zip(V4_TUPLES, ISN_VECTORS, strict=True))
def test_ipv4_isns_are_unchanged(
    four: tuple[int, int, int, int], expected: tuple[int, int]
) -> None:
    isn = Rfc6528Isn(b"k" * 16)
    assert (isn.hash(*four), isn(*four, 12.5)) == expected


@pytest.mark.parametrize(("four", "expected"), zip(V4_TUPLES, COOKIE_VECTORS, strict=True))
def test_ipv4_cookies_are_unchanged(four: tuple[int, int, int, int], expected: int) -> None:
    assert SynCookies(b"c" * 16).make(*four, 0x12345678, 1460, 1000.0) == expected


@pytest.mark.parametrize(("four", "expected"), zip(V4_TUPLES, KEY_VECTORS, strict=True))
def test_ipv4_keys_are_unchanged(four: tuple[int, int, int, int], expected: int) -> None:
    local_addr, local_port, remote_addr, remote_port = four
    key = pack_key(remote_addr, remote_port, local_addr, local_port)
    # the same int as ever, so a TIME-WAIT record of IPv4 costs the same bytes as ever
    assert key == expected and key.bit_length() <= 96
    assert unpack_key(key) == (remote_addr, remote_port, local_addr, local_port)


def test_the_hashed_bytes_of_each_family() -> None:
    # IPv4: the 12 bytes of "!IHIH"; IPv6: 17 bytes per tagged address, so 38 in all.
    assert pack_four_tuple(0x0A000002, 80, 0x0A000001, 40000) == bytes.fromhex(
        "0a00000200500a0000019c40"
    )
    packed = pack_four_tuple(*V6_TUPLE)
    assert len(packed) == 38
    assert packed[:17] == LOCAL6.to_bytes(17, "big") and packed[17:19] == b"\x00\x50"


def test_ipv6_isns_per_four_tuple_and_apart_from_ipv4() -> None:
    isn = Rfc6528Isn(b"k" * 16)
    low = (LOCAL6 & 0xFFFFFFFF, 80, REMOTE6 & 0xFFFFFFFF, 40000)
    values = {isn.hash(LOCAL6, 80, REMOTE6, port) for port in range(40000, 40500)}
    values |= {isn.hash(*low), isn.hash(LOCAL6, 80, OTHER6, 40000)}
    assert len(values) == 502
    h = isn.hash(*V6_TUPLE)
    assert 0 <= h <= 0xFFFFFFFF
    assert (isn(*V6_TUPLE, 11.0) - isn(*V6_TUPLE, 10.0)) & 0xFFFFFFFF == 250_000


def test_a_cookie_round_trip_over_ipv6() -> None:
    cookies = SynCookies(b"c" * 16)
    peer_isn = 0x12345678
    cookie = cookies.make(*V6_TUPLE, peer_isn, 1440, 1000.0)
    seg_seq, seg_ack = peer_isn + 1, (cookie + 1) & 0xFFFFFFFF
    assert cookies.check(*V6_TUPLE, seg_seq, seg_ack, 1010.0) == 1440
    # not for the IPv4 tuple of the same low bits, nor for another IPv6 peer with them
    low = (LOCAL6 & 0xFFFFFFFF, 80, REMOTE6 & 0xFFFFFFFF, 40000)
    assert cookies.check(*low, seg_seq, seg_ack, 1010.0) is None
    assert cookies.check(LOCAL6, 80, OTHER6, 40000, seg_seq, seg_ack, 1010.0) is None


@pytest.mark.parametrize(
    "key",
    [
        (REMOTE6, 40000, LOCAL6, 80),
        (TAG | (1 << 128) - 1, 65535, TAG | (1 << 128) - 1, 65535),
        (TAG, 0, TAG, 0),
        (TAG | 0xFFFFFFFF, 1, TAG | 1 << 127, 2),
        (0xFFFFFFFF, 65535, 0xFFFFFFFF, 65535),
        (0, 0, 0, 0),
    ],
)
def test_keys_round_trip(key: tuple[int, int, int, int]) -> None:
    assert unpack_key(pack_key(*key)) == key


def test_ipv6_keys_are_apart_from_ipv4_and_each_other() -> None:
    keys = {
        pack_key(REMOTE6, 40000, LOCAL6, 80),
        # with 32-bit fields LOCAL6's tag bit lands on this remote's bit 80: one key for both
        pack_key(REMOTE6 | 1 << 80, 40000, LOCAL6, 80),
        pack_key(REMOTE6 & 0xFFFFFFFF, 40000, LOCAL6 & 0xFFFFFFFF, 80),
        pack_key(OTHER6, 40000, LOCAL6, 80),
        pack_key(LOCAL6, 40000, REMOTE6, 80),
        pack_key(REMOTE6, 80, LOCAL6, 40000),
    }
    assert len(keys) == 6


def test_a_time_wait_record_over_ipv6_reads_its_addresses() -> None:
    # the address views read only the key, never the packed TCB
    rec = TimeWait(pack_key(REMOTE6, 40000, LOCAL6, 80), b"", 1.0)
    assert (rec.remote_addr, rec.remote_port, rec.local_addr, rec.local_port) == (
        REMOTE6,
        40000,
        LOCAL6,
        80,
    )


def _demux(**config: object) -> tuple[TcpDemux, FakeIp, Stats]:
    ip = FakeIp()
    stats = Stats()
    demux = TcpDemux(
        ip,
        config=TcpConfig(timestamps=False, **config),  # type: ignore[arg-type]
        host_config=HostConfig(),
        stats=stats,
        secret=b"s" * 16,  # RFC 6528 ISNs, ports and cookies from the keyed hash
        isn=None,
        cookie_secret=None,
        tracer=None,
    )
    return demux, ip, stats


def test_the_demux_runs_cookies_and_time_wait_over_ipv6() -> None:
    demux, ip, stats = _demux(syn_cookies="always")
    listener = demux.listen(80)
    demux.segment(segment(40000, 80, 100, 0, tcp.SYN), 0.0)
    out: list[OutPacket] = []
    demux.collect(out, 0.0)
    [(key, synack)] = ip.sent
    assert key == (REMOTE6, 40000, LOCAL6, 80) and synack.flags == tcp.SYN | tcp.ACK
    assert listener.half_open == 0  # a cookie: nothing kept
    cookie = synack.seq
    demux.segment(segment(40000, 80, 101, seq.add(cookie, 1), tcp.ACK), 0.5)
    assert [type(demux.next_event()), type(demux.next_event())] == [Established, ConnectionAccepted]
    conn = listener.accept()
    assert conn is not None and conn.remote_port == 40000  # (the events say ESTABLISHED)

    # we close first, the peer ACKs our FIN and sends its own: TIME-WAIT, then the record
    conn.close(1.0)
    demux.collect(out, 1.0)
    fin = ip.sent[-1][1]
    assert fin.flags & tcp.FIN
    demux.segment(segment(40000, 80, 101, seq.add(cookie, 2), tcp.FIN | tcp.ACK), 1.1)
    demux.collect(out, 1.1)
    assert conn.state is State.TIME_WAIT
    demux.release(conn, 1.2)
    rec = demux.lookup(*key)
    assert isinstance(rec, TimeWait)
    assert (rec.remote_addr, rec.local_addr) == (REMOTE6, LOCAL6)
    # a retransmitted FIN reaches the record and is ACKed again
    ip.sent.clear()
    demux.segment(segment(40000, 80, 101, seq.add(cookie, 2), tcp.FIN | tcp.ACK), 1.3)
    assert [s.flags for _, s in ip.sent] == [tcp.ACK] and stats.tcp_time_wait_restarted == 1


def test_an_active_open_over_ipv6_picks_a_hashed_port() -> None:
    demux, _, _ = _demux()
    conn = demux.connect(REMOTE6, 80, LOCAL6, 0.0)
    assert conn.state is State.SYN_SENT and 1 <= conn.local_port <= 65535
    assert (conn.remote_addr, conn.local_addr) == (REMOTE6, LOCAL6)
    isn = Rfc6528Isn(b"s" * 16)
    assert conn.snd.iss == isn(LOCAL6, conn.local_port, REMOTE6, 80, 0.0)
