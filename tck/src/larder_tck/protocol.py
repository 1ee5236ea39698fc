"""The protocol modules the TCK uses, under short names."""

from __future__ import annotations

from akkaserverless.component import component_pb2 as component
from akkaserverless.component.action import action_pb2 as action
from akkaserverless.component.action import action_pb2_grpc as action_grpc
from akkaserverless.component.entity import entity_pb2 as entity
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2_grpc as es_grpc
from akkaserverless.component.valueentity import value_entity_pb2 as ve
from akkaserverless.component.valueentity import value_entity_pb2_grpc as ve_grpc
from akkaserverless.component.view import view_pb2 as view
from akkaserverless.component.view import view_pb2_grpc as view_grpc
from akkaserverless.protocol import discovery_pb2 as discovery
from akkaserverless.protocol import discovery_pb2_grpc as discovery_grpc

__all__ = [
    "action",
    "action_grpc",
    "component",
    "discovery",
    "discovery_grpc",
    "entity",
    "es",
    "es_grpc",
    "ve",
    "ve_grpc",
    "view",
    "view_grpc",
]
