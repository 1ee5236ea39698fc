"""Hatch build hook: generate the ``akkaserverless`` and ``larder_internal`` Python packages
from ``proto/``.

Runs protoc (from grpcio-tools, in-process) with ``--python_out``, ``--pyi_out``
and ``--grpc_python_out`` over ``proto/akkaserverless/**`` (the user-function protocol)
and ``proto/larder_internal/**`` (the sidecars' own protocol; a top-level ``larder``
package would shadow user protos named ``larder.*``) into ``src/``, then adds
the ``__init__.py`` files the generated directories need. ``google/api/*`` is
deliberately not generated: at runtime those modules come from
googleapis-common-protos, and a second copy would clash in the descriptor pool.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grpc_tools
from grpc_tools import protoc
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

GENERATED_PACKAGES = ("akkaserverless", "larder_internal")


class ProtocolBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        generate(Path(self.root))


def generate(root: Path, packages: tuple[str, ...] = GENERATED_PACKAGES) -> None:
    for package in packages:
        generate_package(root, package)


def generate_package(root: Path, package: str) -> None:
    proto_dir = root / "proto"
    out_dir = root / "src"
    target = out_dir / package
    # Regenerate from scratch so a renamed or deleted .proto leaves no stale module.
    shutil.rmtree(target, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(
        path.relative_to(proto_dir).as_posix() for path in (proto_dir / package).rglob("*.proto")
    )
    if not sources:
        raise RuntimeError(f"no .proto files under {proto_dir / package}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(
            f"protoc failed generating Python from {proto_dir} (its errors are printed above)"
        )
    for directory in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
