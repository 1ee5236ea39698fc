"""Larder's Python SDK: write event-sourced entities, value entities, actions and views.

    counter = EventSourcedEntity(counter_pb2.DESCRIPTOR.services_by_name["CounterService"],
                                 entity_type="counter", state_type=CounterState)

    @counter.command_handler
    def increase(state: CounterState, command: IncreaseValue, ctx: EventSourcedContext) -> Empty:
        ctx.emit(ValueIncreased(value=command.value))
        return Empty()

    @counter.event_handler
    def increased(state: CounterState, event: ValueIncreased) -> CounterState:
        state.value += event.value
        return state

    LarderService([counter]).run()

The in-process test kit lives in `larder_sdk.testkit`.
"""

from larder_sdk._action import Action
from larder_sdk._component import Component
from larder_sdk._context import (
    ActionContext,
    EffectContext,
    EntityContext,
    EventSourcedContext,
    ValueEntityContext,
    ViewContext,
)
from larder_sdk._definition import ServiceRef
from larder_sdk._effects import Forward, MethodRef, Reply, SideEffect, forward
from larder_sdk._errors import CommandFailed, DefinitionError, LarderError
from larder_sdk._eventsourced import EventSourcedEntity
from larder_sdk._metadata import Metadata, MetadataValue
from larder_sdk._server import LarderService, ServerSettings
from larder_sdk._valueentity import ValueEntity
from larder_sdk._view import DELETE_ROW, DeleteRow, View

__all__ = [
    "DELETE_ROW",
    "Action",
    "ActionContext",
    "CommandFailed",
    "Component",
    "DefinitionError",
    "DeleteRow",
    "EffectContext",
    "EntityContext",
    "EventSourcedContext",
    "EventSourcedEntity",
    "Forward",
    "LarderError",
    "LarderService",
    "Metadata",
    "MetadataValue",
    "MethodRef",
    "Reply",
    "ServerSettings",
    "ServiceRef",
    "SideEffect",
    "ValueEntity",
    "ValueEntityContext",
    "View",
    "ViewContext",
    "forward",
]
