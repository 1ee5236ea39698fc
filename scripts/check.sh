#!/usr/bin/env bash
# The whole test command: install, lint and type check, provision the real test
# servers, then every test tier. Exits non-zero on any failure, and also when
# pytest collected nothing (pytest's exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
scripts/lint.sh
# Everything the tests use, built before any test runs (a cold build inside a fixture
# would count against the test's timeout): servers, published SDKs, cluster images.
.venv/bin/python -m tests.infra provision all cluster

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
