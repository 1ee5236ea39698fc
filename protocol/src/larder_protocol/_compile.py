"""Compile user .proto files against Larder's protocol protos (build-time helper)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from larder_protocol._include import include_dir

_PROTOC_TIMEOUT_S = 300.0


class ProtocCompileError(RuntimeError):
    """protoc rejected the input; the message carries protoc's diagnostics."""


def compile_protos(
    sources: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    include: Sequence[str | os.PathLike[str]] = (),
    *,
    descriptor_set_out: str | os.PathLike[str] | None = None,
    python: bool = True,
) -> None:
    """Run grpcio-tools' protoc over ``sources``.

    ``include`` directories are searched first, then Larder's include dir
    (``akkaserverless/*.proto``, ``google/api/*.proto``), then the well-known
    types shipped with grpcio-tools. Each source must lie under one of the
    include directories (as protoc requires). With ``python`` the outputs are
    ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` in ``out_dir``; with
    ``descriptor_set_out`` a FileDescriptorSet including all imports is written
    too (the form the npm SDK and the discovery ``Spec.proto`` need).
    """
    try:
        # Lazy: grpcio-tools is an optional extra, needed only to compile.
        import grpc_tools  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(
            "compile_protos needs grpcio-tools; install larder-protocol[compile]"
        ) from e

    source_list = [str(Path(source)) for source in sources]
    if not source_list:
        raise ValueError("compile_protos needs at least one .proto source")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [sys.executable, "-m", "grpc_tools.protoc"]
    args += [f"-I{Path(path)}" for path in include]
    args += [f"-I{include_dir()}", f"-I{well_known}"]
    if python:
        args += [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if descriptor_set_out is not None:
        args += ["--include_imports", f"--descriptor_set_out={Path(descriptor_set_out)}"]
    args += source_list
    # A subprocess rather than grpc_tools.protoc.main: protoc reports errors on
    # the process's own stderr, which only a child process lets us capture.
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=_PROTOC_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ProtocCompileError(
            f"protoc did not finish within {_PROTOC_TIMEOUT_S:.0f}s "
            f"compiling {', '.join(source_list)}"
        ) from e
    if done.returncode != 0:
        raise ProtocCompileError(
            f"protoc exited with {done.returncode} compiling {', '.join(source_list)}:\n"
            f"{done.stderr.strip()}"
        )
