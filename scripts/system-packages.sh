#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, only those missing.
# Needs root (CI and the development machines run as root); elsewhere it says
# what to install instead of failing half-way.
set -euo pipefail

# command -> Debian package
declare -A WANTED=(
  [wrk]=wrk
  [curl]=curl
  [openssl]=openssl
  # lints scripts/kind-demo.sh (tests/integration/operator/test_kind_demo_script.py)
  [shellcheck]=shellcheck
  # the local cluster for end-to-end tests (tests/infra/cluster)
  [buildah]=buildah
  [debootstrap]=debootstrap
)
missing=()
for cmd in "${!WANTED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${WANTED[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "system-packages: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 2
fi
echo "system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get update -qq
timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
