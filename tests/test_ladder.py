"""The ladder diagram: ustack's states as recorded, the peer's inferred from its segments."""

from __future__ import annotations

from typing import Any

import pytest

from ustack.ladder import INBOUND, OUTBOUND, Ladder
from ustack.wire import checksum, ipv4, virtio
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
