"""Choosing the event loop: uvloop when it is installed, unless switched off.

uvloop runs the driver's per-packet callbacks on libuv, which roughly halves the loop's own
overhead; ustack works the same on the stock loop. ``use_uvloop=False`` or the environment
variable ``USTACK_NO_UVLOOP=1`` forces the stock loop (for comparisons and debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

NO_UVLOOP_ENV = "USTACK_NO_UVLOOP"


def uvloop_wanted(use_uvloop: bool = True) -> bool:
    return use_uvloop and os.environ.get(NO_UVLOOP_ENV, "") in ("", "0")


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's if wanted and importable, else asyncio's own."""
    if uvloop_wanted(use_uvloop):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on the loop :func:`new_event_loop` picks."""
    with asyncio.Runner(debug=debug, loop_factory=lambda: new_event_loop(use_uvloop)) as runner:
        return runner.run(main)
