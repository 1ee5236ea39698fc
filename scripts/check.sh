#!/usr/bin/env bash
# The whole test command: install, provision the real test servers, lint, type
# check, then every test tier. Exits non-zero on any failure, and also when
# pytest collected nothing (pytest's exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
# Everything the tests use, built before any test runs (a cold build inside a fixture
# would count against the test's timeout): servers, published SDKs, cluster images.
.venv/bin/python -m tests.infra provision all cluster

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy protocol/src/larder_protocol protocol/hatch_build.py sdk/src sidecar/src operator/src \
  tck/src tck/frontends/python samples/shopping-cart/src samples/turkey/src tests bench

echo "== pytest (unit, integration, e2e)"
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "check: pytest ran no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
