#!/usr/bin/env bash
# Writes requirements/*.lock from requirements/*.in: exact versions and hashes for every
# Python package that the development environment, the images and the published-SDK
# compatibility environment install. `make lock` keeps the versions already locked and
# adds what is new; `make lock ARGS=--upgrade` (or `--upgrade-package NAME`) moves them.
# Installing never runs this: scripts/install.sh and the Dockerfiles read the locks.
set -euo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-.venv/bin/uv}
if [ ! -x "$UV" ]; then
  echo "lock: $UV not found; run scripts/install.sh first (uv is in the development lock)" >&2
  exit 2
fi

# Our own components are inputs (their dependencies get locked) but never outputs:
# they are installed from the working tree.
own=(larder-protocol larder-sdk larder-sidecar larder-operator larder-tck)
no_emit=()
for p in "${own[@]}"; do no_emit+=(--no-emit-package "$p"); done

compile() {
  local name=$1; shift
  "$UV" pip compile "requirements/$name.in" -o "requirements/$name.lock" \
    --quiet --generate-hashes --universal --python-version 3.11 \
    --custom-compile-command "make lock" "${no_emit[@]}" "$@"
}

compile dev "$@"
compile build "$@"
compile image "$@"
compile sample "$@"
compile published-sdk-pypi "$@"
# Locked without their dependencies, as they are installed (see the .in file).
compile published-sdk-pypi-nodeps --no-deps "$@"
# The npm SDK the compatibility tests run (its package-lock.json, installed with npm ci).
.venv/bin/python -m tests.infra.published_sdks lock-npm
echo "lock: requirements/*.lock and requirements/published-sdk-npm.package-lock.json written"
