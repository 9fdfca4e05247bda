"""``ustack demo SCENARIO`` with the kernel as the peer: each scenario makes its own private
namespace and TUN device (ustack.scenarios.kernel); the test checks the defining segments and
states of its ladder, not their times."""

from __future__ import annotations

import re

import pytest

from ustack import scenarios
from ustack.scenarios import Options

from ..test_scenarios import INBOUND_ARROW, OUTBOUND_ARROW, arrows, left_states, right_states
from .conftest import needs_tun

pytestmark = [pytest.mark.tun, needs_tun]

# (arp, over TAP, is tested with the TAP link: tests/tun/test_tap.py)
KERNEL_SCENARIOS = ["handshake", "close", "time-wait", "rst", "half-close", "arp"]


async def run(name: str) -> str:
    # A short MSL: the ladders end in CLOSED without a long wait.
    report = await scenarios.SCENARIOS[name].run(Options(time_scale=0.5))
    assert report.ok, report.text()
    return report.text()


def flows(text: str) -> list[str]:
    """The ladder's diagrams, one per connection (the explanation is the last paragraphs)."""
    return [block for block in text.split("\n\n") if block.lstrip().startswith("time ")]


def test_every_kernel_scenario_has_a_test() -> None:
    kernel = [n for n, s in scenarios.SCENARIOS.items() if s.peer == scenarios.PEER_KERNEL]
    assert sorted(kernel) == sorted(KERNEL_SCENARIOS)


async def test_handshake_three_segments_both_ways() -> None:
    text = await run("handshake")
    into, out_of = flows(text)
    # the kernel opens: SYN in, SYN,ACK out, ACK in; ustack LISTEN -> SYN-RECEIVED -> ESTABLISHED
    assert right_states(into)[:3] == ["LISTEN", "SYN-RECEIVED", "ESTABLISHED"]
    assert len(arrows(into, INBOUND_ARROW, r" S   seq=0 ")) == 1
    assert len(arrows(into, OUTBOUND_ARROW, r" S\.  seq=0 ack=1 ")) == 1
    assert arrows(into, INBOUND_ARROW, r" \.   seq=1 ack=1 ")
    # ustack opens: its SYN out with its options, the kernel's SYN,ACK in
    assert right_states(out_of)[:2] == ["SYN-SENT", "ESTABLISHED"]
    assert len(arrows(out_of, OUTBOUND_ARROW, r" S   seq=0 ")) == 1
    assert len(arrows(out_of, INBOUND_ARROW, r" S\.  seq=0 ack=1 ")) == 1
    assert "<mss 1460" in out_of
    assert "RFC 9293 3.5" in text


async def test_close_each_side_first() -> None:
    text = await run("close")
    ours, theirs = flows(text)
    # ustack closes first: FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT; the kernel CLOSE-WAIT, LAST-ACK
    assert right_states(ours)[-4:] == ["FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSED"]
    assert left_states(ours)[-3:] == ["CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    # the kernel closes first: ustack CLOSE-WAIT, LAST-ACK; the kernel ends in TIME-WAIT
    assert right_states(theirs)[-3:] == ["CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    assert left_states(theirs)[-3:] == ["FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
    for flow in (ours, theirs):
        assert len(arrows(flow, INBOUND_ARROW, r" F\.? ")) == 1
        assert len(arrows(flow, OUTBOUND_ARROW, r" F\.? |FP\. ")) == 1
    assert "3.6" in text


async def test_time_wait_fin_re_acked_and_new_syn_accepted() -> None:
    text = await run("time-wait")
    (flow,) = flows(text)  # one 4-tuple, two incarnations
    lines = flow.splitlines()
    fins = [i for i, line in enumerate(lines) if INBOUND_ARROW in line and " F. " in line]
    assert len(fins) >= 3  # the first incarnation's FIN, its retransmission, the second's
    assert "retransmission" in lines[fins[1]]
    acks = [
        i
        for i, line in enumerate(lines)
        if OUTBOUND_ARROW in line
        and re.search(r" \.   seq=\d+ ack=\d+ ", line)
        and fins[0] < i < fins[1] + 2
    ]
    assert len(acks) == 2 and "lost" in lines[acks[0]] and "lost" not in lines[acks[1]]
    states = right_states(flow)
    tw = states.index("TIME-WAIT")
    # the new SYN arrives while ustack is in TIME-WAIT and starts a new incarnation
    assert states[tw + 1 : tw + 3] == ["LISTEN", "SYN-RECEIVED"]
    syns = arrows(flow, INBOUND_ARROW, r" S   seq=0 ")
    assert len(syns) == 2 and lines.index(syns[1]) > fins[1]
    assert "time_wait_reused=1" in text and "RFC 6191" in text


async def test_rst_for_a_closed_port_and_a_forgotten_connection() -> None:
    text = await run("rst")
    closed, stray, forgotten = flows(text)
    assert len(arrows(closed, INBOUND_ARROW, r" S   seq=0 ")) == 1
    assert len(arrows(closed, OUTBOUND_ARROW, r" R\.  seq=0 ack=1 ")) == 1
    assert right_states(closed) == []  # no TCB at all
    assert "ConnectionRefusedError" in text
    # data with ACK on to the closed port: answered <SEQ=SEG.ACK><CTL=RST>
    assert len(arrows(stray, INBOUND_ARROW, r" P\.  seq=1000 ack=5000 .*len=6 ")) == 1
    assert len(arrows(stray, OUTBOUND_ARROW, r" R   seq=5000 ")) == 1
    assert right_states(stray) == []
    # the kernel's abort RST lost; ustack's data answered by a RST; ustack CLOSED, no FIN
    assert len(arrows(forgotten, INBOUND_ARROW, r" R\.? .*lost")) == 1
    data = arrows(forgotten, OUTBOUND_ARROW, r" P\.  .*len=15 ")
    assert len(data) == 1
    answer = [line for line in arrows(forgotten, INBOUND_ARROW, r" R ") if "lost" not in line]
    assert len(answer) == 1
    assert forgotten.index(answer[0]) > forgotten.index(data[0])
    assert right_states(forgotten)[-2:] == ["ESTABLISHED", "CLOSED"]
    assert " F" not in forgotten
    assert "ConnectionResetError" in text and "3.10.7.1" in text


async def test_half_close_data_flows_in_close_wait() -> None:
    text = await run("half-close")
    (flow,) = flows(text)
    lines = flow.splitlines()
    states = right_states(flow)
    assert states[-3:] == ["CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    cw = next(i for i, line in enumerate(lines) if line.endswith("| CLOSE-WAIT"))
    la = next(i for i, line in enumerate(lines) if line.endswith("| LAST-ACK"))
    data = [i for i, line in enumerate(lines) if OUTBOUND_ARROW in line and "len=1000" in line]
    assert len(data) == 2 and all(cw < i < la for i in data)
    assert left_states(flow)[-2:] == ["FIN-WAIT-2", "TIME-WAIT"]
    assert "3.6" in text
