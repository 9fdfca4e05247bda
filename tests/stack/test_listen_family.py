"""Per-family listeners: a listener takes IPv4, IPv6 or both (``Host.listen(family=)``); a
segment of a family it does not take is answered as for a closed port (RFC 9293 3.10.7.1) and
counted, as Linux answers an IPv6 SYN to an AF_INET socket. Packets built and read by scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from tests.stack import helpers
from ustack.stack.host import Host
from ustack.stack.isn import fixed_isn
from ustack.tcp.state import State
from ustack.wire import addr, tcp

HOST4, PEER4 = "10.7.0.2", "10.7.0.1"
HOST6, PEER6 = "fd00:7::2", "fd00:7::1"
PORT = 80


def make_host() -> Host:
    return Host(
        [addr.from_text(HOST4), addr.from_text(HOST6)],
        isn=fixed_isn(1000),
        secret=b"s" * 16,
    )


def syn(family: int, sport: int = 40000, seq: int = 7, flags: str = "S") -> bytes:
    ip = IP(src=PEER4, dst=HOST4) if family == 4 else IPv6(src=PEER6, dst=HOST6)
    return bytes(ip / TCP(sport=sport, dport=PORT, seq=seq, flags=flags))


def replies(h: Host, family: int) -> list[Packet]:
    cls = IP if family == 4 else IPv6
    packets = h.packets_to_send(0.0)
    assert all(isinstance(p, bytearray) for p in packets)  # no offload: plain packets
    return [cls(bytes(p)) for p in packets if isinstance(p, bytearray)]


@pytest.mark.parametrize(("family", "other"), [(4, 6), (6, 4)])
def test_one_family_listener_resets_the_other_family(family: int, other: int) -> None:
    h = make_host()
    listener = h.listen(PORT, family=family)
    assert listener.family == family
    h.receive_packet(syn(other), 0.0)
    (rst,) = replies(h, other)
    # RFC 9293 3.10.7.1, ACK bit off: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    assert rst[TCP].flags == "RA" and rst[TCP].seq == 0 and rst[TCP].ack == 8
    assert rst[TCP].sport == PORT and rst[TCP].dport == 40000
    assert h.stats.listen_wrong_family == 1 and h.stats.rst_sent_closed_port == 1
    assert h.stats.listen_syn == 0 and listener.half_open == 0 and h.connections == []
    # ... while its own family is taken as ever.
    h.receive_packet(syn(family), 0.0)
    (synack,) = replies(h, family)
    assert synack[TCP].flags == "SA" and synack[TCP].ack == 8
    assert h.stats.listen_syn == 1 and listener.half_open == 1
    assert h.stats.listen_wrong_family == 1


def test_a_rst_of_the_other_family_is_counted_and_never_answered() -> None:
    h = make_host()
    h.listen(PORT, family=4)
    h.receive_packet(syn(6, flags="R"), 0.0)
    assert replies(h, 6) == []
    assert h.stats.listen_wrong_family == 1 and h.stats.rst_closed_port_ignored == 1
    assert h.stats.listen_drop_rst == 0


def test_a_listener_of_both_families_takes_both() -> None:
    h = make_host()
    listener = h.listen(PORT)
    assert listener.family is None
    for family in (4, 6):
        h.receive_packet(syn(family), 0.0)
        (synack,) = replies(h, family)
        assert synack[TCP].flags == "SA"
    assert h.stats.listen_syn == 2 and listener.half_open == 2
    assert h.stats.listen_wrong_family == 0
    assert sorted(c.remote_addr >> 128 for c in h.connections) == [0, 1]
    assert all(c.state is State.SYN_RECEIVED for c in h.connections)


def test_family_is_checked_and_the_port_still_takes_one_listener() -> None:
    h = make_host()
    with pytest.raises(ValueError, match="family must be None, 4 or 6"):
        h.listen(PORT, family=5)
    h.listen(PORT, family=4)
    # Per port, not per (port, family): a second listener for IPv6 is EADDRINUSE.
    with pytest.raises(OSError, match="already listening"):
        h.listen(PORT, family=6)
    assert "family=4" in repr(h.demux._listeners[PORT])


@pytest.mark.parametrize("released", [False, True])
def test_a_listener_of_the_other_family_does_not_end_a_time_wait(released: bool) -> None:
    """RFC 9293 3.10.7.4 / RFC 6191 let a SYN above RCV.NXT end TIME-WAIT only for a listener
    that would take it: an IPv6-only one must not forget an IPv4 TIME-WAIT (Connection or
    compact record) only to answer the SYN with a RST."""
    h = helpers.make_host()
    listener = h.listen(PORT)
    isn = 1000
    h.receive_packet(helpers.tcp_packet(40000, PORT, isn), 0.0)
    helpers.segments(h, 0.0)
    ack = helpers.tcp_packet(40000, PORT, isn + 1, helpers.SERVER_ISN + 1, tcp.ACK)
    h.receive_packet(ack, 0.0)
    conn = listener.accept()
    assert conn is not None
    if released:
        h.release(conn, 0.5)
    conn.close(1.0)
    helpers.segments(h, 1.0)
    fin = helpers.tcp_packet(40000, PORT, isn + 1, helpers.SERVER_ISN + 2, tcp.FIN | tcp.ACK)
    h.receive_packet(fin, 1.01)
    helpers.segments(h, 1.01)
    tw = h.lookup(helpers.PEER, 40000, helpers.HOST, PORT)
    assert tw is not None and tw.state is State.TIME_WAIT
    listener.close(1.5)
    h.listen(PORT, family=6)
    h.receive_packet(helpers.tcp_packet(40000, PORT, isn + 100_000), 2.0)
    out = helpers.segments(h, 2.0)
    assert h.stats.time_wait_reused == 0 and h.stats.listen_wrong_family == 0
    assert all(s.control is not tcp.Control.RST for s in out)
    tw = h.lookup(helpers.PEER, 40000, helpers.HOST, PORT)
    assert tw is not None and tw.state is State.TIME_WAIT
