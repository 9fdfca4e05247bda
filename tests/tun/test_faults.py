"""A lossy, reordering link between the kernel and ustack: data still arrives intact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any

import pytest

import ustack
from ustack.link.fault import FaultConfig, FaultModel
from ustack.link.faulty import FaultyLink
from ustack.link.netns import NetNamespace

from .conftest import (
    KERNEL,
    TUN_NAME,
    MakeStack,
    MiB,
    kernel_connect,
    needs_tun,
    run_in,
)

pytestmark = [pytest.mark.tun, needs_tun]

SIZE = 20 * MiB
BOUND = 90.0  # seconds for 20 MB each way at 5 % loss; a healthy run takes a fraction
# ustack offers neither SACK nor timestamps, so the kernel recovers NewReno-style and, by Karn's
# rule, takes no RTT sample while it resends: its RTO keeps doubling from its 200 ms floor and a
# few losses in a row idle the link for seconds. The kernel side gets the same low-latency floor
# as ustack (tun_config), with the per-route metric, so the test measures recovery, not backoff.
KERNEL_RTO_MIN = os.environ.get("USTACK_TUN_KERNEL_RTO_MIN", "10ms")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_20_mb_each_way_with_loss_and_reordering(
    make_stack: MakeStack, netns: NetNamespace
) -> None:
    faults = FaultConfig(drop=0.05, reorder=0.05, reorder_delay=0.002)
    models: dict[str, FaultModel] = {}

    def wrap(link: Any) -> FaultyLink:
        models["out"] = FaultModel(faults, seed="tun-out")
        models["in"] = FaultModel(faults, seed="tun-in")
        return FaultyLink(link, model_out=models["out"], model_in=models["in"])

    stack = await make_stack(wrap=wrap)
    rc, _, err = await run_in(
        netns, "ip", "route", "change", "10.7.0.0/24", "dev", TUN_NAME, "proto", "kernel",
        "scope", "link", "src", KERNEL, "rto_min", KERNEL_RTO_MIN,
    )  # fmt: skip
    assert rc == 0, err
    upload, download = os.urandom(SIZE), os.urandom(SIZE)

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
        writer.write(digest.hexdigest().encode())
        writer.close()

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(download)
        writer.close()

    await ustack.start_server(sink, port=5001, stack=stack)
    await ustack.start_server(source, port=5002, stack=stack)

    async def kernel_uploads() -> bytes:
        reader, writer = await kernel_connect(netns, 5001)
        writer.write(upload)
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer

    async def kernel_downloads() -> bytes:
        reader, writer = await kernel_connect(netns, 5002)
        body = await reader.read()
        writer.close()
        return body

    started = time.monotonic()
    answer, body = await asyncio.wait_for(
        asyncio.gather(kernel_uploads(), kernel_downloads()), BOUND
    )
    elapsed = time.monotonic() - started
    print(f"20 MB each way at 5 % loss: {elapsed:.1f} s; {stack.stats.nonzero()}")

    assert answer.decode() == _sha(upload)
    assert _sha(body) == _sha(download)  # (BOUND only turns a hang into a failure)
    # The faults really happened, in both directions, and ustack repaired its own losses.
    for direction in ("in", "out"):
        assert models[direction].stats.dropped > 100, direction
        assert models[direction].stats.reordered > 100, direction
    assert stack.stats.tcp_retransmits > 0
    assert stack.stats.tcp_ooo_queued > 0
