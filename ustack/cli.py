"""The ``ustack`` command.

Thin by design: every subcommand parses its arguments, calls the library and turns the library's
errors into one-line messages with a non-zero exit code. Anything a library user would also want
lives in the library, not here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ustack import __version__


def _checksum_info(_args: argparse.Namespace) -> int:
    from ustack.wire import checksum

    print(f"implementation: {checksum.IMPLEMENTATION}")
    kernel = getattr(checksum, "KERNEL", None)
    if kernel:
        print(f"kernel: {kernel}")
    print(f"reason: {checksum.IMPLEMENTATION_REASON}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ustack", description="A userspace TCP/IP stack in Python over a Linux TUN device."
    )
    parser.add_argument("--version", action="version", version=f"ustack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser(
        "checksum-info", help="show which Internet checksum implementation is active and why"
    )
    info.set_defaults(func=_checksum_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
