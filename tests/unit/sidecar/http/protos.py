"""Compiles the test protos with the real protoc and turns them into MethodModels."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from larder_protocol import compile_protos
from larder_sidecar.invoke import MethodModel

PROTO_DIR = Path(__file__).parent / "protos"


def compile_descriptor_set(
    out_dir: Path, proto_dir: Path = PROTO_DIR
) -> descriptor_pb2.FileDescriptorSet:
    """Compile every .proto in `proto_dir` into one FileDescriptorSet (imports included)."""
    work = out_dir / "src"
    shutil.copytree(proto_dir, work, dirs_exist_ok=True)
    out = out_dir / "user-function.desc"
    compile_protos(
        sorted(work.glob("*.proto")), out_dir, [work], descriptor_set_out=out, python=False
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def method_models(files: descriptor_pb2.FileDescriptorSet) -> list[MethodModel]:
    """Every method of every service, from a private pool as the sidecar builds it."""
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return [
        model_of(method)
        for file in files.file
        for service in file.service
        for method in pool.FindServiceByName(f"{file.package}.{service.name}").methods
    ]


def model_of(method: MethodDescriptor) -> MethodModel:
    return MethodModel(
        service=method.containing_service.full_name,
        name=method.name,
        component_type="akkaserverless.component.action.Actions",
        descriptor=method,
        input=method.input_type,
        output=method.output_type,
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
    )


def by_path(methods: Sequence[MethodModel], path: str) -> MethodModel:
    return next(m for m in methods if m.path == path)
