"""The Discovery service: tells the sidecar what this user function serves."""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from larder_sdk import _protocol as proto
from larder_sdk._component import Component

logger = logging.getLogger("larder_sdk.discovery")

LIBRARY_NAME = "larder-sdk"


def library_version() -> str:
    try:
        return importlib_metadata.version(LIBRARY_NAME)
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What the user function says about itself in discovery."""

    service_name: str = ""
    service_version: str = ""
    runtime: str = f"Python {platform.python_version()}"
    library_name: str = LIBRARY_NAME
    library_version: str = library_version()

    def to_protocol(self) -> Any:
        return proto.discovery.ServiceInfo(
            service_name=self.service_name,
            service_version=self.service_version,
            service_runtime=self.runtime,
            support_library_name=self.library_name,
            support_library_version=self.library_version,
            protocol_major_version=proto.PROTOCOL_MAJOR_VERSION,
            protocol_minor_version=proto.PROTOCOL_MINOR_VERSION,
        )


def file_descriptor_set(components: Sequence[Component]) -> descriptor_pb2.FileDescriptorSet:
    """Every file the components' services and messages need, imports first."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def visit(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        file.CopyToProto(out.file.add())

    for component in components:
        for file in component.descriptor_files():
            visit(file)
    return out


class Discovery:
    """`akkaserverless.protocol.Discovery`, served over grpc.aio."""

    def __init__(
        self,
        components: Sequence[Component],
        info: ServiceInfo,
        on_proxy_terminated: Callable[[], None],
        on_discovered: Callable[[], None] = lambda: None,
    ) -> None:
        self._components = components
        self._info = info
        self._descriptor_set = file_descriptor_set(components).SerializeToString()
        self._on_proxy_terminated = on_proxy_terminated
        self._on_discovered = on_discovered
        self.proxy_seen = False

    async def discover(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        spec = proto.discovery.Spec(service_info=self._info.to_protocol())
        # Protocol 0.0 is a version probe: it gets the service info only.
        if not request.protocol_major_version and not request.protocol_minor_version:
            return spec
        self.proxy_seen = True
        self._on_discovered()
        logger.info(
            "discovery by %s %s (protocol %d.%d%s): serving %d components",
            request.proxy_name or "a proxy",
            request.proxy_version,
            request.protocol_major_version,
            request.protocol_minor_version,
            ", dev mode" if request.dev_mode else "",
            len(self._components),
        )
        spec.proto = self._descriptor_set
        spec.components.extend(c.discovery_component() for c in self._components)
        return spec

    async def report_error(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        locations = "".join(
            f"\n  at {loc.file_name}:{loc.start_line + 1}:{loc.start_col + 1}"
            for loc in request.source_locations
        )
        detail = f"\n{request.detail}" if request.detail else ""
        logger.error(
            "the sidecar reports an error%s: %s%s%s",
            f" [{request.code}]" if request.code else "",
            request.message,
            detail,
            locations,
        )
        return proto.empty_pb2.Empty()

    async def proxy_terminated(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        logger.info("the sidecar has terminated")
        self._on_proxy_terminated()
        return proto.empty_pb2.Empty()

    async def health_check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return proto.empty_pb2.Empty()

    def rpc_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        empty = proto.empty_pb2.Empty
        return grpc.method_handlers_generic_handler(
            "akkaserverless.protocol.Discovery",
            {
                "Discover": grpc.unary_unary_rpc_method_handler(
                    self.discover,
                    request_deserializer=proto.discovery.ProxyInfo.FromString,
                    response_serializer=proto.discovery.Spec.SerializeToString,
                ),
                "ReportError": grpc.unary_unary_rpc_method_handler(
                    self.report_error,
                    request_deserializer=proto.discovery.UserFunctionError.FromString,
                    response_serializer=empty.SerializeToString,
                ),
                "ProxyTerminated": grpc.unary_unary_rpc_method_handler(
                    self.proxy_terminated,
                    request_deserializer=empty.FromString,
                    response_serializer=empty.SerializeToString,
                ),
                "HealthCheck": grpc.unary_unary_rpc_method_handler(
                    self.health_check,
                    request_deserializer=empty.FromString,
                    response_serializer=empty.SerializeToString,
                ),
            },
        )
