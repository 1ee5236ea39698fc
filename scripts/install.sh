#!/usr/bin/env bash
# Creates .venv and installs every Larder component in editable mode plus the
# development tools. Safe to run again: pip only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-packages.sh

PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null; then
  echo "install: $PYTHON not found; Larder needs Python 3.11 (set PYTHON=...)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The protocol package generates its Python code from protocol/proto at build
# time, so it goes first; the others depend on it.
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
.venv/bin/python -m pip install --quiet \
  -e protocol -e sdk -e "sidecar" -e operator -e tck
echo "install: .venv ready"
