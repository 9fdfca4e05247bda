"""iputils ping (the kernel's ICMP) against ustack's echo responder."""

from __future__ import annotations

import re
import shutil

import pytest

from ustack.link.netns import NetNamespace

from .conftest import STACK, MakeStack, needs_tun, run_in

pytestmark = [
    pytest.mark.tun,
    needs_tun,
    pytest.mark.skipif(shutil.which("ping") is None, reason="iputils ping is not installed"),
]


async def test_ping(make_stack: MakeStack, netns: NetNamespace) -> None:
    stack = await make_stack()
    # -p fills the payload with a pattern and -s makes it 1000 bytes: ping compares each reply's
    # payload with what it sent and reports "wrong data byte" on any difference.
    rc, out, err = await run_in(
        netns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1000", "-p", "a5c3017e",
        STACK,
    )  # fmt: skip
    text = out.decode()
    assert rc == 0, text + err.decode()
    assert re.search(r"3 packets transmitted, 3 received, 0% packet loss", text), text
    assert "wrong data byte" not in text
    assert "DUP!" not in text
    assert stack.stats.icmp_echo_replies == 3
