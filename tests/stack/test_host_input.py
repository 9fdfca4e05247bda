"""Host input path: closed-port replies, ICMP, and every malformed-packet drop counted.

What is TCP's (closed-port RSTs, TCP header drops, containment of an internal error) is checked
over IPv4 and IPv6; ICMP and the IPv4 header checks are IPv4's own (tests/stack/test_ipv6_host.py
has IPv6's)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from tests.stack.helpers import (
    HOST,
    IP_HEADER_LEN,
    PEER,
    addresses,
    both_families,
    make_host,
    tcp_packet,
)
from ustack.stack.config import HostConfig
from ustack.wire import addr, icmp, ipv4, tcp

A_HOST = ipv4.int_to_addr(HOST)
A_PEER = ipv4.int_to_addr(PEER)
BASE = {"ip_rx": 1}


def base(family: int) -> dict[str, int]:
    """The counters every packet of the family moves on its way in."""
    return BASE if family == 4 else {**BASE, "ip6_rx": 1}


def only_packet(host: object, family: int = 4) -> Packet:
    out = host.packets_to_send(0.0)  # type: ignore[attr-defined]
    assert len(out) == 1
    if family == 6:
        # scapy recomputes the checksum over the RFC 8200 8.1 pseudo-header on its own.
        pkt6 = IPv6(bytes(out[0]))
        ours = pkt6[TCP].chksum
        del pkt6[TCP].chksum
        assert IPv6(raw(pkt6))[TCP].chksum == ours
        pkt6 = IPv6(bytes(out[0]))
        assert (addr.from_text(pkt6.src), addr.from_text(pkt6.dst)) == addresses(6)
        return pkt6
    pkt = IP(bytes(out[0]))
    # scapy recomputes both checksums independently of ustack's checksum module.
    again = IP(bytes(out[0]))
    del again.chksum
    if TCP in again:
        del again[TCP].chksum
    if ICMP in again:
        del again[ICMP].chksum
    assert raw(again) == bytes(out[0])
    assert pkt.src == A_HOST and pkt.dst == A_PEER and pkt.flags == "DF"
    return pkt


# -- RFC 9293 3.10.7.1: segments to a port with no connection and no listener ----------------


@both_families
@pytest.mark.parametrize(
    ("flags", "payload", "seq", "expected_ack"),
    [
        (tcp.SYN, b"", 1000, 1001),
        (tcp.SYN, b"hello", 1000, 1006),  # SYN and data: SEG.LEN = 5 + 1
        (tcp.FIN, b"abc", 7, 11),  # FIN without ACK counts one too
        (0, b"abcd", 7, 11),  # no flags at all: just the data
        (tcp.SYN, b"", 0xFFFFFFFF, 0),  # SEG.SEQ + SEG.LEN wraps mod 2**32
    ],
)
def test_closed_port_no_ack_gets_rst_ack_seq_zero(
    flags: int, payload: bytes, seq: int, expected_ack: int, family: int
) -> None:
    h = make_host(family)
    h.receive_packet(tcp_packet(40000, 81, seq, flags=flags, payload=payload, family=family), 0.0)
    reply = only_packet(h, family)
    t = reply[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, str(t.flags), t.window) == (
        81,
        40000,
        0,
        expected_ack,
        "RA",
        0,
    )
    assert len(t.payload) == 0
    assert h.stats.nonzero() == {
        **base(family),
        "tcp_rx": 1,
        "rst_sent_closed_port": 1,
        "ip_tx": 1,
    }


@both_families
@pytest.mark.parametrize(
    "flags", [tcp.ACK, tcp.ACK | tcp.PSH, tcp.ACK | tcp.FIN, tcp.ACK | tcp.SYN]
)
def test_closed_port_ack_bearing_gets_rst_with_seq_seg_ack(flags: int, family: int) -> None:
    h = make_host(family)
    h.receive_packet(
        tcp_packet(40000, 81, 7, 123456789, flags, payload=b"data", family=family), 0.0
    )
    t = only_packet(h, family)[TCP]
    assert (t.seq, str(t.flags), t.ack, t.sport, t.dport) == (123456789, "R", 0, 81, 40000)
    assert h.stats.rst_sent_closed_port == 1


@both_families
@pytest.mark.parametrize("flags", [tcp.RST, tcp.RST | tcp.ACK])
def test_rst_is_never_answered_with_rst(flags: int, family: int) -> None:
    h = make_host(family)
    h.receive_packet(tcp_packet(40000, 81, 7, 9, flags, family=family), 0.0)
    assert h.packets_to_send(0.0) == []
    assert h.stats.nonzero() == {**base(family), "tcp_rx": 1, "rst_closed_port_ignored": 1}


# -- ICMP ------------------------------------------------------------------------------------


def echo_request(
    ident: int, sequence: int, payload: bytes, *, type_: int = icmp.ECHO_REQUEST
) -> bytearray:
    length = icmp.HEADER_LEN + len(payload)
    buf = bytearray(ipv4.HEADER_LEN + length)
    ipv4.emit(buf, 0, src=PEER, dst=HOST, proto=ipv4.PROTO_ICMP, payload_len=length)
    icmp.emit_echo(
        buf, ipv4.HEADER_LEN, type=type_, ident=ident, sequence=sequence, payload=payload
    )
    return buf


def test_icmp_echo_reply_mirrors_id_sequence_and_payload() -> None:
    h = make_host()
    payload = bytes(range(256)) * 3
    h.receive_packet(echo_request(0xBEEF, 4242, payload), 0.0)
    reply = only_packet(h)
    i = reply[ICMP]
    assert (i.type, i.code, i.id, i.seq, bytes(i.payload)) == (0, 0, 0xBEEF, 4242, payload)
    assert h.stats.nonzero() == {**BASE, "icmp_rx": 1, "icmp_echo_replies": 1, "ip_tx": 1}


def test_scapy_built_ping_is_answered() -> None:
    h = make_host()
    h.receive_packet(raw(IP(src=A_PEER, dst=A_HOST) / ICMP(id=7, seq=1) / b"ping"), 0.0)
    i = only_packet(h)[ICMP]
    assert (i.type, i.id, i.seq, bytes(i.payload)) == (0, 7, 1, b"ping")


def test_bad_icmp_counted_and_not_answered() -> None:
    h = make_host()
    bad = echo_request(1, 1, b"abc")
    bad[-1] ^= 0xFF
    h.receive_packet(bad, 0.0)
    h.receive_packet(echo_request(1, 1, b"abc", type_=icmp.ECHO_REPLY), 0.0)
    short = bytearray(raw(IP(src=A_PEER, dst=A_HOST, proto=1) / b"\x08\x00"))
    h.receive_packet(short, 0.0)
    assert h.packets_to_send(0.0) == []
    assert h.stats.nonzero() == {
        "ip_rx": 3,
        "icmp_rx": 3,
        "icmp_bad_checksum": 1,
        "icmp_ignored": 1,
        "icmp_truncated": 1,
    }


# -- IPv4 and TCP drops ----------------------------------------------------------------------


def _mutate(buf: bytearray, index: int, value: int) -> bytearray:
    buf[index] = value
    return buf


def _fix_ip_checksum(buf: bytearray) -> bytearray:
    buf[10:12] = b"\0\0"
    from ustack.wire.checksum import internet_checksum

    csum = internet_checksum(buf[: (buf[0] & 15) * 4])
    buf[10:12] = csum.to_bytes(2, "big")
    return buf


BAD_PACKETS = {
    "ip_bad_checksum": lambda: _mutate(tcp_packet(40000, 81, 1), 8, 3),  # TTL changed
    "ip_truncated": lambda: tcp_packet(40000, 81, 1)[:30],
    "ip_truncated_header": lambda: tcp_packet(40000, 81, 1)[:12],
    # version 5: neither IPv4 nor IPv6 (a 6 there is an IPv6 packet now)
    "ip_bad_version": lambda: _fix_ip_checksum(_mutate(tcp_packet(40000, 81, 1), 0, 0x55)),
    "ip_bad_ihl": lambda: _fix_ip_checksum(_mutate(tcp_packet(40000, 81, 1), 0, 0x44)),
    "ip_bad_total_length": lambda: _fix_ip_checksum(_mutate(tcp_packet(40000, 81, 1), 3, 10)),
    "ip_not_for_us": lambda: tcp_packet(40000, 81, 1, dst=HOST + 1),
    "ip_bad_source": lambda: tcp_packet(40000, 81, 1, src=ipv4.addr_to_int("224.0.0.1")),
    # a fragment other than the last must carry a multiple of 8 octets (a TCP header is 20)
    "ip_reasm_bad_length": lambda: bytearray(
        raw(IP(src=A_PEER, dst=A_HOST, flags="MF") / TCP(dport=81))
    ),
}


def _ip(family: int) -> Packet:
    """scapy's IP header of the family, from the peer to the host, carrying TCP."""
    if family == 4:
        return IP(src=A_PEER, dst=A_HOST, proto=6)
    host, peer = (addr.to_text(a) for a in addresses(6))
    return IPv6(src=peer, dst=host, nh=6)


# TCP's own drops, the same over either family (the builders take it).
BAD_SEGMENTS = {
    # a payload byte changed after the checksum was computed
    "tcp_bad_checksum": lambda f: _mutate(
        tcp_packet(40000, 81, 1, payload=b"xyz", family=f), IP_HEADER_LEN[f] + 20, ord("q")
    ),
    "tcp_truncated": lambda f: bytearray(raw(_ip(f) / bytes(12))),
    "tcp_bad_flags": lambda f: tcp_packet(40000, 81, 1, flags=tcp.SYN | tcp.FIN, family=f),
    "tcp_bad_flags_rst_syn": lambda f: tcp_packet(40000, 81, 1, flags=tcp.SYN | tcp.RST, family=f),
    # option kind 2 (MSS) with length 3: malformed
    "tcp_bad_options": lambda f: tcp_packet(40000, 81, 1, options=b"\x02\x03\x05\x00", family=f),
    "tcp_bad_data_offset": lambda f: bytearray(raw(_ip(f) / TCP(dport=81, dataofs=4))),
    "tcp_bad_port": lambda f: tcp_packet(0, 81, 1, family=f),
}


@pytest.mark.parametrize("case", sorted(BAD_PACKETS))
def test_bad_packet_dropped_and_counted(case: str) -> None:
    h = make_host()
    h.receive_packet(BAD_PACKETS[case](), 0.0)
    assert h.packets_to_send(0.0) == []
    counter = case.removesuffix("_header").removesuffix("_tail")
    expected = {**BASE, counter: 1}
    if counter.startswith("ip_reasm_"):
        expected["ip_reasm_fragments"] = 1
    assert h.stats.nonzero() == expected


@both_families
@pytest.mark.parametrize("case", sorted(BAD_SEGMENTS))
def test_bad_segment_dropped_and_counted(case: str, family: int) -> None:
    h = make_host(family)
    h.listen(81)  # a listener must not see any of them either
    h.receive_packet(BAD_SEGMENTS[case](family), 0.0)
    assert h.packets_to_send(0.0) == []
    counter = case.removesuffix("_rst_syn")
    assert h.stats.nonzero() == {**base(family), "tcp_rx": 1, counter: 1}


def test_unknown_protocol_gets_rate_limited_protocol_unreachable() -> None:
    h = make_host(host_config=HostConfig(icmp_error_rate=10.0, icmp_error_burst=5))
    datagram = raw(IP(src=A_PEER, dst=A_HOST, id=77) / UDP(sport=5, dport=53) / (b"q" * 40))
    for _ in range(8):
        h.receive_packet(datagram, 0.0)
    out = h.packets_to_send(0.0)
    assert len(out) == 5
    msg = IP(bytes(out[0]))  # type: ignore[arg-type]
    assert (msg[ICMP].type, msg[ICMP].code) == (3, 2)
    # RFC 792: the quote is the offending IP header plus the first 64 bits of its data.
    assert bytes(msg[ICMP].payload)[:28] == datagram[:28] and len(msg) == 20 + 8 + 28
    assert h.stats.nonzero() == {
        "ip_rx": 8,
        "ip_unknown_protocol": 8,
        "icmp_unreach_sent": 5,
        "icmp_rate_limited": 3,
        "ip_tx": 5,
    }
    # 0.2 s later the bucket has earned two more tokens.
    for _ in range(3):
        h.receive_packet(datagram, 0.2)
    assert len(h.packets_to_send(0.2)) == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    h = make_host()
    h.receive_packet(data, 0.0)
    h.packets_to_send(0.0)
    assert h.stats.host_internal_error == 0


@both_families
@settings(max_examples=500, deadline=None)
@given(data=st.data(), listen=st.booleans())
def test_mutated_segments_never_raise(data: st.DataObject, listen: bool, family: int) -> None:
    h = make_host(family)
    if listen:
        h.listen(81)
    pkt = tcp_packet(
        40000,
        81,
        1,
        options=b"\x02\x04\x05\xb4\x01\x03\x03\x07",
        payload=b"0123456789abcdef",
        family=family,
    )
    assert pkt[0] >> 4 == family  # the IP version, before any mutation
    # any octet of the IP header, TCP's, its options and most of the data
    where = st.integers(0, len(pkt) - 5)
    for index, value in data.draw(st.lists(st.tuples(where, st.integers(0, 255)), max_size=6)):
        pkt[index] = value
    for i in range(3):
        h.receive_packet(pkt, float(i))
        h.packets_to_send(float(i))
        h.on_deadline(float(i))
    assert h.stats.host_internal_error == 0


@both_families
def test_internal_error_is_contained_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, family: int
) -> None:
    from ustack.tcp.connection import Connection

    def broken(self: Connection, seg: object, now: float) -> None:
        raise RuntimeError("bug")

    h = make_host(family)
    h.listen(81)
    monkeypatch.setattr(Connection, "receive", broken)
    with caplog.at_level("ERROR", logger="ustack.stack.host"):
        for port in (40000, 40001, 40002):
            h.receive_packet(tcp_packet(port, 81, 1, family=family), 0.0)
    assert h.stats.host_internal_error == 3
    assert h.stats.ip6_rx == (3 if family == 6 else 0)
    assert len([r for r in caplog.records if "internal error" in r.getMessage()]) == 1
