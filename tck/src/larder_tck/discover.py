"""Asking a frontend what it serves, as the sidecar does at start."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import larder_protocol
from larder_tck import protocol as p
from larder_tck.expect import FrontendUnreachable
from larder_tck.model import (
    ACTION_MODEL,
    ACTION_TWO,
    CONFIGURED_PASSIVATION_MS,
    ES_CONFIGURED,
    ES_CONFIGURED_ENTITY_TYPE,
    ES_ENTITY_TYPE,
    ES_MODEL,
    ES_TWO,
    ES_TWO_ENTITY_TYPE,
    VE_CONFIGURED,
    VE_CONFIGURED_ENTITY_TYPE,
    VE_ENTITY_TYPE,
    VE_MODEL,
    VE_TWO,
    VE_TWO_ENTITY_TYPE,
    VIEW_MODEL,
)

TCK_VERSION = "0.1.0"
DISCOVERY_TIMEOUT = 10.0


def proxy_info() -> Any:
    version = max(larder_protocol.SUPPORTED_PROTOCOL_VERSIONS)
    return p.discovery.ProxyInfo(
        protocol_major_version=version.major,
        protocol_minor_version=version.minor,
        proxy_name="larder-tck",
        proxy_version=TCK_VERSION,
        supported_entity_types=[
            larder_protocol.EVENT_SOURCED_ENTITY,
            larder_protocol.VALUE_ENTITY,
            larder_protocol.ACTION,
            larder_protocol.VIEW,
        ],
    )


async def discover(channel: grpc.aio.Channel) -> Any:
    try:
        return await p.discovery_grpc.DiscoveryStub(channel).Discover(
            proxy_info(), timeout=DISCOVERY_TIMEOUT
        )
    except grpc.aio.AioRpcError as e:
        raise FrontendUnreachable(
            f"Discovery/Discover failed with {e.code().name}: {e.details()}; is the frontend "
            "serving the Akka Serverless protocol on that address?"
        ) from e


def _entity(component_type: str, service: str, entity_type: str, passivation_ms: int = 0) -> Any:
    out = p.discovery.Component(component_type=component_type, service_name=service)
    out.entity.entity_type = entity_type
    if passivation_ms:
        out.entity.passivation_strategy.timeout.timeout = passivation_ms
    return out


def expected_components() -> dict[str, list[Any]]:
    """Per component type, the model components a frontend of that type must declare."""
    es, ve, action, view = (
        larder_protocol.EVENT_SOURCED_ENTITY,
        larder_protocol.VALUE_ENTITY,
        larder_protocol.ACTION,
        larder_protocol.VIEW,
    )
    return {
        es: [
            _entity(es, ES_MODEL, ES_ENTITY_TYPE),
            _entity(es, ES_TWO, ES_TWO_ENTITY_TYPE),
            _entity(es, ES_CONFIGURED, ES_CONFIGURED_ENTITY_TYPE, CONFIGURED_PASSIVATION_MS),
        ],
        ve: [
            _entity(ve, VE_MODEL, VE_ENTITY_TYPE),
            _entity(ve, VE_TWO, VE_TWO_ENTITY_TYPE),
            _entity(ve, VE_CONFIGURED, VE_CONFIGURED_ENTITY_TYPE, CONFIGURED_PASSIVATION_MS),
        ],
        action: [
            p.discovery.Component(component_type=action, service_name=ACTION_MODEL),
            p.discovery.Component(component_type=action, service_name=ACTION_TWO),
        ],
        view: [p.discovery.Component(component_type=view, service_name=VIEW_MODEL)],
    }


def comparable(component: Any) -> Any:
    """A component with only what the TCK checks (forward headers are the frontend's choice)."""
    out = p.discovery.Component(
        component_type=component.component_type, service_name=component.service_name
    )
    if component.WhichOneof("component_settings") == "entity":
        out.entity.entity_type = component.entity.entity_type
        if component.entity.HasField("passivation_strategy"):
            out.entity.passivation_strategy.CopyFrom(component.entity.passivation_strategy)
    return out


def implemented_types(spec: Any) -> set[str]:
    """The model component types a frontend serves (any of that type's model services)."""
    served = {c.service_name for c in spec.components}
    return {
        component_type
        for component_type, components in expected_components().items()
        if any(c.service_name in served for c in components)
    }
