"""The protocol messages the SDK speaks, imported in one place.

The generated modules come from the `larder-protocol` package (top-level
`akkaserverless`); they are untyped to mypy, so the aliases below are `Any`.
"""

from __future__ import annotations

from akkaserverless import annotations_pb2
from akkaserverless.component import component_pb2 as component
from akkaserverless.component.action import action_pb2 as action
from akkaserverless.component.entity import entity_pb2 as entity
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2 as eventsourced,
)
from akkaserverless.component.valueentity import value_entity_pb2 as valueentity
from akkaserverless.component.view import view_pb2 as view
from akkaserverless.protocol import discovery_pb2 as discovery
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from larder_protocol import ACTION, EVENT_SOURCED_ENTITY, VALUE_ENTITY, VIEW

__all__ = [
    "ACTION_COMPONENT",
    "EVENT_SOURCED_COMPONENT",
    "PROTOCOL_MAJOR_VERSION",
    "PROTOCOL_MINOR_VERSION",
    "TYPE_URL_PREFIX",
    "VALUE_ENTITY_COMPONENT",
    "VIEW_COMPONENT",
    "action",
    "annotations_pb2",
    "component",
    "discovery",
    "empty_pb2",
    "entity",
    "eventsourced",
    "pack",
    "type_name_of",
    "valueentity",
    "view",
]

# Both published SDKs (PyPI akkaserverless 0.1.13, npm 0.32.0) announce 0.7.
PROTOCOL_MAJOR_VERSION = 0
PROTOCOL_MINOR_VERSION = 7

EVENT_SOURCED_COMPONENT = EVENT_SOURCED_ENTITY
VALUE_ENTITY_COMPONENT = VALUE_ENTITY
ACTION_COMPONENT = ACTION
VIEW_COMPONENT = VIEW

TYPE_URL_PREFIX = "type.googleapis.com/"


def pack(message: Message) -> any_pb2.Any:
    """Wrap a message in an `Any` the way the published SDKs do."""
    return any_pb2.Any(
        type_url=TYPE_URL_PREFIX + message.DESCRIPTOR.full_name,
        value=message.SerializeToString(),
    )


def type_name_of(type_url: str) -> str:
    """The full message name in a type URL (whatever host prefix it carries)."""
    return type_url.rpartition("/")[2]
