"""``ustack forward``'s command line: what it says when it cannot run, without a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import PYTHON, REPO

FORWARD = [PYTHON, "-m", "ustack.cli", "forward"]


def forward(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FORWARD, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_neither_a_namespace_nor_a_command_is_a_usage_error() -> None:
    done = forward()
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "ustack forward: error: give --netns NAME (an existing namespace) or a command to run: "
        "ustack forward -- CMD [ARGS...]"
    ]


def test_both_a_namespace_and_a_command_is_a_usage_error() -> None:
    done = forward("--netns", "x", "--", "true")
    assert done.returncode == 2 and "do not go together" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_that_does_not_exist() -> None:
    done = forward("--", "no-such-command-ustack")
    assert done.returncode == 127
    assert done.stderr.strip() == "ustack forward: error: command not found: no-such-command-ustack"


def test_a_namespace_that_does_not_exist() -> None:
    done = forward("--netns", "no-such-namespace-ustack")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "ustack: error: no network namespace named 'no-such-namespace-ustack'"
    )


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", ""])
def test_a_namespace_name_that_is_a_path_is_refused(name: str) -> None:
    done = forward("--netns", name)
    assert done.returncode == 2
    assert done.stderr.strip() == f"ustack forward: error: bad namespace name {name!r}"


def test_bad_addresses_are_refused() -> None:
    done = forward("--address", "10.0.2.2", "--", "true")
    assert done.returncode == 1 and "both use 10.0.2.2" in done.stderr
    done = forward("--gateway", "not-an-address", "--", "true")
    assert done.returncode == 2 and "not an IPv4 address" in done.stderr


def test_help_names_the_defaults() -> None:
    done = forward("--help")
    assert done.returncode == 0
    assert "10.0.2.100/24 via 10.0.2.2" in done.stdout and "--netns NAME" in done.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
@pytest.mark.parametrize("dropped", ["-net_admin", "-net_admin,-sys_admin"])
def test_without_the_capabilities_it_says_so(dropped: str) -> None:
    # root, but with the capability taken out of its bounding set
    done = subprocess.run(
        ["setpriv", "--bounding-set", dropped, *FORWARD, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("ustack: error: ") and "needs" in line and "CAP_" in line
