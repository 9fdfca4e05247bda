"""The ``ustack`` command's own logic: argument checking and trace lines (no TUN needed)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

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
        ["frobnicate"],
    ],
)
def test_usage_errors_are_one_line(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ustack", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ustack"), proc.stderr


def test_text_trace_line_names_both_ends_and_the_transition() -> None:
    out = io.StringIO()
    tracer = _Tracer("text", out)
    tracer(CONN, "state", {"from": State.SYN_RECEIVED, "to": State.ESTABLISHED, "trigger": "x"})
    tracer(CONN, "retransmit", {"seq": 1234, "len": 1460, "fin": False})
    first, second = out.getvalue().splitlines()
    assert first.endswith("10.7.0.2:80 <-> 10.7.0.1:40000 SYN-RECEIVED -> ESTABLISHED")
    assert second.endswith("retransmit seq=1234 len=1460 fin=False")


def test_json_trace_lines_are_self_describing() -> None:
    out = io.StringIO()
    tracer = _Tracer("json", out)
    tracer(CONN, "state", {"from": State.FIN_WAIT_2, "to": State.TIME_WAIT, "trigger": "rcv_fin"})
    record = json.loads(out.getvalue())
    assert record["event"] == "state"
    assert (record["from"], record["to"]) == ("FIN-WAIT-2", "TIME-WAIT")
    assert (record["local"], record["remote"]) == ("10.7.0.2:80", "10.7.0.1:40000")
