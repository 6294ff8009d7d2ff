#!/usr/bin/env bash
# Set up and run the whole test suite: ruff, mypy, pytest (real etcd members and receivers).
# RELAY_NO_EXTENSIONS=1 runs it on the pure-Python twins; RELAY_REQUIRE_SERVICES=1 makes a
# missing etcd or receiver fail instead of skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check relay tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
