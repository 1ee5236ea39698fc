"""Generates the Python code for this sample's protos, next to the hand-written modules.

`proto/turkey/x.proto` becomes `src/turkey/x_pb2.py` (+ `.pyi`, `_pb2_grpc.py`). They are
never committed: `python -m turkey` regenerates whatever is missing or older than its
`.proto` before it starts, and the Dockerfile runs `python -m turkey._codegen` at image
build time.
"""

from __future__ import annotations

from pathlib import Path

import larder_protocol

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_DIR.parent.parent / "proto"


def ensure_generated() -> None:
    """Regenerate when a .proto is newer than its generated modules (or they are missing)."""
    larder_protocol.ensure_generated(PACKAGE_DIR, PROTO_ROOT)


if __name__ == "__main__":
    ensure_generated()
