"""Raw packets for host tests: build with the wire emitters, read the host's output back."""

from __future__ import annotations

from ustack.stack.host import Host
from ustack.stack.isn import fixed_isn
from ustack.tcp.config import TcpConfig
from ustack.wire import checksum, ipv4, tcp
from ustack.wire.tcp import TcpSegment

HOST = ipv4.addr_to_int("10.7.0.2")
PEER = ipv4.addr_to_int("10.7.0.1")
SERVER_ISN = 5000


def make_host(**kwargs: object) -> Host:
    kwargs.setdefault("isn", fixed_isn(SERVER_ISN))
    kwargs.setdefault("config", TcpConfig())
    return Host(HOST, **kwargs)  # type: ignore[arg-type]


def tcp_packet(
    sport: int,
    dport: int,
    seq: int,
    ack: int = 0,
    flags: int = tcp.SYN,
    *,
    payload: bytes = b"",
    options: bytes = b"",
    window: int = 65535,
    src: int = PEER,
    dst: int = HOST,
    ident: int = 1,
) -> bytearray:
    length = tcp.HEADER_LEN + len(options) + len(payload)
    buf = bytearray(ipv4.HEADER_LEN + length)
    ipv4.emit(buf, 0, src=src, dst=dst, proto=ipv4.PROTO_TCP, payload_len=length, ident=ident)
    tcp.emit(
        buf,
        ipv4.HEADER_LEN,
        pseudo=checksum.ipv4_pseudo_header_sum(src, dst, tcp.PROTO, 0),
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        options=options,
        payload=payload,
    )
    return buf


def segments(host: Host, now: float = 0.0) -> list[TcpSegment]:
    """The host's output, parsed (every packet must be a valid TCP segment to PEER)."""
    out = []
    for p in host.packets_to_send(now):
        pkt = ipv4.parse(p)
        assert pkt.proto == ipv4.PROTO_TCP and pkt.dst == PEER and pkt.dont_fragment
        out.append(
            tcp.parse(
                bytes(pkt.payload),
                pkt.src,
                pkt.dst,
                pseudo=checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, tcp.PROTO, 0),
            )
        )
    return out
