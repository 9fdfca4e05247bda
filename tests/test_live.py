"""Live ladders without root: the bounded per-connection recorder fed by hand, and the trace hub
and control socket over two stacks on an in-memory link (the TUN tier runs the real daemon)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ustack import Stack, open_connection, start_server
from ustack import control as ctl
from ustack.ladder import INBOUND, OUTBOUND
from ustack.link.pair import LinkPair
from ustack.live import EMBRYO_TIMEOUT, LINGER, TRACE_SCHEMA_VERSION, LadderRecorder
from ustack.tcp.config import TcpConfig
from ustack.tcp.stats import Stats
from ustack.wire import checksum, ipv4
from ustack.wire import tcp as tcpw

KERNEL = ipv4.addr_to_int("10.7.0.1")
STACK = ipv4.addr_to_int("10.7.0.2")
SPORT = 80
K_ISN, S_ISN = 1000, 5000
A, S, F, P, R = tcpw.ACK, tcpw.SYN, tcpw.FIN, tcpw.PSH, tcpw.RST


def packet(
    direction: str,
    flags: int,
    seq: int,
    ack: int = 0,
    payload: bytes = b"",
    kport: int = 40000,
    sport: int = SPORT,
) -> bytes:
    src, dst, s, d = (
        (KERNEL, STACK, kport, sport) if direction == INBOUND else (STACK, KERNEL, sport, kport)
    )
    buf = bytearray(ipv4.HEADER_LEN + tcpw.HEADER_LEN + len(payload))
    n = tcpw.emit(
        buf, ipv4.HEADER_LEN, pseudo=checksum.ipv4_pseudo_header_sum(src, dst, tcpw.PROTO, 0),
        src_port=s, dst_port=d, seq=seq, ack=ack, flags=flags, window=65535, payload=payload,
    )  # fmt: skip
    ipv4.emit(buf, 0, src=src, dst=dst, proto=ipv4.PROTO_TCP, payload_len=n)
    return bytes(buf)


class Conn:
    """Feeds a recorder one textbook connection, step by step, at explicit times."""

    def __init__(self, rec: LadderRecorder, kport: int = 40000, sport: int = SPORT) -> None:
        self.rec, self.kport, self.sport = rec, kport, sport
        self.seq = S_ISN + 1

    def pkt(
        self, t: float, direction: str, flags: int, seq: int, ack: int = 0, data: bytes = b""
    ) -> None:
        self.rec.packet(
            t, direction, packet(direction, flags, seq, ack, data, self.kport, self.sport)
        )

    def state(self, t: float, old: str, new: str, trigger: str = "") -> None:
        self.rec.state(t, (STACK, self.sport), (KERNEL, self.kport), old, new, trigger)

    def open(self, t: float = 0.0) -> None:
        self.pkt(t, INBOUND, S, K_ISN)
        self.state(t, "CLOSED", "LISTEN", "open_passive")
        self.state(t, "LISTEN", "SYN-RECEIVED", "rcv_syn")
        self.pkt(t, OUTBOUND, S | A, S_ISN, K_ISN + 1)
        self.pkt(t, INBOUND, A, K_ISN + 1, S_ISN + 1)
        self.state(t, "SYN-RECEIVED", "ESTABLISHED", "rcv_ack")

    def send(self, t: float, size: int, flags: int = A | P) -> None:
        self.pkt(t, OUTBOUND, flags, self.seq, K_ISN + 1, b"x" * size)
        self.seq += size

    def close_first(self, t: float) -> None:
        """ustack closes first, then TIME-WAIT runs out at ``t + 1``."""
        self.pkt(t, OUTBOUND, F | A, self.seq, K_ISN + 1)
        self.state(t, "ESTABLISHED", "FIN-WAIT-1", "close")
        self.pkt(t, INBOUND, F | A, K_ISN + 1, self.seq + 1)
        self.state(t, "FIN-WAIT-1", "CLOSING", "rcv_fin")
        self.state(t, "CLOSING", "TIME-WAIT", "rcv_ack")
        self.pkt(t, OUTBOUND, A, self.seq + 1, K_ISN + 2)
        self.state(t + 1, "TIME-WAIT", "CLOSED", "timeout")


def test_a_connection_is_drawn_once_closed_and_then_forgotten() -> None:
    rec = LadderRecorder()
    c = Conn(rec)
    c.open()
    c.send(0.1, 100)
    c.send(0.2, 200)
    assert len(rec) == 1 and rec.collect(100.0) == []  # still open: nothing to draw
    c.close_first(0.3)
    assert rec.next_deadline() == pytest.approx(1.3 + LINGER)
    assert rec.collect(1.3) == []  # the LINGER for the segment that closes it
    (text,) = rec.collect(1.3 + LINGER)
    header, *rows = text.splitlines()
    assert header == (
        "=== 10.7.0.1:40000 <-> 10.7.0.2:80: 1.300 s, 0 bytes in, 300 bytes out, "
        "closed after TIME-WAIT ==="
    )
    assert "S   seq=0" in rows[3] and rows[-1].endswith("| CLOSED")
    assert len(rec) == 0 and rec.next_deadline() is None
    assert rec.collect(10.0) == []


def test_the_segment_sent_after_closed_is_on_the_ladder() -> None:
    rec = LadderRecorder()
    c = Conn(rec)
    c.open()
    # abort(): the state changes first, the RST goes out in the same wakeup
    c.state(0.5, "ESTABLISHED", "CLOSED", "abort")
    c.pkt(0.5, OUTBOUND, R | A, c.seq, K_ISN + 1)
    (text,) = rec.collect(0.5 + LINGER)
    assert "reset by ustack in ESTABLISHED" in text.splitlines()[0]
    assert any("R.  seq=1" in row for row in text.splitlines())


def test_data_is_folded_and_rows_are_bounded_keeping_handshake_and_close() -> None:
    stats = Stats()
    rec = LadderRecorder(stats=stats, max_rows=20)
    c = Conn(rec)
    c.open()
    for i in range(50):  # plain data: folded as it arrives
        c.send(0.1 + i / 1000, 1000)
    for i in range(40):  # retransmissions are never folded: they hit the row bound
        c.pkt(0.2 + i / 1000, OUTBOUND, A, S_ISN + 1, K_ISN + 1, b"y" * 1000)
    c.close_first(0.3)
    (text,) = rec.collect(2.0)
    rows = text.splitlines()[2:]  # without the two header lines
    assert len(rows) == 20 + 1  # the bound and the marker
    elided = [row for row in rows if "rows left out" in row]
    assert len(elided) == 1 and stats.ladder_rows_elided > 0
    assert f"... {stats.ladder_rows_elided} rows left out ..." in elided[0]
    assert "S   seq=0" in "".join(rows[:5])  # the handshake survives
    assert rows[-1].endswith("| CLOSED")  # so does the close
    assert "50000 bytes out" in text.splitlines()[0]


def test_bulk_data_is_folded_as_it_arrives() -> None:
    rec = LadderRecorder()
    c = Conn(rec)
    c.open()
    for i in range(50):
        c.send(0.1 + i / 1000, 1000)
    c.close_first(0.3)
    (text,) = rec.collect(2.0)
    assert "... 46 more data/ACK segments, 46000 bytes ..." in text  # FOLD = 4 shown
    assert len(text.splitlines()) < 30  # not 50 rows of data


def test_tracked_connections_are_capped_and_the_rest_counted() -> None:
    stats = Stats()
    rec = LadderRecorder(stats=stats, max_connections=2)
    first, second, third = Conn(rec, 40001), Conn(rec, 40002), Conn(rec, 40003)
    first.open()
    second.open()
    third.open()  # not drawn
    assert len(rec) == 2 and stats.ladder_untracked == 1
    third.close_first(0.5)
    first.close_first(0.5)
    (text,) = rec.collect(2.0)
    assert ":40001 <->" in text
    fourth = Conn(rec, 40004)
    fourth.open(3.0)  # room again
    assert len(rec) == 2 and stats.ladder_untracked == 1


def test_only_the_listed_ports_are_drawn() -> None:
    rec = LadderRecorder(ports=[80])
    Conn(rec, sport=7).open()
    assert len(rec) == 0
    Conn(rec, sport=80).open()
    assert len(rec) == 1


def test_a_syn_answered_by_rst_is_drawn_and_one_that_led_nowhere_is_freed() -> None:
    stats = Stats()
    rec = LadderRecorder(stats=stats)
    refused = Conn(rec, 40001, sport=81)
    refused.pkt(0.0, INBOUND, S, K_ISN)
    refused.pkt(0.0, OUTBOUND, R | A, 0, K_ISN + 1)
    (text,) = rec.collect(LINGER)
    assert "refused: RST, no connection" in text
    silent = Conn(rec, 40002)
    silent.pkt(1.0, INBOUND, S, K_ISN)  # e.g. answered with a SYN cookie, never returned
    assert len(rec) == 1
    assert rec.collect(1.0 + EMBRYO_TIMEOUT) == []
    assert len(rec) == 0 and stats.ladder_abandoned == 1


def test_a_new_syn_during_linger_finishes_the_old_incarnation() -> None:
    rec = LadderRecorder()
    c = Conn(rec)
    c.open()
    c.state(0.5, "ESTABLISHED", "CLOSED", "rcv_rst")
    c.open(0.51)  # same 4-tuple, before the LINGER ran out
    assert len(rec) == 1
    (text,) = rec.collect(0.52)
    assert "reset by the peer in ESTABLISHED" in text


def test_flush_draws_what_is_still_open() -> None:
    rec = LadderRecorder()
    Conn(rec).open()
    (text,) = rec.flush()
    assert "still open when the trace ended" in text and len(rec) == 0


def test_peer_credentials_and_who_is_allowed() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert ctl.peer_uid(a) == os.geteuid()
    assert ctl.allowed(0, 1000) and ctl.allowed(1000, 1000)
    assert not ctl.allowed(1001, 1000)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"v": 1, "mode": "json"}', "one line"),
        (b"hello\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{"v": 2, "mode": "json"}\n', "schema version 2"),
        (b'{"v": 1, "mode": "pcap"}\n', "mode must be"),
        (b'{"v": 1, "mode": "json", "ports": [0]}\n', "ports must be"),
        (b'{"v": 1, "mode": "json", "ports": [true]}\n', "ports must be"),
        (b"late", "within"),
        (b"long", "longer than"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ctl._parse_request(raw)


SERVER, CLIENT = "10.9.0.2", "10.9.0.1"


@pytest.fixture
async def stacks() -> AsyncIterator[tuple[Stack, Stack]]:
    left, right = LinkPair.create()
    config: dict[str, Any] = {"rto_min": 0.05, "delayed_ack": 0.005, "msl": 0.05}
    a = Stack(left, address=CLIENT, config=TcpConfig(**config))
    b = Stack(right, address=SERVER, config=TcpConfig(**config))
    async with a, b:
        yield a, b


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()


async def one_exchange(client: Stack) -> None:
    reader, writer = await open_connection(SERVER, 7, stack=client)
    writer.write(b"ping")
    assert await reader.read() == b"ping"
    writer.close()


async def test_trace_streams_json_and_ladders_over_the_control_socket(
    stacks: tuple[Stack, Stack], tmp_path: Path
) -> None:
    client, server = stacks
    server.start()
    await start_server(echo, port=7, stack=server)
    hub = ctl.TraceHub(server)
    ladders: list[str] = []
    hub.add("ladder", None, text=ladders.append)
    path = str(tmp_path / "c.sock")
    control = ctl.ControlServer(ctl.bind(path), hub, path)
    await control.start()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    json_out, ladder_out = io.StringIO(), io.StringIO()
    json_trace = asyncio.ensure_future(ctl.trace(path, mode="json", count=1, out=json_out))
    ladder_trace = asyncio.ensure_future(ctl.trace(path, count=1, out=ladder_out))

    async def attached() -> None:
        while hub.sinks < 3:  # both clients, and the local ladder sink
            await asyncio.sleep(0.001)

    await asyncio.wait_for(attached(), 10)
    await one_exchange(client)
    assert await asyncio.wait_for(json_trace, 10) == 0
    assert await asyncio.wait_for(ladder_trace, 10) == 0
    records = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert records[0]["event"] == "hello"
    assert all(r["v"] == TRACE_SCHEMA_VERSION for r in records)
    states = [r["to"] for r in records if r["event"] == "state"]
    assert states[:2] == ["LISTEN", "SYN-RECEIVED"] and states[-1] == "CLOSED"
    assert next(r["flags"] for r in records if r["event"] == "segment") == "S"
    assert ladder_out.getvalue().startswith("=== 10.9.0.1:")
    assert "CLOSED" in ladder_out.getvalue()
    assert len(ladders) == 1 and ladders[0] == ladder_out.getvalue().rstrip("\n") + "\n"
    await control.aclose()
    hub.close()
    assert not os.path.exists(path)
    assert server.host.tracer is None  # nobody watches: the observers are gone
    assert server.driver.on_packet is None


async def test_a_client_of_another_uid_is_refused(
    stacks: tuple[Stack, Stack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = stacks
    server.start()
    hub = ctl.TraceHub(server)
    path = str(tmp_path / "c.sock")
    control = ctl.ControlServer(ctl.bind(path), hub, path)
    await control.start()
    other = os.geteuid() + 4242 if os.geteuid() else 4242
    monkeypatch.setattr(ctl, "peer_uid", lambda _sock: other)
    with pytest.raises(ctl.ControlError, match=f"serve refused: permission denied: uid {other}"):
        await ctl.trace(path, out=io.StringIO())
    assert server.stats.control_refused_peer == 1 and hub.sinks == 0
    await control.aclose()


async def test_a_socket_in_use_is_not_taken_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")
    first = ctl.bind(path)
    with pytest.raises(ctl.ControlError, match="in use by another ustack serve"):
        ctl.bind(path)
    first.close()  # the file stays, nobody listens: stale
    ctl.bind(path).close()
    Path(tmp_path / "file").write_text("")
    with pytest.raises(ctl.ControlError, match="not a socket"):
        ctl.bind(str(tmp_path / "file"))


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["trace", "--count", "x"], 2, "argument --count: not a whole number: 'x'"),
        (["trace", "--ports", "80,99999"], 2, "argument --ports: bad port '99999': use 1-65535"),
        (["serve", "--ladder", ","], 2, "argument --ladder: no ports given"),
        (["trace", "--control", "/nonexistent/x.sock"], 1, "no control socket at /nonexistent"),
    ],
)
def test_bad_cli_arguments_are_one_line(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ustack.cli import main

    if code == 2:  # a usage error: argparse exits
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == code
    else:
        assert main(argv) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err
