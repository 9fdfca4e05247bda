"""The host-level fuzzer (ustack/fuzz.py): a CI slice of it, its determinism, and proof that its
invariant checks can fire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stack.helpers import HOST, PEER, make_host, segments, tcp_packet
from ustack import fuzz
from ustack.fuzz import Checker, Fuzzer, Violation, check_connection
from ustack.stack.config import HostConfig
from ustack.stack.host import Host
from ustack.tcp.connection import Connection
from ustack.tcp.recovery import Scoreboard, Sent
from ustack.tcp.state import State
from ustack.wire import addr, checksum, icmpv6, ipv4, ipv6, tcp

SEED = 10
PACKETS = 50_000


@pytest.fixture(scope="module")
def run() -> Fuzzer:
    # Four epochs of 12,500 packets: every profile (small, scaled, plain, cookies) gets a host.
    fz = Fuzzer(SEED, epoch=12_500)
    fz.run(PACKETS)
    return fz


def test_ci_slice_keeps_every_invariant(run: Fuzzer) -> None:
    assert run.index == PACKETS
    assert run.violations == []
    assert run.host.stats.host_internal_error == 0


def test_ci_slice_reaches_every_state(run: Fuzzer) -> None:
    # LISTEN is seen on the listeners (a per-SYN connection leaves it at once); the others on
    # the connections themselves.
    assert sorted(run.states_seen) == sorted(State)


def test_ci_slice_reaches_the_paths_it_aims_at(run: Fuzzer) -> None:
    stats = run.stats()
    # mutated packets got past the parsers and checksums into the state machine
    assert run.mutated_reached_tcp > 2000
    for counter in (
        # handshakes, both ways, and both queues of a listener overflowing
        "tcp_established",
        "tcp_active_opens",
        "listen_syn_queue_overflow",
        "listen_accept_queue_overflow",
        "syncookies_sent",
        # the parsers' drops
        "ip_bad_checksum",
        "ip_truncated",
        "tcp_bad_checksum",
        "tcp_bad_flags",
        "tcp_bad_options",
        "tcp_bad_data_offset",
        # the state machine's answers to hostile but well-formed segments
        "tcp_drop_out_of_window",
        "tcp_drop_paws",
        "tcp_challenge_acks",
        "tcp_drop_syn_synchronized",
        "tcp_drop_ack_unsent",
        "tcp_sack_invalid",
        "tcp_resets_received",
        "tcp_urgent_received",
        # timers: SYN and SYN,ACK give-ups, retransmission, probes, TIME-WAIT ending
        "tcp_timeout_syn",
        "tcp_timeout_synack",
        "tcp_rto_expired",
        "tcp_window_probes",
        "tcp_keepalive_probes",
        "tcp_time_wait_expired",
        # ICMP errors about real connections
        "icmp_rx",
    ):
        assert stats.get(counter, 0) > 0, counter
    # fragments reached the IP layer (dropped, or reassembled once the host does that)
    assert run.kinds["fragment"] > 0
    frag = stats.get("ip_fragment", 0) + sum(v for k, v in stats.items() if "reasm" in k)
    assert frag > 0
    assert run.kinds["syn_flood"] > 0


def test_ci_slice_reaches_ipv6(run: Fuzzer) -> None:
    stats = run.stats()
    # TCP over IPv6, both ways: handshakes, data, closes, TIME-WAIT, SYN floods
    for state in (
        State.SYN_SENT,
        State.SYN_RECEIVED,
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.CLOSE_WAIT,
        State.LAST_ACK,
        State.TIME_WAIT,
    ):
        assert run.states_seen6.get(state, 0) > 0, state
    assert run.kinds["syn_flood6"] > 0
    assert run.kinds["v6_ext_valid"] > 0  # segments behind extension headers, committed
    for counter in (
        "ip6_rx",
        # the extension-header walk's drops, and the answers it sends
        "ip6_truncated",
        "ip6_ext_header_malformed",
        "ip6_option_dropped",
        "ip6_routing_dropped",
        "ip6_jumbogram",
        "ip6_no_next_header",
        "ip6_unknown_next_header",
        "ip6_bad_source",
        "ip6_not_for_us",
        "icmp6_param_problem_sent",
        # reassembly: whole, atomic, overlapping, duplicated, never completed, tiny first
        # fragments (RFC 7112), one source's flood
        "ip6_reasm_ok",
        "ip6_reasm_atomic",
        "ip6_reasm_overlap",
        "ip6_reasm_duplicate",
        "ip6_reasm_timeout",
        "ip6_reasm_incomplete_chain",
        "ip6_reasm_per_source_limit",
        "ip6_reasm_nested",
        "icmp6_time_exceeded_sent",
        # ICMPv6 in: errors about real connections, Packet Too Big below 1280, ND and MLD, echo
        "icmp6_error_delivered",
        "icmp6_packet_too_big",
        "icmp6_packet_too_big_clamped",
        "icmp6_quote_malformed",
        "icmp6_bad_checksum",
        "icmp6_nd_ignored",
        "icmp6_echo_replies",
        # no error about an error; the rate limit reached
        "icmp_error_about_error",
        "icmp_rate_limited",
    ):
        assert stats.get(counter, 0) > 0, counter
    assert run.icmp_errors_sent + run.checker.icmp_errors_sent > 100
    assert len(run.checker.labels) > 10  # IPv6 4-tuples whose flow label was checked


def test_same_seed_same_run() -> None:
    a, b, c = Fuzzer(7), Fuzzer(7), Fuzzer(8)
    for fz in (a, b, c):
        fz.run(3000)
    assert a.summary() == b.summary()
    assert a.summary()["output_sha256"] != c.summary()["output_sha256"]


def _established() -> tuple[Connection, Host]:
    host = make_host()
    lst = host.listen(80)
    host.receive_packet(tcp_packet(40000, 80, 1000), 0.0)
    synack = segments(host)[0]
    host.receive_packet(tcp_packet(40000, 80, 1001, synack.seq + 1, tcp.ACK), 0.01)
    conn = lst.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    return conn, host


def test_connection_check_fires_on_a_broken_sender() -> None:
    conn, _ = _established()
    assert check_connection(conn) == []
    conn.snd.una = conn.snd.nxt + 5  # SND.UNA beyond SND.NXT
    bad = check_connection(conn)
    assert len(bad) == 1 and bad[0].startswith("seq:")


def test_connection_check_fires_on_an_overfull_buffer() -> None:
    conn, _ = _established()
    conn.snd.buf.size = conn.config.send_buffer + 1
    assert [m.split(":")[0] for m in check_connection(conn)] == ["buffer"]


def _ack(seq: int, ack: int, window: int, flags: int = tcp.ACK) -> bytearray:
    length = tcp.HEADER_LEN
    buf = bytearray(ipv4.HEADER_LEN + length)
    ipv4.emit(buf, 0, src=HOST, dst=PEER, proto=ipv4.PROTO_TCP, payload_len=length)
    tcp.emit(
        buf, ipv4.HEADER_LEN, pseudo=checksum.ipv4_pseudo_header_sum(HOST, PEER, tcp.PROTO, 0), src_port=80, dst_port=40000, seq=seq, ack=ack,
        flags=flags, window=window,
    )  # fmt: skip
    return buf


def test_output_check_fires_when_the_window_shrinks() -> None:
    checker = Checker((HOST,))
    assert checker.output(_ack(5000, 1001, 8192, tcp.SYN | tcp.ACK))[1] is None
    assert checker.output(_ack(5001, 1101, 8092))[1] is None  # same right edge
    _, bad = checker.output(_ack(5001, 1101, 8000))
    assert bad is not None and bad.startswith("window:")


def test_output_check_fires_when_the_ack_moves_back() -> None:
    checker = Checker((HOST,))
    assert checker.output(_ack(5001, 2000, 100))[1] is None
    _, bad = checker.output(_ack(5001, 1999, 101))
    assert bad is not None and bad.startswith("ack:")


def test_output_check_fires_on_a_bad_checksum() -> None:
    pkt = _ack(5001, 2000, 100)
    pkt[-1] ^= 1
    _, bad = Checker((HOST,)).output(pkt)
    assert bad is not None and "tcp_bad_checksum" in bad


def test_an_escaped_exception_stops_the_run_with_a_reproducer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = Connection.receive

    def receive(self: Connection, seg: tcp.TcpSegment, now: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 50:
            raise RuntimeError("planted bug")
        real(self, seg, now)

    monkeypatch.setattr(Connection, "receive", receive)
    fz = Fuzzer(3)
    with pytest.raises(Violation) as info:
        fz.run(5000)
    v = info.value
    assert v.invariant == "host_internal_error"
    assert "planted bug" in v.detail
    assert f"--seed 3 --packets {fz.index + 1}" in v.line
    assert "IP 10.9." in v.line  # the tcpdump-style line of the packet


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "fuzz.json"
    assert fuzz.main(["--packets", "2000", "--seed", "5", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "2000 packets in" in out and "packets/s" in out and "states reached" in out
    summary = json.loads(report.read_text())
    assert summary["packets"] == 2000 and summary["violations"] == []


def test_command_line_exits_nonzero_on_a_violation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fuzz, "check_connection", lambda conn: ["seq: planted"])
    assert fuzz.main(["--packets", "2000", "--seed", "5"]) == 1
    err = capsys.readouterr().err
    assert "INVARIANT VIOLATED: seq" in err and "reproduce: python -m ustack.fuzz" in err


# -- what the fuzzer found (regressions for the fixes) ------------------------------------------


def test_an_ack_exactly_2_31_ahead_is_not_taken_by_header_prediction() -> None:
    # Found by the fuzzer (mutated ACK field): with nothing in flight, SEG.ACK = SND.UNA + 2**31
    # is both "after" SND.UNA and "not after" SND.NXT on the circle; header prediction took it
    # as new data acknowledged and moved SND.UNA back by 2**31. The general path drops it.
    conn, host = _established()
    una = conn.snd_una
    stats = conn.stats
    before = stats.tcp_drop_ack_unsent
    pkt = tcp_packet(40000, 80, conn.rcv_nxt, (una + (1 << 31)) & 0xFFFFFFFF, tcp.ACK | tcp.PSH,
                     payload=b"x")  # fmt: skip
    host.receive_packet(pkt, 0.02)
    assert conn.snd_una == una and conn.snd.una == 1
    assert stats.tcp_drop_ack_unsent == before + 1
    assert check_connection(conn) == []


def test_a_probed_segment_presumed_lost_waits_to_go_again() -> None:
    # Found by the fuzzer: a tail loss probe resent a segment (retransmitted, not lost), then the
    # RTO presumed it lost; the record stayed "lost and retransmitted" (so counted as in the
    # network) but left the RACK list and the waiting count: the RTO resent nothing.
    board = Scoreboard()
    rec = Sent(1, 537, 1.0, -1, False)
    board.add(rec)
    board.retransmitted(rec, 1.5, -1)  # the probe
    assert board.mark_lost(rec)  # the RTO
    board.check(1, 537)
    assert (rec.lost, rec.retrans, board.waiting, board.retrans_out) == (True, False, 536, 0)


def test_sack_marks_forgotten_put_the_records_back_in_the_network() -> None:
    # Found by the fuzzer: a second RTO in a row forgets the SACK marks (RFC 2018 8); a record
    # that was SACKed and is not presumed lost must be back in the transmission-order list
    # RACK walks, in time order.
    board = Scoreboard()
    recs = [Sent(1 + 100 * i, 101 + 100 * i, 1.0 + i, -1, False) for i in range(3)]
    for r in recs:
        board.add(r)
    board.mark_sacked(recs[1])
    board.check(1, 301)
    board.clear_sacks()
    board.check(1, 301)
    assert list(board.tsorted) == recs


# -- the IPv6 invariants can fire ---------------------------------------------------------------

HOST6 = addr.from_text("fd00:7::2")
PEER6 = addr.from_text("fd00:9::1")


def _tcp6(
    src: int,
    dst: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    label: int = 0,
    options: tcp.TcpOptions = tcp.NO_OPTIONS,
) -> bytearray:
    length = tcp.HEADER_LEN + options.encoded_length()
    buf = bytearray(ipv6.HEADER_LEN + length)
    s, d = addr.untag(src), addr.untag(dst)
    ipv6.emit(buf, 0, src=s, dst=d, next_header=ipv6.PROTO_TCP, payload_len=length,
              flow_label=label)  # fmt: skip
    tcp.emit(
        buf, ipv6.HEADER_LEN, pseudo=ipv6.pseudo_header_sum(s, d, ipv6.PROTO_TCP, 0),
        src_port=sport, dst_port=dport, seq=seq, ack=ack, flags=flags, window=8192,
        options=options,
    )  # fmt: skip
    return buf


def _icmp6(
    src: int, dst: int, type_: int, code: int, word: int, body: bytes | bytearray
) -> bytearray:
    """An ICMPv6 message with any word (emit_error refuses an MTU below 1280)."""
    length = icmpv6.HEADER_LEN + len(body)
    buf = bytearray(ipv6.HEADER_LEN + length)
    s, d = addr.untag(src), addr.untag(dst)
    ipv6.emit(buf, 0, src=s, dst=d, next_header=ipv6.PROTO_ICMPV6, payload_len=length)
    buf[ipv6.HEADER_LEN :] = bytes((type_, code, 0, 0)) + word.to_bytes(4, "big") + body
    csum = checksum.internet_checksum(
        memoryview(buf)[ipv6.HEADER_LEN :],
        ipv6.pseudo_header_sum(s, d, ipv6.PROTO_ICMPV6, length),
    )
    buf[ipv6.HEADER_LEN + 2 : ipv6.HEADER_LEN + 4] = csum.to_bytes(2, "big")
    return buf


def test_output_check_fires_when_the_flow_label_changes() -> None:
    checker = Checker((HOST6,))
    assert (
        checker.output(_tcp6(HOST6, PEER6, 80, 40000, 5000, 1001, tcp.SYN | tcp.ACK, 0x12345))[1]
        is None
    )
    assert checker.output(_tcp6(HOST6, PEER6, 80, 40000, 5001, 1001, tcp.ACK, 0x12345))[1] is None
    _, bad = checker.output(_tcp6(HOST6, PEER6, 80, 40000, 5001, 1001, tcp.ACK, 0x54321))
    assert bad is not None and bad.startswith("flow_label:")


def test_output_check_fires_on_a_bad_icmpv6_checksum() -> None:
    quote = _tcp6(PEER6, HOST6, 40000, 80, 1, 0, tcp.SYN)
    err = _icmp6(HOST6, PEER6, icmpv6.PARAM_PROBLEM, 0, 6, bytes(quote))
    assert Checker((HOST6,)).output(err)[1] is None
    err[-1] ^= 1
    _, bad = Checker((HOST6,)).output(err)
    assert bad is not None and "icmpv6_bad_checksum" in bad


def test_output_check_fires_on_an_icmpv6_error_about_an_icmpv6_error() -> None:
    # RFC 4443 2.4 (e.1): never an error about an error
    inner = _icmp6(PEER6, HOST6, icmpv6.DEST_UNREACH, 4, 0, bytes(48))
    _, bad = Checker((HOST6,)).output(_icmp6(HOST6, PEER6, icmpv6.PARAM_PROBLEM, 1, 6, inner))
    assert bad is not None and bad.startswith("icmp_error:") and "about ICMPv6 type 1" in bad
    echo = _icmp6(PEER6, HOST6, icmpv6.ECHO_REQUEST, 0, 0, bytes(8))  # not an error: fine
    assert (
        Checker((HOST6,)).output(_icmp6(HOST6, PEER6, icmpv6.PARAM_PROBLEM, 1, 6, echo))[1] is None
    )


def test_output_check_fires_on_an_icmpv6_error_to_a_multicast_address() -> None:
    group = addr.from_text("ff02::1")
    quote = _tcp6(group, HOST6, 40000, 80, 1, 0, tcp.SYN)
    _, bad = Checker((HOST6,)).output(_icmp6(HOST6, group, icmpv6.PARAM_PROBLEM, 2, 40, quote))
    assert bad is not None and bad.startswith("icmp_error:") and "ff02::1" in bad


def test_output_check_fires_on_a_parameter_problem_pointing_past_the_packet() -> None:
    quote = _tcp6(PEER6, HOST6, 40000, 80, 1, 0, tcp.SYN)  # 60 octets
    assert (
        Checker((HOST6,)).output(_icmp6(HOST6, PEER6, icmpv6.PARAM_PROBLEM, 0, 59, quote))[1]
        is None
    )
    _, bad = Checker((HOST6,)).output(_icmp6(HOST6, PEER6, icmpv6.PARAM_PROBLEM, 0, 60, quote))
    assert bad is not None and "pointer 60 >= 60" in bad


def test_output_check_fires_on_a_syn_offering_more_than_an_ipv6_link_carries() -> None:
    host = Host([HOST, HOST6], mtu=1500, secret=b"k" * 16)
    checker = Checker((HOST, HOST6))
    synack = tcp.SYN | tcp.ACK
    ok = _tcp6(HOST6, PEER6, 80, 40000, 5000, 1001, synack, options=tcp.TcpOptions(mss=1440))
    assert checker.output(ok, host)[1] is None
    # IPv4's MSS on an IPv6 link
    big = _tcp6(HOST6, PEER6, 80, 40001, 5000, 1001, synack, options=tcp.TcpOptions(mss=1460))
    _, bad = checker.output(big, host)
    assert bad is not None and bad.startswith("mss:")


def test_output_check_fires_beyond_the_icmp_rate_limit() -> None:
    checker = Checker((HOST6,), (), HostConfig(icmp_error_rate=1.0, icmp_error_burst=2), 10.0)
    quote = bytes(_tcp6(PEER6, HOST6, 40000, 80, 1, 0, tcp.SYN))
    err = _icmp6(HOST6, PEER6, icmpv6.PARAM_PROBLEM, 0, 6, quote)
    assert [checker.output(err, None, 10.0)[1] for _ in range(2)] == [None, None]
    _, bad = checker.output(err, None, 10.5)  # half a token back: not enough
    assert bad is not None and bad.startswith("icmp_rate:")
    assert checker.output(err, None, 12.0)[1] is None  # the bucket refilled


def _established6() -> tuple[Connection, Host]:
    host = Host([HOST, HOST6], mtu=1500, secret=b"k" * 16)
    lst = host.listen(80)
    host.receive_packet(_tcp6(PEER6, HOST6, 40000, 80, 1000, 0, tcp.SYN), 0.0)
    out = host.packets_to_send(0.0)
    assert len(out) == 1 and isinstance(out[0], bytearray)
    synack = tcp.parse_ipv6(out[0])
    assert synack is not None
    host.receive_packet(_tcp6(PEER6, HOST6, 40000, 80, 1001, synack.seq + 1, tcp.ACK), 0.01)
    conn = lst.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    return conn, host


def test_connection_check_fires_on_an_ipv6_path_mtu_below_1280() -> None:
    conn, host = _established6()
    # a Packet Too Big of 600 quoting the connection: taken, and clamped to 1280 (RFC 8201 4)
    conn.send(b"x" * 3000)
    sent = host.packets_to_send(0.02)
    assert sent and isinstance(sent[0], bytearray)
    quote = bytes(sent[0][: ipv6.HEADER_LEN + 28])
    host.receive_packet(_icmp6(addr.from_text("fd00:9::fffe"), HOST6, icmpv6.PACKET_TOO_BIG, 0,
                               600, quote), 0.03)  # fmt: skip
    assert host.stats.icmp6_packet_too_big_clamped == 1
    assert check_connection(conn) == []
    conn.path_mtu = 1000 - 20  # an IPv6 path MTU of 1000
    assert [m.split(":")[0] for m in check_connection(conn)] == ["pmtu"]
