"""The turkey entity: commands decide which events happen, events change the turkey."""

from __future__ import annotations

from google.protobuf.empty_pb2 import Empty
from larder_sdk import EventSourcedContext, EventSourcedEntity

import turkey.turkey_api_pb2 as api
import turkey.turkey_domain_pb2 as domain
from turkey.doneness import doneness

ENTITY_TYPE = "turkey"
INTERNAL = domain.TemperatureChange.INTERNAL
EXTERNAL = domain.TemperatureChange.EXTERNAL

entity: EventSourcedEntity[api.TurkeyState] = EventSourcedEntity(
    api.DESCRIPTOR.services_by_name["TurkeyService"],
    entity_type=ENTITY_TYPE,
    state_type=api.TurkeyState,
    events=[domain.InOven, domain.OutOfOven, domain.TemperatureChange],
)


@entity.command_handler
def start_cooking(state: api.TurkeyState, command: api.CookingCommand,
                  context: EventSourcedContext) -> Empty:
    if state.in_oven:
        context.fail(f"Turkey {command.turkey_id} is already in the oven")
    context.emit(domain.InOven())
    return Empty()


@entity.command_handler
def end_cooking(state: api.TurkeyState, command: api.CookingCommand,
                context: EventSourcedContext) -> Empty:
    if not state.in_oven:
        context.fail(f"Turkey {command.turkey_id} is not in the oven")
    context.emit(domain.OutOfOven())
    return Empty()


def _change(state: api.TurkeyState, command: api.TemperatureChangeCommand,
            context: EventSourcedContext, kind: domain.TemperatureChange.Type,
            sign: int) -> Empty:
    if command.temperature_change <= 0:
        context.fail(f"Temperature change must be more than 0 °F, got "
                     f"{command.temperature_change:g}; the method's name says the direction")
    current = state.internal_temperature if kind == INTERNAL else state.external_temperature
    context.emit(domain.TemperatureChange(
        type=kind, new_temperature=current + sign * command.temperature_change))
    return Empty()


@entity.command_handler
def increase_oven_temperature(state: api.TurkeyState, command: api.TemperatureChangeCommand,
                              context: EventSourcedContext) -> Empty:
    return _change(state, command, context, EXTERNAL, +1)


@entity.command_handler
def decrease_oven_temperature(state: api.TurkeyState, command: api.TemperatureChangeCommand,
                              context: EventSourcedContext) -> Empty:
    return _change(state, command, context, EXTERNAL, -1)


@entity.command_handler
def increase_turkey_temperature(state: api.TurkeyState, command: api.TemperatureChangeCommand,
                                context: EventSourcedContext) -> Empty:
    return _change(state, command, context, INTERNAL, +1)


@entity.command_handler
def decrease_turkey_temperature(state: api.TurkeyState, command: api.TemperatureChangeCommand,
                                context: EventSourcedContext) -> Empty:
    return _change(state, command, context, INTERNAL, -1)


@entity.command_handler
def get_current_turkey(state: api.TurkeyState, command: api.GetTurkeyCommand,
                       context: EventSourcedContext) -> api.TurkeyState:
    return state


@entity.event_handler
def in_oven(state: api.TurkeyState, event: domain.InOven) -> api.TurkeyState:
    return _with(state, in_oven=True)


@entity.event_handler
def out_of_oven(state: api.TurkeyState, event: domain.OutOfOven) -> api.TurkeyState:
    return _with(state, in_oven=False)


@entity.event_handler
def temperature_changed(state: api.TurkeyState,
                        event: domain.TemperatureChange) -> api.TurkeyState:
    if event.type == INTERNAL:
        return _with(state, internal_temperature=event.new_temperature,
                     done=doneness(event.new_temperature))
    return _with(state, external_temperature=event.new_temperature)


def _with(state: api.TurkeyState, **changes: object) -> api.TurkeyState:
    # Event handlers return a new state rather than changing the one they were given.
    turkey = api.TurkeyState()
    turkey.CopyFrom(state)
    for field, value in changes.items():
        setattr(turkey, field, value)
    return turkey
