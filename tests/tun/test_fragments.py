"""The kernel fragments, ustack reassembles: a ping bigger than the TUN device's MTU."""

from __future__ import annotations

import re
import shutil

import pytest

from ustack.link.errors import LinkError
from ustack.link.netns import NetNamespace

from .conftest import STACK, MakeStack, needs_tun, run_in

pytestmark = [
    pytest.mark.tun,
    needs_tun,
    pytest.mark.skipif(shutil.which("ping") is None, reason="iputils ping is not installed"),
]


@pytest.mark.parametrize("offload", ["on", "off"])
async def test_kernel_fragments_ustack_reassembles(
    make_stack: MakeStack, netns: NetNamespace, offload: str
) -> None:
    try:
        stack = await make_stack(mtu=1500, offload=offload)
    except LinkError as exc:
        pytest.skip(f"no TUN offloads here: {exc}")
    # 3000 octets of ICMP data do not fit a 1500-octet MTU: with -M dont (DF clear) the kernel
    # sends each request as three fragments. -p fills the data with a pattern ping checks in
    # every reply.
    rc, out, err = await run_in(
        netns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", "-M", "dont",
        "-p", "a5c3017e", STACK,
    )  # fmt: skip
    text = out.decode()
    stats = stack.stats
    assert (stats.ip_reasm_fragments, stats.ip_reasm_ok, stats.icmp_echo_replies) == (9, 3, 3)
    assert stats.ip_reasm_overlap == stats.ip_reasm_timeout == stats.ip_reasm_bad_length == 0
    # The 3028-octet replies go out in fragments as the requests came (RFC 791 3.2): three
    # each, with offloads or without, and ping checks the pattern in every reassembled reply.
    assert stats.ip_frag_created == 9
    assert rc == 0, text + err.decode()
    assert re.search(r"3 packets transmitted, 3 received, 0% packet loss", text), text
    assert "wrong data byte" not in text
    assert stack.link.stats.tx_oversize == 0
