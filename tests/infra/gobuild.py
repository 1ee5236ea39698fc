"""Building Go programs from modules fetched through the Go module proxy.

Each build happens in a wrapper module of our own whose go.mod requires the
program's module at its pinned version; the Go toolchain fetches and verifies
everything through the proxy and checksum database configured on the machine.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from tests.infra.errors import ProvisionError
from tests.infra.procs import Step, run_step

_DOWNLOAD_TIMEOUT_S = 900.0
# kube-apiserver alone compiles for well over ten minutes on two cores.
_BUILD_TIMEOUT_S = 3600.0

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)


def render_go_mod(
    module: str,
    go_version: str,
    requires: Sequence[tuple[str, str]],
    replaces: Sequence[tuple[str, str]] = (),
) -> str:
    lines = [f"module {module}", "", f"go {go_version}", ""]
    if requires:
        lines.append("require (")
        lines.extend(f"\t{path} {version}" for path, version in requires)
        lines.extend([")", ""])
    if replaces:
        lines.append("replace (")
        lines.extend(f"\t{path} => {path} {version}" for path, version in replaces)
        lines.extend([")", ""])
    return "\n".join(lines)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The k8s.io modules that k8s.io/kubernetes's go.mod replaces with staging directories."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def build_env() -> dict[str, str]:
    return {
        "CGO_ENABLED": "0",
        # The wrapper go.mod lists only the top requirement; the toolchain adds
        # the rest (and go.sum) as it resolves.
        "GOFLAGS": "-mod=mod",
        "GOMAXPROCS": str(os.cpu_count() or 1),
    }


def module_go_mod(step: Step, module: str, version: str, cwd: Path) -> str:
    """Download `module@version` into the module cache and return its go.mod text."""
    output = run_step(
        step,
        f"go mod download {module}@{version}",
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        timeout=_DOWNLOAD_TIMEOUT_S,
        cwd=cwd,
        env={"GOFLAGS": "-mod=mod"},
    )
    try:
        info = json.loads(output)
        return Path(info["GoMod"]).read_text()
    except (ValueError, KeyError, OSError) as e:
        raise ProvisionError(
            step.component,
            step.version,
            f"go mod download {module}@{version}",
            f"unexpected output: {e}",
        ) from e


# Strip the symbol table and DWARF: the binaries are run, never debugged, and
# are several times smaller without them.
BASE_LDFLAGS = ("-s", "-w")

# The packages whose variables a Kubernetes binary reports as its version:
# component-base for the servers' /version and `--version`, client-go for
# kubectl's client version. Kubernetes's own build (hack/lib/version.sh) sets
# both; a `go build` from the module proxy sets neither and reports
# v0.0.0-master+$Format:%H$, which helm's kubeVersion check and
# `kubectl version` refuse.
_KUBERNETES_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
_KUBERNETES_VERSION = re.compile(r"^v(?P<major>\d+)\.(?P<minor>\d+)\.\d+$")


def kubernetes_version_ldflags(version: str) -> tuple[str, ...]:
    """`-X` linker flags that make a Kubernetes binary report `version` (`vX.Y.Z`)."""
    found = _KUBERNETES_VERSION.match(version)
    if found is None:
        raise ValueError(f"{version!r} is not a Kubernetes release version like v1.34.4")
    values = {
        "gitVersion": version,
        "gitMajor": found["major"],
        "gitMinor": found["minor"],
        "gitTreeState": "clean",
    }
    return tuple(
        flag
        for package in _KUBERNETES_VERSION_PACKAGES
        for name, value in values.items()
        for flag in ("-X", f"{package}.{name}={value}")
    )


def ldflags_arg(extra: Sequence[str] = ()) -> str:
    """The `-ldflags=...` argument of a build: the base flags, then `extra`."""
    return "-ldflags=" + " ".join((*BASE_LDFLAGS, *extra))


def go_build(
    step: Step,
    module_dir: Path,
    packages: Sequence[str],
    out_dir: Path,
    ldflags: Sequence[str] = (),
) -> None:
    """Build `packages` into `out_dir`; `ldflags` are added to the base linker flags."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_step(
        step,
        f"go build {' '.join(packages)}",
        ["go", "build", "-trimpath", ldflags_arg(ldflags), "-o", f"{out_dir}/", *packages],
        timeout=_BUILD_TIMEOUT_S,
        cwd=module_dir,
        env=build_env(),
    )
    for package in packages:
        binary = out_dir / package.rstrip("/").rsplit("/", 1)[-1]
        if not binary.is_file():
            raise ProvisionError(
                step.component, step.version, "go build", f"{binary} was not produced"
            )
