"""The ``ustack`` command's own logic: argument checking and trace lines (no TUN needed)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from enum import Enum
from types import SimpleNamespace
from typing import Any

import pytest

from ustack import __version__
from ustack.cli import _Tracer, main, parse_services
from ustack.tcp.state import State
from ustack.wire.ipv4 import addr_to_int

CONN = SimpleNamespace(
    local_addr=addr_to_int("10.7.0.2"),
    local_port=80,
    remote_addr=addr_to_int("10.7.0.1"),
    remote_port=40000,
)


def test_version_and_checksum_info(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ustack {__version__}"
    assert main(["checksum-info"]) == 0
    out = capsys.readouterr().out
    assert "implementation: " in out and "reason: " in out


def test_services_parse_with_default_and_explicit_ports() -> None:
    assert parse_services("echo,http:8080") == [("echo", 7), ("http", 8080)]
    assert parse_services(" discard , chargen ") == [("discard", 9), ("chargen", 19)]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("gopher", "unknown service"),
        ("http:0", "bad port"),
        ("http:99999", "bad port"),
        ("echo:80,http", "already in use"),
        (",", "no services"),
    ],
)
def test_bad_services_are_refused_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_services(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--mtu", "100"],
        ["serve", "--address", "10.7.0.300"],
        ["serve", "--loss", "150"],
        ["serve", "--bogus"],
        ["serve", "--offload", "maybe"],
        ["demo", "--offload", "yes"],
        ["serve", "--busy-poll", "20000"],
        ["serve", "--busy-poll", "-5"],
        ["serve", "--busy-poll", "0.5"],
        ["frobnicate"],
    ],
)
def test_usage_errors_are_one_line(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ustack", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ustack"), proc.stderr


def test_serve_options_reach_the_tcp_config() -> None:
    from ustack.cli import _tcp_config, build_parser

    args = build_parser().parse_args(["serve"])
    config = _tcp_config(args)
    assert (config.congestion, config.sack, config.timestamps) == ("cubic", True, True)
    assert config.rto_min == 0.2
    argv = "serve --congestion newreno --no-sack --no-timestamps --msl 2 --rto-min 50"
    args = build_parser().parse_args(argv.split())
    config = _tcp_config(args)
    assert (config.congestion, config.sack, config.timestamps) == ("newreno", False, False)
    assert config.msl == 2 and config.rto_min == 0.05
    assert build_parser().parse_args(["serve"]).busy_poll == 0
    assert build_parser().parse_args(["serve", "--busy-poll", "100"]).busy_poll == 100
    assert build_parser().parse_args(["serve"]).no_gso is False
    assert build_parser().parse_args(["serve", "--no-gso"]).no_gso is True


def test_serve_syn_cookies_option_reaches_the_tcp_config() -> None:
    from ustack.cli import _tcp_config, build_parser

    assert _tcp_config(build_parser().parse_args(["serve"])).syn_cookies == "auto"
    for mode in ("always", "never"):
        args = build_parser().parse_args(["serve", "--syn-cookies", mode])
        assert _tcp_config(args).syn_cookies == mode
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--syn-cookies", "sometimes"])


class FakeTun:
    """Stands in for ``TunLink.open``: records the call, reports offload as the kernel would."""

    calls: list[dict[str, Any]] = []

    def __init__(self, offload: bool, reason: str) -> None:
        self.offload, self.offload_reason, self.header_len = offload, reason, 10 if offload else 0
        self.mtu = 1500
        self.closed = False

    @classmethod
    def open(cls, name: str, **kwargs: Any) -> FakeTun:
        cls.calls.append(kwargs)
        wanted = kwargs["offload"]
        return cls(wanted != "off", "not requested" if wanted == "off" else "")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("argv", "asked", "described"),
    [
        ([], "auto", "offload: on (TSO/GRO, checksum)"),
        (["--offload", "on"], "on", "offload: on (TSO/GRO, checksum)"),
        (["--offload", "off"], "off", "offload: off (not requested)"),
        (["--loss", "1"], "off", "offload: off (fault injection works per wire packet)"),
        (["--delay", "5", "--offload", "auto"], "off",
         "offload: off (fault injection works per wire packet)"),
    ],
)  # fmt: skip
def test_serve_asks_for_offload_unless_faults_are_injected(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], asked: str, described: str
) -> None:
    from ustack.cli import _build_link, build_parser
    from ustack.link import tun

    monkeypatch.setattr(tun, "TunLink", FakeTun)
    monkeypatch.setattr(FakeTun, "calls", [])
    args = build_parser().parse_args(["serve", *argv])
    link, text = _build_link(args)
    assert [call["offload"] for call in FakeTun.calls] == [asked]
    assert text == described
    if "fault" in described:
        assert type(link).__name__ == "FaultyLink"  # the injector sits on a plain device


def test_offload_on_with_fault_injection_is_a_one_line_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ustack", "serve", "--offload", "on", "--reorder", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("ustack: error: --offload on cannot be combined with")
    assert "fault injection works per wire packet" in proc.stderr


def test_offload_defaults_to_auto_for_serve_and_demo() -> None:
    from ustack.cli import build_parser

    assert build_parser().parse_args(["serve"]).offload == "auto"
    assert build_parser().parse_args(["demo"]).offload == "auto"
    assert build_parser().parse_args(["demo", "--offload", "off"]).offload == "off"


def test_demo_can_show_every_segments_timestamps() -> None:
    from ustack.cli import build_parser

    assert build_parser().parse_args(["demo"]).timestamps is False
    assert build_parser().parse_args(["demo", "--timestamps"]).timestamps is True


def test_text_trace_line_names_both_ends_and_the_transition() -> None:
    out = io.StringIO()
    tracer = _Tracer("text", out)
    tracer(CONN, "state", {"from": State.SYN_RECEIVED, "to": State.ESTABLISHED, "trigger": "x"})
    tracer(CONN, "retransmit", {"seq": 1234, "len": 1460, "fin": False})
    first, second = out.getvalue().splitlines()
    assert first.endswith("10.7.0.2:80 <-> 10.7.0.1:40000 SYN-RECEIVED -> ESTABLISHED")
    # This connection object has no iss: the sequence number is printed as given.
    assert second.endswith("retransmit seq=1234 len=1460")


def test_json_trace_lines_are_self_describing() -> None:
    out = io.StringIO()
    tracer = _Tracer("json", out)
    tracer(CONN, "state", {"from": State.FIN_WAIT_2, "to": State.TIME_WAIT, "trigger": "rcv_fin"})
    record = json.loads(out.getvalue())
    assert record["event"] == "state"
    assert (record["from"], record["to"]) == ("FIN-WAIT-2", "TIME-WAIT")
    assert (record["local"], record["remote"]) == ("10.7.0.2:80", "10.7.0.1:40000")


ISS = 0xFFFFFF00  # near the wrap, so relative numbers must be taken modulo 2**32
TRACED = SimpleNamespace(**vars(CONN), iss=ISS, irs=7000)


def our(rel: int) -> int:
    """An absolute sequence number of our own data, ``rel`` bytes after the ISS."""
    return (ISS + rel) & 0xFFFFFFFF


class Trigger(Enum):
    """Stands in for the core's trigger enum: only its string ``.value`` matters here."""

    RCV_SYN_ACK = "rcv_syn_ack"


ESTABLISHED_DETAIL = {
    "from": State.SYN_SENT,
    "to": State.ESTABLISHED,
    "trigger": Trigger.RCV_SYN_ACK,
    "options": {"mss": 1460, "wscale": None, "sack": True, "timestamps": False},
}

# Every kind the connection emits, with the text line's ending for it.
EVENTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "state",
        ESTABLISHED_DETAIL,
        "SYN-SENT -> ESTABLISHED (mss 1460, wscale off, sack on, timestamps off)",
    ),
    (
        "retransmit",
        {"seq": our(1449), "len": 1448, "fin": False, "syn": False, "reason": "rack"},
        "retransmit seq=1449 len=1448 reason=rack",
    ),
    (
        "retransmit",
        {"seq": ISS, "len": 0, "fin": False, "syn": True, "reason": "syn"},
        "retransmit seq=0 len=0 syn reason=syn",
    ),
    (
        "retransmit",
        {"seq": our(2897), "len": 0, "fin": True, "syn": False, "reason": "rto"},
        "retransmit seq=2897 len=0 fin reason=rto",
    ),
    (
        "recovery",
        {"event": "enter", "cwnd": 14480, "ssthresh": 14480, "pipe": 20272, "reason": "dupthresh"},
        "recovery enter reason=dupthresh cwnd=14480 ssthresh=14480 pipe=20272",
    ),
    ("rto", {"rto": 0.4125, "backoff": 2, "cwnd": 1448}, "rto 0.412s backoff=2 cwnd=1448"),
    (
        "tlp",
        {"seq": our(4345), "len": 1448, "new_data": True},
        "tlp seq=4345 len=1448 (new data)",
    ),
    (
        "tlp",
        {"seq": our(2897), "len": 1448, "new_data": False},
        "tlp seq=2897 len=1448 (last segment again)",
    ),
    (
        "sack",
        {"blocks": [[our(2897), our(4345)], [our(5793), our(7241)]], "dsack": False, "ack": our(1)},
        "sack ack=1 blocks 2897-4345 5793-7241",
    ),
    (
        "sack",
        {"blocks": [[our(1449), our(2897)], [our(2897), our(4345)]], "dsack": True, "ack": our(1)},
        "sack ack=1 blocks 1449-2897 2897-4345 (dsack)",
    ),
    ("frobnicate", {"knob": 3, "parts": [1, 2]}, "frobnicate knob=3 parts=[1, 2]"),
]


@pytest.mark.parametrize(("kind", "detail", "text"), EVENTS, ids=[e[2] for e in EVENTS])
def test_text_trace_prints_each_kind_on_one_readable_line(
    kind: str, detail: dict[str, Any], text: str
) -> None:
    out = io.StringIO()
    _Tracer("text", out)(TRACED, kind, detail)
    line = out.getvalue()
    assert line.count("\n") == 1
    assert line.rstrip("\n").endswith(f" 10.7.0.2:80 <-> 10.7.0.1:40000 {text}")


@pytest.mark.parametrize(("kind", "detail", "_text"), EVENTS, ids=[e[2] for e in EVENTS])
def test_json_trace_keeps_the_detail_as_given(
    kind: str, detail: dict[str, Any], _text: str
) -> None:
    out = io.StringIO()
    _Tracer("json", out)(TRACED, kind, detail)
    line = out.getvalue()
    assert line.count("\n") == 1
    record = json.loads(line)
    assert list(record) == sorted(record)
    assert (record["event"], record["local"], record["remote"]) == (
        kind,
        "10.7.0.2:80",
        "10.7.0.1:40000",
    )
    assert isinstance(record["time"], float)
    assert record["v"] == 1  # the schema version of docs/trace-schema.md, as ustack trace's
    common = ("v", "time", "local", "remote", "event")
    detail_keys = {k: v for k, v in record.items() if k not in common}
    # Absolute numbers, lists as lists, enums as their values; a detail key named like one of
    # the record's own is prefixed with the event.
    expected = {
        (f"{kind}_{k}" if k == "event" else k): (v.value if isinstance(v, Enum) else v)
        for k, v in detail.items()
    }
    assert detail_keys == expected


def test_json_trace_of_recovery_keeps_both_events() -> None:
    out = io.StringIO()
    detail = {"event": "undo", "cwnd": 2896, "ssthresh": 1448, "pipe": 0, "reason": "dsack"}
    _Tracer("json", out)(TRACED, "recovery", detail)
    record = json.loads(out.getvalue())
    assert (record["event"], record["recovery_event"]) == ("recovery", "undo")


def test_json_trace_of_established_shows_the_negotiated_options() -> None:
    out = io.StringIO()
    _Tracer("json", out)(TRACED, "state", ESTABLISHED_DETAIL)
    record = json.loads(out.getvalue())
    assert (record["from"], record["to"], record["trigger"]) == (
        "SYN-SENT",
        "ESTABLISHED",
        "rcv_syn_ack",
    )
    assert record["options"] == {"mss": 1460, "wscale": None, "sack": True, "timestamps": False}


def test_text_trace_of_a_detail_it_cannot_read_falls_back_to_key_value() -> None:
    # The tracer runs inside the connection's packet processing: it must not raise.
    out = io.StringIO()
    _Tracer("text", out)(TRACED, "sack", {"ack": our(1), "blocks": "garbled"})
    assert out.getvalue().rstrip("\n").endswith(f"sack ack={our(1)} blocks=garbled")
