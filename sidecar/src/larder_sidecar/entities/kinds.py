"""Which entity class and protocol stub serve each stateful component type.

A new component type (replicated entities) is one more row here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc.aio

from ..model import Kind
from ..protocol import event_sourced_entity_pb2_grpc as es_grpc
from ..protocol import value_entity_pb2_grpc as ve_grpc
from .entity import Entity
from .event_sourced import EventSourcedEntity
from .value_entity import ValueEntity


@dataclass(frozen=True, slots=True)
class EntityKind:
    entity: type[Entity]
    stub: Callable[[grpc.aio.Channel], Any]
    """Builds the component type's protocol stub on the user function's channel."""


KINDS: Mapping[Kind, EntityKind] = {
    Kind.EVENT_SOURCED: EntityKind(EventSourcedEntity, es_grpc.EventSourcedEntitiesStub),
    Kind.VALUE: EntityKind(ValueEntity, ve_grpc.ValueEntitiesStub),
}
