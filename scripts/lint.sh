#!/usr/bin/env bash
# The checks make test runs before the tests, cheapest first; stops at the first that fails.
# Settings: [tool.ruff] and [tool.mypy] in pyproject.toml. BIN is the venv's bin folder.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
echo "lint: ruff check"
"$BIN/ruff" check --no-fix .
echo "lint: ruff format --check"
"$BIN/ruff" format --check .
echo "lint: mypy"
"$BIN/mypy"
