"""Scenarios with the Linux kernel's TCP as the peer, over a TUN device in a private namespace.

Each runner opens a :class:`_KernelPeer`: a new network namespace, a TUN device in it (the
kernel owns ``10.7.0.1``, ustack answers as ``10.7.0.2``, as in ``ustack demo``), a ustack
:class:`~ustack.Stack` on it whose packets and state changes feed a :class:`~ustack.ladder.Ladder`,
and kernel sockets made inside the namespace and driven from the event loop. A scenario that
needs one segment lost gives a predicate: the segment is dropped once between ustack and the
TUN device, and drawn marked ``lost``. Offloads are off, so every arrow is one wire segment.
Every wait is for an event, bounded by ``SAFETY``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from ustack.ladder import INBOUND, LOST, OUTBOUND, Ladder
from ustack.link.fault import Delivery, FaultModel
from ustack.scenarios import Options, Report
from ustack.wire import checksum, ipv4
from ustack.wire import tcp as tcpw
from ustack.wire.errors import ParseError
from ustack.wire.tcp import Control

ADDRESS = "10.7.0.2"  # ustack
KERNEL = "10.7.0.1"
# The source port of the hand-made data segment of the rst scenario: no kernel socket has it, so
# the kernel ignores ustack's RST to it (a RST is never answered, RFC 9293 3.10.7.1).
_RAW_SOURCE_PORT = 45_454
SAFETY = 20.0  # seconds: the bound on any wait; a healthy run needs a fraction of it
MSL = 1.0  # so TIME-WAIT (2*MSL) ends while you watch; --time-scale scales it

Pick = Callable[[tcpw.TcpSegment], bool]

KERNEL_PEER = """\
Peer: the Linux kernel's own TCP, through a TUN device in a private network namespace.
ustack's states are the ones its connections recorded; the kernel's are inferred from the
segments, as a textbook infers them."""


def _segment(packet: bytes | bytearray | memoryview) -> tcpw.TcpSegment | None:
    try:
        ip = ipv4.parse(packet)
        if ip.proto != ipv4.PROTO_TCP:
            return None
        return tcpw.parse(ip.payload, ip.src, ip.dst, pseudo=0, verify_checksum=False)
    except ParseError:
        return None


class _Drop(FaultModel):
    """A "fault model" that loses exactly the packets ``decide`` picks, and nothing else."""

    __slots__ = ("decide",)

    def __init__(self, decide: Callable[[bytes], bool]) -> None:
        super().__init__()
        self.decide = decide

    def apply(self, packet: bytes | bytearray | memoryview, now: float) -> list[Delivery]:
        data = bytes(packet)
        self.stats.packets += 1
        if self.decide(data):
            self.stats.dropped += 1
            return []
        self.stats.delivered += 1
        return [(now, data)]


class _KernelPeer:
    """The namespace, the TUN device, the stack and the ladder of one kernel scenario."""

    def __init__(
        self,
        opts: Options,
        *,
        msl: float = MSL,
        lose_out: Pick | None = None,
        lose_in: Pick | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.opts = opts
        self.msl = msl * opts.time_scale
        self.lose_out = lose_out
        self.lose_in = lose_in
        self.config = config or {}
        self.ladder = Ladder(max_run=opts.fold, timestamps=opts.timestamps)
        self._doomed: list[bytes] = []
        self._stack: Any = None
        self._ns: Any = None
        self.loop = asyncio.get_running_loop()

    @property
    def stack(self) -> Any:
        return self._stack

    async def __aenter__(self) -> _KernelPeer:
        import ustack
        from ustack.link.faulty import FaultyLink
        from ustack.link.netns import NetNamespace
        from ustack.link.tun import TunLink
        from ustack.tcp.config import TcpConfig

        self._ns = NetNamespace(prefix="ustack-scenario").__enter__()
        try:
            link: Any = TunLink.open(
                "ustack0",
                mtu=1500,
                address=KERNEL,
                peer=ADDRESS,
                netns=self._ns.name,
                offload="off",
            )
            if self.lose_out is not None or self.lose_in is not None:
                link = FaultyLink(link, _Drop(self._drop_out), _Drop(self._drop_in))
            # Linux-like timers: the TUN link's round trip is well under a millisecond.
            settings: dict[str, Any] = {"rto_min": 0.05, "delayed_ack": 0.005, "msl": self.msl}
            settings.update(self.config)
            self._stack = ustack.Stack(
                link,
                address=ADDRESS,
                config=TcpConfig(**settings),
                tracer=self._trace,
                on_packet=self._on_packet,
            )
            await self._stack.__aenter__()
        except BaseException:
            self._ns.__exit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._ns.__exit__(None, None, None)

    # -- what the ladder is fed ---------------------------------------------------------------

    def _on_packet(
        self, direction: str, packet: bytes | bytearray | memoryview, _now: float
    ) -> None:
        # One fine-grained clock for packets and state changes (see ustack demo).
        label = ""
        if direction == OUTBOUND and self.lose_out is not None:
            seg = _segment(packet)
            if seg is not None and self.lose_out(seg):
                self._doomed.append(bytes(packet))
                label = LOST
        self.ladder.packet(time.monotonic(), direction, packet, label=label)

    def _drop_out(self, packet: bytes) -> bool:
        if packet in self._doomed:
            self._doomed.remove(packet)
            return True
        return False

    def _drop_in(self, packet: bytes) -> bool:
        if self.lose_in is None:
            return False
        seg = _segment(packet)
        if seg is None or not self.lose_in(seg):
            return False
        # ustack never sees it, so its observer does not either: draw it here.
        self.ladder.packet(time.monotonic(), INBOUND, packet, label=LOST)
        return True

    def _trace(self, conn: Any, kind: str, detail: dict[str, Any]) -> None:
        if kind == "state":
            self.ladder.state(
                time.monotonic(),
                (conn.local_addr, conn.local_port),
                (conn.remote_addr, conn.remote_port),
                str(getattr(detail["from"], "value", detail["from"])),
                str(getattr(detail["to"], "value", detail["to"])),
            )

    # -- the kernel's side ---------------------------------------------------------------------

    def open_socket(self, *, reuse: bool = False, bind_port: int = 0) -> socket.socket:
        """A kernel TCP socket inside the namespace, non-blocking, bound to ``bind_port`` if
        given (with ``reuse``: SO_REUSEADDR first)."""

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind_port:
                sock.bind((KERNEL, bind_port))
            return sock

        sock: socket.socket = self._ns.call(make)
        sock.setblocking(False)
        return sock

    async def connect(self, port: int, **kwargs: Any) -> socket.socket:
        sock = self.open_socket(**kwargs)
        await asyncio.wait_for(self.loop.sock_connect(sock, (ADDRESS, port)), SAFETY)
        return sock

    async def read_all(self, sock: socket.socket) -> bytes:
        """Everything the kernel socket receives, up to the peer's FIN."""
        out = bytearray()
        while chunk := await asyncio.wait_for(self.loop.sock_recv(sock, 65536), SAFETY):
            out += chunk
        return bytes(out)

    async def until(self, condition: Callable[[], bool]) -> bool:
        """Poll ``condition`` (ustack's counters and connections change inside the stack,
        which has no event for them) until it holds or ``SAFETY`` runs out."""
        deadline = self.loop.time() + SAFETY
        while not condition():
            if self.loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def settle(self) -> bool:
        """Wait until ustack has no connection left (TIME-WAIT over), so the ladder ends."""
        return await self.until(lambda: not self._stack.connections())

    def send_raw_segment(self, port: int, *, seq: int, ack: int, payload: bytes) -> None:
        """A TCP data segment (ACK, PSH) from the kernel's address to ustack's ``port`` that no
        kernel connection sent: written by hand and sent on a raw socket in the namespace (the
        kernel adds the IPv4 header), as a peer that lost its state or a stray packet would."""
        length = tcpw.HEADER_LEN + len(payload)
        segment = bytearray(length)
        tcpw.emit(
            segment,
            0,
            pseudo=checksum.ipv4_pseudo_header_sum(
                ipv4.addr_to_int(KERNEL), ipv4.addr_to_int(ADDRESS), tcpw.PROTO, 0
            ),
            src_port=_RAW_SOURCE_PORT,
            dst_port=port,
            seq=seq,
            ack=ack,
            flags=tcpw.ACK | tcpw.PSH,
            window=65535,
            payload=payload,
        )

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
                raw.sendto(bytes(segment), (ADDRESS, 0))

        self._ns.call(send)

    def render(self) -> str:
        return self.ladder.render()


def _scale_note(opts: Options, msl: float) -> str:
    note = f"MSL is {msl * opts.time_scale:g} s here (RFC 9293 says 2 minutes), so TIME-WAIT lasts "
    note += f"{2 * msl * opts.time_scale:g} s"
    if opts.time_scale != 1.0:
        note += f" (timers scaled by {opts.time_scale:g}, --time-scale)"
    return note + "."


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(peer: _KernelPeer, port: int, handler: Handler) -> Any:
    import ustack

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the scenario's peer reset it: the ladder shows how
        finally:
            writer.close()

    return await ustack.start_server(guarded, port=port, stack=peer.stack)


async def handshake(opts: Options) -> Report:
    import ustack

    async with _KernelPeer(opts) as peer:

        async def until_eof(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server = await _serve(peer, 80, until_eof)
        # The kernel opens to ustack ...
        sock = await peer.connect(80)
        sock.close()
        # ... and ustack opens to the kernel.
        listening = peer.open_socket(bind_port=8080)
        listening.listen()
        _reader, writer = await asyncio.wait_for(
            ustack.open_connection(KERNEL, 8080, stack=peer.stack), SAFETY
        )
        accepted, _ = await asyncio.wait_for(peer.loop.sock_accept(listening), SAFETY)
        accepted.setblocking(False)
        writer.close()
        await peer.read_all(accepted)
        accepted.close()
        listening.close()
        ok = await peer.settle()
        server.close()
    explanation = f"""\
The three-way handshake (RFC 9293 3.5), both ways: first the kernel opens a connection to
ustack's listener, then ustack opens one to the kernel's. The SYN carries the opener's initial
sequence number (ISN, RFC 9293 3.4 and RFC 6528: unpredictable, so the ladder shows sequence
numbers relative to it) and its options: MSS (3.7.1), window scale and timestamps (RFC 7323),
SACK-permitted (RFC 2018). The SYN,ACK carries the listener's own ISN and acknowledges the SYN,
which occupies one sequence number (ack=1); the final ACK acknowledges the SYN,ACK. Three
segments are the fewest that let each side learn the other's ISN and know its own was received.
Both connections then close (3.6); {_scale_note(opts, MSL)}

{KERNEL_PEER}"""
    return Report(peer.render(), explanation, ok)


async def close(opts: Options) -> Report:
    async with _KernelPeer(opts) as peer:

        async def close_first(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye\n")
            writer.close()

        async def close_second(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until the kernel's FIN; the handler's end closes

        first = await _serve(peer, 80, close_first)
        second = await _serve(peer, 81, close_second)
        sock = await peer.connect(80)
        got = await peer.read_all(sock)  # up to ustack's FIN
        # Closing at once would put the kernel's FIN on the ACK of ustack's (three segments
        # instead of four); a moment later, its delayed ACK has gone out on its own.
        await asyncio.sleep(0.2)
        sock.close()
        sock = await peer.connect(81)
        await peer.loop.sock_sendall(sock, b"hello\n")
        sock.close()
        ok = await peer.settle() and got == b"bye\n"
        first.close()
        second.close()
    explanation = f"""\
The four-way close (RFC 9293 3.6), twice. In the first connection ustack closes first: its FIN
takes it to FIN-WAIT-1, the kernel's ACK to FIN-WAIT-2; the kernel, in CLOSE-WAIT, reads the
end of the data and closes in turn (LAST-ACK); ustack ACKs that FIN and waits in TIME-WAIT
(3.6.1) for 2*MSL before the connection is deleted. In the second connection the kernel closes
first: ustack goes to CLOSE-WAIT, where it may still send, and its application's close sends
its FIN (LAST-ACK); the kernel's ACK of it ends the connection (CLOSED) and the kernel is the
one in TIME-WAIT. Each direction is closed on its own: two FINs, two ACKs. {_scale_note(opts, MSL)}

{KERNEL_PEER}"""
    return Report(peer.render(), explanation, ok)


async def half_close(opts: Options) -> Report:
    async with _KernelPeer(opts) as peer:

        async def answer_after_eof(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.read()  # the request, up to the kernel's FIN (its half-close)
            for _ in range(2):  # ustack, in CLOSE-WAIT, still sends
                writer.write(b"x" * 1000)
                await writer.drain()
                await asyncio.sleep(0.02)  # separate segments, so each is drawn

        server = await _serve(peer, 80, answer_after_eof)
        sock = await peer.connect(80)
        await peer.loop.sock_sendall(sock, b"request\n")
        sock.shutdown(socket.SHUT_WR)  # the kernel's FIN: it will send no more, but reads on
        got = await peer.read_all(sock)
        sock.close()
        ok = await peer.settle() and len(got) == 2000
        server.close()
    explanation = f"""\
Half-close (RFC 9293 3.6 and 3.10.4, CLOSE): closing is one direction at a time. The kernel's
application sends its request and shuts down its sending side (shutdown(SHUT_WR)), which sends a
FIN; it goes to FIN-WAIT-1 and, once ustack ACKs, FIN-WAIT-2 -- where it keeps receiving. ustack's
side is in CLOSE-WAIT: it has read the end of the request and still sends its 2000-byte answer
in two segments, each ACKed by the half-closed kernel. Only then does ustack close (LAST-ACK);
the kernel ACKs that FIN and waits in TIME-WAIT. {_scale_note(opts, MSL)}

{KERNEL_PEER}"""
    return Report(peer.render(), explanation, ok)


async def rst(opts: Options) -> Report:
    lost: list[tcpw.TcpSegment] = []

    def lose_abort(seg: tcpw.TcpSegment) -> bool:
        # The kernel's RST when its application aborts: lost, so ustack never hears of it.
        if seg.control is Control.RST and seg.dst_port == 80 and not lost:
            lost.append(seg)
            return True
        return False

    refused = ""
    async with _KernelPeer(opts, lose_in=lose_abort) as peer:
        forgotten = asyncio.Event()
        outcome: list[str] = []

        async def talk_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.wait_for(forgotten.wait(), SAFETY)
            writer.write(b"are you there?\n")
            try:
                await asyncio.wait_for(reader.read(), SAFETY)
                outcome.append("EOF")
            except ConnectionResetError as exc:
                outcome.append(f"ConnectionResetError: {exc}")

        server = await _serve(peer, 80, talk_later)
        # 1. A SYN to a port nobody listens on.
        try:
            sock = await peer.connect(81)
            sock.close()
        except ConnectionRefusedError as exc:
            refused = f"ConnectionRefusedError: {exc}"
        # 1b. Data to that closed port: a segment with ACK on, answered <SEQ=SEG.ACK><CTL=RST>.
        closed_before = peer.stack.stats.rst_sent_closed_port
        peer.send_raw_segment(81, seq=1000, ack=5000, payload=b"hello?")
        data_refused = await peer.until(
            lambda: peer.stack.stats.rst_sent_closed_port > closed_before
        )
        # 2. A connection the kernel forgets: its application aborts (SO_LINGER 0 sends a RST,
        # which the link loses), so ustack still thinks it is ESTABLISHED.
        sock = await peer.connect(80)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        await peer.until(lambda: bool(lost))
        forgotten.set()
        ok = await peer.settle() and bool(refused) and bool(outcome) and data_refused
        server.close()
    explanation = f"""\
Reset (RFC 9293 3.5.2, 3.10.7.1). First the kernel sends a SYN to port 81, where ustack has no
listener: the connection is CLOSED (no TCB exists), and any segment but a RST is answered with
one -- here, as the SYN has no ACK bit, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; the kernel's
connect() fails ({refused or "no error"}).
Then data to that closed port -- a segment with the ACK bit on, made by hand and sent from a raw
socket, as a peer that lost its connection would: the answer is <SEQ=SEG.ACK><CTL=RST> (a RST
whose sequence number is the segment's acknowledgment number, so the sender can accept it); the
kernel has no connection for it and drops it, as a RST is never answered.
Then a connection the kernel has forgotten, a half-open connection (3.5.2): the kernel's
application aborts its connection, and the RST that says so is lost on the way. ustack still
sees ESTABLISHED; when it sends data, the kernel has no connection for the segment and answers
with a RST whose sequence number is the segment's acknowledgment number; ustack checks that the
RST is in its window (3.5.3, RFC 5961 3.2) and the connection goes to CLOSED at once, without a
FIN or a TIME-WAIT; its application sees {outcome[0] if outcome else "nothing"}.

{KERNEL_PEER}"""
    return Report(peer.render(), explanation, ok)


async def time_wait(opts: Options) -> Report:
    msl = 5.0
    port = 40_000
    kernel_fin: list[int] = []
    lost: list[tcpw.TcpSegment] = []

    def note_fin(seg: tcpw.TcpSegment) -> bool:
        if seg.control is Control.FIN and seg.src_port == port and not kernel_fin:
            kernel_fin.append((seg.seq + len(seg.payload) + 1) & 0xFFFFFFFF)
        return False  # nothing inbound is lost

    def lose_last_ack(seg: tcpw.TcpSegment) -> bool:
        # ustack's ACK of the kernel's FIN (the last segment of the close), the first time.
        if kernel_fin and not lost and seg.control is Control.NONE and seg.ack == kernel_fin[0]:
            lost.append(seg)
            return True
        return False

    async with _KernelPeer(opts, msl=msl, lose_in=note_fin, lose_out=lose_last_ack) as peer:
        served = [0]

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served[0] += 1
            if served[0] == 1:
                writer.write(b"bye\n")  # ustack closes first, so it is ustack in TIME-WAIT
            else:
                await reader.read()  # the new incarnation: the kernel closes it

        server = await _serve(peer, 80, handler)
        sock = await peer.connect(80, reuse=True, bind_port=port)
        await peer.read_all(sock)
        await asyncio.sleep(0.2)  # the kernel's ACK of ustack's FIN on its own (see close)
        sock.close()
        stats = peer.stack.stats
        # The kernel, its FIN unacknowledged, sends it again; ustack in TIME-WAIT ACKs it again.
        ok = await peer.until(lambda: stats.tcp_time_wait_restarted >= 1)
        # A new connection on the same 4-tuple, while ustack is still in TIME-WAIT.
        sock = await peer.connect(80, reuse=True, bind_port=port)
        await peer.loop.sock_sendall(sock, b"again\n")
        sock.close()
        ok = await peer.settle() and ok and stats.time_wait_reused == 1
        reused = stats.time_wait_reused
        server.close()
    explanation = f"""\
TIME-WAIT (RFC 9293 3.6.1; 3.10.7.4; RFC 6191). ustack closes first, so it is ustack that ends
in TIME-WAIT after ACKing the kernel's FIN. That ACK is lost on the way (drawn "lost"): the
kernel, in LAST-ACK, cannot tell whether its FIN arrived, so its retransmission timer sends the
FIN again (3.8.1). This is why TIME-WAIT exists: ustack still has the connection, recognizes the
retransmitted FIN, ACKs it again and restarts its 2*MSL wait (3.10.7.4, "TIME-WAIT STATE ...
Acknowledge it, and restart the 2 MSL timeout"); without TIME-WAIT the FIN would have been
answered with a RST and the kernel's application would have seen an error instead of a clean
close. Then the kernel opens a new connection from the same port (SO_REUSEADDR) to the same
port: the same 4-tuple, while ustack is still in TIME-WAIT. Its SYN's sequence number is above
the old connection's RCV.NXT, so it cannot be mistaken for an old duplicate, and ustack accepts
it as a new incarnation (RFC 9293 3.10.7.4, RFC 6191; time_wait_reused={reused}): LISTEN,
SYN-RECEIVED, a new handshake. {_scale_note(opts, msl)}

{KERNEL_PEER}"""
    return Report(peer.render(), explanation, ok)


SCENARIOS_BY_NAME = {
    "handshake": handshake,
    "close": close,
    "half-close": half_close,
    "rst": rst,
    "time-wait": time_wait,
}
