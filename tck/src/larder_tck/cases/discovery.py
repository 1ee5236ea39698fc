"""Discovery cases: service info, protocol version, components, the descriptor set."""

from __future__ import annotations

import larder_protocol
from google.protobuf import descriptor_pb2, empty_pb2
from google.protobuf.message import DecodeError
from larder_tck import protocol as p
from larder_tck.context import ModelContext
from larder_tck.discover import comparable, discover, expected_components, implemented_types
from larder_tck.expect import CaseFailed, check, expect_equal
from larder_tck.model import PROTO_FILES
from larder_tck.registry import DISCOVERY, case


@case("discovery.service-info", "model", DISCOVERY)
async def service_info(ctx: ModelContext) -> None:
    """Discover answers with service info naming a supported protocol version and library."""
    spec = await discover(ctx.channel)
    info = spec.service_info
    version = larder_protocol.ProtocolVersion(
        info.protocol_major_version, info.protocol_minor_version
    )
    supported = ", ".join(str(v) for v in sorted(larder_protocol.SUPPORTED_PROTOCOL_VERSIONS))
    check(
        version in larder_protocol.SUPPORTED_PROTOCOL_VERSIONS,
        f"ServiceInfo announces protocol {version}, but the supported versions are {supported}",
    )
    check(
        bool(info.support_library_name),
        "ServiceInfo.support_library_name is empty; the frontend must name its support library",
    )


@case("discovery.components", "model", DISCOVERY)
async def components(ctx: ModelContext) -> None:
    """Every model component of each implemented type is declared with its settings."""
    spec = await discover(ctx.channel)
    types = implemented_types(spec)
    check(
        bool(types),
        "the frontend declares none of the TCK's model services; declared: "
        + (", ".join(c.service_name for c in spec.components) or "nothing"),
    )
    declared = {c.service_name: comparable(c) for c in spec.components}
    for component_type in sorted(types):
        for expected in expected_components()[component_type]:
            actual = declared.get(expected.service_name)
            expect_equal(
                f"the discovered component {expected.service_name}",
                expected,
                actual,
                "the component type, entity type and passivation timeout (100 ms for the "
                "configured entity) must be as the model defines them",
            )


@case("discovery.descriptor-set", "model", DISCOVERY)
async def descriptor_set(ctx: ModelContext) -> None:
    """Spec.proto is a FileDescriptorSet with the model services and all their imports."""
    spec = await discover(ctx.channel)
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(spec.proto)
    except DecodeError as e:
        raise CaseFailed(f"Spec.proto is not a serialized FileDescriptorSet: {e}") from e
    by_name = {f.name: f for f in files.file}
    for file in files.file:
        missing = [d for d in file.dependency if d not in by_name]
        check(
            not missing,
            f"Spec.proto: {file.name} imports {', '.join(missing)}, which the descriptor set "
            "does not include (compile with --include_imports)",
        )
    services = {f"{f.package}.{s.name}": s for f in files.file for s in f.service}
    ours = {f"{f.package}.{s.name}": s for f in ctx.model.files.file for s in f.service}
    for component in spec.components:
        service = services.get(component.service_name)
        check(
            service is not None,
            f"component {component.service_name} is declared, but Spec.proto has no such service",
        )
        if component.service_name in ours:
            expect_equal(
                f"the descriptor of {component.service_name}",
                ours[component.service_name],
                service,
                f"the frontend must serve the TCK's model protos ({', '.join(PROTO_FILES)}) "
                "unchanged",
            )


@case("discovery.health-check", "model", DISCOVERY)
async def health_check(ctx: ModelContext) -> None:
    """HealthCheck answers."""
    stub = p.discovery_grpc.DiscoveryStub(ctx.channel)
    expect_equal(
        "HealthCheck", empty_pb2.Empty(), await stub.HealthCheck(empty_pb2.Empty(), timeout=10)
    )
