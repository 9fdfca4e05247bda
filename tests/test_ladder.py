"""The ladder diagram: ustack's states as recorded, the peer's inferred from its segments."""

from __future__ import annotations

from ustack.ladder import INBOUND, OUTBOUND, Ladder
from ustack.wire import ipv4
from ustack.wire import tcp as tcpw

KERNEL = ipv4.addr_to_int("10.7.0.1")
STACK = ipv4.addr_to_int("10.7.0.2")
KPORT, SPORT = 40000, 80
K_ISN, S_ISN = 1000, 5000


def packet(direction: str, flags: int, seq: int, ack: int = 0, payload: bytes = b"") -> bytes:
    src, dst, sport, dport = (
        (KERNEL, STACK, KPORT, SPORT) if direction == INBOUND else (STACK, KERNEL, SPORT, KPORT)
    )
    buf = bytearray(ipv4.HEADER_LEN + tcpw.HEADER_LEN + len(payload))
    n = tcpw.emit(
        buf, ipv4.HEADER_LEN, src, dst, src_port=sport, dst_port=dport, seq=seq, ack=ack,
        flags=flags, window=65535, payload=payload,
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
