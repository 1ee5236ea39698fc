"""Keep a package's generated protobuf modules next to its hand-written code, up to date.

Used by user functions (the samples among them) that compile their protos at start or at
image build time instead of committing generated code.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from larder_protocol._compile import compile_protos


def _outputs(package_dir: Path, proto: Path) -> list[Path]:
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    return [package_dir / f"{proto.stem}{suffix}" for suffix in suffixes]


def _sources(package_dir: Path, proto_root: Path) -> list[Path]:
    sources_dir = proto_root / package_dir.name
    sources = sorted(sources_dir.glob("*.proto"))
    if not sources:
        raise FileNotFoundError(
            f"no .proto files in {sources_dir}; expected the protos of package "
            f"{package_dir.name!r} there"
        )
    return sources


def generated_is_stale(package_dir: Path, proto_root: Path) -> bool:
    """Whether any generated module is missing or older than the newest .proto."""
    sources = _sources(package_dir, proto_root)
    newest = max(p.stat().st_mtime for p in sources)
    return any(
        not out.exists() or out.stat().st_mtime < newest
        for proto in sources
        for out in _outputs(package_dir, proto)
    )


def ensure_generated(package_dir: Path, proto_root: Path) -> None:
    """Regenerate `<proto_root>/<package>/*.proto` into `package_dir` when stale.

    `proto/pkg/x.proto` becomes `pkg/x_pb2.py` (+ `.pyi`, `_pb2_grpc.py`), so the
    generated modules import each other as `pkg.x_pb2`.
    """
    if not generated_is_stale(package_dir, proto_root):
        return
    # Generate elsewhere and move the files in, so a concurrent start never imports a
    # half-written module.
    with tempfile.TemporaryDirectory(prefix="codegen-", dir=package_dir.parent) as scratch:
        compile_protos(_sources(package_dir, proto_root), scratch, include=[proto_root])
        for generated in (Path(scratch) / package_dir.name).iterdir():
            shutil.move(generated, package_dir / generated.name)
