"""ICMP errors reach the application as the errno a sockets program expects (RFC 1122 4.2.3.9).

The far end of the in-memory link is played by the test: it reads ustack's SYN and answers with
the ICMP error a firewall or a router would send, quoting it.
"""

from __future__ import annotations

import asyncio
import errno

import pytest

from ustack import Stack
from ustack.link.pair import LinkPair, PairLink
from ustack.tcp.state import State
from ustack.wire import icmp, ipv4

from .conftest import WAIT, A, B, fast_config, until

ROUTER = "10.9.0.254"


async def first_syn(link: PairLink) -> bytes:
    """The first packet ustack puts on the link (its SYN)."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    def poll() -> bool:
        got.extend(bytes(p) for p in link.read_batch(loop.time(), 10))
        return bool(got)

    await until(poll, "a SYN on the link")
    pkt = ipv4.parse(got[0])
    assert pkt.proto == ipv4.PROTO_TCP and pkt.dont_fragment
    return got[0]


def unreachable(original: bytes, code: int, src: str) -> bytes:
    length = icmp.HEADER_LEN + icmp.quote_length(original)
    buf = bytearray(ipv4.HEADER_LEN + length)
    ipv4.emit(
        buf,
        0,
        src=ipv4.addr_to_int(src),
        dst=ipv4.addr_to_int(A),
        proto=ipv4.PROTO_ICMP,
        payload_len=length,
    )
    icmp.emit_unreachable(buf, ipv4.HEADER_LEN, code=code, original=original)
    return bytes(buf)


@pytest.mark.parametrize("code", [icmp.PORT_UNREACH, icmp.PROTO_UNREACH])
async def test_port_unreachable_refuses_connect(code: int) -> None:
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config(rto_initial=5.0))
    try:
        async with a:
            task = asyncio.ensure_future(a.connect(B, 80))
            syn = await first_syn(right)
            # a firewall's REJECT --reject-with icmp-port-unreachable, say
            right.write(unreachable(syn, code, B), asyncio.get_running_loop().time())
            with pytest.raises(ConnectionRefusedError):
                # WAIT only bounds a broken implementation (the SYN's RTO is 5 s)
                await asyncio.wait_for(task, WAIT)
            assert a.stats.tcp_icmp_refused == 1
            assert a.stats.tcp_syn_retransmits == 0  # refused at once, not after timeouts
            assert all(c.state is State.CLOSED for c in a.host.connections)
    finally:
        right.close()


async def test_host_unreachable_then_syn_timeout_is_ehostunreach() -> None:
    left, right = LinkPair.create()
    a = Stack(left, address=A, config=fast_config(syn_retries=1, rto_initial=0.02))
    try:
        async with a:
            task = asyncio.ensure_future(a.connect(B, 80))
            syn = await first_syn(right)
            right.write(
                unreachable(syn, icmp.HOST_UNREACH, ROUTER), asyncio.get_running_loop().time()
            )
            with pytest.raises(OSError) as info:
                await task
            # Linux reports the soft error kept (sk_err_soft) instead of ETIMEDOUT
            assert info.value.errno == errno.EHOSTUNREACH
            assert not isinstance(info.value, TimeoutError)
            assert a.stats.tcp_icmp_soft_errors == 1
            assert a.stats.tcp_timeout_syn == 1
    finally:
        right.close()
