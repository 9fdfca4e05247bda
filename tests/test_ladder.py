"""The ladder diagram: ustack's states as recorded, the peer's inferred from its segments."""

from __future__ import annotations

import random
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, fragment6
from scapy.packet import Raw

from ustack.ladder import INBOUND, OUTBOUND, Ladder
from ustack.netsim import Network, TransferApp
from ustack.stack.host import Host
from ustack.wire import addr, checksum, ipv4, ipv6, virtio
from ustack.wire import tcp as tcpw

KERNEL = ipv4.addr_to_int("10.7.0.1")
STACK = ipv4.addr_to_int("10.7.0.2")
KPORT, SPORT = 40000, 80
K_ISN, S_ISN = 1000, 5000
NONE = tcpw.NO_OPTIONS


def packet(
    direction: str,
    flags: int,
    seq: int,
    ack: int = 0,
    payload: bytes = b"",
    options: tcpw.TcpOptions = tcpw.NO_OPTIONS,
) -> bytes:
    src, dst, sport, dport = (
        (KERNEL, STACK, KPORT, SPORT) if direction == INBOUND else (STACK, KERNEL, SPORT, KPORT)
    )
    encoded = options.encode()
    buf = bytearray(ipv4.HEADER_LEN + tcpw.HEADER_LEN + len(encoded) + len(payload))
    n = tcpw.emit(
        buf, ipv4.HEADER_LEN, pseudo=checksum.ipv4_pseudo_header_sum(src, dst, tcpw.PROTO, 0), src_port=sport, dst_port=dport, seq=seq, ack=ack,
        flags=flags, window=65535, options=encoded, payload=payload,
    )  # fmt: skip
    ipv4.emit(buf, 0, src=src, dst=dst, proto=ipv4.PROTO_TCP, payload_len=n)
    return bytes(buf)


def state(ladder: Ladder, t: float, old: str, new: str) -> None:
    ladder.state(t, (STACK, SPORT), (KERNEL, KPORT), old, new)


def server_closes_first(ladder: Ladder, data_segments: int) -> None:
    A, S, F, P = tcpw.ACK, tcpw.SYN, tcpw.FIN, tcpw.PSH
    state(ladder, 0.0, "CLOSED", "LISTEN")
    ladder.packet(0.1, INBOUND, packet(INBOUND, S, K_ISN))
    state(ladder, 0.1, "LISTEN", "SYN-RECEIVED")
    ladder.packet(0.2, OUTBOUND, packet(OUTBOUND, S | A, S_ISN, K_ISN + 1))
    ladder.packet(0.3, INBOUND, packet(INBOUND, A, K_ISN + 1, S_ISN + 1))
    state(ladder, 0.3, "SYN-RECEIVED", "ESTABLISHED")
    seq = S_ISN + 1
    for i in range(data_segments):
        ladder.packet(0.4 + i / 1000, OUTBOUND, packet(OUTBOUND, A | P, seq, K_ISN + 1, b"x" * 100))
        seq += 100
    ladder.packet(0.5, OUTBOUND, packet(OUTBOUND, F | A, seq, K_ISN + 1))
    state(ladder, 0.5, "ESTABLISHED", "FIN-WAIT-1")
    ladder.packet(0.6, INBOUND, packet(INBOUND, A, K_ISN + 1, seq + 1))
    state(ladder, 0.6, "FIN-WAIT-1", "FIN-WAIT-2")
    ladder.packet(0.7, INBOUND, packet(INBOUND, F | A, K_ISN + 1, seq + 1))
    state(ladder, 0.7, "FIN-WAIT-2", "TIME-WAIT")
    ladder.packet(0.8, OUTBOUND, packet(OUTBOUND, A, seq + 1, K_ISN + 2))
    state(ladder, 2.8, "TIME-WAIT", "CLOSED")


def test_peer_states_are_inferred_in_textbook_order() -> None:
    ladder = Ladder()
    server_closes_first(ladder, data_segments=2)
    text = ladder.render()
    # The kernel (left column) goes SYN-SENT -> ESTABLISHED -> CLOSE-WAIT -> LAST-ACK -> CLOSED.
    left = [line.split("|")[0].split()[-1] for line in text.splitlines() if "|" in line]
    kernel_states = [s for s in left if not s.endswith("ms")]
    assert kernel_states == ["SYN-SENT", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    for name in ("LISTEN", "SYN-RECEIVED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSED"):
        assert f"| {name}" in text


def test_sequence_numbers_are_relative_and_arrows_point_the_right_way() -> None:
    ladder = Ladder()
    server_closes_first(ladder, data_segments=1)
    lines = ladder.render().splitlines()
    syn = next(line for line in lines if " S   seq=0 " in line)
    synack = next(line for line in lines if "S.  seq=0 ack=1" in line)
    assert syn.rstrip().endswith(">|") or ">|" in syn
    assert "|<" in synack
    assert any("P.  seq=1 ack=1" in line and "len=100" in line for line in lines)


def test_long_runs_of_data_are_folded_into_one_line() -> None:
    ladder = Ladder(max_run=3)
    server_closes_first(ladder, data_segments=50)
    text = ladder.render()
    assert "... 47 more data/ACK segments, 4700 bytes ..." in text
    assert text.count("len=100") == 3
    assert "F." in text  # the close is still drawn after the fold


def test_non_tcp_and_garbage_are_ignored() -> None:
    ladder = Ladder()
    ladder.packet(0.0, INBOUND, b"\x45garbage")
    assert ladder.render() == ""


K_TS, S_TS = 4_294_967_000, 777  # first TSvals; the kernel's wraps past 2**32 during the test


class TimestampedLadder(Ladder):
    """A ladder fed the same packets with an RFC 7323 timestamps option added to each, the way
    they cross the link once both SYNs carried it: TSval a millisecond clock, TSecr the latest
    TSval from the other side."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last = {INBOUND: 0, OUTBOUND: 0}

    def packet(self, now: float, direction: str, raw: bytes | bytearray | memoryview) -> None:
        ip = ipv4.parse(raw)
        seg = tcpw.parse(
            ip.payload,
            ip.src,
            ip.dst,
            pseudo=checksum.ipv4_pseudo_header_sum(ip.src, ip.dst, tcpw.PROTO, 0),
        )
        other = OUTBOUND if direction == INBOUND else INBOUND
        base = K_TS if direction == INBOUND else S_TS
        tsval = (base + round(now * 1000)) & 0xFFFFFFFF
        options = tcpw.TcpOptions(timestamps=(tsval, self.last[other]))
        self.last[direction] = tsval
        rebuilt = packet(direction, seg.flags, seg.seq, seg.ack, bytes(seg.payload), options)
        super().packet(now, direction, rebuilt)


def handshake(ladder: Ladder, syn: tcpw.TcpOptions = NONE, synack: tcpw.TcpOptions = NONE) -> None:
    A, S = tcpw.ACK, tcpw.SYN
    state(ladder, 0.0, "CLOSED", "LISTEN")
    ladder.packet(0.1, INBOUND, packet(INBOUND, S, K_ISN, options=syn))
    ladder.packet(0.2, OUTBOUND, packet(OUTBOUND, S | A, S_ISN, K_ISN + 1, options=synack))
    ladder.packet(0.3, INBOUND, packet(INBOUND, A, K_ISN + 1, S_ISN + 1))


def send_data(ladder: Ladder, t: float, first: int, count: int) -> None:
    """``count`` 100-byte segments of ustack's data from relative sequence number ``first``."""
    for i in range(count):
        raw = packet(OUTBOUND, tcpw.ACK, S_ISN + first + 100 * i, K_ISN + 1, b"x" * 100)
        ladder.packet(t + i / 1000, OUTBOUND, raw)


def sack_ack(ack: int, *blocks: tuple[int, int]) -> bytes:
    """The kernel's ACK of ustack's data; ``ack`` and blocks relative to ustack's ISN."""
    options = tcpw.TcpOptions(sack_blocks=tuple((S_ISN + a, S_ISN + b) for a, b in blocks))
    return packet(INBOUND, tcpw.ACK, K_ISN + 1, S_ISN + ack, options=options)


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if "|" in line]


def middle(line: str) -> str:
    """What is drawn between the lifelines: an arrow's label or a note, without the arrow."""
    return line.split("|")[1].strip(" -<>")


def drawn(lines: list[str], arrow: int) -> str:
    """The arrow at index ``arrow`` with the note lines under it, as one string."""
    parts = [middle(lines[arrow])]
    for line in lines[arrow + 1 :]:
        mid = line.split("|")[1]
        if not mid.strip() or mid.startswith(("<", "--")):
            break
        parts.append(mid.strip())
    return " ".join(parts)


def test_syn_note_lines_show_the_negotiated_options_and_keep_the_lifelines_straight() -> None:
    ladder = Ladder()
    handshake(
        ladder,
        tcpw.TcpOptions(mss=1460, sack_permitted=True, timestamps=(3_000_000_000, 0), wscale=7),
        tcpw.TcpOptions(
            mss=1400, sack_permitted=True, timestamps=(4_000_000_000, 3_000_000_000), wscale=9
        ),
    )
    lines = rows(ladder.render())
    syn = next(i for i, line in enumerate(lines) if " S   seq=0 " in line)
    assert middle(lines[syn + 1]) == "mss 1460,sackOK,TS val 3000000000 ecr 0,wscale 7"
    synack = next(i for i, line in enumerate(lines) if "S.  seq=0 ack=1" in line)
    # Too long for one note line: wrapped after a comma, not run through the right lifeline.
    assert middle(lines[synack + 1]) == "mss 1400,sackOK,TS val 4000000000 ecr 3000000000,"
    assert middle(lines[synack + 2]) == "wscale 9"
    lifelines = {(line.index("|"), line.index("|", line.index("|") + 1)) for line in lines}
    assert len(lifelines) == 1
    ((left, right),) = lifelines
    assert right - left == 57


def test_timestamps_on_every_segment_add_no_lines_after_the_handshake() -> None:
    plain = Ladder(max_run=3)
    server_closes_first(plain, data_segments=12)
    stamped = TimestampedLadder(max_run=3)
    server_closes_first(stamped, data_segments=12)
    stamped_rows = rows(stamped.render())
    notes = [line for line in stamped_rows if "<TS val" in line]
    assert len(notes) == 2  # the SYN and the SYN,ACK, which negotiate the option
    assert [line for line in stamped_rows if line not in notes] == rows(plain.render())


def test_timestamp_detail_is_relative_to_each_sides_first_tsval_when_asked_for() -> None:
    ladder = TimestampedLadder(max_run=3, timestamps=True)
    server_closes_first(ladder, data_segments=1)
    lines = rows(ladder.render())
    # The kernel's ACK at 0.3 s: its TSval is 200 ms after its SYN's (wrapping past 2**32),
    # and it echoes ustack's SYN,ACK, ustack's first TSval.
    assert ".   seq=1 ack=1 win=65535 len=0 ts=200/0" in map(middle, lines)
    assert "P.  seq=1 ack=1 win=65535 len=100 ts=200/200" in map(middle, lines)
    assert [line for line in lines if "ts=" in line and " S" in line] == []
    without_detail = TimestampedLadder(max_run=3)
    server_closes_first(without_detail, data_segments=1)
    assert len(lines) == len(rows(without_detail.render()))


def test_sack_blocks_are_relative_to_the_data_senders_isn_and_break_a_fold() -> None:
    ladder = Ladder(max_run=2)
    handshake(ladder)
    send_data(ladder, 0.4, 1, 10)
    ladder.packet(0.5, INBOUND, sack_ack(101, (201, 401)))
    send_data(ladder, 0.6, 1001, 10)
    lines = rows(ladder.render())
    sack = next(i for i, line in enumerate(lines) if "sack" in line)
    assert middle(lines[sack]) == ".   seq=1 ack=101 win=65535 len=0 sack 201-401"
    # The run before the SACK (the handshake's ACK, then data) is folded up to it; the data
    # after it starts a new run.
    assert middle(lines[sack - 1]) == "... 9 more data/ACK segments, 900 bytes ..."
    assert "seq=1001 " in lines[sack + 1] and "seq=1101 " in lines[sack + 2]
    assert middle(lines[sack + 3]) == "... 8 more data/ACK segments, 800 bytes ..."


def test_sack_blocks_too_long_for_the_arrow_go_on_the_note_line() -> None:
    ladder = Ladder()
    handshake(ladder)
    ladder.packet(0.5, INBOUND, sack_ack(1, (100001, 101449), (102897, 104345), (200001, 201449)))
    *_, arrow, note = rows(ladder.render())
    assert middle(arrow) == ".   seq=1 ack=1 win=65535 len=0"
    assert middle(note) == "sack 100001-101449 102897-104345 200001-201449"


@pytest.mark.parametrize(
    ("ack", "blocks", "expected"),
    [
        # RFC 2883 4.1.1: the duplicate lies below the cumulative ACK.
        (1001, [(101, 201)], "dsack 101-201"),
        (1001, [(101, 201), (1101, 1201)], "dsack 101-201, sack 1101-1201"),
        # RFC 2883 4.1.2: the duplicate lies inside the second block, above a hole.
        (101, [(301, 401), (201, 501)], "dsack 301-401, sack 201-501"),
        # An ordinary first block, not inside the second: no D-SACK.
        (101, [(601, 701), (201, 501)], "sack 601-701 201-501"),
    ],
)
def test_a_dsack_first_block_is_marked(
    ack: int, blocks: list[tuple[int, int]], expected: str
) -> None:
    ladder = Ladder()
    handshake(ladder)
    ladder.packet(0.5, INBOUND, sack_ack(ack, *blocks))
    lines = rows(ladder.render())
    arrow = max(i for i, line in enumerate(lines) if f"ack={ack} " in line)
    assert drawn(lines, arrow) == f".   seq=1 ack={ack} win=65535 len=0 {expected}"


def test_a_retransmission_is_marked_and_breaks_a_fold() -> None:
    ladder = Ladder(max_run=2)
    handshake(ladder)
    send_data(ladder, 0.4, 1, 6)
    send_data(ladder, 0.5, 101, 1)  # the second segment again
    send_data(ladder, 0.6, 601, 1)  # new data: not marked
    lines = rows(ladder.render())
    marks = [i for i, line in enumerate(lines) if "retransmission" in line]
    assert len(marks) == 1
    assert middle(lines[marks[0]]) == ".   seq=101 ack=1 win=65535 len=100 retransmission"
    assert middle(lines[marks[0] - 1]) == "... 5 more data/ACK segments, 500 bytes ..."
    assert "seq=601 " in lines[marks[0] + 1]


def test_a_retransmitted_syn_is_marked_but_a_new_incarnation_is_not() -> None:
    ladder = Ladder()
    ladder.packet(0.0, INBOUND, packet(INBOUND, tcpw.SYN, K_ISN))
    ladder.packet(1.0, INBOUND, packet(INBOUND, tcpw.SYN, K_ISN))
    ladder.packet(9.0, INBOUND, packet(INBOUND, tcpw.SYN, (K_ISN - 5000) & 0xFFFFFFFF))
    lines = rows(ladder.render())
    syns = [i for i, line in enumerate(lines) if " S   seq=0 " in line]
    assert len(syns) == 3
    assert ["retransmission" in drawn(lines, i) for i in syns] == [False, True, False]


# -- TUN offloads: frames with the virtio-net header ---------------------------------------------


class FramedLadder(Ladder):
    """A ladder on an offloading link: every packet arrives behind a virtio-net header."""

    def packet(self, now: float, direction: str, raw: bytes | bytearray | memoryview) -> None:
        hdr = bytearray(virtio.HEADER_LEN)
        virtio.emit(hdr, flags=virtio.F_NEEDS_CSUM, csum_start=20, csum_offset=16)
        super().packet(now, direction, bytes(hdr) + bytes(raw))


def test_frames_with_a_header_draw_exactly_what_the_bare_packets_draw() -> None:
    framed = FramedLadder(header_len=virtio.HEADER_LEN)
    plain = Ladder(width=framed._width)  # drawn wider over an offload link, nothing else
    for ladder in (plain, framed):
        server_closes_first(ladder, data_segments=9)
    assert framed.render() == plain.render()
    assert "| ESTABLISHED" in plain.render()  # the comparison is of a real diagram
    assert framed._width > Ladder()._width


def super_segment(seq: int, size: int, gso_size: int) -> bytes:
    raw = packet(OUTBOUND, tcpw.ACK | tcpw.PSH, S_ISN + seq, K_ISN + 1, b"s" * size)
    hdr = bytearray(virtio.HEADER_LEN)
    virtio.emit(
        hdr, flags=virtio.F_NEEDS_CSUM, gso_type=virtio.GSO_TCPV4, hdr_len=40,
        gso_size=gso_size, csum_start=20, csum_offset=16,
    )  # fmt: skip
    return bytes(hdr) + raw


def test_a_super_segment_is_one_arrow_with_its_size_and_how_the_wire_cuts_it() -> None:
    ladder = FramedLadder(header_len=virtio.HEADER_LEN)
    handshake(ladder)
    Ladder.packet(ladder, 0.4, OUTBOUND, super_segment(1, 65160, 1448))
    Ladder.packet(ladder, 0.5, OUTBOUND, super_segment(65161, 1000, 1448))  # under one MSS
    lines = rows(ladder.render())
    arrows = [i for i, line in enumerate(lines) if "|<" in line and "len=" in line]
    first = next(i for i in arrows if "seq=1 " in lines[i])
    # one line: the arrow itself carries the size and how the wire cuts it
    assert "len=65160 (gso 1448 x 45) -" in lines[first]
    # A frame that the wire would not cut is drawn as any segment.
    last = next(i for i in arrows if "seq=65161" in lines[i])
    assert drawn(lines, last).endswith("len=1000")
    assert "gso" not in ladder.render().split("seq=65161")[1]


def test_a_short_gso_segment_rounds_its_wire_count_up() -> None:
    ladder = FramedLadder(header_len=virtio.HEADER_LEN)
    handshake(ladder)
    Ladder.packet(ladder, 0.4, OUTBOUND, super_segment(1, 3000, 1448))
    assert "len=3000 (gso 1448 x 3)" in ladder.render()


def test_a_frame_shorter_than_its_header_is_ignored() -> None:
    ladder = Ladder(header_len=virtio.HEADER_LEN)
    ladder.packet(0.0, INBOUND, b"\x00" * 9)
    ladder.packet(0.0, INBOUND, packet(INBOUND, tcpw.SYN, K_ISN))  # read as if framed: garbage
    assert ladder.render() == ""


# -- IPv6: the same ladders, over the other family ------------------------------------------------

K6, S6 = addr.from_text("fd00:7::1"), addr.from_text("fd00:7::2")
TO_V6 = {KERNEL: K6, STACK: S6}


def as_ipv6(packet4: bytes) -> bytes:
    """The same TCP segment carried by IPv6 between K6 and S6, checksum recomputed over the
    IPv6 pseudo-header (RFC 8200 8.1)."""
    ip = ipv4.parse(packet4)
    src, dst = addr.untag(TO_V6[ip.src]), addr.untag(TO_V6[ip.dst])
    segment = bytearray(ip.payload)
    segment[16:18] = b"\0\0"
    pseudo = checksum.ipv6_pseudo_header_sum(src, dst, tcpw.PROTO, len(segment))
    segment[16:18] = checksum.internet_checksum(segment, pseudo).to_bytes(2, "big")
    buf = bytearray(ipv6.HEADER_LEN) + segment
    ipv6.emit(buf, 0, src=src, dst=dst, next_header=ipv6.PROTO_TCP, payload_len=len(segment))
    return bytes(buf)


class V6Ladder(Ladder):
    """A ladder fed every packet and state change of a test as IPv6 instead of IPv4."""

    def packet(self, now: float, direction: str, raw: bytes | bytearray | memoryview) -> None:
        if self.header_len:
            raw = bytes(raw[: self.header_len]) + as_ipv6(bytes(raw[self.header_len :]))
        else:
            raw = as_ipv6(bytes(raw))
        super().packet(now, direction, raw)

    def state(
        self, now: float, local: tuple[int, int], peer: tuple[int, int], old: str, new: str
    ) -> None:
        super().state(now, (TO_V6[local[0]], local[1]), (TO_V6[peer[0]], peer[1]), old, new)


def test_the_same_ladder_over_ipv6_with_bracketed_addresses() -> None:
    four, six = Ladder(), V6Ladder()
    server_closes_first(four, data_segments=2)
    server_closes_first(six, data_segments=2)
    head4, *body4 = four.render().splitlines()
    head6, *body6 = six.render().splitlines()
    # One diagram: the packets (tagged addresses from the wire) and the state changes (tagged
    # addresses from the connection) are one flow, and every row is what IPv4 draws.
    assert body6 == body4
    assert head6.split() == ["time", "kernel", "[fd00:7::1]:40000", "ustack", "[fd00:7::2]:80"]
    assert head4.split() == ["time", "kernel", "10.7.0.1:40000", "ustack", "10.7.0.2:80"]
    assert any(" S   seq=0 " in line for line in body6)
    assert any("S.  seq=0 ack=1" in line for line in body6)
    assert sum("F." in line for line in body6) == 2


def test_an_ipv6_header_line_keeps_its_names_apart() -> None:
    ladder = Ladder()
    peer = addr.from_text("fd00:1234:5678:9abc:def0:1234:5678:9abc")
    local = addr.from_text("fd00:1234:5678:9abc:def0:1234:5678:9abd")
    ladder.state(0.0, (local, 443), (peer, 65535), "CLOSED", "SYN-SENT")
    (head,) = [line for line in ladder.render().splitlines() if "time" in line]
    assert head.split() == [
        "time",
        "kernel",
        "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535",
        "ustack",
        "[fd00:1234:5678:9abc:def0:1234:5678:9abd]:443",
    ]


class FramedV6Ladder(V6Ladder):
    def packet(self, now: float, direction: str, raw: bytes | bytearray | memoryview) -> None:
        hdr = bytearray(virtio.HEADER_LEN)
        virtio.emit(hdr, flags=virtio.F_NEEDS_CSUM, csum_start=40, csum_offset=16)
        super().packet(now, direction, bytes(hdr) + bytes(raw))


def test_framed_ipv6_packets_draw_what_the_bare_ones_draw() -> None:
    framed, bare = FramedV6Ladder(header_len=virtio.HEADER_LEN), V6Ladder()
    server_closes_first(framed, data_segments=6)
    server_closes_first(bare, data_segments=6)
    framed_rows = [line.split("|")[1] for line in framed.render().splitlines() if "|" in line]
    bare_rows = [line.split("|")[1] for line in bare.render().splitlines() if "|" in line]
    assert any("seq=0" in row for row in framed_rows)
    assert [row.strip(" -<>") for row in framed_rows] == [row.strip(" -<>") for row in bare_rows]
    assert "[fd00:7::2]:80" in framed.render()


def test_an_ipv6_super_segment_shows_how_the_wire_cuts_it() -> None:
    ladder = FramedV6Ladder(header_len=virtio.HEADER_LEN)
    handshake(ladder)
    hdr = bytearray(virtio.HEADER_LEN)
    virtio.emit(
        hdr, flags=virtio.F_NEEDS_CSUM, gso_type=virtio.GSO_TCPV6, hdr_len=60,
        gso_size=1428, csum_start=40, csum_offset=16,
    )  # fmt: skip
    data = packet(OUTBOUND, tcpw.ACK | tcpw.PSH, S_ISN + 1, K_ISN + 1, b"x" * 60000)
    V6Ladder.packet(ladder, 0.4, OUTBOUND, bytes(hdr) + data)
    assert "len=60000 (gso 1428 x 43)" in ladder.render()


def test_ipv6_that_is_not_tcp_or_is_a_fragment_is_ignored() -> None:
    ip = IPv6(src="fd00:7::1", dst="fd00:7::2")
    ladder = Ladder()
    ladder.packet(0.0, INBOUND, raw(ip / ICMPv6EchoRequest()))
    whole = ip / IPv6ExtHdrFragment() / TCP() / Raw(bytes(3000))
    for piece in fragment6(whole, 1280):  # type: ignore[no-untyped-call]
        ladder.packet(0.0, INBOUND, raw(piece))
    ladder.packet(0.0, INBOUND, b"\x60garbage")
    assert ladder.render() == ""
    # ...while TCP behind an extension header (an atomic fragment, RFC 6946) is drawn.
    ladder.packet(0.0, INBOUND, raw(ip / IPv6ExtHdrFragment() / TCP(sport=20, flags="S")))
    assert "kernel [fd00:7::1]:20" in ladder.render()


def test_a_ladder_of_two_sans_io_hosts_talking_ipv6() -> None:
    """The packets and the state changes come from a real ustack Host over IPv6 (netsim), so
    the flow key is the tagged address both the wire and the connection report."""
    rng = random.Random(1)
    net = Network()
    ladder = Ladder()

    def tracer(conn: Any, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state":
            local, peer = (conn.local_addr, conn.local_port), (conn.remote_addr, conn.remote_port)
            ladder.state(net.now, local, peer, detail["from"].value, detail["to"].value)

    client = net.add_host(Host([K6], secret=rng.randbytes(16)))
    server = net.add_host(Host([S6], secret=rng.randbytes(16), tracer=tracer))
    # Watch the server's side of the link, as `ustack demo` watches the TUN device.
    receive, pull = server.receive_packet, server.packets_to_send

    def watched_receive(buf: bytes | bytearray | memoryview, now: float) -> None:
        ladder.packet(now, INBOUND, buf)
        receive(buf, now)

    def watched_pull(now: float) -> list[Any]:
        out = pull(now)
        for p in out:
            assert not isinstance(p, tuple)  # simulated hosts never scatter
            ladder.packet(now, OUTBOUND, p)
        return out

    server.receive_packet, server.packets_to_send = watched_receive, watched_pull
    net.connect(client, server, bandwidth=12.5e6, delay=0.005)
    server_app = TransferApp(server, b"", listener=server.listen(SPORT))
    client_app = TransferApp(client, b"hello" * 100)
    net.set_app(server, server_app)
    net.set_app(client, client_app)
    client_app.add(client.connect(S6, SPORT, net.now, local_port=KPORT))
    net.run(max_time=5.0)

    text = ladder.render()
    heads = [line for line in text.splitlines() if line.lstrip().startswith("time")]
    assert [h.split() for h in heads] == [
        ["time", "kernel", "[fd00:7::1]:40000", "ustack", "[fd00:7::2]:80"]
    ]
    lines = rows(text)
    right = [line.split("|")[2].strip() for line in lines if line.split("|")[2].strip()]
    assert right == ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    # The client's first segment after the SYN,ACK acknowledges it and carries its data and FIN:
    # the peer is drawn ESTABLISHED, then FIN-WAIT-1, and our FIN,ACK takes it to TIME-WAIT.
    left = [line.split("|")[0].split()[-1] for line in lines if "ms " in line.split("|")[0]]
    left = [s for s in left if not s.endswith("ms")]
    assert left == ["SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "TIME-WAIT"]
    arrows = [middle(line) for line in lines if "--" in line]
    assert arrows[0].startswith("S   seq=0 win=")
    assert arrows[1].startswith("S.  seq=0 ack=1 win=")
    assert arrows[2].startswith("FP. seq=1 ack=1 ") and arrows[2].endswith("len=500")
    assert arrows[3].startswith("F.  seq=1 ack=502 ")
    assert arrows[4].startswith(".   seq=502 ack=2 ")
