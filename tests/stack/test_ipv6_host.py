"""The host's network layer over IPv6 (RFC 8200, RFC 4443): input checks, ICMPv6 echo and
errors, TCP with the IPv6 pseudo-header, flow labels, MSS, offload and software GSO; packets
built and checked with scapy as an independent oracle."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP, defragment, fragment
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_Redirect,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrRouting,
    defragment6,
    fragment6,
)
from scapy.packet import Packet, Raw

from ustack.stack.config import HostConfig
from ustack.stack.host import TSO_MAX, TSO_MAX6, Host, OutPacket
from ustack.stack.isn import fixed_isn
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import OutSegment
from ustack.tcp.state import State
from ustack.wire import addr, ipv4, ipv6, tcp, virtio
from ustack.wire.tcp import NO_OPTIONS, TcpOptions

HOST6 = "fd00:7::2"
PEER6 = "fd00:7::1"
LOCAL = addr.from_text(HOST6)
REMOTE = addr.from_text(PEER6)
HOST4 = ipv4.addr_to_int("10.7.0.2")
ISN = 1000


def make_host(**kw: object) -> Host:
    kw.setdefault("isn", fixed_isn(ISN))
    kw.setdefault("secret", b"s" * 16)
    return Host([HOST4, LOCAL], **kw)  # type: ignore[arg-type]


def out(h: Host) -> list[bytes]:
    return [bytes(p) for p in h.packets_to_send(0.0)]  # type: ignore[arg-type]


def syn(sport: int = 40000, dport: int = 80, seq: int = 7) -> bytes:
    return raw(
        IPv6(src=PEER6, dst=HOST6)
        / TCP(sport=sport, dport=dport, seq=seq, flags="S", options=[("MSS", 1440)])
    )


def check_tcp_checksum(data: bytes) -> Packet:
    """scapy's own checksum over the IPv6 pseudo-header must equal ours."""
    pkt = IPv6(data)
    ours = pkt[TCP].chksum
    del pkt[TCP].chksum
    assert IPv6(raw(pkt))[TCP].chksum == ours
    return IPv6(data)


# -- addresses -------------------------------------------------------------------------------


def test_addresses_of_both_families_and_text() -> None:
    h = Host(["10.7.0.2", HOST6], isn=fixed_isn(1))
    assert h.addresses == (HOST4, LOCAL)
    assert h.ip.addresses4 == (HOST4,) and h.ip.addresses6 == (LOCAL,)
    assert addr.to_text(LOCAL) == HOST6 and addr.to_text(HOST4) == "10.7.0.2"
    assert LOCAL >> 128 == 1 and addr.untag(LOCAL) == ipv6.addr_to_int(HOST6)


@pytest.mark.parametrize(
    "bad",
    [
        ipv6.addr_to_int(HOST6),  # untagged: neither family
        addr.from_text("::"),
        addr.from_text("::1"),
        addr.from_text("ff02::1"),
    ],
)
def test_unusable_addresses_are_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        Host([bad], isn=fixed_isn(1))


def test_ipv6_needs_the_minimum_mtu_but_an_ipv4_host_does_not() -> None:
    with pytest.raises(ValueError, match="1280"):
        Host([LOCAL], isn=fixed_isn(1), mtu=1279)
    assert Host([HOST4], isn=fixed_isn(1), mtu=576).config6.mss == 536


def test_mss_and_super_segment_limit_per_family() -> None:
    h = make_host(mtu=1500)
    assert h.config.mss == 1460 and h.config6.mss == 1440  # MTU - 40 and MTU - 60
    assert h.config.tso_max == TSO_MAX == 65535 - 20 - 60
    assert h.config6.tso_max == TSO_MAX6 == 65535 - 60


def test_connect_picks_a_source_of_the_remote_family() -> None:
    h = make_host()
    c6 = h.connect(REMOTE, 80, 0.0)
    c4 = h.connect(ipv4.addr_to_int("10.7.0.1"), 80, 0.0)
    assert c6.local_addr == LOCAL and c4.local_addr == HOST4
    only4 = Host([HOST4], isn=fixed_isn(1))
    with pytest.raises(OSError):
        only4.connect(REMOTE, 80, 0.0)
    with pytest.raises(OSError):
        h.connect(REMOTE, 80, 0.0, local_addr=HOST4)
    with pytest.raises(ValueError):
        h.connect(addr.from_text("ff02::1"), 80, 0.0)


# -- TCP -------------------------------------------------------------------------------------


def test_syn_to_a_listener_is_answered_over_ipv6() -> None:
    h = make_host(host_config=HostConfig(ttl=51))
    h.listen(80)
    h.receive_packet(syn(), 0.0)
    (synack,) = out(h)
    p = check_tcp_checksum(synack)
    assert p.src == HOST6 and p.dst == PEER6 and p.hlim == 51 and p.nh == 6
    assert p.plen == len(synack) - 40
    assert p[TCP].flags == "SA" and p[TCP].ack == 8 and p[TCP].seq == ISN
    assert dict(p[TCP].options)["MSS"] == 1440  # RFC 9293 3.7.1 over IPv6: MTU - 60
    # RFC 6437: a non-zero label, the same on every packet of the connection
    assert p.fl != 0
    h.receive_packet(
        raw(IPv6(src=PEER6, dst=HOST6) / TCP(sport=40000, dport=80, seq=8, ack=ISN + 1, flags="A")),
        0.0,
    )
    conn = h.lookup(REMOTE, 40000, LOCAL, 80)
    assert conn is not None and conn.state is State.ESTABLISHED
    conn.send(b"hello")  # type: ignore[union-attr]
    (data,) = out(h)
    d = check_tcp_checksum(data)
    assert bytes(d[TCP].payload) == b"hello" and d.fl == p.fl
    assert h.stats.ip6_rx == 2 and h.stats.tcp_rx == 2


def test_flow_labels_differ_per_connection_and_per_secret() -> None:
    labels = []
    for secret, sport in ((b"a" * 16, 40000), (b"a" * 16, 40001), (b"b" * 16, 40000)):
        h = make_host(secret=secret)
        h.listen(80)
        h.receive_packet(syn(sport=sport), 0.0)
        labels.append(IPv6(out(h)[0]).fl)
    assert len(set(labels)) == 3


def test_bad_tcp_checksum_over_ipv6_is_counted() -> None:
    h = make_host()
    h.listen(80)
    pkt = bytearray(syn())
    pkt[-1] ^= 0xFF
    h.receive_packet(pkt, 0.0)
    assert out(h) == [] and h.stats.tcp_bad_checksum == 1


def test_closed_port_gets_a_rst_over_ipv6() -> None:
    h = make_host()
    h.receive_packet(syn(dport=81), 0.0)
    (rst,) = out(h)
    p = check_tcp_checksum(rst)
    assert p[TCP].flags == "RA" and p[TCP].ack == 8 and p.dst == PEER6
    assert h.stats.rst_sent_closed_port == 1


def test_ipv4_and_ipv6_segments_with_the_same_ports_reach_different_connections() -> None:
    h = make_host()
    h.listen(80)
    h.receive_packet(syn(), 0.0)
    h.receive_packet(
        raw(IPv6(src="::ffff:10.7.0.1", dst=HOST6) / TCP(sport=40000, dport=80, seq=7, flags="S")),
        0.0,
    )
    from tests.stack.helpers import tcp_packet

    h.receive_packet(tcp_packet(40000, 80, 7, src=ipv4.addr_to_int("10.7.0.1"), dst=HOST4), 0.0)
    keys = sorted((c.remote_addr, c.local_addr) for c in h.connections)
    assert keys == sorted(
        [
            (ipv4.addr_to_int("10.7.0.1"), HOST4),
            (REMOTE, LOCAL),
            (addr.from_text("::ffff:10.7.0.1"), LOCAL),
        ]
    )
    versions = [p[0] >> 4 for p in out(h)]
    assert sorted(versions) == [4, 6, 6]


# -- input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "counter"),
    [
        (PEER6, "fd00:7::9", "ip6_not_for_us"),
        ("ff02::1", HOST6, "ip6_bad_source"),
        ("::", HOST6, "ip6_bad_source"),
        ("::1", HOST6, "ip6_bad_source"),
    ],
)
def test_packets_we_cannot_take_are_counted(src: str, dst: str, counter: str) -> None:
    h = make_host()
    h.listen(80)
    h.receive_packet(raw(IPv6(src=src, dst=dst) / TCP(sport=1, dport=80, flags="S")), 0.0)
    assert out(h) == [] and getattr(h.stats, counter) == 1 and h.stats.tcp_rx == 0


def test_truncated_ipv6_is_a_counted_drop() -> None:
    h = make_host()
    h.receive_packet(syn()[:39], 0.0)
    h.receive_packet(syn()[:50], 0.0)  # shorter than its Payload Length
    assert h.stats.ip6_truncated == 2 and h.stats.host_internal_error == 0


# -- ICMPv6 ----------------------------------------------------------------------------------


def test_echo_request_is_answered() -> None:
    h = make_host()
    req = IPv6(src=PEER6, dst=HOST6) / ICMPv6EchoRequest(id=0x1234, seq=7, data=b"ping" * 10)
    h.receive_packet(raw(req), 0.0)
    (reply,) = out(h)
    p = IPv6(reply)
    assert p.src == HOST6 and p.dst == PEER6
    echo = p[ICMPv6EchoReply]
    assert (echo.id, echo.seq, bytes(echo.data)) == (0x1234, 7, b"ping" * 10)
    ours = echo.cksum
    del p[ICMPv6EchoReply].cksum
    assert IPv6(raw(p))[ICMPv6EchoReply].cksum == ours
    assert h.stats.icmp6_rx == 1 and h.stats.icmp6_echo_replies == 1


def test_neighbour_discovery_is_dropped_and_counted() -> None:
    h = make_host()
    h.receive_packet(raw(IPv6(src=PEER6, dst=HOST6, hlim=255) / ICMPv6ND_NS(tgt=HOST6)), 0.0)
    assert out(h) == [] and h.stats.icmp6_nd_ignored == 1


def test_unknown_next_header_gets_parameter_problem_code_1() -> None:
    h = make_host(host_config=HostConfig(icmp_error_burst=1, icmp_error_rate=1.0))
    bad = raw(IPv6(src=PEER6, dst=HOST6) / UDP(sport=1, dport=2) / b"x")
    h.receive_packet(bad, 0.0)
    (answer,) = out(h)
    p = IPv6(answer)
    assert p.src == HOST6 and p.dst == PEER6
    pp = p[ICMPv6ParamProblem]
    assert pp.code == 1 and pp.ptr == 6  # the fixed header's Next Header field
    assert raw(pp.payload) == bad
    ours = pp.cksum
    del p[ICMPv6ParamProblem].cksum
    assert IPv6(raw(p))[ICMPv6ParamProblem].cksum == ours
    assert h.stats.ip6_unknown_next_header == 1 and h.stats.icmp6_param_problem_sent == 1
    # the same token bucket as ICMP for IPv4
    h.receive_packet(bad, 0.0)
    assert out(h) == [] and h.stats.icmp_rate_limited == 1


def test_routing_type_0_gets_parameter_problem_code_0() -> None:
    h = make_host()
    pkt = raw(
        IPv6(src=PEER6, dst=HOST6)
        / IPv6ExtHdrRouting(type=0, segleft=1, addresses=["fd00:7::3"])
        / TCP(sport=1, dport=80)
    )
    h.receive_packet(pkt, 0.0)
    (answer,) = out(h)
    pp = IPv6(answer)[ICMPv6ParamProblem]
    assert pp.code == 0 and pp.ptr == 42  # the Routing Type octet
    assert h.stats.ip6_routing_dropped == 1


def test_fragmented_syn_is_reassembled_and_answered() -> None:
    h = make_host()
    h.listen(80)
    whole = (
        IPv6(src=PEER6, dst=HOST6)
        / IPv6ExtHdrFragment(id=9)
        / TCP(sport=40000, dport=80, seq=7, flags="S")
        / Raw(b"x" * 64)
    )
    frags = fragment6(whole, 80)  # type: ignore[no-untyped-call]
    assert len(frags) > 1
    for f in reversed(frags):
        h.receive_packet(raw(f), 0.0)
    (synack,) = out(h)
    assert IPv6(synack)[TCP].flags == "SA" and h.stats.ip6_reasm_ok == 1


def test_reassembly_timeout_sends_time_exceeded() -> None:
    h = make_host()
    whole = (
        IPv6(src=PEER6, dst=HOST6)
        / IPv6ExtHdrFragment(id=9)
        / TCP(sport=1, dport=80)
        / Raw(b"x" * 64)
    )
    first = fragment6(whole, 80)[0]  # type: ignore[no-untyped-call]
    h.receive_packet(raw(first), 0.0)
    deadline = h.next_deadline()
    assert deadline == 60.0  # RFC 8200 4.5
    h.on_deadline(deadline)
    (answer,) = [bytes(p) for p in h.packets_to_send(deadline)]  # type: ignore[arg-type]
    te = IPv6(answer)[ICMPv6TimeExceeded]
    assert te.code == 1 and IPv6(answer).dst == PEER6
    assert h.stats.icmp6_time_exceeded_sent == 1


@pytest.mark.parametrize(
    ("inner", "answered"),
    [
        (ICMPv6DestUnreach(code=4) / Raw(b"q" * 48), False),  # RFC 4443 2.4 (e.1)
        (ICMPv6ParamProblem(code=1, ptr=6) / Raw(b"q" * 48), False),
        (ICMPv6ND_Redirect(tgt="fd00:7::9", dst="fd00:7::8"), False),  # 2.4 (e.2)
        (ICMPv6EchoRequest(id=1, seq=1), True),  # informational: an error may be sent
    ],
)
def test_no_icmpv6_error_about_an_icmpv6_error(inner: Packet, answered: bool) -> None:
    """A Destination Options header with an option whose type says "discard and send a
    Parameter Problem" (RFC 8200 4.2, action 10) in front of an ICMPv6 message: the problem is
    answered unless the message is itself an error or a Redirect (RFC 4443 2.4 (e))."""
    h = make_host()
    option = HBHOptUnknown(otype=0x80 | 0x1E, optdata=b"\0\0\0\0")
    pkt = raw(IPv6(src=PEER6, dst=HOST6) / IPv6ExtHdrDestOpt(options=[option]) / inner)
    h.receive_packet(pkt, 0.0)
    answers = out(h)
    assert h.stats.ip6_rx == 1
    if answered:
        (answer,) = answers
        assert IPv6(answer)[ICMPv6ParamProblem].code == 2  # unrecognized option
        assert h.stats.icmp_error_about_error == 0
    else:
        assert answers == [] and h.stats.icmp_error_about_error == 1
        assert h.stats.icmp6_param_problem_sent == 0


def test_no_time_exceeded_about_a_fragmented_icmpv6_error() -> None:
    h = make_host()
    whole = (
        IPv6(src=PEER6, dst=HOST6)
        / IPv6ExtHdrFragment(id=9)
        / ICMPv6PacketTooBig(mtu=1280)
        / Raw(b"x" * 64)
    )
    first = fragment6(whole, 80)[0]  # type: ignore[no-untyped-call]
    h.receive_packet(raw(first), 0.0)
    h.on_deadline(60.0)
    assert h.packets_to_send(60.0) == []
    assert h.stats.icmp_error_about_error == 1 and h.stats.icmp6_time_exceeded_sent == 0


@pytest.mark.parametrize(("icmp_type", "answered"), [(3, False), (11, False), (8, True)])
def test_no_icmp_time_exceeded_about_a_fragmented_icmp_error(
    icmp_type: int, answered: bool
) -> None:
    """RFC 1122 3.2.2: no ICMP error about an ICMP error, for IPv4 too (the only error the host
    sends about a packet that may be ICMP is reassembly time exceeded)."""
    h = make_host()
    first = raw(
        IP(src="10.7.0.1", dst="10.7.0.2", id=5, flags="MF", proto=1)
        / ICMP(type=icmp_type)
        / Raw(b"y" * 32)
    )
    h.receive_packet(first, 0.0)
    deadline = h.next_deadline()
    assert deadline is not None
    h.on_deadline(deadline)
    sent = h.packets_to_send(deadline)
    assert len(sent) == (1 if answered else 0)
    assert h.stats.icmp_time_exceeded_sent == (1 if answered else 0)
    assert h.stats.icmp_error_about_error == (0 if answered else 1)


@pytest.mark.parametrize(
    "packet",
    [
        IPv6(src=HOST6, dst=HOST6) / TCP(sport=1, dport=80, flags="S"),  # the fast path
        IPv6(src=HOST6, dst=HOST6) / ICMPv6EchoRequest(),  # the general path
        IP(src="10.7.0.2", dst="10.7.0.2") / TCP(sport=1, dport=80, flags="S"),
        IP(src="10.7.0.2", dst="10.7.0.2") / ICMP(),
    ],
    ids=["tcp6", "echo6", "tcp4", "echo4"],
)
def test_a_packet_from_our_own_address_is_a_counted_drop(packet: Packet) -> None:
    """Nothing that comes in from the link was sent by us: a packet claiming one of our own
    addresses as its source is dropped unanswered (no SYN,ACK or echo reply to ourselves)."""
    h = make_host()
    h.listen(80)
    h.receive_packet(raw(packet), 0.0)
    assert out(h) == []
    v6 = IPv6 in packet
    assert h.stats.ip6_bad_source == (1 if v6 else 0)
    assert h.stats.ip_bad_source == (0 if v6 else 1)
    assert h.stats.listen_syn == 0


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
@pytest.mark.parametrize("v6", [True, False], ids=["ipv6", "ipv4"])
def test_an_echo_request_that_came_in_fragments_is_answered_in_fragments(
    v6: bool, offload: bool
) -> None:
    """``ping -s 2000`` over a 1280-octet link: the request arrives in fragments, and so does
    the reply (RFC 791 3.2, RFC 8200 4.5): every piece fits the MTU, and scapy's reassembly of
    them gives the whole reply with the request's identifier, sequence and data."""
    h = make_host(mtu=1280, offload=offload)
    data = bytes(range(256)) * 8
    if v6:
        whole = (
            IPv6(src=PEER6, dst=HOST6)
            / IPv6ExtHdrFragment(id=3)
            / ICMPv6EchoRequest(id=7, seq=9, data=data)
        )
        pieces = fragment6(whole, 1000)  # type: ignore[no-untyped-call]
    else:
        whole = IP(src="10.7.0.1", dst="10.7.0.2", id=3) / ICMP(id=7, seq=9) / data
        pieces = fragment(whole, 1000)  # type: ignore[no-untyped-call]
    assert len(pieces) > 1
    for piece in pieces:
        frame = raw(piece)
        h.receive_packet(bytes(virtio.HEADER_LEN) + frame if offload else frame, 0.0)
    sent = [p[virtio.HEADER_LEN :] if offload else p for p in out(h)]
    assert len(sent) == 2 and all(len(p) <= 1280 for p in sent)
    if v6:
        assert h.stats.ip6_frag_created == 2 and h.stats.icmp6_echo_replies == 1
        frags = [IPv6(p) for p in sent]
        assert {f[IPv6ExtHdrFragment].id for f in frags} == {frags[0][IPv6ExtHdrFragment].id}
        reply = defragment6(frags)  # type: ignore[no-untyped-call]
        assert reply.src == HOST6 and reply.dst == PEER6
        echo = ICMPv6EchoReply(raw(reply[ICMPv6EchoReply]))
        ours = echo.cksum
        del echo.cksum
        rebuilt = IPv6(src=HOST6, dst=PEER6) / echo
        assert IPv6(raw(rebuilt))[ICMPv6EchoReply].cksum == ours
    else:
        assert h.stats.ip_frag_created == 2 and h.stats.icmp_echo_replies == 1
        frags = [IP(p) for p in sent]
        assert all(not f.flags.DF for f in frags) and frags[0].flags.MF and not frags[1].flags.MF
        (reply,) = defragment(frags)  # type: ignore[no-untyped-call]
        echo = reply[ICMP]
        assert (reply.src, reply.dst) == ("10.7.0.2", "10.7.0.1")
    assert (echo.id, echo.seq, bytes(echo.payload) if not v6 else echo.data) == (7, 9, data)


def _sent_syn(h: Host) -> tuple[bytes, int]:
    conn = h.connect(REMOTE, 80, 0.0, local_port=40000)
    (s,) = out(h)
    return s, conn.iss


def test_port_unreachable_refuses_a_connection_in_syn_sent() -> None:
    h = make_host()
    s, _ = _sent_syn(h)
    err = IPv6(src=PEER6, dst=HOST6) / ICMPv6DestUnreach(code=4) / IPv6(s)
    h.receive_packet(raw(err), 0.0)
    assert h.stats.icmp6_error_delivered == 1 and h.stats.tcp_icmp_refused == 1
    assert h.lookup(REMOTE, 80, LOCAL, 40000) is None


def test_icmpv6_error_quoting_someone_else_is_dropped() -> None:
    h = make_host()
    s, _ = _sent_syn(h)
    quoted = IPv6(s)
    quoted.src = "fd00:7::77"
    err = IPv6(src=PEER6, dst=HOST6) / ICMPv6DestUnreach(code=4) / quoted
    h.receive_packet(raw(err), 0.0)
    assert h.stats.icmp6_quote_not_ours == 1 and h.stats.tcp_icmp_refused == 0


def _established(h: Host) -> object:
    conn = h.connect(REMOTE, 80, 0.0, local_port=40000)
    (s,) = out(h)
    iss = IPv6(s)[TCP].seq
    h.receive_packet(
        raw(
            IPv6(src=PEER6, dst=HOST6)
            / TCP(
                sport=80,
                dport=40000,
                seq=500,
                ack=iss + 1,
                flags="SA",
                window=65535,
                options=[("MSS", 1440)],
            )
        ),
        0.0,
    )
    out(h)
    assert conn.state is State.ESTABLISHED
    return conn


@pytest.mark.parametrize(("mtu", "want_mss"), [(1400, 1340), (1000, 1220), (1280, 1220)])
def test_packet_too_big_lowers_the_mss_never_below_1280(mtu: int, want_mss: int) -> None:
    h = make_host(config=TcpConfig(timestamps=False))
    conn = _established(h)
    conn.send(b"z" * 1440)  # type: ignore[attr-defined]
    (big,) = out(h)
    assert len(big) == 1500
    ptb = IPv6(src="fd00:7::fe", dst=HOST6) / ICMPv6PacketTooBig(mtu=mtu) / IPv6(big)
    h.receive_packet(raw(ptb), 0.0)
    assert conn.snd.snd_mss == want_mss  # type: ignore[attr-defined]
    assert h.stats.icmp6_packet_too_big == 1 and h.stats.tcp_pmtu_lowered == 1
    assert h.stats.icmp6_packet_too_big_clamped == (1 if mtu < 1280 else 0)
    again = out(h)  # sent again at once, cut to the new MSS, every packet within the MTU
    assert again and all(len(p) <= max(mtu, 1280) for p in again)
    assert sum(len(IPv6(p)[TCP].payload) for p in again) == 1440


# -- output: offload and software GSO --------------------------------------------------------


def test_offloaded_super_segment_is_gso_tcpv6() -> None:
    h = make_host(offload=True)
    key = (REMOTE, 80, LOCAL, 40000)
    s = OutSegment(1, 2, tcp.ACK | tcp.PSH, 100, NO_OPTIONS, b"q" * 5000)
    buf = h.ip.build_segment(key, s, 1440)
    assert isinstance(buf, bytearray)
    vh = virtio.parse(buf)
    assert vh.gso_type == virtio.GSO_TCPV6 and vh.gso_size == 1440
    assert vh.csum_start == 40 and vh.hdr_len == 60 and vh.flags & virtio.F_NEEDS_CSUM
    p = IPv6(bytes(buf[virtio.HEADER_LEN :]))
    assert p.plen == 20 + 5000 and len(p[TCP].payload) == 5000
    small = h.ip.build_segment(key, OutSegment(1, 2, tcp.ACK, 100, NO_OPTIONS, b""))
    assert isinstance(small, bytearray)
    vs = virtio.parse(small)
    assert vs.gso_type == virtio.GSO_NONE and vs.csum_start == 40


def test_software_gso_cuts_ipv6_super_segments() -> None:
    h = make_host()
    key = (REMOTE, 80, LOCAL, 40000)
    opts = TcpOptions(timestamps=(5, 6))
    s = OutSegment(0xFFFF_FF00, 2, tcp.ACK | tcp.PSH | tcp.FIN, 100, opts, bytes(range(256)) * 20)
    pieces: list[OutPacket] = []
    h.ip.cut_segment(key, s, 1428, pieces)
    assert len(pieces) == 4
    data = b""
    for i, p in enumerate(pieces):
        assert isinstance(p, bytearray)
        pk = check_tcp_checksum(bytes(p))
        last = i == len(pieces) - 1
        assert pk[TCP].seq == (0xFFFF_FF00 + len(data)) & 0xFFFF_FFFF
        assert ("P" in str(pk[TCP].flags)) == last and ("F" in str(pk[TCP].flags)) == last
        assert len(p) <= 1500
        data += bytes(pk[TCP].payload)
    assert data == bytes(range(256)) * 20
    assert h.stats.tcp_segments_sent == 3
