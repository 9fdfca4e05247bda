"""One fixture per RFC 9293 state, each reached through real segments (see kit.py)."""

from __future__ import annotations

import pytest

from tests.tcp import kit


@pytest.fixture
def closed() -> kit.Script:
    return kit.closed()


@pytest.fixture
def listen() -> kit.Script:
    return kit.listen()


@pytest.fixture
def syn_sent() -> kit.Script:
    return kit.syn_sent()


@pytest.fixture
def syn_received() -> kit.Script:
    return kit.syn_received()


@pytest.fixture
def established() -> kit.Script:
    return kit.established()


@pytest.fixture
def fin_wait_1() -> kit.Script:
    return kit.fin_wait_1()


@pytest.fixture
def fin_wait_2() -> kit.Script:
    return kit.fin_wait_2()


@pytest.fixture
def close_wait() -> kit.Script:
    return kit.close_wait()


@pytest.fixture
def closing() -> kit.Script:
    return kit.closing()


@pytest.fixture
def last_ack() -> kit.Script:
    return kit.last_ack()


@pytest.fixture
def time_wait() -> kit.Script:
    return kit.time_wait()
