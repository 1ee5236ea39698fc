"""Server reflection for the gRPC front, `grpc.reflection.v1` and `v1alpha`.

Clients (grpcurl, Postman, grpcui) ask v1 first. grpcio-reflection serves only v1alpha
(grpc/grpc#38576), but v1 is the same protocol under a new package: its messages
have the same fields and numbers. So one servicer answers both names, parsing v1
requests with the v1alpha message classes, and the v1 file is described from
v1alpha's with the package renamed.

Every listed service is also described: the health and reflection files are added to
the pool of the user's files, which is all that reflection looks in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

log = logging.getLogger("larder_sidecar.reflection")

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
SERVICE_V1ALPHA = f"{V1ALPHA}.ServerReflection"
SERVICE_V1 = f"{V1}.ServerReflection"
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """`grpc/reflection/v1/reflection.proto`, from v1alpha's descriptor."""
    file = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = V1
    # v1alpha's options are its own (a deprecated Java/Go package); v1 needs none here.
    file.ClearField("options")
    old, new = f".{V1ALPHA}.", f".{V1}."
    messages = list(file.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return file


def _own_files() -> list[descriptor_pb2.FileDescriptorProto]:
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        for module in (health_pb2, reflection_pb2)
    ]
    return [*files, v1_file()]


def _add_own_files(pool: descriptor_pool.DescriptorPool) -> None:
    for file in _own_files():
        try:
            pool.FindFileByName(file.name)
            continue  # the user's descriptor set brought the same file
        except KeyError:
            pass
        try:
            pool.Add(file)
        except (TypeError, ValueError) as e:
            # A user file defines the same names under another file name; reflection
            # then describes the user's definition.
            log.warning("reflection cannot describe %s: %s", file.name, e)


class _WithMethods:
    """The pool as reflection reads it, plus the file of a method's full name
    (`package.Service.Method`). The reflection protocol lists methods among the symbols a
    client may ask for, and ghz asks for the method it is told to call; protobuf's default
    (upb) pool finds services, messages, fields and enums by name, but not methods, so
    without this ghz reports `Symbol not found` for a method the server serves."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:  # the pool's name
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError as missing:
            service, _, method = symbol.rpartition(".")
            try:
                found = self._pool.FindServiceByName(service)
            except KeyError:
                raise missing from None
            if method not in found.methods_by_name:
                raise
            return found.file


def enable_reflection(
    server: grpc.aio.Server, services: Sequence[str], pool: descriptor_pool.DescriptorPool
) -> list[str]:
    """Serve reflection v1 and v1alpha on `server` for `services` (the user's, by full
    name) plus health and reflection; returns every name listed."""
    _add_own_files(pool)
    names = [*services, HEALTH_SERVICE, SERVICE_V1, SERVICE_V1ALPHA]
    # grpc_reflection's asyncio servicer (reflection.aio) is missing from its type hints.
    servicer: Any = getattr(reflection, "aio").ReflectionServicer(  # noqa: B009
        names, pool=_WithMethods(pool)
    )
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler})
            for service in (SERVICE_V1, SERVICE_V1ALPHA)
        ]
    )
    return names
