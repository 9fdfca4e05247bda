"""One tcpdump-style line for any IPv4 or IPv6 packet, for logs, test failures and the CLI.

Theory of operation: :func:`format_packet` reads the version nibble (RFC 791 3.1, RFC 8200 3) to
pick the network layer, parses its header and, for TCP, ICMP and ICMPv6, the transport header,
then joins the per-format one-liners (``tcp.format``, ``icmp.format``, ``icmpv6.format``) behind
the addresses the way ``tcpdump -n`` does: ``IP`` for IPv4, ``IP6`` for IPv6. It never raises:
whatever layer fails to parse is named with its :class:`ParseError` reason, so a log line about
a dropped packet says why it was dropped. Anything whose version nibble is not 6 is read as IPv4,
so a packet of no known version says ``IP bad packet (ipv4_bad_version)``. It is meant for the
slow path only (callers guard it with ``isEnabledFor``).

IPv6 extension headers are shown by tcpdump's short names in front of the upper layer (``HBH``,
``DSTOPT``, ``srcrt``, ``frag``), a non-first or first-but-incomplete fragment as its Fragment
header's fields only, because the upper-layer header and its checksum need the whole packet
(RFC 8200 4.5).
"""

from __future__ import annotations

from ustack.wire import checksum, icmp, icmpv6, ipv4, ipv6, tcp
from ustack.wire.errors import ParseError
from ustack.wire.ipv4 import int_to_addr

_VERSION_6 = 6  # the version nibble of an IPv6 header (RFC 8200 3)

# tcpdump's short names for the IPv6 extension headers, as ``ipv6.format`` uses them.
_EXT_NAMES = {
    ipv6.HOPOPTS: "HBH",
    ipv6.ROUTING: "srcrt",
    ipv6.FRAGMENT: "frag",
    ipv6.DSTOPTS: "DSTOPT",
}


def format_packet(buf: bytes | bytearray | memoryview) -> str:
    """``IP 10.7.0.1.40000 > 10.7.0.2.80: Flags [S], seq 1, win 64240, ..., length 0``, or
    ``IP6 fd00:7::1.40000 > fd00:7::2.80: ...`` for IPv6."""
    if len(buf) and buf[0] >> 4 == _VERSION_6:
        return _format_ipv6(buf)
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


def _format_ipv6(buf: bytes | bytearray | memoryview) -> str:
    try:
        pkt = ipv6.parse(buf)
    except ParseError as e:
        return f"IP6 bad packet ({e.reason}), {len(buf)} bytes"
    src = ipv6.int_to_addr(pkt.src)
    dst = ipv6.int_to_addr(pkt.dst)
    frag = pkt.fragment
    if pkt.is_fragment and frag is not None:
        more = "+" if frag.more else ""
        return (
            f"IP6 {src} > {dst}: frag (id {frag.ident}, offset {frag.offset}{more}), "
            f"next-header {frag.next_header}, length {len(pkt.payload)}"
        )
    # The extension headers walked (an atomic fragment among them), briefly, as tcpdump does.
    exts = "".join(f"{_EXT_NAMES[h]} " for h in pkt.ext_headers)
    if pkt.proto == ipv6.PROTO_TCP:
        try:
            pseudo = checksum.ipv6_pseudo_header_sum(pkt.src, pkt.dst, ipv6.PROTO_TCP, 0)
            seg = tcp.parse(pkt.payload, pkt.src, pkt.dst, pseudo=pseudo)
        except ParseError as e:
            return (
                f"IP6 {src} > {dst}: {exts}tcp bad segment ({e.reason}), {len(pkt.payload)} bytes"
            )
        return f"IP6 {src}.{seg.src_port} > {dst}.{seg.dst_port}: {exts}{tcp.format(seg)}"
    if pkt.proto == ipv6.PROTO_ICMPV6:
        try:
            msg = icmpv6.parse(pkt.payload, pkt.src, pkt.dst)
        except ParseError as e:
            return (
                f"IP6 {src} > {dst}: {exts}icmp6 bad message ({e.reason}), {len(pkt.payload)} bytes"
            )
        return f"IP6 {src} > {dst}: {exts}{icmpv6.format(msg)}"
    if pkt.proto == ipv6.NO_NEXT_HEADER:
        return f"IP6 {src} > {dst}: {exts}no next header, length {len(pkt.payload)}"
    return f"IP6 {src} > {dst}: {exts}ip-proto-{pkt.proto} {len(pkt.payload)}"
