"""One tcpdump-style line for any IPv4 packet, for logs, test failures and the CLI.

Theory of operation: :func:`format_packet` parses the IP header and, for TCP and ICMP, the
transport header, then joins the per-format one-liners (``tcp.format``, ``icmp.format``) behind
the addresses the way ``tcpdump -n`` does. It never raises: whatever layer fails to parse is
named with its :class:`ParseError` reason, so a log line about a dropped packet says why it was
dropped. It is meant for the slow path only (callers guard it with ``isEnabledFor``).
"""

from __future__ import annotations

from ustack.wire import checksum, icmp, ipv4, tcp
from ustack.wire.errors import ParseError
from ustack.wire.ipv4 import int_to_addr


def format_packet(buf: bytes | bytearray | memoryview) -> str:
    """``IP 10.7.0.1.40000 > 10.7.0.2.80: Flags [S], seq 1, win 64240, ..., length 0``."""
    try:
        pkt = ipv4.parse(buf)
    except ParseError as e:
        return f"IP bad packet ({e.reason}), {len(buf)} bytes"
    src = int_to_addr(pkt.src)
    dst = int_to_addr(pkt.dst)
    if pkt.is_fragment:
        # Only the first fragment carries the transport header, and its checksum covers the
        # whole datagram, so no fragment can be decoded on its own.
        flag = "+" if pkt.more_fragments else ""
        return (
            f"IP {src} > {dst}: frag (id {pkt.ident}, offset {pkt.frag_offset}{flag}), "
            f"proto {pkt.proto}, length {len(pkt.payload)}"
        )
    if pkt.proto == ipv4.PROTO_TCP:
        try:
            pseudo = checksum.ipv4_pseudo_header_sum(pkt.src, pkt.dst, ipv4.PROTO_TCP, 0)
            seg = tcp.parse(pkt.payload, pkt.src, pkt.dst, pseudo=pseudo)
        except ParseError as e:
            return f"IP {src} > {dst}: tcp bad segment ({e.reason}), {len(pkt.payload)} bytes"
        return f"IP {src}.{seg.src_port} > {dst}.{seg.dst_port}: {tcp.format(seg)}"
    if pkt.proto == ipv4.PROTO_ICMP:
        try:
            msg = icmp.parse(pkt.payload)
        except ParseError as e:
            return f"IP {src} > {dst}: icmp bad message ({e.reason}), {len(pkt.payload)} bytes"
        return f"IP {src} > {dst}: {icmp.format(msg)}"
    return f"IP {src} > {dst}: ip-proto-{pkt.proto} {len(pkt.payload)}"
