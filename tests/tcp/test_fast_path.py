"""Header prediction (the ESTABLISHED fast path) is proven equal to the general path.

DESIGN rule 16: two connections that differ only in ``TcpConfig.header_prediction`` are fed the
same generated input -- in-order data of many sizes, pure ACKs of new data, duplicate ACKs,
window changes, out-of-order and old data, old and new timestamps, SACK blocks, URG, FIN,
occasional RST and SYN, application sends and reads, and timers firing as virtual time passes
-- and after every step their whole TCB (every attribute of the connection and its parts,
walked generically), timers, counters, events and emitted segments must be identical. The
fast-path counters are the one difference allowed, and they must show the fast path ran.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Callable
from enum import Enum
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, PSH, RST, SYN, URG, Script
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.recovery import LossState
from ustack.tcp.state import State
from ustack.wire import seq as sq
from ustack.wire import tcp as wt

FAST_COUNTERS = ("tcp_fast_path_acks", "tcp_fast_path_data")
# Attributes that hold no state of the TCB: settings (they differ on purpose), the shared
# counters (compared on their own), hooks.
_SKIP = frozenset({"config", "stats", "on_change", "_tracer", "trace"})

# ---------------------------------------------------------------- snapshots


def state_of(obj: Any, seen: dict[int, str], path: str = "conn") -> Any:
    """Every value reachable from ``obj``, as plain comparable data. An object met a second
    time (the sender's ``rcv`` is the connection's ``rcv``) is named by its first path."""
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return obj
    if isinstance(obj, Enum):
        return (type(obj).__name__, obj.value)
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, set | frozenset):
        return sorted(repr(state_of(x, seen, path)) for x in obj)
    if isinstance(obj, list | tuple | deque):
        return [state_of(x, seen, f"{path}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, dict | OrderedDict):
        return [
            (state_of(k, seen, f"{path}.key"), state_of(v, seen, f"{path}[{i}]"))
            for i, (k, v) in enumerate(obj.items())
        ]
    if callable(obj) and not hasattr(obj, "__slots__"):
        return f"<callable {getattr(obj, '__qualname__', type(obj).__name__)}>"
    if id(obj) in seen:
        return f"<same as {seen[id(obj)]}>"
    seen[id(obj)] = path
    names: list[str] = []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    names += list(getattr(obj, "__dict__", {}))
    out: dict[str, Any] = {"__type__": type(obj).__name__}
    for name in sorted(set(names)):
        if name in _SKIP or name.startswith("__") or not hasattr(obj, name):
            continue
        out[name] = state_of(getattr(obj, name), seen, f"{path}.{name}")
    return out


def counters(c: Connection) -> dict[str, int]:
    d = c.stats.as_dict()
    for name in FAST_COUNTERS:
        del d[name]
    return d


def event_values(c: Connection) -> list[tuple[Any, ...]]:
    out = []
    while (ev := c.next_event()) is not None:
        fields = dataclasses.fields(ev)
        out.append((type(ev).__name__, *(getattr(ev, f.name) for f in fields if f.name != "conn")))
    return out


def output(c: Connection, now: float) -> list[tuple[Any, ...]]:
    return [
        (o.seq, o.ack, o.flags, o.window, o.options, bytes(o.payload))
        for o in c.segments_to_send(now)
    ]


def snapshot(c: Connection) -> dict[str, Any]:
    return {
        "tcb": state_of(c, {}),
        "timers": c.timers,
        "next_deadline": c.next_deadline(),
        "stats": counters(c),
    }


# ---------------------------------------------------------------- the plan


MSS = 1448  # the effective MSS with timestamps; sizes around it matter
sizes = st.one_of(
    st.sampled_from([1, 100, 535, 536, MSS - 1, MSS, 1460, 2 * MSS]), st.integers(1, 3000)
)
# Weighted towards what the fast path takes, so that it is exercised next to its neighbours.
ack_modes = st.sampled_from(["una", "una", "una", "advance", "all", "beyond", "old", "too_old"])
pure_ack_modes = st.sampled_from(["advance", "advance", "all", "all", "una", "beyond", "old"])
win_modes = st.sampled_from(["same", "same", "same", "same", "other", "zero", "small"])
ts_modes = st.sampled_from(["now", "now", "now", "now", "same", "old", "future", "none"])

_UNUSUAL = {
    "kind": st.sampled_from(
        ["data", "ack", "ooo"] * 3
        + ["old", "urg", "urg", "syn", "no_ack", "ooo_fin"]
        + ["fin", "fin_data", "rst"]
    ),
    "size": sizes,
    "ack_mode": ack_modes,
    "pure_ack_mode": pure_ack_modes,
    "frac": st.floats(0.0, 1.0),
    "win": win_modes,
    "other_win": st.integers(0, 65535),
    "ts": ts_modes,
    "ts_delta": st.integers(1, 2**20),
    "offset": st.integers(1, 20000),
    "sack": st.sampled_from([False, False, False, True]),
    "psh": st.booleans(),
    "rst_at": st.sampled_from(["rcv_nxt", "in_window", "in_window"]),
}
# What the fast path is for: in-order data and ACKs of new data with nothing else going on
# (which may still miss it: a window that turned out full, nothing in flight to ACK, ...).
_USUAL = {
    **_UNUSUAL,
    "kind": st.sampled_from(["data", "ack"]),
    "ack_mode": st.just("una"),
    "pure_ack_mode": st.sampled_from(["advance", "advance", "all"]),
    "frac": st.floats(0.05, 1.0),
    "win": st.just("same"),
    "ts": st.just("now"),
    "sack": st.just(False),
}
segment_step = st.tuples(
    st.just("seg"), st.one_of(st.fixed_dictionaries(_USUAL), st.fixed_dictionaries(_UNUSUAL))
)
app_step = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 40000)),
    st.tuples(st.just("read"), st.sampled_from([-1, -1, 1, 100, 5000])),
    st.tuples(st.just("time"), st.sampled_from([0.0, 0.001, 0.01, 0.039, 0.04, 0.2, 1.0, 30.0])),
    st.tuples(st.just("deadline"), st.none()),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("call"), st.sampled_from(["nodelay", "keepalive"] * 2 + ["shutdown"])),
)
send_step = st.tuples(st.just("send"), st.sampled_from([100, 1448, 3000, 10000, 40000]))
# (one_of would flatten and deduplicate its branches: weights are drawn explicitly)
_STEP_KINDS = {"seg": segment_step, "send": send_step, "app": app_step}
steps = st.lists(
    st.sampled_from(["seg"] * 6 + ["send", "send", "app", "app"]).flatmap(_STEP_KINDS.__getitem__),
    min_size=10,
    max_size=80,
)

Fixture = Callable[[TcpConfig], Script]
# The peer's choice of options and our settings: the fast path must be equal in each.
SETUPS: dict[str, tuple[Fixture, dict[str, Any]]] = {
    "sack+ts": (lambda cfg: kit.established_full(cfg), {}),
    "sack+ts small buffer": (
        lambda cfg: kit.established_full(cfg),
        {"recv_buffer": 6000, "max_ooo_segments": 4},
    ),
    "sack+ts quick ack, nodelay, keepalive": (
        lambda cfg: kit.established_full(cfg),
        {"delayed_ack": 0.0, "nagle": False, "keepalive": True, "keepalive_idle": 5.0},
    ),
    "sack+ts newreno, no rack": (
        lambda cfg: kit.established_full(cfg),
        {"congestion": "newreno", "rack": False, "tlp": False},
    ),
    "sack only": (
        lambda cfg: kit.established_full(cfg, opts=wt.TcpOptions(mss=1460, sack_permitted=True)),
        {},
    ),
    "no options": (lambda cfg: kit.established(cfg, opts=wt.TcpOptions(mss=1460)), {}),
    "wscale only, user timeout": (lambda cfg: kit.established(cfg), {"user_timeout": 3.0}),
    "ts only": (
        lambda cfg: kit.established_full(
            cfg, opts=wt.TcpOptions(mss=1460, wscale=7, timestamps=(kit.TSVAL0, 0))
        ),
        {},
    ),
}


def seg_step(kind: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    """A segment step for a hand-written plan: the predictable values unless changed."""
    p = {
        "kind": kind,
        "size": 100,
        "ack_mode": "una",
        "pure_ack_mode": "all",
        "frac": 1.0,
        "win": "same",
        "other_win": 0,
        "ts": "now",
        "ts_delta": 1,
        "offset": 1,
        "sack": False,
        "psh": False,
        "rst_at": "rcv_nxt",
    }
    return "seg", {**p, **changes}


class Twin:
    """The reference connection (header prediction off) and the one under test (on), driven
    by one plan. Segments are computed from the reference's state, which the other shares."""

    def __init__(self, setup: str) -> None:
        fixture, settings_ = SETUPS[setup]
        self.slow_s = fixture(TcpConfig(header_prediction=False, **settings_))
        self.fast_s = fixture(TcpConfig(header_prediction=True, **settings_))
        self.slow = self.slow_s.conn
        self.fast = self.fast_s.conn
        self.now = self.slow_s.now
        self.peer_window = self.slow_s.window
        self.ts = self.slow_s.timestamps
        self.echo = self.slow_s.ts_echo
        self.compare("setup")

    def compare(self, what: str) -> None:
        a, b = snapshot(self.slow), snapshot(self.fast)
        assert a == b, what
        assert event_values(self.slow) == event_values(self.fast), what

    def flush(self, what: str) -> None:
        sent = output(self.slow, self.now)
        assert sent == output(self.fast, self.now), what
        for o in sent:
            if o[4].timestamps is not None:
                self.echo = o[4].timestamps[0]  # the peer echoes our latest TSval

    def peer_tsval(self) -> int:
        return (kit.TSVAL0 + round(self.now * kit.PEER_TS_HZ)) & sq.MASK

    def make(self, p: dict[str, Any]) -> wt.TcpSegment:
        c = self.slow
        kind = p["kind"]
        una, nxt, smax = c.snd_una, c.snd_nxt, c.snd_max
        flight = sq.sub(nxt, una)
        seq = c.rcv_nxt
        payload = b""
        flags = ACK
        mode = p["pure_ack_mode"] if kind == "ack" else p["ack_mode"]
        ack = {
            "una": una,
            "advance": sq.add(una, round(flight * p["frac"])),
            "all": smax,
            "beyond": sq.add(smax, 1 + p["offset"]),
            "old": sq.add(una, -1 - round(1000 * p["frac"])),
            "too_old": sq.add(una, -c.max_snd_wnd - 1 - p["offset"]),
        }[mode]
        if kind in ("data", "fin_data", "urg", "ooo", "old", "no_ack"):
            payload = bytes([p["size"] % 251]) * p["size"]
        if kind in ("ooo", "ooo_fin"):
            seq = sq.add(seq, p["offset"])
            if kind == "ooo_fin":
                flags |= FIN
        elif kind == "old":
            seq = sq.add(seq, -p["offset"])
        elif kind in ("fin", "fin_data"):
            flags |= FIN
        elif kind == "urg":
            flags |= URG
        elif kind == "no_ack":
            flags = 0
        elif kind == "rst":
            flags = RST | ACK
            if p["rst_at"] == "in_window":
                seq = sq.add(seq, 1 + p["offset"] % max(c.rcv_wnd, 1))
        elif kind == "syn":
            flags = SYN | ACK
            seq = sq.add(seq, -1)
        if p["psh"] and payload:
            flags |= PSH
        win = {
            "same": c.snd_wnd >> c.snd_wscale,
            "other": p["other_win"],
            "zero": 0,
            "small": max((c.snd_wnd >> c.snd_wscale) - 1, 0),
        }[p["win"]]
        opts = wt.TcpOptions()
        if self.ts and p["ts"] != "none":
            recent = c.rcv.ts_recent
            tsval = {
                "now": self.peer_tsval(),
                "same": recent,
                "old": sq.add(recent, -p["ts_delta"]),
                "future": sq.add(recent, p["ts_delta"]),
            }[p["ts"]]
            opts = opts._replace(timestamps=(tsval, self.echo))
        if p["sack"] and flight > 1:
            left = sq.add(una, 1 + round((flight - 1) * p["frac"] / 2))
            opts = opts._replace(sack_blocks=((left, sq.add(left, max(flight // 4, 1))),))
        return kit.seg(seq=seq, ack=ack, flags=flags, window=win, options=opts, payload=payload)

    def step(self, kind: str, arg: Any, i: int) -> None:
        what = f"step {i}: {kind} {arg}"
        slow, fast = self.slow, self.fast
        if kind == "seg":
            segment = self.make(arg)
            slow.receive(segment, self.now)
            fast.receive(segment, self.now)
        elif kind == "send":
            for c in (slow, fast):
                if c.state in (State.ESTABLISHED, State.CLOSE_WAIT) and not c.snd.fin_queued:
                    c.send(bytes([i % 251]) * arg)
        elif kind == "read":
            assert slow.read(arg) == fast.read(arg), what
        elif kind == "time":
            self.now += arg
            self.fire()
        elif kind == "deadline":
            d = slow.next_deadline()
            if d is not None:
                self.now = max(self.now, d)
                self.fire()
        elif kind == "flush":
            self.flush(what)
        elif arg == "nodelay":
            slow.set_nodelay(True)
            fast.set_nodelay(True)
        elif arg == "keepalive":
            slow.set_keepalive(True, idle=2.0, interval=0.5, count=3)
            fast.set_keepalive(True, idle=2.0, interval=0.5, count=3)
        elif slow.state is State.ESTABLISHED:
            slow.shutdown(self.now)
            fast.shutdown(self.now)
        self.compare(what)
        # Output is usually taken at once; sometimes segments pile up into one batch first.
        if kind != "seg" or i % 3:
            self.flush(what)
            self.compare(what)

    def fire(self) -> None:
        for c in (self.slow, self.fast):
            d = c.next_deadline()
            if d is not None and d <= self.now:
                c.on_deadline(self.now)

    def warm_up(self) -> None:
        """Data in flight, the peer's window learnt, then one segment of each predicted kind --
        so every example shows the fast path taken, whatever the plan does next."""
        for c in (self.slow, self.fast):
            c.send(b"w" * 3000)
        self.flush("warm-up send")
        plan = [
            # the window the peer advertises from now on (changed: the general path)
            seg_step(
                "ack", pure_ack_mode="advance", frac=0.5, win="other", other_win=self.peer_window
            ),
            seg_step("data", size=500),
            seg_step("ack", pure_ack_mode="advance", frac=0.5),
        ]
        for i, (kind, p) in enumerate(plan):
            self.step(kind, p, -1 - i)
        assert self.fast.stats.tcp_fast_path_data == 1
        assert self.fast.stats.tcp_fast_path_acks >= 1  # the first too, if the window held


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(setup=st.sampled_from(sorted(SETUPS)), plan=steps)
# Rare turns the generator seldom takes, each next to a segment the fast path would take:
# zero-window probes went unanswered (the count restarts); text just beyond the window (it is
# trimmed); a FIN seen beyond a hole that in-order text reaches.
@example(
    setup="sack+ts",
    plan=[
        seg_step("ack", win="zero"),
        ("send", 3000),
        *[("deadline", None)] * 4,
        seg_step("data"),
        seg_step("data"),
    ],
)
@example(
    setup="sack+ts small buffer",
    plan=[*[seg_step("data", size=1448)] * 3, seg_step("data", size=1256), ("read", -1)],
)
@example(setup="sack+ts", plan=[seg_step("ooo_fin", offset=100), seg_step("data"), seg_step("ack")])
def test_fast_path_equals_general_path(setup: str, plan: list[tuple[str, Any]]) -> None:
    twin = Twin(setup)
    twin.warm_up()
    for i, (kind, arg) in enumerate(plan):
        twin.step(kind, arg, i)
    twin.flush("end")
    twin.compare("end")
    for name in FAST_COUNTERS:
        assert getattr(twin.slow.stats, name) == 0
    assert twin.fast.stats.tcp_fast_path_acks + twin.fast.stats.tcp_fast_path_data >= 2


# ---------------------------------------------------------------- taken, and not taken

D0 = kit.ISS_B + 1


def fast_hits(s: Script) -> tuple[int, int]:
    st_ = s.conn.stats
    return st_.tcp_fast_path_acks, st_.tcp_fast_path_data


@pytest.fixture
def flowing() -> Script:
    """ESTABLISHED with everything negotiated, three segments of ours in flight and the
    peer's window learnt (that first ACK changed it, so it took the general path)."""
    s = kit.established_full(TcpConfig(recv_buffer=16384))  # a window one segment can pass
    s.conn.send(b"d" * 3 * 1448)
    assert len(s.out()) == 3
    s.push(ACK, ack=s.conn.snd_una)
    assert fast_hits(s) == (0, 0)
    return s


class TestTaken:
    def test_pure_ack_of_new_data(self, flowing: Script) -> None:
        c = flowing.conn
        flowing.push(ACK, ack=c.snd_una + 1000)
        assert fast_hits(flowing) == (1, 0)
        assert c.snd_una == kit.ISS_A + 1 + 1000
        flowing.push(ACK)  # acks the rest: nothing in flight, timers stop
        assert fast_hits(flowing) == (2, 0)
        assert c.timers["retransmit"] is None

    def test_in_order_data(self, flowing: Script) -> None:
        flowing.push(ACK, payload=b"a" * 100, ack=flowing.conn.snd_una)
        assert fast_hits(flowing) == (0, 1)
        assert flowing.conn.read() == b"a" * 100

    def test_data_that_acks_our_data(self, flowing: Script) -> None:
        """Request/response traffic: the next request acknowledges the last response."""
        c = flowing.conn
        una = c.snd_una
        flowing.push(ACK, payload=b"q" * 64, ack=una + 100)
        assert fast_hits(flowing) == (0, 1)
        assert c.snd_una == una + 100
        assert c.read() == b"q" * 64

    def test_without_options(self) -> None:
        s = kit.established(opts=wt.TcpOptions(mss=1460))
        s.conn.send(b"d" * 100)
        s.out()
        s.push(ACK, payload=b"x", ack=s.conn.snd_una)
        s.push(ACK)
        assert fast_hits(s) == (1, 1)

    def test_a_burst_gets_one_ack(self, flowing: Script) -> None:
        c = flowing.conn
        for _ in range(8):
            c.receive(flowing.make(payload=b"b" * 1448, ack=c.snd_una), flowing.now)
            flowing.seq += 1448
        (ack,) = flowing.out()
        assert ack.ack == D0 + 8 * 1448 and not len(ack.payload)
        assert fast_hits(flowing) == (0, 8)

    def test_switched_off(self) -> None:
        s = kit.established_full(TcpConfig(header_prediction=False))
        s.conn.send(b"d" * 3000)
        s.out()
        s.push(ACK, ack=s.conn.snd_una)
        s.push(ACK, payload=b"a", ack=s.conn.snd_una)
        s.push(ACK)
        assert fast_hits(s) == (0, 0)


class TestNotTaken:
    """Each unusual feature sends an otherwise predictable segment down the general path."""

    @pytest.mark.parametrize(
        "change",
        [
            "window",
            "ack_beyond_snd_nxt",
            "duplicate_ack",
            "sack_block",
            "old_tsval",
            "no_timestamp",
            "urg",
            "fin",
            "rst",
            "syn",
            "seq_not_rcv_nxt",
            "mss_option",
            "in_recovery",
        ],
    )
    def test_pure_ack(self, flowing: Script, change: str) -> None:
        c = flowing.conn
        kw: dict[str, Any] = {"ack": c.snd_una + 1000}
        flags = ACK
        if change == "window":
            kw["window"] = flowing.window - 1
        elif change == "ack_beyond_snd_nxt":
            kw["ack"] = c.snd_nxt + 1
        elif change == "duplicate_ack":
            kw["ack"] = c.snd_una
        elif change == "sack_block":
            kw["sack"] = [(c.snd_una + 1448, c.snd_una + 2896)]
        elif change == "old_tsval":
            kw["tsval"] = c.rcv.ts_recent - 1
        elif change == "no_timestamp":
            kw["ts"] = False
        elif change == "urg":
            flags |= URG
            kw["urgent"] = 1
        elif change == "fin":
            flags |= FIN
        elif change == "rst":
            flags = RST | ACK
        elif change == "syn":
            flags = SYN | ACK
            kw["seq"] = D0 - 1
        elif change == "seq_not_rcv_nxt":
            kw["seq"] = D0 + 10
        elif change == "mss_option":
            kw["options"] = wt.TcpOptions(mss=1000)
        elif change == "in_recovery":
            c.recovery.state = LossState.RECOVERY
        flowing.push(flags, **kw)
        assert fast_hits(flowing) == (0, 0)

    @pytest.mark.parametrize(
        "change",
        [
            "acks_unsent_data",
            "window",
            "beyond_window",
            "out_of_order_held",
            "fin_beyond_hole",
            "old_tsval",
            "urg",
            "fin",
            "orphaned",
            "close_wait",
        ],
    )
    def test_in_order_data(self, flowing: Script, change: str) -> None:
        c = flowing.conn
        kw: dict[str, Any] = {"ack": c.snd_una, "payload": b"a" * 100}
        flags = ACK
        if change == "acks_unsent_data":
            kw["ack"] = c.snd_nxt + 1
        elif change == "window":
            kw["window"] = flowing.window + 1
        elif change == "beyond_window":
            kw["payload"] = b"a" * (c.rcv_wnd + 1)
        elif change == "out_of_order_held":
            flowing.push(ACK, seq=D0 + 5000, payload=b"z", ack=c.snd_una)
            assert c.ooo_pieces == 1
        elif change == "fin_beyond_hole":
            flowing.push(ACK | FIN, seq=D0 + 5000, ack=c.snd_una)
            assert c.rcv.ooo_fin is not None
        elif change == "old_tsval":
            kw["tsval"] = c.rcv.ts_recent - 1
        elif change == "urg":
            flags |= URG
            kw["urgent"] = 1
        elif change == "fin":
            flags |= FIN
        elif change == "orphaned":
            c.orphaned = True  # only close() sets it, and close() leaves ESTABLISHED; forced
        elif change == "close_wait":
            flowing.push(ACK | FIN, ack=c.snd_una)
            assert c.state is State.CLOSE_WAIT
        flowing.push(flags, **kw)
        assert fast_hits(flowing) == (0, 0)

    def test_pure_ack_without_negotiated_timestamps_but_carrying_one(self) -> None:
        s = kit.established(opts=wt.TcpOptions(mss=1460))
        s.conn.send(b"d" * 100)
        s.out()
        s.push(ACK, tsval=5)
        assert fast_hits(s) == (0, 0)
