"""Random and mutated segments, timer jumps and application calls, in every state: the machine
never raises for peer input, and its invariants hold after every step."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tcp import kit
from tests.tcp.kit import ACK, FIN, PSH, RST, SYN, URG
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.tcp.state import State
from ustack.wire import seq as sq
from ustack.wire import tcp as wt

CONFIG = dict(recv_buffer=8192, send_buffer=8192, max_ooo_segments=8, mss=536)

controls = st.sampled_from([0, SYN, FIN, RST])
extra = st.sampled_from([0, ACK, ACK | PSH, ACK | URG, PSH])
near = st.integers(-70000, 70000)
options = st.one_of(
    st.just(b""),
    st.builds(
        lambda m, w: wt.TcpOptions(mss=m, wscale=w),
        st.one_of(st.none(), st.integers(0, 65535)),
        st.one_of(st.none(), st.integers(0, 20)),
    ),
)


@st.composite
def segment_step(draw: st.DrawFn) -> tuple[str, Any]:
    return (
        "seg",
        dict(
            flags=draw(controls) | draw(extra),
            seq_near=draw(st.one_of(near, st.just(0), st.just(-1))),
            seq_random=draw(st.one_of(st.none(), st.integers(0, 2**32 - 1))),
            ack_near=draw(st.one_of(near, st.just(0), st.just(1))),
            ack_random=draw(st.one_of(st.none(), st.integers(0, 2**32 - 1))),
            window=draw(st.one_of(st.integers(0, 65535), st.just(0))),
            payload=draw(st.binary(max_size=1200)),
            urgent=draw(st.integers(0, 65535)),
            options=draw(options),
        ),
    )


app_step = st.one_of(
    st.tuples(st.just("send"), st.binary(max_size=3000)),
    st.tuples(st.just("read"), st.integers(-1, 5000)),
    st.tuples(st.just("time"), st.floats(0.0, 200.0)),
    st.tuples(st.just("deadline"), st.none()),
    st.tuples(st.just("call"), st.sampled_from(["shutdown", "close", "abort", "nodelay", "ka"])),
)
steps = st.lists(st.one_of(segment_step(), segment_step(), app_step), max_size=40)


def check_invariants(c: Connection) -> None:
    assert sq.le(c.snd_una, c.snd_nxt) and sq.le(c.snd_nxt, c.snd_max)
    # the scoreboard covers exactly SND.UNA..SND.NXT and its byte counts add up
    c.recovery.board.check(c.snd.una, c.snd.nxt)
    assert 0 <= c.pipe <= c.snd.flight
    assert c.readable + c.ooo_bytes <= c.config.recv_buffer
    assert c.ooo_pieces <= c.config.max_ooo_segments
    assert c.send_queued <= c.config.send_buffer
    assert 0 <= c.rcv_wnd <= c.config.recv_buffer
    d = c.next_deadline()
    assert d is None or d >= 0
    if c.state is State.CLOSED:
        assert d is None


def run(c: Connection, s: kit.Script, plan: list[tuple[str, Any]]) -> None:
    now = s.now
    for kind, arg in plan:
        if kind == "seg":
            seq = arg["seq_random"]
            if seq is None:
                seq = c.rcv_nxt + arg["seq_near"]
            ack = arg["ack_random"]
            if ack is None:
                ack = c.snd_una + arg["ack_near"]
            segment = kit.seg(
                seq=seq,
                ack=ack,
                flags=arg["flags"],
                window=arg["window"],
                payload=arg["payload"],
                urgent=arg["urgent"],
                options=arg["options"],
            )
            c.receive(segment, now)
        elif kind == "send":
            try:
                c.send(arg)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "read":
            c.read(arg)
        elif kind == "time":
            now += arg
            d = c.next_deadline()
            if d is not None and d <= now:
                c.on_deadline(now)
        elif kind == "deadline":
            d = c.next_deadline()
            if d is not None:
                now = max(now, d)
                c.on_deadline(now)
        elif arg == "nodelay":
            c.set_nodelay(True)
        elif arg == "ka":
            c.set_keepalive(True, idle=5.0, interval=1.0, count=2)
        else:
            getattr(c, arg)(now)
        for o in c.segments_to_send(now):
            assert 0 <= o.window <= 0xFFFF
            kit.wire(c, o)  # every output can be put on the wire
        while c.next_event() is not None:
            pass
        check_invariants(c)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(state=st.sampled_from(list(State)), plan=steps)
def test_random_input_in_every_state(state: State, plan: list[tuple[str, Any]]) -> None:
    s = kit.FIXTURES[state](TcpConfig(**CONFIG))  # type: ignore[arg-type]
    check_invariants(s.conn)
    run(s.conn, s, plan)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    data=st.data(),
    state=st.sampled_from([State.ESTABLISHED, State.FIN_WAIT_1, State.CLOSE_WAIT]),
)
def test_mutated_real_segments(data: st.DataObject, state: State) -> None:
    """Segments a real peer would send, with one field nudged."""
    s = kit.FIXTURES[state](TcpConfig(**CONFIG))  # type: ignore[arg-type]
    c = s.conn
    c_send = c.send if state is not State.FIN_WAIT_1 else None
    if c_send:
        c_send(b"q" * 3000)
        s.out()
    for _ in range(20):
        fields = dict(
            flags=ACK | data.draw(st.sampled_from([0, 0, PSH, FIN, SYN, RST, URG])),
            seq=s.seq + data.draw(st.sampled_from([0, 0, 1, -1, 536, 8192, -8192, 2**31])),
            ack=c.snd_una + data.draw(st.sampled_from([0, 1, 536, -1, 3000, -70000, 2**31])),
            window=data.draw(st.sampled_from([0, 1, 100, 1024, 65535])),
            payload=b"m" * data.draw(st.sampled_from([0, 1, 100, 536, 1000])),
        )
        flags = fields["flags"]
        if flags & SYN and fields["payload"]:
            fields["payload"] = b""
        c.receive(kit.seg(**fields), s.now)  # type: ignore[arg-type]
        if data.draw(st.booleans()):
            s.now += data.draw(st.sampled_from([0.0, 0.04, 0.3, 5.0]))
            if (d := c.next_deadline()) is not None and d <= s.now:
                c.on_deadline(s.now)
        for o in c.segments_to_send(s.now):
            kit.wire(c, o)
        check_invariants(c)
