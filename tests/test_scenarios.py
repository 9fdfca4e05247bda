"""``ustack demo SCENARIO``: the virtual-time scenarios (two ustack hosts, no root) draw their
defining segments and states; ``--list`` and a bad name. The kernel scenarios are tested in
tests/tun/test_scenarios_tun.py.

Ladders are compared by their defining lines (which arrows, which states, on which side), not
by their times -- except the SYN,ACK back-off, whose doubling intervals *are* the scenario; they
come from the virtual clock, so they are exact.
"""

from __future__ import annotations

import re

import pytest

from ustack import scenarios
from ustack.cli import main
from ustack.scenarios import Options

# A state row: nothing between the lifelines, the state on the left (peer) or right (ustack).
_STATE = re.compile(r"^\s*[\d.]+m?s\s+(?P<left>[A-Z12-]*) \|\s+\|(?: (?P<right>[A-Z12-]+))?$")
INBOUND_ARROW = "->|"  # left -> right
OUTBOUND_ARROW = "|<-"  # right -> left

VIRTUAL = [name for name, s in scenarios.SCENARIOS.items() if s.peer == scenarios.PEER_USTACK]


async def run(name: str, **options: float) -> str:
    report = await scenarios.SCENARIOS[name].run(Options(**options))  # type: ignore[arg-type]
    assert report.ok, report.text()
    return report.text()


def left_states(text: str) -> list[str]:
    return [m["left"] for line in text.splitlines() if (m := _STATE.match(line)) and m["left"]]


def right_states(text: str) -> list[str]:
    return [m["right"] for line in text.splitlines() if (m := _STATE.match(line)) and m["right"]]


def arrows(text: str, direction: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if direction in line and re.search(pattern, line)]


def test_every_required_scenario_is_registered_and_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    required = [
        "handshake",
        "close",
        "simultaneous-close",
        "simultaneous-open",
        "time-wait",
        "syn-ack-retries",
        "rst",
        "keepalive",
        "half-close",
        "loss",
        "zero-window",
        "syn-flood",
        "arp",
    ]
    assert list(scenarios.SCENARIOS) == required
    assert main(["demo", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in required:
        line = next(line for line in lines if line.startswith(name + " "))
        # a description on the same line, and the peer it runs against
        assert len(line.split()) > 3, line
        assert line.split()[1] == scenarios.SCENARIOS[name].peer


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown scenario 'no-such-scenario'" in err and "--list" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "loss", "--ipv6"],
        ["demo", "loss", "--size", "10"],
        ["demo", "--time-scale", "0.5"],
        ["demo", "loss", "--time-scale", "0"],
        ["demo", "loss", "--time-scale", "fast"],
    ],
)
def test_options_that_do_not_apply_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) if argv[-1] in ("0", "fast") else _no_exit():
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ustack demo: error:") and err.count("\n") == 1


class _no_exit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        scenarios.register("loss", "again", scenarios.PEER_USTACK, scenarios.SCENARIOS["loss"].run)


async def test_simultaneous_open_both_sides_syn_sent_then_syn_received() -> None:
    text = await run("simultaneous-open")
    # Both sides' real states: each sends a SYN from SYN-SENT, receives the other's, and goes
    # to SYN-RECEIVED; nobody listens.
    for states in (left_states(text), right_states(text)):
        assert states[:3] == ["SYN-SENT", "SYN-RECEIVED", "ESTABLISHED"]
    assert "LISTEN" not in left_states(text) + right_states(text)
    assert len(arrows(text, INBOUND_ARROW, r" S   seq=0 ")) == 1
    assert len(arrows(text, OUTBOUND_ARROW, r" S   seq=0 ")) == 1
    assert len(arrows(text, INBOUND_ARROW, r" S\.  seq=0 ack=1 ")) == 1
    assert len(arrows(text, OUTBOUND_ARROW, r" S\.  seq=0 ack=1 ")) == 1
    assert "RFC 9293 3.5" in text


async def test_simultaneous_close_both_sides_closing_then_time_wait() -> None:
    text = await run("simultaneous-close")
    for states in (left_states(text), right_states(text)):
        assert states[-4:] == ["FIN-WAIT-1", "CLOSING", "TIME-WAIT", "CLOSED"]
    assert len(arrows(text, INBOUND_ARROW, r" F\.  ")) == 1
    assert len(arrows(text, OUTBOUND_ARROW, r" F\.  ")) == 1
    assert "3.6" in text


async def test_syn_ack_retries_double_from_one_second() -> None:
    text = await run("syn-ack-retries")
    synacks = arrows(text, OUTBOUND_ARROW, r" S\.  seq=0 ack=1 ")
    assert len(synacks) == 6
    assert sum("retransmission" in line for line in synacks) == 5
    assert "intervals 1, 2, 4, 8, 16 s" in text
    assert left_states(text) == ["SYN-SENT"]  # the silent client never answers
    assert right_states(text)[-2:] == ["SYN-RECEIVED", "CLOSED"]  # given up
    assert "RFC 6298" in text and "3.8.1" in text


def test_syn_ack_retries_time_scale_is_applied_and_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "syn-ack-retries", "--time-scale", "0.1", "--no-uvloop"]) == 0
    text = capsys.readouterr().out
    assert "intervals 0.1, 0.2, 0.4, 0.8, 1.6 s" in text
    assert "Timers scaled by 0.1 (--time-scale)" in text


async def test_keepalive_probes_answered_then_unanswered_then_reset() -> None:
    text = await run("keepalive")
    probes = arrows(text, OUTBOUND_ARROW, r"keep-alive probe")
    assert len(probes) == 4  # one answered, three unanswered
    lines = text.splitlines()
    first = lines.index(probes[0])
    assert INBOUND_ARROW in lines[first + 1]  # the live client's ACK
    assert arrows(text, OUTBOUND_ARROW, r" R\.? ")
    assert right_states(text)[-1] == "CLOSED"
    assert left_states(text)[-1] == "ESTABLISHED"  # half-open: the client never learns
    assert "3.8.4" in text


async def test_loss_is_repaired_by_fast_retransmit_with_sack() -> None:
    text = await run("loss")
    lost = arrows(text, OUTBOUND_ARROW, r"lost")
    assert len(lost) == 1
    seq = re.search(r"seq=(\d+)", lost[0])
    assert seq is not None
    lines = text.splitlines()
    # duplicate ACKs for the hole, with SACK blocks above it (on the arrow or the note line)
    dupacks = [
        i
        for i, line in enumerate(lines)
        if INBOUND_ARROW in line
        and f"ack={seq[1]} " in line
        and ("sack" in line or "sack" in lines[i + 1])
    ]
    assert len(dupacks) >= 3
    assert "loss recovery entered (dupthresh)" in text
    rtx = [
        i
        for i, line in enumerate(lines)
        if OUTBOUND_ARROW in line and f"seq={seq[1]} " in line and "lost" not in line
    ]
    assert len(rtx) == 1 and "retransmission" in lines[rtx[0]] + lines[rtx[0] + 1]
    assert rtx[0] > dupacks[2]  # after the third duplicate ACK, not a timeout
    assert "RFC 6675" in text and "RFC 2018" in text


async def test_zero_window_persist_probes_then_window_update() -> None:
    text = await run("zero-window")
    assert len(arrows(text, INBOUND_ARROW, r"win=0 .*window closed")) == 1
    lines = text.splitlines()
    probes = [i for i, line in enumerate(lines) if "zero-window probe" in line]
    assert len(probes) >= 3
    assert all("len=1" in lines[i - 1] or "len=1" in lines[i] for i in probes)
    update = arrows(text, INBOUND_ARROW, r"window update")
    assert len(update) == 1 and lines.index(update[0]) > probes[-1]
    assert "3.8.6.1" in text


async def test_syn_flood_cookie_syn_ack_and_established_from_it() -> None:
    text = await run("syn-flood")
    cookie = arrows(text, OUTBOUND_ARROW, r" S\.  seq=0 ack=1 .*cookie")
    assert len(cookie) == 1
    # Stateless until the ACK: the server goes from LISTEN straight to ESTABLISHED.
    assert right_states(text)[:2] == ["LISTEN", "ESTABLISHED"]
    assert "SYN-RECEIVED" not in right_states(text)
    # Only the real client is drawn: the spoofed sources are summarised.
    assert "198.51.100" not in text.split("\n\n")[0]
    assert "syncookies_accepted=1" in text
    assert "RFC 4987" in text


def test_every_virtual_scenario_has_a_test() -> None:
    tested = {
        "simultaneous-open",
        "simultaneous-close",
        "syn-ack-retries",
        "keepalive",
        "loss",
        "zero-window",
        "syn-flood",
    }
    assert set(VIRTUAL) == tested
