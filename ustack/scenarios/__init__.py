"""Textbook TCP scenarios, each run live and drawn as a ladder: ``ustack demo SCENARIO``.

Theory of operation: the registry :data:`SCENARIOS` maps a name to a :class:`Scenario` -- a
one-line description (what ``ustack demo --list`` prints), which peer it runs against, and a
runner. A runner takes the :class:`Options` and returns a :class:`Report`: the ladder diagram
and a short explanation naming the RFC sections at work.

Two kinds of peer:

* ``kernel``: the Linux kernel's TCP through a TUN device in a private network namespace, as the
  plain ``ustack demo`` does (:mod:`ustack.scenarios.kernel`). Needs CAP_NET_ADMIN; real time.
* ``ustack``: a second ustack host on the virtual-time network of :mod:`ustack.netsim`
  (:mod:`ustack.scenarios.virtual`), for what the kernel cannot be made to do on cue (both
  sides opening or closing at one instant, a client that vanishes, a flood of spoofed SYNs).
  No privileges, no waiting: a 16 s back-off takes microseconds, and the times printed are the
  virtual ones, so the intervals are shown as they really are. Both sides' states are the
  ones the two machines recorded.

``arp`` (:mod:`ustack.scenarios.arp`) runs against the kernel over a TAP device instead of TUN,
so that there is a link layer to resolve. More scenarios are added with :func:`register`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

PEER_KERNEL = "kernel"
PEER_USTACK = "ustack"
EXPLANATION_WIDTH = 96


@dataclass(slots=True)
class Options:
    """What ``ustack demo`` passes on; each scenario uses what applies to it."""

    # Timers the scenario waits for (SYN,ACK back-off, keep-alive idle and interval, MSL) are
    # multiplied by this; the explanation says so whenever it is not 1.
    time_scale: float = 1.0
    fold: int = 4  # data segments drawn per run before the ladder folds them
    timestamps: bool = False  # draw every segment's RFC 7323 timestamps
    no_uvloop: bool = False


@dataclass(slots=True)
class Report:
    ladder: str
    explanation: str
    ok: bool = True  # False: the scenario did not go as it should (the exit status says so)

    def text(self) -> str:
        # The explanation's paragraphs are filled here, so its numbers may be any length.
        paragraphs = [" ".join(p.split()) for p in self.explanation.split("\n\n")]
        explanation = "\n\n".join(textwrap.fill(p, EXPLANATION_WIDTH) for p in paragraphs if p)
        return f"{self.ladder.rstrip()}\n\n{explanation}\n"


Runner = Callable[[Options], Coroutine[Any, Any, Report]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str  # one line
    peer: str  # PEER_KERNEL or PEER_USTACK
    run: Runner


SCENARIOS: dict[str, Scenario] = {}


def register(name: str, description: str, peer: str, run: Runner) -> None:
    """Add a scenario (in ``--list`` order); a name is registered once."""
    if name in SCENARIOS:
        raise ValueError(f"scenario {name!r} is already registered")
    if peer not in (PEER_KERNEL, PEER_USTACK):
        raise ValueError(f"peer must be {PEER_KERNEL!r} or {PEER_USTACK!r}, not {peer!r}")
    SCENARIOS[name] = Scenario(name, description, peer, run)


def listing() -> str:
    """``ustack demo --list``: a line per scenario, with the peer it runs against."""
    width = max(len(name) for name in SCENARIOS)
    lines = [f"{'SCENARIO':<{width}}  {'PEER':<6}  WHAT YOU SEE"]
    for s in SCENARIOS.values():
        lines.append(f"{s.name:<{width}}  {s.peer:<6}  {s.description}")
    lines.append("")
    lines.append("kernel: Linux's TCP over a TUN device in a private namespace (needs root);")
    lines.append("ustack: two ustack hosts on the virtual-time network (no root, no waiting).")
    return "\n".join(lines)


def _register_builtin() -> None:
    from ustack.scenarios import arp, kernel, virtual

    k, v = kernel.SCENARIOS_BY_NAME, virtual.SCENARIOS_BY_NAME
    for name, description, peer, run in (
        ("handshake", "the three-way handshake, both ways, with the SYN options", PEER_KERNEL,
         k["handshake"]),
        ("close", "the four-way close: ustack closing first, then the kernel", PEER_KERNEL,
         k["close"]),
        ("simultaneous-close", "both sides close at once: CLOSING, two TIME-WAITs", PEER_USTACK,
         v["simultaneous-close"]),
        ("simultaneous-open", "both sides send a SYN at once: four segments, no listener",
         PEER_USTACK, v["simultaneous-open"]),
        ("time-wait", "a lost last ACK: the FIN re-ACKed in TIME-WAIT; a new SYN reuses it",
         PEER_KERNEL, k["time-wait"]),
        ("syn-ack-retries", "a silent client: SYN,ACK resent at 1, 2, 4, 8, 16 s, then given up",
         PEER_USTACK, v["syn-ack-retries"]),
        ("rst", "RST for a closed port, and for a connection the peer has forgotten",
         PEER_KERNEL, k["rst"]),
        ("keepalive", "keep-alive probes, answered, then unanswered: the reset", PEER_USTACK,
         v["keepalive"]),
        ("half-close", "the kernel shuts down its sending side; ustack keeps sending",
         PEER_KERNEL, k["half-close"]),
        ("loss", "one segment lost: duplicate ACKs with SACK, fast retransmit, recovery",
         PEER_USTACK, v["loss"]),
        ("zero-window", "a receiver stops reading: zero window, persist probes, update",
         PEER_USTACK, v["zero-window"]),
        ("syn-flood", "spoofed SYNs fill a tiny SYN queue: SYN cookies, ESTABLISHED from one",
         PEER_USTACK, v["syn-flood"]),
    ):  # fmt: skip
        register(name, description, peer, run)
    # over the TAP link (ustack.link.tap), the one scenario with a layer below IP
    register("arp", arp.DESCRIPTION, PEER_KERNEL, arp.run_arp_scenario)


_register_builtin()
