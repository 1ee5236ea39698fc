"""Event-sourced entities: the definition users decorate."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar, overload

from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._component import EntityComponent
from larder_sdk._definition import (
    Handler,
    MessageDescriptor,
    ServiceRef,
    annotated_message,
    check_annotation,
    check_arity,
    check_return_annotation,
    describe,
    is_message_class,
)
from larder_sdk._errors import DefinitionError

S = TypeVar("S", bound=Message)
F = TypeVar("F", bound=Callable[..., Any])


class UnknownEventError(LookupError):
    """An event has a type this entity has no handler for."""


def _typed_decorator(arg: Any, register: Callable[[Handler, type[Message] | None], None]) -> Any:
    """`@decorator(MessageClass)` or a bare `@decorator` (the type then comes from annotations)."""
    if isinstance(arg, type):
        message_type: type[Message] = arg

        def decorate(fn: F) -> F:
            register(fn, message_type)
            return fn

        return decorate
    register(arg, None)
    return arg


class EventSourcedEntity(EntityComponent[S]):
    """An entity whose state is the fold of its events.

    Command handlers `(state, command, context) -> reply` decide and `context.emit(...)`
    events; event handlers `(state, event) -> state` apply them and must be pure.
    Every `snapshot_every` events (0 disables) the state rides along as a snapshot.
    """

    component_type = proto.EVENT_SOURCED_COMPONENT
    kind = "event-sourced entity"
    command_parameters = ("state", "command", "context")

    def __init__(
        self,
        service: ServiceRef,
        *,
        entity_type: str,
        state_type: type[S],
        initial_state: Callable[[str], S] | None = None,
        snapshot_every: int = 100,
        events: Iterable[type[Message]] = (),
        passivation_timeout: timedelta | None = None,
        forward_headers: Iterable[str] = (),
    ) -> None:
        super().__init__(
            service,
            entity_type=entity_type,
            state_type=state_type,
            initial_state=initial_state,
            passivation_timeout=passivation_timeout,
            forward_headers=forward_headers,
        )
        if (
            isinstance(snapshot_every, bool)
            or not isinstance(snapshot_every, int)
            or (snapshot_every < 0)
        ):
            self._problems.append(
                f"snapshot_every must be an int >= 0 (0 disables snapshots), not {snapshot_every!r}"
            )
        self.snapshot_every = snapshot_every
        self.declared_events = tuple(events)
        for event in self.declared_events:
            if not is_message_class(event):
                self._problems.append(
                    f"events must be generated protobuf message classes; {event!r} is not"
                )
        self._event_handlers: dict[str, tuple[Handler, type[Message]]] = {}
        self._snapshot_handlers: dict[str, tuple[Handler, type[Message]]] = {}
        self._raise_init_problems(self.subject)

    # -- decorators -------------------------------------------------------------------------

    # The class overload comes first: a message class is itself callable.
    @overload
    def event_handler(self, event_type: type[Message], /) -> Callable[[F], F]: ...
    @overload
    def event_handler(self, fn: F, /) -> F: ...
    def event_handler(self, arg: Any, /) -> Any:
        """Apply an event to the state: `(state, event) -> state`, a pure function.

        The event type is the argument, or else the annotation of the `event` parameter.
        """
        return _typed_decorator(arg, self._register_event)

    @overload
    def snapshot_handler(self, snapshot_type: type[Message], /) -> Callable[[F], F]: ...
    @overload
    def snapshot_handler(self, fn: F, /) -> F: ...
    def snapshot_handler(self, arg: Any, /) -> Any:
        """Turn a stored snapshot into the state: `(snapshot) -> state`.

        Without one, a snapshot of `state_type` is used as the state as is.
        """
        return _typed_decorator(arg, self._register_snapshot)

    def _register_event(self, fn: Handler, event_type: type[Message] | None) -> None:
        problems: list[str] = []
        check_arity(fn, ("state", "event"), problems)
        if event_type is None:
            event_type = annotated_message(fn, 1)
            if event_type is None:
                problems.append(
                    f"{describe(fn)}: the event type is unknown; annotate the event parameter "
                    "with the event's message class or pass it: @entity.event_handler(MyEvent)"
                )
        elif not is_message_class(event_type):
            problems.append(f"{describe(fn)}: {event_type!r} is not a protobuf message class")
            event_type = None
        if event_type is not None:
            check_annotation(fn, 1, "event", event_type.DESCRIPTOR, problems)
            name = event_type.DESCRIPTOR.full_name
            if name in self._event_handlers:
                problems.append(
                    f"event {name} already has a handler, "
                    f"{describe(self._event_handlers[name][0])}; {describe(fn)} would replace it"
                )
        self._check_state_function(fn, problems)
        if problems:
            raise DefinitionError(self.subject, problems)
        assert event_type is not None
        self._event_handlers[event_type.DESCRIPTOR.full_name] = (fn, event_type)

    def _register_snapshot(self, fn: Handler, snapshot_type: type[Message] | None) -> None:
        problems: list[str] = []
        check_arity(fn, ("snapshot",), problems)
        if snapshot_type is None:
            snapshot_type = annotated_message(fn, 0)
            if snapshot_type is None:
                problems.append(
                    f"{describe(fn)}: the snapshot type is unknown; annotate the snapshot "
                    "parameter or pass it: @entity.snapshot_handler(MySnapshot)"
                )
        elif not is_message_class(snapshot_type):
            problems.append(f"{describe(fn)}: {snapshot_type!r} is not a protobuf message class")
            snapshot_type = None
        if snapshot_type is not None:
            name = snapshot_type.DESCRIPTOR.full_name
            if name in self._snapshot_handlers:
                problems.append(f"snapshot type {name} already has a handler")
        check_return_annotation(fn, self.state_type.DESCRIPTOR, problems)
        if inspect.iscoroutinefunction(fn):
            problems.append(f"{describe(fn)} is async; snapshot handlers must be plain functions")
        if problems:
            raise DefinitionError(self.subject, problems)
        assert snapshot_type is not None
        self._snapshot_handlers[snapshot_type.DESCRIPTOR.full_name] = (fn, snapshot_type)

    def _check_state_function(self, fn: Handler, problems: list[str]) -> None:
        check_annotation(fn, 0, "state", self.state_type.DESCRIPTOR, problems)
        check_return_annotation(fn, self.state_type.DESCRIPTOR, problems)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            problems.append(
                f"{describe(fn)} is async; event handlers are pure functions of "
                "(state, event) and must be plain functions"
            )

    # -- validation and discovery ------------------------------------------------------------

    def problems(self) -> list[str]:
        problems = super().problems()
        for event in self.declared_events:
            if event.DESCRIPTOR.full_name not in self._event_handlers:
                problems.append(
                    f"event {event.DESCRIPTOR.full_name} is declared in events= but has no "
                    "event handler"
                )
        return problems

    def message_types(self) -> list[MessageDescriptor]:
        types = super().message_types()
        types.extend(cls.DESCRIPTOR for _, cls in self._event_handlers.values())
        types.extend(cls.DESCRIPTOR for _, cls in self._snapshot_handlers.values())
        return types

    # -- used by the runtime -----------------------------------------------------------------

    def _event_entry(self, type_name: str) -> tuple[Handler, type[Message]]:
        entry = self._event_handlers.get(type_name)
        if entry is None:
            raise UnknownEventError(
                f"{self.subject} has no event handler for {type_name}; "
                f"it handles: {', '.join(sorted(self._event_handlers)) or 'no events'}"
            )
        return entry

    def event_class(self, type_name: str) -> type[Message]:
        return self._event_entry(type_name)[1]

    def apply_event(self, state: S, event: Message) -> S:
        fn = self._event_entry(event.DESCRIPTOR.full_name)[0]
        new_state = fn(state, event)
        if not isinstance(new_state, self.state_type):
            raise TypeError(
                f"event handler {describe(fn)} returned {type(new_state).__name__}, "
                f"not the state {self.state_type.DESCRIPTOR.full_name}"
            )
        return new_state

    def state_from_snapshot(self, type_name: str, payload: bytes) -> S:
        entry = self._snapshot_handlers.get(type_name)
        if entry is None:
            if type_name != self.state_type.DESCRIPTOR.full_name:
                raise UnknownEventError(
                    f"{self.subject} cannot load a snapshot of type {type_name}: it is not "
                    f"the state type {self.state_type.DESCRIPTOR.full_name} and no snapshot "
                    "handler takes it"
                )
            return self.state_type.FromString(payload)
        fn, snapshot_type = entry
        state = fn(snapshot_type.FromString(payload))
        if not isinstance(state, self.state_type):
            raise TypeError(
                f"snapshot handler {describe(fn)} returned {type(state).__name__}, not "
                f"{self.state_type.DESCRIPTOR.full_name}"
            )
        return state
