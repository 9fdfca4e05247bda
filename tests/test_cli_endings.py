"""``ustack serve`` options for how connections end and who the server runs as."""

from __future__ import annotations

import pytest

from ustack.cli import _tcp_config, build_parser, main


def test_user_timeout_option_sets_the_tcp_config() -> None:
    args = build_parser().parse_args(["serve", "--user-timeout", "7.5"])
    assert _tcp_config(args).user_timeout == 7.5
    args = build_parser().parse_args(["serve"])
    assert _tcp_config(args).user_timeout is None


def test_unknown_user_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--user", "no-such-user-ustack"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "ustack: error: unknown user 'no-such-user-ustack'"
    ]


def test_group_needs_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--group", "nogroup"]) == 2
    assert "--group needs --user" in capsys.readouterr().err
