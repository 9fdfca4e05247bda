#!/usr/bin/env bash
# The whole check: lint, types, then the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check ustack tests bench
python3 -m ruff format --check ustack tests bench
python3 -m mypy
python3 -m pytest "$@"
