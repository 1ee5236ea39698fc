"""A Node client's npm dependencies, installed from its committed lock.

`npm ci` installs exactly what `package-lock.json` says (integrity hashes checked) and
fails if `package.json` and the lock disagree; the cache entry's recipe is the digest
of both files, so a changed lock builds a new entry beside the old one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from tests.infra.errors import ProvisionError

NPM_CI_ARGS = ("ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund")
_NPM_TIMEOUT_S = 600.0
_MANIFESTS = ("package.json", "package-lock.json")


def recipe(package_dir: Path) -> str:
    """What the installed tree depends on: the two manifests' digests and npm's arguments."""
    digests = [
        f"{name} sha256 {hashlib.sha256((package_dir / name).read_bytes()).hexdigest()}"
        for name in _MANIFESTS
    ]
    return f"{'; '.join(digests)}; npm {' '.join(NPM_CI_ARGS)}"


def install(component: str, version: str, package_dir: Path, staging: Path) -> None:
    """`npm ci` the manifests of `package_dir` into `staging` (node_modules/ lands there)."""
    npm = shutil.which("npm")
    if npm is None:
        raise ProvisionError(component, version, "find npm", "npm is not on PATH (install Node.js)")
    for name in _MANIFESTS:
        shutil.copyfile(package_dir / name, staging / name)
    try:
        done = subprocess.run(
            [npm, *NPM_CI_ARGS], cwd=staging, capture_output=True, text=True,
            timeout=_NPM_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ProvisionError(
            component, version, "npm ci", f"did not finish in {_NPM_TIMEOUT_S:.0f}s"
        ) from e
    if done.returncode != 0:
        raise ProvisionError(
            component, version, "npm ci",
            f"exited with {done.returncode} (is the npm registry reachable?)\n"
            f"{done.stderr[-4000:]}",
        )
