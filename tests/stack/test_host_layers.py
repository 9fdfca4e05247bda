"""The host in two layers: the network layer (IpLayer) and the TCP demultiplexer (TcpDemux).

Each layer is driven here on its own, through the narrow interface the other one uses: the demux
below a fake network layer that only records the segments handed down (with addresses that are
no IPv4 addresses, since the demux must not care), and the network layer under a fake TCP layer
that records what is handed up. The façade's per-packet entry points must be the layers' own
bound methods, with nothing in between.
"""

from __future__ import annotations

from tests.stack.helpers import HOST, PEER, make_host, tcp_packet
from tests.stack.test_icmp_errors import icmp_error
from ustack.stack.config import HostConfig
from ustack.stack.events import ConnectionAccepted
from ustack.stack.isn import fixed_isn
from ustack.stack.network import IpLayer, Key, OutPacket
from ustack.stack.tcp_demux import TcpDemux
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import OutSegment
from ustack.tcp.events import Established
from ustack.tcp.state import State
from ustack.tcp.stats import Stats
from ustack.wire import icmp, seq, tcp

# Family-tagged 128-bit addresses (fd00:7::2 and fd00:7::1 with bit 128 set): not IPv4 ints.
LOCAL6 = 1 << 128 | 0xFD00_0007 << 96 | 2
REMOTE6 = 1 << 128 | 0xFD00_0007 << 96 | 1
ISS = 5000


class FakeIp:
    """A network layer that keeps what the demux hands it."""

    tso = False

    def __init__(self) -> None:
        self.sent: list[tuple[Key, OutSegment]] = []

    def build_segment(self, key: Key, s: OutSegment, gso_size: int = 0) -> OutPacket:
        self.sent.append((key, s))
        return bytearray()

    def cut_segment(self, key: Key, s: OutSegment, mss: int, out: list[OutPacket]) -> None:
        self.sent.append((key, s))
        out.append(bytearray())

    def send_segment(self, key: Key, s: OutSegment) -> None:
        self.sent.append((key, s))

    @property
    def output_pending(self) -> bool:
        return False


def segment(sport: int, dport: int, seq_: int, ack: int, flags: int) -> tcp.TcpSegment:
    """A segment from REMOTE6 to LOCAL6 as the network layer would hand it up (verified)."""
    buf = bytearray(tcp.HEADER_LEN)
    tcp.emit(
        buf,
        0,
        pseudo=0,
        src_port=sport,
        dst_port=dport,
        seq=seq_,
        ack=ack,
        flags=flags,
        window=65535,
        options=b"",
        payload=b"",
    )
    return tcp.parse(buf, REMOTE6, LOCAL6, pseudo=0, verify_checksum=False)


def test_the_facade_adds_no_call_to_the_per_packet_path() -> None:
    h = make_host()
    assert h.receive_packet == h.ip.receive_packet
    assert h.packets_to_send == h.ip.packets_to_send
    assert h.next_event == h.demux.next_event
    # each layer holds the other's bound method, stored once
    assert h.ip._segment == h.demux.segment
    assert h.demux._build_segment == h.ip.build_segment
    assert h.demux._cut_segment == h.ip.cut_segment
    assert h.stats is h.ip.stats is h.demux.stats


def test_the_demux_knows_no_ip_version() -> None:
    ip = FakeIp()
    stats = Stats()
    demux = TcpDemux(
        ip,
        config=TcpConfig(timestamps=False),
        host_config=HostConfig(),
        stats=stats,
        secret=None,
        isn=fixed_isn(ISS),
        cookie_secret=None,
        tracer=None,
    )
    listener = demux.listen(80)
    demux.segment(segment(40000, 80, 100, 0, tcp.SYN), 0.0)
    out: list[OutPacket] = []
    demux.collect(out, 0.0)
    key = (REMOTE6, 40000, LOCAL6, 80)
    [(k, synack)] = ip.sent
    assert (k, synack.seq, synack.ack, synack.flags) == (key, ISS, 101, tcp.SYN | tcp.ACK)
    assert len(out) == 1

    demux.segment(segment(40000, 80, 101, seq.add(ISS, 1), tcp.ACK), 0.001)
    events = [demux.next_event(), demux.next_event()]
    assert [type(e) for e in events] == [Established, ConnectionAccepted]
    conn = listener.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    assert (conn.remote_addr, conn.local_addr) == (REMOTE6, LOCAL6)
    assert demux.lookup(*key) is conn

    # a closed port: the RST goes down through send_segment, on the segment's own 4-tuple
    ip.sent.clear()
    demux.segment(segment(40001, 81, 7, 0, tcp.SYN), 0.002)
    [(k, rst)] = ip.sent
    assert (k, rst.seq, rst.ack, rst.flags) == (
        (REMOTE6, 40001, LOCAL6, 81),
        0,
        8,
        tcp.RST | tcp.ACK,
    )
    assert stats.rst_sent_closed_port == 1 and stats.tcp_demuxed == 1


class FakeTcp:
    """A TCP layer that keeps what the network layer hands it."""

    def __init__(self, take_icmp: bool) -> None:
        self.segments: list[tcp.TcpSegment] = []
        self.icmp: list[tuple[int, int, int, Key, int]] = []
        self.take_icmp = take_icmp
        self.want_output: dict[object, None] = {}

    def segment(self, seg: tcp.TcpSegment, now: float) -> None:
        self.segments.append(seg)

    def icmp_error(
        self, type_: int, code: int, mtu: int, key: Key, seg_seq: int, now: float
    ) -> bool:
        self.icmp.append((type_, code, mtu, key, seg_seq))
        return self.take_icmp

    def collect(self, out: list[OutPacket], now: float) -> None:
        pass


def ip_layer(take_icmp: bool = True) -> tuple[IpLayer, FakeTcp]:
    ip = IpLayer(
        [HOST],
        stats=Stats(),
        host_config=HostConfig(),
        mtu=1500,
        now=0.0,
        offload=False,
        scatter=False,
    )
    upper = FakeTcp(take_icmp)
    ip.attach(upper)
    return ip, upper


def test_the_network_layer_hands_up_verified_segments_only() -> None:
    ip, upper = ip_layer()
    ip.receive_packet(tcp_packet(40000, 80, 100), 0.0)
    [seg] = upper.segments
    assert (seg.src, seg.src_port, seg.dst, seg.dst_port, seg.seq) == (PEER, 40000, HOST, 80, 100)
    bad = tcp_packet(40000, 80, 100)
    bad[-1] ^= 0xFF  # the checksum no longer matches the pseudo-header and segment
    ip.receive_packet(bad, 0.0)
    assert len(upper.segments) == 1 and ip.stats.tcp_bad_checksum == 1


def test_icmp_errors_go_up_as_type_code_mtu_key_and_sequence() -> None:
    ip, upper = ip_layer()
    ours = tcp_packet(80, 40000, 123456, src=HOST, dst=PEER)  # a segment we sent
    ip.receive_packet(icmp_error(ours, code=icmp.FRAG_NEEDED, mtu=1400), 0.0)
    # RFC 1191 5: no MTU in the message -> the plateau below the quoted length (40 -> 68)
    ip.receive_packet(icmp_error(ours, code=icmp.FRAG_NEEDED), 0.0)
    ip.receive_packet(icmp_error(ours, code=icmp.HOST_UNREACH), 0.0)
    key = (PEER, 40000, HOST, 80)
    assert upper.icmp == [
        (icmp.DEST_UNREACH, icmp.FRAG_NEEDED, 1400, key, 123456),
        (icmp.DEST_UNREACH, icmp.FRAG_NEEDED, 68, key, 123456),
        (icmp.DEST_UNREACH, icmp.HOST_UNREACH, 0, key, 123456),
    ]
    st = ip.stats
    assert (st.icmp_frag_needed, st.icmp_frag_needed_plateau, st.icmp_error_delivered) == (2, 1, 1)
    # a quote of someone else's segment never reaches TCP
    ip.receive_packet(icmp_error(tcp_packet(80, 40000, 1, src=PEER, dst=HOST)), 0.0)
    assert len(upper.icmp) == 3 and st.icmp_quote_not_ours == 1


def test_icmp_errors_tcp_refuses_are_not_counted_as_delivered() -> None:
    ip, upper = ip_layer(take_icmp=False)
    ours = tcp_packet(80, 40000, 1, src=HOST, dst=PEER)
    ip.receive_packet(icmp_error(ours, code=icmp.FRAG_NEEDED, mtu=1400), 0.0)
    ip.receive_packet(icmp_error(ours, code=icmp.PORT_UNREACH), 0.0)
    st = ip.stats
    assert len(upper.icmp) == 2
    assert (st.icmp_frag_needed, st.icmp_error_delivered, st.icmp_rx) == (0, 0, 2)
