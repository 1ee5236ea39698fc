"""Generates the Python code for this sample's protos, next to the hand-written modules.

`proto/shoppingcart/x.proto` becomes `src/shoppingcart/x_pb2.py` (+ `.pyi`,
`_pb2_grpc.py`), so the generated modules import each other as `shoppingcart.x_pb2`.
They are never committed: `python -m shoppingcart` regenerates whatever is missing or
older than its `.proto` before it starts, and the Dockerfile runs
`python -m shoppingcart._codegen` at image build time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from larder_protocol import compile_protos

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_DIR.parent.parent / "proto"
_SOURCES_DIR = PROTO_ROOT / PACKAGE_DIR.name


def _outputs(proto: Path) -> list[Path]:
    stem = proto.stem
    return [PACKAGE_DIR / f"{stem}_pb2.py", PACKAGE_DIR / f"{stem}_pb2.pyi",
            PACKAGE_DIR / f"{stem}_pb2_grpc.py"]


def is_stale() -> bool:
    sources = sorted(_SOURCES_DIR.glob("*.proto"))
    if not sources:
        raise FileNotFoundError(f"no .proto files in {_SOURCES_DIR}; the sample is incomplete")
    newest_source = max(p.stat().st_mtime for p in sources)
    outputs = [out for proto in sources for out in _outputs(proto)]
    return any(not out.exists() or out.stat().st_mtime < newest_source for out in outputs)


def ensure_generated() -> None:
    """Regenerate when a .proto is newer than its generated modules (or they are missing)."""
    if not is_stale():
        return
    sources = sorted(_SOURCES_DIR.glob("*.proto"))
    # Generate elsewhere and move the files in, so a concurrent start never
    # imports a half-written module.
    with tempfile.TemporaryDirectory(prefix="codegen-", dir=PACKAGE_DIR.parent) as scratch:
        compile_protos(sources, scratch, include=[PROTO_ROOT])
        for generated in (Path(scratch) / PACKAGE_DIR.name).iterdir():
            shutil.move(generated, PACKAGE_DIR / generated.name)


if __name__ == "__main__":
    ensure_generated()
