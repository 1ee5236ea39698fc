from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from larder_sidecar.http.routes import RouteTable, build_route_table
from larder_sidecar.invoke import MethodModel

from .protos import compile_descriptor_set, method_models


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    return compile_descriptor_set(tmp_path_factory.mktemp("http-protos"))


@pytest.fixture(scope="session")
def methods(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[MethodModel]:
    return method_models(descriptor_set)


@pytest.fixture(scope="session")
def table(methods: list[MethodModel]) -> RouteTable:
    return build_route_table(methods)
