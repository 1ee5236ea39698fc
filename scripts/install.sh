#!/usr/bin/env bash
# Creates .venv exactly as requirements/dev.lock says (every version and hash fixed),
# then installs every Larder component from the working tree in editable mode. Safe to
# run again: the locked packages are installed only when the lock (or the Python)
# changed since the last install, and then into a new .venv, so nothing that is not
# in the lock survives in it. To change a dependency, edit requirements/*.in or a
# component's pyproject.toml and run `make lock` (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-packages.sh

PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null; then
  echo "install: $PYTHON not found; Larder needs Python 3.11 (set PYTHON=...)" >&2
  exit 2
fi

LOCK=requirements/dev.lock
STAMP=.venv/.larder-lock
want="$(sha256sum "$LOCK" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version)' | head -n 1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "install: creating .venv from $LOCK"
  rm -rf .venv
  "$PYTHON" -m venv .venv
  # --require-hashes: every package, dependencies included, must be in the lock with a
  # matching hash, or the install fails.
  .venv/bin/python -m pip install --quiet --require-hashes -r "$LOCK"
  echo "$want" > "$STAMP"
fi
# Our components: no dependencies (the lock has them all) and no build isolation (the
# build backends are in the lock too, so building fetches nothing). The protocol package
# generates its Python code at build time, so it goes first.
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation \
  -e protocol -e sdk -e sidecar -e operator -e tck
.venv/bin/python -m pip check >/dev/null || {
  .venv/bin/python -m pip check >&2
  echo "install: the environment is inconsistent; run 'make lock' after changing a dependency" >&2
  exit 1
}
echo "install: .venv ready"
