#!/usr/bin/env bash
# Lint and types: ruff, mypy --strict (generated code excluded, see pyproject.toml),
# import-linter's layer contracts (.importlinter).
# Part of `make check` (before any server is provisioned, so a slip fails in seconds)
# and `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy protocol/src/larder_protocol protocol/hatch_build.py sdk/src sidecar/src operator/src \
  tck/src tck/frontends/python samples/shopping-cart/src samples/turkey/src tests bench
echo "== import-linter (layers, .importlinter)"
.venv/bin/lint-imports
