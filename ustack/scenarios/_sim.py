"""Two ustack hosts on the virtual-time network, drawn as one ladder.

Theory of operation: :class:`SimPair` puts a client host (the ladder's left lifeline) and a
server host (the right one) on a :class:`~ustack.netsim.Network`, joined by two tapped links. The
ladder is drawn as the server's end of the wire sees it: a segment the server sends at the time
it leaves, a segment for the server at the time it arrives (a lost one at the time it was sent,
marked ``lost``). Both hosts' tracers record their connections' real state changes.

The network calls the taps, the tracers and the applications in the order things happen, but a
delivery is scheduled (and tapped) when its packet is sent, before what happens in between; so
everything is first collected as ``(time, order, action)`` and fed to the ladder sorted by time,
ties in the order they were collected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ustack.ladder import INBOUND, LOST, OUTBOUND, Ladder
from ustack.netsim import App, Network, SimLink
from ustack.stack.host import Host
from ustack.tcp.config import TcpConfig
from ustack.tcp.connection import Connection
from ustack.wire import addr, ipv4
from ustack.wire import tcp as tcpw
from ustack.wire.errors import ParseError

CLIENT = addr.from_text("10.9.0.1")
SERVER = addr.from_text("10.9.0.2")
DELAY = 0.010  # one way, seconds: a 20 ms round trip, long enough for segments to cross
# Fixed secrets: the same run draws the same ladder, ISNs included.
_CLIENT_SECRET = b"ustack scenario client secret 01"
_SERVER_SECRET = b"ustack scenario server secret 02"

Drop = Callable[[tcpw.TcpSegment], bool]
Mark = Callable[[tcpw.TcpSegment], str]


def segment(packet: bytes | bytearray) -> tcpw.TcpSegment | None:
    """The TCP segment in an IPv4 packet (unverified: only for looking), or None."""
    try:
        ip = ipv4.parse(packet)
        if ip.proto != ipv4.PROTO_TCP:
            return None
        return tcpw.parse(ip.payload, ip.src, ip.dst, pseudo=0, verify_checksum=False)
    except ParseError:
        return None


class _Tap(SimLink):
    """One direction of the pair's link: tells the :class:`SimPair` what crossed it, and drops
    the segments the scenario's ``drop`` picks (a deterministic loss, unlike a seeded model)."""

    __slots__ = ("direction", "drop", "mark", "pair")

    def __init__(self, pair: SimPair, direction: str, name: str) -> None:
        super().__init__(name, delay=DELAY)
        self.pair = pair
        self.direction = direction
        self.drop: Drop | None = None
        self.mark: Mark | None = None

    def transmit(self, packet: bytes | bytearray, now: float) -> list[tuple[float, bytes]]:
        seg = segment(packet)
        if seg is not None and self.drop is not None and self.drop(seg):
            self.stats.packets += 1
            self.stats.fault_lost += 1
            self._count_lost(packet)
            self.pair.wire(now, self.direction, bytes(packet), LOST)
            return []
        arrivals = super().transmit(packet, now)
        mark = self.mark(seg) if seg is not None and self.mark is not None else ""
        if self.direction == OUTBOUND:
            self.pair.wire(now, OUTBOUND, bytes(packet), mark)
        else:
            for when, copy in arrivals:
                self.pair.wire(when, INBOUND, copy, mark)
        return arrivals


class SimPair:
    """A client and a server host on a virtual-time network, and the ladder of what they do.

    ``client_config`` and ``server_config`` are changes to a default :class:`TcpConfig`.
    """

    def __init__(
        self,
        *,
        client_config: dict[str, Any] | None = None,
        server_config: dict[str, Any] | None = None,
        client_name: str = "client",
        server_name: str = "server",
        fold: int = 4,
        timestamps: bool = False,
        notes: tuple[str, ...] = ("recovery", "rto"),
    ) -> None:
        self.net = Network()
        self.client = Host(
            CLIENT,
            config=TcpConfig(**(client_config or {})),
            secret=_CLIENT_SECRET,
            tracer=self._tracer(remote=True),
        )
        self.server = Host(
            SERVER,
            config=TcpConfig(**(server_config or {})),
            secret=_SERVER_SECRET,
            tracer=self._tracer(remote=False),
        )
        self.net.add_host(self.client)
        self.net.add_host(self.server)
        self.to_server = _Tap(self, INBOUND, "client>server")
        self.to_client = _Tap(self, OUTBOUND, "server>client")
        self.net.add_link(self.client, self.server, self.to_server)
        self.net.add_link(self.server, self.client, self.to_client)
        self.ladder = Ladder(
            max_run=fold,
            timestamps=timestamps,
            peer_name=client_name,
            local_name=server_name,
            infer_peer=False,
        )
        self.notes = notes
        self._records: list[tuple[float, int, Callable[[], None]]] = []

    # -- collecting ---------------------------------------------------------------------------

    def _record(self, when: float, action: Callable[[], None]) -> None:
        self._records.append((when, len(self._records), action))

    def wire(self, when: float, direction: str, packet: bytes, mark: str = "") -> None:
        """A packet that crossed the link, as seen from the server's end."""
        self._record(when, lambda: self.ladder.packet(when, direction, packet, label=mark))

    def note(self, conn: Connection, text: str, *, when: float | None = None) -> None:
        """A note across the ladder of ``conn``'s connection (either host's)."""
        at = self.net.now if when is None else when
        local, peer = self._sides(conn)
        self._record(at, lambda: self.ladder.event(at, local, peer, text))

    def _sides(self, conn: Connection) -> tuple[tuple[int, int], tuple[int, int]]:
        ends = ((conn.local_addr, conn.local_port), (conn.remote_addr, conn.remote_port))
        return ends if conn.local_addr == SERVER else (ends[1], ends[0])

    def _tracer(self, *, remote: bool) -> Callable[[Any, str, dict[str, Any]], None]:
        def trace(conn: Any, kind: str, detail: dict[str, Any]) -> None:
            if conn.remote_addr not in (CLIENT, SERVER):
                return  # a third party's connection (a flood's spoofed sources): not drawn
            when = self.net.now
            local = (conn.local_addr, conn.local_port)
            peer = (conn.remote_addr, conn.remote_port)
            if kind == "state":
                old = str(getattr(detail["from"], "value", detail["from"]))
                new = str(getattr(detail["to"], "value", detail["to"]))
                draw = self.ladder.remote_state if remote else self.ladder.state
                self._record(when, lambda: draw(when, local, peer, old, new))
            elif kind == "recovery" and "recovery" in self.notes:
                text = {
                    "enter": f"loss recovery entered ({detail['reason']}): cwnd "
                    f"{detail['cwnd']}, ssthresh {detail['ssthresh']}",
                    "exit": f"loss recovery ends: cwnd {detail['cwnd']}",
                }.get(str(detail["event"]), f"recovery {detail['event']}")
                self.note(conn, f"{'client' if remote else 'server'}: {text}")
            elif kind == "rto" and "rto" in self.notes:
                self.note(conn, f"retransmission timeout: RTO now {detail['rto']:g} s")

        return trace

    # -- running ------------------------------------------------------------------------------

    def set_apps(self, client: App | None = None, server: App | None = None) -> None:
        if client is not None:
            self.net.set_app(self.client, client)
        if server is not None:
            self.net.set_app(self.server, server)

    def run(self, until: Callable[[], bool] | None = None, *, max_time: float) -> bool:
        return self.net.run(until, max_time=max_time)

    def render(self) -> str:
        for _when, _order, action in sorted(self._records, key=lambda r: (r[0], r[1])):
            action()
        self._records.clear()
        return self.ladder.render()
