"""Run the ``ustack`` command unchanged, with a cProfile window that signals open and close.

    python bench/_profiled.py PROFILE_PATH serve --mtu 1500 ...

Everything after ``PROFILE_PATH`` goes to ``ustack.cli.main`` as it is, so this works on any
tree that has ``ustack serve``, whatever its options. The profiler is off until SIGUSR1, which
starts a fresh profile and then creates ``PROFILE_PATH.on``; SIGUSR2 stops it and writes the
pstats file ``PROFILE_PATH`` (atomically: it appears complete or not at all). The benchmark
waits for those files, so the window it counts is exactly the work it asked for. With no
signal the process is ``ustack`` as usual, so the counted pass and the timed runs differ only
in the profiler being on, and timed runs never use this runner at all.

:func:`read_counts` (used by the benchmark) sums a dump into call counts.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import sys
from pathlib import Path
from typing import Any


def read_counts(path: Path) -> dict[str, int]:
    """Calls in a pstats dump: ``all`` (what cProfile counted), ``python`` (calls of functions
    written in Python) and ``builtin`` (calls of C functions and methods made from Python)."""
    stats = pstats.Stats(str(path))
    python = builtin = 0
    for (filename, _line, _name), (_cc, nc, _tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename == "~":
            builtin += nc
        else:
            python += nc
    return {"all": python + builtin, "python": python, "builtin": builtin}


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: _profiled.py PROFILE_PATH [ustack arguments...]", file=sys.stderr)
        return 2
    out = Path(argv[0])
    profile: list[Any] = []

    def start(_signum: int, _frame: Any) -> None:
        if profile:
            return
        (out.parent / (out.name + ".on")).touch()
        profiler = cProfile.Profile()
        profile.append(profiler)
        profiler.enable()

    def stop(_signum: int, _frame: Any) -> None:
        if not profile:
            return
        profiler = profile.pop()
        profiler.disable()
        tmp = out.parent / (out.name + ".tmp")
        profiler.dump_stats(str(tmp))
        os.replace(tmp, out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from ustack.cli import main as ustack_main

    return int(ustack_main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
