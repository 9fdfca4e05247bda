"""Small IPv4 packets built with ustack.wire, shared by the link tests."""

from __future__ import annotations

from ustack.wire import icmp, ipv4


def echo(
    src: str,
    dst: str,
    *,
    type: int = icmp.ECHO_REQUEST,
    ident: int = 0x1234,
    sequence: int = 1,
    payload: bytes = b"ustack",
) -> bytes:
    """A complete IPv4 ICMP echo request or reply with valid checksums."""
    icmp_len = icmp.HEADER_LEN + len(payload)
    buf = bytearray(ipv4.HEADER_LEN + icmp_len)
    ipv4.emit(
        buf,
        0,
        src=ipv4.addr_to_int(src),
        dst=ipv4.addr_to_int(dst),
        proto=ipv4.PROTO_ICMP,
        payload_len=icmp_len,
    )
    icmp.emit_echo(buf, ipv4.HEADER_LEN, type=type, ident=ident, sequence=sequence, payload=payload)
    return bytes(buf)
