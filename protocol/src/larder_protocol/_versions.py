"""Protocol versions and component types, as the published SDKs announce them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ProtocolVersion:
    """A ``major.minor`` protocol version from ``ServiceInfo``/``ProxyInfo``."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


# PyPI akkaserverless 0.1.13 hard-codes 0.7 in its discovery servicer; npm
# 0.32.0 derives it from its framework version "0.7.0-beta.14" (settings.js).
SUPPORTED_PROTOCOL_VERSIONS: frozenset[ProtocolVersion] = frozenset({ProtocolVersion(0, 7)})

# Component types are the full names of the gRPC services a user function
# implements for that kind of component (``Component.component_type``).
EVENT_SOURCED_ENTITY = "akkaserverless.component.eventsourcedentity.EventSourcedEntities"
VALUE_ENTITY = "akkaserverless.component.valueentity.ValueEntities"
REPLICATED_ENTITY = "akkaserverless.component.replicatedentity.ReplicatedEntities"
ACTION = "akkaserverless.component.action.Actions"
VIEW = "akkaserverless.component.view.Views"

COMPONENT_TYPES: frozenset[str] = frozenset(
    {EVENT_SOURCED_ENTITY, VALUE_ENTITY, REPLICATED_ENTITY, ACTION, VIEW}
)
