"""The two published Akka Serverless SDKs, provisioned once and cached.

Larder must be wire-compatible with PyPI ``akkaserverless`` 0.1.13 and npm
``@lightbend/akkaserverless-javascript-sdk`` 0.32.0. Tests use them in two ways:
as the source of truth for the protocol descriptors, and as real user functions
(the npm SDK's samples run against the sidecar).

Everything lands under ``$LARDER_CACHE`` (default ``~/.cache/larder``). Each
artifact is built in a temporary sibling directory and renamed into place, so a
crash or a concurrent run never leaves a half-built cache entry behind; a lock
file serialises concurrent provisioning.

Run ``python -m tests.infra.published_sdks`` to provision and print the paths, and
``python -m tests.infra.published_sdks lock-npm`` (``make lock`` does) to rewrite the npm
SDK's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The test environment's grpcio-tools (not the PyPI venv's, which has none).
import grpc_tools

from tests.infra import cache as infra_cache

PYPI_SDK = "akkaserverless"
PYPI_SDK_VERSION = "0.1.13"
NPM_SDK = "@lightbend/akkaserverless-javascript-sdk"
NPM_SDK_VERSION = "0.32.0"

# The PyPI SDK's environment, from the project's locks (requirements/*.in say why each
# package and version): its runtime dependencies and grpcio-tools, hashes checked; then
# the SDK and googleapis-common-protos without their declared dependencies.
_REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements"
_PYPI_LOCK = _REQUIREMENTS / "published-sdk-pypi.lock"
_PYPI_NO_DEPS_LOCK = _REQUIREMENTS / "published-sdk-pypi-nodeps.lock"
PYPI_SDK_ENV = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}

_NPM_LOCK = _REQUIREMENTS / "published-sdk-npm.package-lock.json"
# npm ci installs exactly the lock (integrity hashes checked) and fails if the
# package's dependencies and the lock disagree.
_NPM_INSTALL_ARGS = (
    "ci",
    "--omit=dev",
    "--ignore-scripts",
    "--engine-strict=false",
    "--no-audit",
    "--no-fund",
)

def _lock_digest(lock: Path) -> str:
    return f"{lock.name} sha256 {hashlib.sha256(lock.read_bytes()).hexdigest()}"


# Bump when a build step changes in a way the argument lists above do not show;
# the cache directories are keyed by these recipes, so a change builds afresh
# beside the old entry instead of trusting it.
_RECIPE_REVISION = 3
_PYPI_RECIPE = (
    f"rev {_RECIPE_REVISION}; python {sys.version_info.major}.{sys.version_info.minor}; "
    f"{_lock_digest(_PYPI_LOCK)}; --no-deps {_lock_digest(_PYPI_NO_DEPS_LOCK)}"
)
_NPM_RECIPE = (
    f"rev {_RECIPE_REVISION}; {NPM_SDK}@{NPM_SDK_VERSION}; no devDependencies; "
    f"{_lock_digest(_NPM_LOCK)}; npm {' '.join(_NPM_INSTALL_ARGS)}"
)

_PIP_TIMEOUT_S = 600.0
_NPM_TIMEOUT_S = 600.0
_PROTOC_TIMEOUT_S = 120.0
_PYTHON_TIMEOUT_S = 120.0


class ProvisioningError(RuntimeError):
    """A provisioning step failed; the message names the step and its output."""


@dataclass(frozen=True)
class PublishedSdks:
    """Where the provisioned published SDKs live."""

    python: Path
    """Interpreter of a virtualenv with the PyPI SDK installed (run it with ``PYPI_SDK_ENV``)."""
    pypi_package: Path
    """The installed ``akkaserverless`` package directory inside that virtualenv."""
    npm_package: Path
    """The extracted npm package (``package/``), with its ``node_modules`` installed."""
    npm_proto_dir: Path
    """The npm package's ``.proto`` tree (``package/proto``)."""


def cache_root() -> Path:
    return infra_cache.cache_root() / "published-sdks"


def provision(root: Path | None = None) -> PublishedSdks:
    """Provision both SDKs (a no-op when already cached) and return their paths."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        venv = _ensure(
            root / f"pypi-{PYPI_SDK}-{infra_cache.entry_key(PYPI_SDK_VERSION, _PYPI_RECIPE)}",
            _build_pypi_venv,
        )
        npm = _ensure(
            root / "npm-akkaserverless-javascript-sdk-"
            f"{infra_cache.entry_key(NPM_SDK_VERSION, _NPM_RECIPE)}",
            _build_npm,
        )
    python = venv / "bin" / "python"
    package = Path(
        _run(
            "locate the installed PyPI SDK",
            [str(python), "-c", f"import {PYPI_SDK}; print({PYPI_SDK}.__path__[0])"],
            timeout=_PYTHON_TIMEOUT_S,
            env=PYPI_SDK_ENV,
        ).strip()
    )
    return PublishedSdks(
        python=python,
        pypi_package=package,
        npm_package=npm / "package",
        npm_proto_dir=npm / "package" / "proto",
    )


def pypi_descriptor_set(sdks: PublishedSdks) -> bytes:
    """A serialized FileDescriptorSet of every proto file the PyPI SDK's ``_pb2`` modules carry.

    The descriptors come from the modules themselves (not from .proto sources,
    which the wheel does not ship), including their transitive dependencies.
    """
    return _run_bytes(
        "dump the PyPI SDK's descriptors",
        [str(sdks.python), "-c", _DUMP_DESCRIPTORS, str(sdks.pypi_package)],
        timeout=_PYTHON_TIMEOUT_S,
        env=PYPI_SDK_ENV,
    )


def npm_descriptor_set(sdks: PublishedSdks) -> bytes:
    """A serialized FileDescriptorSet compiled from the npm SDK's ``.proto`` files."""
    sources = sorted(
        p.relative_to(sdks.npm_proto_dir).as_posix() for p in sdks.npm_proto_dir.rglob("*.proto")
    )
    return compile_descriptor_set([sdks.npm_proto_dir], sources)


def compile_descriptor_set(include: Sequence[Path], sources: Sequence[str]) -> bytes:
    """Compile ``sources`` (paths relative to an include dir) with grpcio-tools' protoc."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="larder-desc-") as tmp:
        out = Path(tmp) / "set.desc"
        args = [sys.executable, "-m", "grpc_tools.protoc"]
        args += [f"-I{path}" for path in include]
        args += [f"-I{well_known}", "--include_imports", f"--descriptor_set_out={out}"]
        args += list(sources)
        _run("compile a descriptor set with protoc", args, timeout=_PROTOC_TIMEOUT_S)
        return out.read_bytes()


def compile_for_pypi_sdk(
    sdks: PublishedSdks, include: Sequence[Path], sources: Sequence[str], out: Path
) -> None:
    """Generate ``*_pb2.py`` and ``*_pb2_grpc.py`` for a user's protos, as the PyPI SDK's users do.

    The SDK's ``bin/compile.sh`` runs grpcio-tools in the SDK's environment and then
    rewrites ``from akkaserverless`` imports to ``from akkaserverless.akkaserverless``,
    where the SDK keeps its generated modules; this does the same. Its wheel ships no
    ``.proto`` sources, so imports of ``akkaserverless/*.proto`` (and ``google/api``)
    resolve against the descriptors its modules carry (``--descriptor_set_in``): the
    user's files are compiled against exactly what the SDK registers at run time.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="larder-pypi-sdk-") as tmp:
        sdk_set = Path(tmp) / "sdk.desc"
        sdk_set.write_bytes(pypi_descriptor_set(sdks))
        args = [str(sdks.python), "-m", "grpc_tools.protoc"]
        args += [f"-I{path}" for path in include]
        args += [
            f"--descriptor_set_in={sdk_set}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
        ]
        args += list(sources)
        _run(
            "compile the user's protos for the PyPI SDK",
            args,
            timeout=_PROTOC_TIMEOUT_S,
            env=PYPI_SDK_ENV,
        )
    for generated in out.rglob("*_pb2*.py"):
        text = generated.read_text()
        generated.write_text(_SDK_IMPORT.sub(r"from akkaserverless.akkaserverless\1", text))
        # The output tree is imported as packages (``compatcart.cart_api_pb2``).
        for parent in generated.relative_to(out).parents:
            if parent != Path("."):
                (out / parent / "__init__.py").touch()


# ``from akkaserverless import annotations_pb2`` and ``from akkaserverless.component
# import ...``, at the start of a line, as protoc writes them.
_SDK_IMPORT = re.compile(r"^from akkaserverless(\.| import )", re.MULTILINE)


# Runs inside the PyPI SDK's virtualenv: import every _pb2 module, then write
# the files and their transitive dependencies, dependencies first.
_DUMP_DESCRIPTORS = """
import importlib, pathlib, sys
from google.protobuf import descriptor_pb2
root = pathlib.Path(sys.argv[1])
files = {}
order = []
def visit(fd):
    if fd.name in files:
        return
    files[fd.name] = fd
    for dep in fd.dependencies:
        visit(dep)
    order.append(fd)
for path in sorted(root.rglob("*_pb2.py")):
    rel = path.relative_to(root.parent).with_suffix("")
    module = importlib.import_module(".".join(rel.parts))
    visit(module.DESCRIPTOR)
out = descriptor_pb2.FileDescriptorSet()
for fd in order:
    fd.CopyToProto(out.file.add())
sys.stdout.buffer.write(out.SerializeToString())
"""


def _build_pypi_venv(target: Path) -> None:
    _run("create the PyPI SDK virtualenv", [sys.executable, "-m", "venv", str(target)], timeout=120)
    python = str(target / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    _run(
        "pip install the PyPI SDK's runtime dependencies and grpcio-tools",
        [*pip, "--require-hashes", "-r", str(_PYPI_LOCK)],
        timeout=_PIP_TIMEOUT_S,
    )
    _run(
        f"pip install --no-deps -r {_PYPI_NO_DEPS_LOCK.name}",
        # --no-warn-conflicts: pip would otherwise list the declared dependencies
        # left out on purpose.
        [*pip, "--no-deps", "--no-warn-conflicts", "--require-hashes",
         "-r", str(_PYPI_NO_DEPS_LOCK)],
        timeout=_PIP_TIMEOUT_S,
    )
    _run(
        "import the PyPI SDK and grpcio-tools in its virtualenv",
        [python, "-c", "import akkaserverless.akkaserverless_service, grpc_tools.protoc"],
        timeout=_PYTHON_TIMEOUT_S,
        env=PYPI_SDK_ENV,
    )


def _build_npm(target: Path) -> None:
    package = _unpack_npm_sdk(target)
    shutil.copyfile(_NPM_LOCK, package / "package-lock.json")
    _run(
        f"npm ci in {NPM_SDK}@{NPM_SDK_VERSION} (from {_NPM_LOCK.name})",
        ["npm", *_NPM_INSTALL_ARGS],
        timeout=_NPM_TIMEOUT_S,
        cwd=package,
    )


def write_npm_lock(lock: Path = _NPM_LOCK) -> None:
    """Resolve the npm SDK's dependencies afresh and write them to `lock` (what
    `make lock` runs; provisioning only ever installs from the lock)."""
    with tempfile.TemporaryDirectory(prefix="larder-npm-lock-") as tmp:
        package = _unpack_npm_sdk(Path(tmp) / "sdk")
        if lock.exists():
            # Keeps the versions already locked, as `make lock` does for Python.
            shutil.copyfile(lock, package / "package-lock.json")
        _run(
            f"npm install --package-lock-only in {NPM_SDK}@{NPM_SDK_VERSION}",
            ["npm", "install", "--package-lock-only", "--ignore-scripts",
             "--engine-strict=false", "--no-audit", "--no-fund"],
            timeout=_NPM_TIMEOUT_S,
            cwd=package,
        )
        shutil.copyfile(package / "package-lock.json", lock)


def _unpack_npm_sdk(target: Path) -> Path:
    """The SDK's package, unpacked into `target/package`, ready for npm."""
    target.mkdir()
    spec = f"{NPM_SDK}@{NPM_SDK_VERSION}"
    out = _run(
        f"npm pack {spec}",
        ["npm", "pack", spec, "--pack-destination", str(target), "--silent"],
        timeout=_NPM_TIMEOUT_S,
        cwd=target,
    )
    tarball = target / out.strip().splitlines()[-1]
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(target, filter="data")
    except (OSError, tarfile.TarError) as e:
        raise ProvisioningError(f"extract {tarball}: {e}") from e
    # The package declares node ~14 and a postinstall script that fetches the
    # proxy; neither is needed to run it on the Node we have. Its devDependencies
    # name a package no longer on the registry, and npm resolves the whole tree
    # even with --omit=dev, so they are dropped from package.json first.
    _drop_dev_dependencies(target / "package" / "package.json")
    return target / "package"


def _drop_dev_dependencies(manifest: Path) -> None:
    try:
        data = json.loads(manifest.read_text())
        data.pop("devDependencies", None)
        manifest.write_text(json.dumps(data, indent=2) + "\n")
    except (OSError, ValueError) as e:
        raise ProvisioningError(f"drop devDependencies from {manifest}: {e}") from e


def _ensure(final: Path, build: Callable[[Path], None]) -> Path:
    if final.is_dir():
        return final
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    work = staging / "build"
    try:
        build(work)
        work.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(
    step: str,
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    return _run_bytes(step, args, timeout=timeout, cwd=cwd, env=env).decode(errors="replace")


def _run_bytes(
    step: str,
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            list(args), cwd=cwd, env=full_env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ProvisioningError(f"{step}: timed out after {timeout:.0f}s: {' '.join(args)}") from e
    except OSError as e:
        raise ProvisioningError(f"{step}: could not run {args[0]}: {e}") from e
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()[-4000:]
        raise ProvisioningError(f"{step}: {' '.join(args)} exited with {done.returncode}\n{stderr}")
    return done.stdout


def main() -> None:
    if sys.argv[1:] == ["lock-npm"]:
        write_npm_lock()
        print(f"wrote {_NPM_LOCK}")
    else:
        print(provision())


if __name__ == "__main__":
    main()
