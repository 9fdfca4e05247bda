"""ICMP errors about our segments (RFC 1122 4.2.3.9, RFC 5927, RFC 1191) at the host.

Each test builds the error a router would send, quoting a datagram the host really sent, and
checks what the host made of it: the drop counter of each failed RFC 5927 check, the hard error
that refuses a connection in SYN-SENT, the soft error kept for a later timeout, and "fragmentation
needed" lowering the MSS and sending the too-big segments again at once.
"""

from __future__ import annotations

import errno
import struct

import pytest

from tests.stack.helpers import HOST, PEER, make_host, tcp_packet
from ustack.stack import icmp_errors
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.events import Closed, Reset, TimedOut
from ustack.tcp.state import State
from ustack.wire import icmp, ipv4, tcp
from ustack.wire.tcp import TcpOptions

ROUTER = ipv4.addr_to_int("10.7.0.254")
OTHER = ipv4.addr_to_int("10.7.0.99")  # not one of the host's addresses
LPORT = 40000
RPORT = 80
PEER_ISS = 90000
CFG = TcpConfig(timestamps=False)  # keeps the MSS arithmetic plain: MSS = MTU - 40


def icmp_error(
    original: bytes | bytearray,
    type_: int = icmp.DEST_UNREACH,
    code: int = icmp.HOST_UNREACH,
    mtu: int = 0,
    *,
    src: int = ROUTER,
) -> bytearray:
    """The datagram a router sends about ``original``: its IP header and 8 octets quoted."""
    qlen = icmp.quote_length(original)
    body = bytearray(icmp.HEADER_LEN + qlen)
    if type_ == icmp.DEST_UNREACH:
        icmp.emit_unreachable(body, 0, code=code, original=original, mtu=mtu)
    else:
        # time exceeded, parameter problem, source quench: the same layout, word unused
        struct.pack_into("!BBHI", body, 0, type_, code, 0, 0)
        body[icmp.HEADER_LEN :] = bytes(original[:qlen])
        struct.pack_into("!H", body, 2, _checksum(body))
    buf = bytearray(ipv4.HEADER_LEN + len(body))
    ipv4.emit(buf, 0, src=src, dst=HOST, proto=ipv4.PROTO_ICMP, payload_len=len(body))
    buf[ipv4.HEADER_LEN :] = body
    return buf


def _checksum(data: bytearray) -> int:
    from ustack.wire import checksum

    return checksum.internet_checksum(data)


def syn_sent(config: TcpConfig = CFG, gso: bool = True) -> tuple[Host, Connection, bytes]:
    h = make_host(config=config, gso=gso)
    conn = h.connect(PEER, RPORT, 0.0, local_port=LPORT)
    (syn,) = send(h, 0.0)
    return h, conn, syn


def established(
    config: TcpConfig = CFG, data: int = 5 * 1460, peer_mss: int = 1460, gso: bool = True
) -> tuple[Host, Connection, list[bytes]]:
    """A connection that has sent ``data`` bytes (unacknowledged); returns its packets. With
    ``gso`` (the default) TCP sent them as one super-segment the host cut."""
    h, conn, _ = syn_sent(config, gso)
    ts = (1, 0) if config.timestamps else None
    opts = tcp.encode_options(TcpOptions(mss=peer_mss, timestamps=ts))
    synack = tcp_packet(RPORT, LPORT, PEER_ISS, conn.iss + 1, tcp.SYN | tcp.ACK, options=opts)
    h.receive_packet(synack, 0.0)
    send(h, 0.0)  # the ACK
    while h.next_event() is not None:
        pass
    conn.set_nodelay(True)
    conn.send(bytes(range(256)) * (data // 256) + bytes(data % 256))
    out = send(h, 0.0)
    assert out and conn.state is State.ESTABLISHED
    return h, conn, out


def send(h: Host, now: float = 0.0) -> list[bytes]:
    """The host's output, each datagram as bytes (a simulated link never gathers)."""
    out = []
    for p in h.packets_to_send(now):
        assert not isinstance(p, tuple)
        out.append(bytes(p))
    return out


def events(h: Host) -> list[object]:
    out: list[object] = []
    while (ev := h.next_event()) is not None:
        out.append(ev)
    return out


def state(conn: Connection) -> State:
    return conn.state  # a call, so mypy does not narrow the state across the steps of a test


def icmp_counters(h: Host) -> dict[str, int]:
    """The counters this feature adds or touches, as nonzero() reports them."""
    names = [
        n
        for n in h.stats.as_dict()
        if n.startswith(("icmp_", "tcp_icmp", "tcp_pmtu")) and n != "icmp_rx"
    ]
    return {n: getattr(h.stats, n) for n in names if getattr(h.stats, n)}


# -- SYN-SENT: hard errors refuse, soft errors wait for the timeout ---------------------------


@pytest.mark.parametrize("code", [icmp.PORT_UNREACH, icmp.PROTO_UNREACH])
def test_syn_sent_hard_error_refuses(code: int) -> None:
    h, conn, syn = syn_sent()
    h.receive_packet(icmp_error(syn, code=code), 0.1)
    assert conn.state is State.CLOSED
    evs = events(h)
    assert [type(e) for e in evs] == [Reset, Closed]
    assert isinstance(evs[0], Reset) and evs[0].refused and evs[0].conn is conn
    assert icmp_counters(h) == {"icmp_error_delivered": 1, "tcp_icmp_refused": 1}
    assert h.connections == []  # the host forgot it
    assert send(h, 0.1) == []  # no RST for a SYN-SENT abort (RFC 9293 3.10.5)
    with pytest.raises(ConnectionResetError):
        conn.send(b"x")


@pytest.mark.parametrize(
    ("type_", "code", "err"),
    [
        (icmp.DEST_UNREACH, icmp.NET_UNREACH, errno.ENETUNREACH),
        (icmp.DEST_UNREACH, icmp.HOST_UNREACH, errno.EHOSTUNREACH),
        (icmp.DEST_UNREACH, 13, errno.EHOSTUNREACH),  # administratively prohibited
        (icmp.TIME_EXCEEDED, 0, errno.EHOSTUNREACH),
        (icmp.PARAM_PROBLEM, 0, errno.EPROTO),
    ],
)
def test_syn_sent_soft_error_is_kept_until_the_syns_time_out(
    type_: int, code: int, err: int
) -> None:
    h, conn, syn = syn_sent(TcpConfig(timestamps=False, syn_retries=1))
    h.receive_packet(icmp_error(syn, type_, code), 0.1)
    # RFC 1122 4.2.3.9: a soft error "MUST NOT abort the connection"
    assert conn.state is State.SYN_SENT
    assert conn.soft_error == err
    assert events(h) == []
    assert icmp_counters(h) == {"icmp_error_delivered": 1, "tcp_icmp_soft_errors": 1}
    while (t := h.next_deadline()) is not None:
        h.on_deadline(t)
        send(h, t)
    evs = events(h)
    assert [type(e) for e in evs] == [TimedOut, Closed]
    assert isinstance(evs[0], TimedOut) and evs[0].reason == "syn"
    assert evs[0].conn.soft_error == err


# -- RFC 5927 4.1: what is not believed -------------------------------------------------------


def test_quote_from_someone_else_is_dropped() -> None:
    h, conn, syn = syn_sent()
    forged = bytearray(syn)
    forged[12:16] = OTHER.to_bytes(4, "big")  # "we" did not send that
    h.receive_packet(icmp_error(forged, code=icmp.PORT_UNREACH), 0.1)
    assert conn.state is State.SYN_SENT
    assert icmp_counters(h) == {"icmp_quote_not_ours": 1}


def test_quote_of_udp_is_dropped() -> None:
    h, conn, syn = syn_sent()
    udp = bytearray(syn)
    udp[9] = 17
    h.receive_packet(icmp_error(udp, code=icmp.PORT_UNREACH), 0.1)
    assert conn.state is State.SYN_SENT
    assert icmp_counters(h) == {"icmp_quote_not_tcp": 1}


@pytest.mark.parametrize("field", ["src_port", "dst_port", "dst"])
def test_quote_for_no_connection_is_dropped(field: str) -> None:
    h, conn, syn = syn_sent()
    other = bytearray(syn)
    if field == "src_port":
        other[20:22] = (LPORT + 1).to_bytes(2, "big")
    elif field == "dst_port":
        other[22:24] = (RPORT + 1).to_bytes(2, "big")
    else:
        other[16:20] = OTHER.to_bytes(4, "big")
    h.receive_packet(icmp_error(other, code=icmp.PORT_UNREACH), 0.1)
    assert conn.state is State.SYN_SENT
    assert icmp_counters(h) == {"icmp_error_no_connection": 1}


@pytest.mark.parametrize("delta", [1, -1, 0x80000000])
def test_syn_sent_quote_must_carry_the_iss(delta: int) -> None:
    h, conn, syn = syn_sent()
    wrong = bytearray(syn)
    wrong[24:28] = ((conn.iss + delta) & 0xFFFFFFFF).to_bytes(4, "big")
    h.receive_packet(icmp_error(wrong, code=icmp.PORT_UNREACH), 0.1)
    assert conn.state is State.SYN_SENT
    assert conn.soft_error == 0
    assert icmp_counters(h) == {"icmp_error_out_of_window": 1}


def test_established_quote_must_be_in_snd_una_to_snd_nxt() -> None:
    h, conn, out = established()
    first = bytearray(out[0])
    for seq in (conn.snd_nxt, (conn.snd_una - 1) & 0xFFFFFFFF):
        first[24:28] = seq.to_bytes(4, "big")
        h.receive_packet(icmp_error(first), 0.1)
    assert conn.soft_error == 0
    assert icmp_counters(h) == {"icmp_error_out_of_window": 2}
    # the last byte sent (SND.NXT - 1) is still in the window
    first[24:28] = ((conn.snd_nxt - 1) & 0xFFFFFFFF).to_bytes(4, "big")
    h.receive_packet(icmp_error(first), 0.1)
    assert conn.soft_error == errno.EHOSTUNREACH


@pytest.mark.parametrize("cut", [icmp.HEADER_LEN + 19, icmp.HEADER_LEN + 20 + 7])
def test_truncated_quote_is_a_counted_parse_error(cut: int) -> None:
    h, conn, syn = syn_sent()
    msg = icmp_error(syn, code=icmp.PORT_UNREACH)
    body = bytearray(msg[ipv4.HEADER_LEN : ipv4.HEADER_LEN + cut])
    body[2:4] = b"\0\0"
    struct.pack_into("!H", body, 2, _checksum(body))
    short = bytearray(ipv4.HEADER_LEN + len(body))
    ipv4.emit(short, 0, src=ROUTER, dst=HOST, proto=ipv4.PROTO_ICMP, payload_len=len(body))
    short[ipv4.HEADER_LEN :] = body
    h.receive_packet(short, 0.1)
    assert conn.state is State.SYN_SENT
    assert icmp_counters(h) == {"icmp_quote_malformed": 1}
    assert h.stats.host_internal_error == 0


def test_source_quench_is_ignored_and_counted() -> None:
    h, conn, out = established()
    h.receive_packet(icmp_error(out[0], icmp.SOURCE_QUENCH, 0), 0.1)
    assert conn.soft_error == 0
    assert send(h, 0.1) == []
    assert icmp_counters(h) == {"icmp_source_quench": 1}


# -- synchronized states: every error is soft --------------------------------------------------


def test_established_port_unreachable_is_soft_and_cleared_by_progress() -> None:
    h, conn, out = established()
    cwnd = conn.cwnd
    h.receive_packet(icmp_error(out[0], code=icmp.PORT_UNREACH), 0.1)
    # RFC 5927 4.1: hard errors are soft in synchronized states
    assert conn.state is State.ESTABLISHED
    assert conn.soft_error == errno.ECONNREFUSED
    assert events(h) == []
    assert send(h, 0.1) == []  # nothing retransmitted
    assert conn.cwnd == cwnd
    assert icmp_counters(h) == {"icmp_error_delivered": 1, "tcp_icmp_soft_errors": 1}
    # an ACK of new data shows the path works: the old error no longer explains anything
    ack = tcp_packet(RPORT, LPORT, PEER_ISS + 1, conn.snd_una + 1460, tcp.ACK)
    h.receive_packet(ack, 0.2)
    assert conn.soft_error == 0


def test_established_soft_error_then_retransmission_timeout() -> None:
    h, conn, out = established(TcpConfig(timestamps=False, data_retries=2))
    h.receive_packet(icmp_error(out[0], code=icmp.NET_UNREACH), 0.1)
    while (t := h.next_deadline()) is not None and conn.state is not State.CLOSED:
        h.on_deadline(t)
        send(h, t)
    timed_out = [e for e in events(h) if isinstance(e, TimedOut)]
    assert len(timed_out) == 1 and timed_out[0].reason == "retransmit"
    assert timed_out[0].conn.soft_error == errno.ENETUNREACH


def test_time_wait_connection_and_record_drop_errors() -> None:
    h, conn, _ = established(data=100)
    conn.shutdown(0.0)
    (fin,) = send(h, 0.0)
    end = conn.snd_nxt
    h.receive_packet(tcp_packet(RPORT, LPORT, PEER_ISS + 1, end, tcp.ACK | tcp.FIN), 0.1)
    send(h, 0.1)
    assert conn.state is State.TIME_WAIT
    h.receive_packet(icmp_error(fin, code=icmp.PORT_UNREACH), 0.2)
    h.release(conn, 0.2)
    assert not isinstance(h.connections[0], Connection)  # now a compact record
    h.receive_packet(icmp_error(fin, code=icmp.PORT_UNREACH), 0.3)
    assert icmp_counters(h) == {"icmp_error_time_wait": 2}


def test_listener_half_open_dropped_by_hard_error_kept_by_soft() -> None:
    h = make_host(config=CFG)
    listener = h.listen(RPORT)
    h.receive_packet(tcp_packet(LPORT, RPORT, PEER_ISS, flags=tcp.SYN), 0.0)
    (synack,) = send(h, 0.0)
    assert listener.half_open == 1
    (conn,) = h.connections
    assert isinstance(conn, Connection) and state(conn) is State.SYN_RECEIVED
    # the SYN,ACK quoted: our port is its source
    h.receive_packet(icmp_error(synack, code=icmp.HOST_UNREACH), 0.1)
    assert listener.half_open == 1 and conn.soft_error == errno.EHOSTUNREACH
    h.receive_packet(icmp_error(synack, code=icmp.PORT_UNREACH), 0.2)
    assert state(conn) is State.CLOSED
    assert listener.half_open == 0 and listener.pending == 0
    assert h.connections == []
    assert send(h, 0.2) == []
    assert icmp_counters(h) == {
        "icmp_error_delivered": 2,
        "tcp_icmp_soft_errors": 1,
        "tcp_icmp_synrcvd_dropped": 1,
    }


# -- RFC 1191: fragmentation needed ------------------------------------------------------------


def sizes(packets: list[bytes]) -> list[int]:
    return [len(p) for p in packets]


def seqs(packets: list[bytes]) -> list[int]:
    return [int.from_bytes(p[24:28], "big") for p in packets]


def test_frag_needed_lowers_mss_and_resends_at_once() -> None:
    h, conn, out = established()
    assert sizes(out) == [1500] * 5
    cwnd, ssthresh = conn.cwnd, conn.ssthresh
    rto_before = conn.timers["retransmit"]
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=1200), 0.05)
    assert conn.path_mtu == 1200
    assert conn.snd_mss == 1160
    again = send(h, 0.05)  # the same instant: no RTO waited for
    # 5 * 1460 bytes, cut to 1160: seven segments, none above the new MTU, all with DF
    assert sizes(again) == [1200] * 6 + [40 + 5 * 1460 - 6 * 1160]
    assert seqs(again) == [conn.iss + 1 + i * 1160 for i in range(7)]
    assert all(ipv4.parse(p).dont_fragment for p in again)
    # RFC 1191: not congestion -- cwnd and ssthresh stay, no recovery, the RTO not restarted
    assert (conn.cwnd, conn.ssthresh, conn.in_recovery) == (cwnd, ssthresh, False)
    assert conn.timers["retransmit"] == rto_before
    assert conn.soft_error == 0
    assert icmp_counters(h) == {
        "icmp_frag_needed": 1,
        "tcp_pmtu_lowered": 1,
        "tcp_pmtu_retransmits": 1,  # one super-segment
    }
    # and new data goes out at the new size
    conn.send(b"z" * 3000)
    assert max(sizes(send(h, 0.06))) <= 1200


def test_frag_needed_with_timestamps_leaves_room_for_the_option() -> None:
    h, conn, out = established(TcpConfig())
    assert conn.timestamps_ok and conn.snd_mss == 1448
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=1400), 0.05)
    assert conn.snd_mss == 1400 - 40 - 12
    again = send(h, 0.05)
    assert max(sizes(again)) == 1400


def test_frag_needed_mtu_zero_takes_the_plateau_below_the_quoted_length() -> None:
    h, conn, out = established()
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=0), 0.05)
    # RFC 1191 7: the quoted datagram was 1500 octets; the next plateau down is 1492
    assert conn.path_mtu == 1492 and conn.snd_mss == 1452
    assert max(sizes(send(h, 0.05))) == 1492
    assert icmp_counters(h) == {
        "icmp_frag_needed": 1,
        "icmp_frag_needed_plateau": 1,
        "tcp_pmtu_lowered": 1,
        "tcp_pmtu_retransmits": 1,  # one super-segment
    }


def test_frag_needed_below_576_is_clamped() -> None:
    h, conn, out = established()
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=296), 0.05)
    assert conn.path_mtu == 576 and conn.snd_mss == 536
    assert max(sizes(send(h, 0.05))) == 576
    # a second claim below 576 is no longer a decrease
    h.receive_packet(icmp_error(out[1], code=icmp.FRAG_NEEDED, mtu=68), 0.06)
    assert conn.path_mtu == 576
    assert icmp_counters(h) == {
        "icmp_frag_needed": 2,
        "tcp_pmtu_clamped": 1,
        "tcp_pmtu_not_lower": 1,
        "tcp_pmtu_retransmits": 1,  # one super-segment
    }


@pytest.mark.parametrize("mtu", [1500, 1501, 9000])
def test_frag_needed_not_below_path_mtu_is_ignored(mtu: int) -> None:
    h, conn, out = established()
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=mtu), 0.05)
    assert conn.path_mtu == 1500 and conn.snd_mss == 1460
    assert send(h, 0.05) == []
    assert icmp_counters(h) == {"icmp_frag_needed": 1, "tcp_pmtu_not_lower": 1}


def test_frag_needed_when_the_peer_mss_is_smaller_sends_nothing_again() -> None:
    h, conn, out = established(peer_mss=1000, data=3000)
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=1200), 0.05)
    assert conn.path_mtu == 1200 and conn.snd_mss == 1000
    assert send(h, 0.05) == []
    assert icmp_counters(h) == {"icmp_frag_needed": 1, "tcp_pmtu_lowered": 1}


def test_frag_needed_resends_only_the_segments_that_were_too_big() -> None:
    h, conn, out = established(data=2 * 1460 + 500, gso=False)
    assert sizes(out) == [1500, 1500, 540]
    h.receive_packet(icmp_error(out[0], code=icmp.FRAG_NEEDED, mtu=1000), 0.05)
    again = send(h, 0.05)
    # the 500-byte segment fitted; the two full ones go again as 960 + 500 each
    assert sizes(again) == [1000, 540, 1000, 540]
    assert seqs(again) == [conn.iss + 1 + x for x in (0, 960, 1460, 2420)]
    assert h.stats.tcp_pmtu_retransmits == 2


def test_plateau_table() -> None:
    assert icmp_errors.plateau_below(1500) == 1492
    assert icmp_errors.plateau_below(1492) == 1006
    assert icmp_errors.plateau_below(65535) == 32000
    assert icmp_errors.plateau_below(576) == 508
    assert icmp_errors.plateau_below(68) == 68
