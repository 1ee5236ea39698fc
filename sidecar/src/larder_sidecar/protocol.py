"""The one place the sidecar imports the generated Akka Serverless protocol modules.

The generated code is untyped to mypy (see the root pyproject); everything else in
the sidecar imports protocol messages from here.
"""

from __future__ import annotations

from akkaserverless import annotations_pb2, legacy_entity_key_pb2
from akkaserverless.component import component_pb2
from akkaserverless.component.action import action_pb2, action_pb2_grpc
from akkaserverless.component.entity import entity_pb2
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2,
    event_sourced_entity_pb2_grpc,
)
from akkaserverless.component.valueentity import value_entity_pb2, value_entity_pb2_grpc
from akkaserverless.component.view import view_pb2, view_pb2_grpc
from akkaserverless.protocol import discovery_pb2, discovery_pb2_grpc
from larder_protocol import SUPPORTED_PROTOCOL_VERSIONS

ACCEPTED_PROTOCOL_VERSIONS: frozenset[tuple[int, int]] = frozenset(
    (v.major, v.minor) for v in SUPPORTED_PROTOCOL_VERSIONS
)
# What the sidecar announces in ProxyInfo: the newest version it accepts.
PROXY_PROTOCOL_VERSION: tuple[int, int] = max(ACCEPTED_PROTOCOL_VERSIONS)

__all__ = [
    "ACCEPTED_PROTOCOL_VERSIONS",
    "PROXY_PROTOCOL_VERSION",
    "action_pb2",
    "action_pb2_grpc",
    "annotations_pb2",
    "component_pb2",
    "discovery_pb2",
    "discovery_pb2_grpc",
    "entity_pb2",
    "event_sourced_entity_pb2",
    "event_sourced_entity_pb2_grpc",
    "legacy_entity_key_pb2",
    "value_entity_pb2",
    "value_entity_pb2_grpc",
    "view_pb2",
    "view_pb2_grpc",
]
