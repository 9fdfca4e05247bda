"""DESIGN.md: imports only point left (wire <- tcp <- stack <- link, aio <- apps <- cli), and the
sans-IO layers touch no clock, socket, randomness or event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ustack"

# Which ustack subpackages each layer may import.
ALLOWED: dict[str, set[str]] = {
    "wire": {"wire"},
    "tcp": {"wire", "tcp"},
    "stack": {"wire", "tcp", "stack"},
    "link": {"wire", "link"},
    "netsim": {"wire", "tcp", "stack", "link", "netsim"},
    "ladder": {"wire", "tcp", "ladder"},
    # the host-level fuzzer drives a sans-IO host; nothing imports it
    "fuzz": {"wire", "tcp", "stack", "netsim", "fuzz"},
    "aio": {"wire", "tcp", "stack", "link", "aio"},
    "apps": {"wire", "tcp", "stack", "link", "aio", "apps"},
    # a running daemon's per-connection ladders, and the control socket that streams them
    "live": {"wire", "tcp", "ladder", "live"},
    "control": {"wire", "tcp", "stack", "link", "aio", "ladder", "live", "control"},
    # ustack forward: a relay between the stack and host sockets
    "forward": {"wire", "tcp", "stack", "link", "aio", "forward"},
    # textbook scenarios: a stack against the kernel, or two hosts in virtual time, drawn
    "scenarios": {"wire", "tcp", "stack", "link", "aio", "apps", "netsim", "ladder", "scenarios"},
}
SANS_IO = {"wire", "tcp", "stack"}
FORBIDDEN_IN_SANS_IO = {"asyncio", "socket", "os", "time", "random", "selectors", "threading"}
# The checksum module reads USTACK_PUREPYTHON once at import to choose its implementation.
EXCEPTIONS = {("wire/checksum.py", "os")}


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PKG)
    return (
        rel.parts[0].removesuffix(".py")
        if len(rel.parts) > 1
        or rel.stem in ("netsim", "ladder", "fuzz", "live", "control", "forward")
        else None
    )


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


MODULES = sorted(p for p in PKG.rglob("*.py") if _layer(p) in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_left(path: Path) -> None:
    layer = _layer(path)
    assert layer is not None
    for name in _imports(path):
        top = name.split(".")
        if top[0] == "ustack" and len(top) > 1 and top[1] != "__init__":
            assert top[1] in ALLOWED[layer], f"{path.name}: layer {layer!r} imports {name}"
        rel = str(path.relative_to(PKG))
        if layer in SANS_IO and (rel, top[0]) not in EXCEPTIONS:
            assert top[0] not in FORBIDDEN_IN_SANS_IO, f"{path.name}: sans-IO layer imports {name}"


def test_layers_exist() -> None:
    assert len(MODULES) > 5
