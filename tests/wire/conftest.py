from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest


@pytest.fixture(params=["python", "c-avx2", "c-portable"])
def checksum_impl(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """Each Internet checksum implementation in turn: the pure-Python module, then the C module
    with each of its kernels selected (restored afterwards)."""
    if request.param == "python":
        from ustack.wire import _checksum_py

        yield _checksum_py
        return
    try:
        from ustack.wire import _checksum
    except ImportError as exc:
        pytest.skip(f"C extension not built ({exc}): run `python setup.py build_ext --inplace`")
    kernel = request.param.removeprefix("c-")
    if kernel not in _checksum.KERNELS:
        pytest.skip(f"{kernel} kernel not available: {_checksum.NO_AVX2_REASON}")
    previous = _checksum._set_kernel(kernel)
    try:
        yield _checksum
    finally:
        _checksum._set_kernel(previous)
