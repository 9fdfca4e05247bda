"""A capture taken during a transfer with the kernel is a valid pcap with the whole connection."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

import ustack
from ustack.apps import echo
from ustack.link.netns import NetNamespace
from ustack.link.pcap import PcapTap, PcapWriter

from .conftest import KERNEL, SAFETY, STACK, MakeStack, kernel_connect, needs_tun, states, until

pytestmark = [pytest.mark.tun, needs_tun]


async def test_pcap_holds_handshake_transfer_and_close(
    make_stack: MakeStack, netns: NetNamespace, tmp_path: Path
) -> None:
    capture = tmp_path / "tun.pcap"

    def wrap(link: Any) -> PcapTap:
        return PcapTap(link, PcapWriter(capture))

    stack = await make_stack(wrap=wrap)
    await ustack.start_server(echo, port=7, stack=stack)
    payload = os.urandom(200_000)
    reader, writer = await kernel_connect(netns, 7)
    client_port = writer.get_extra_info("sockname")[1]
    writer.write(payload)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), SAFETY) == payload
    writer.close()
    await writer.wait_closed()
    # The kernel closed first, so ustack's last step is LAST-ACK -> CLOSED on the final ACK.
    await until(lambda: not states(stack), "ustack's side of the connection to be gone")
    await stack.aclose()  # closes the tap, which flushes the capture

    segments = [
        p for p in rdpcap(str(capture)) if TCP in p and client_port in (p[TCP].sport, p[TCP].dport)
    ]
    sent_by_kernel = [p[IP].src == KERNEL and p[IP].dst == STACK for p in segments]
    flags = [str(p[TCP].flags) for p in segments]

    # Three-way handshake, in order, with matching sequence numbers.
    syn, synack, ack = segments[:3]
    assert flags[:3] == ["S", "SA", "A"] and sent_by_kernel[:3] == [True, False, True]
    assert synack[TCP].ack == syn[TCP].seq + 1
    assert ack[TCP].seq == syn[TCP].seq + 1 and ack[TCP].ack == synack[TCP].seq + 1

    # The payload crossed both ways.
    for from_kernel in (True, False):
        carried = sum(
            len(p[TCP].payload)
            for p, by in zip(segments, sent_by_kernel, strict=True)
            if by == from_kernel
        )
        assert carried >= len(payload)

    # Both FINs, then the final ACK of the later one ends the capture of this connection.
    fins = [i for i, p in enumerate(segments) if p[TCP].flags.F]
    assert {sent_by_kernel[i] for i in fins} == {True, False}
    last_fin = segments[fins[-1]]
    final = segments[-1]
    assert str(final[TCP].flags) == "A"
    assert sent_by_kernel[-1] != sent_by_kernel[fins[-1]]
    assert final[TCP].ack == last_fin[TCP].seq + len(last_fin[TCP].payload) + 1
    assert not any(p[TCP].flags.R for p in segments)
