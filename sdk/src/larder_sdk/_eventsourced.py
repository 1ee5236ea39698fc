"""Event-sourced entities: the definition users decorate."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

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


class EventSourcedEntity(EntityComponent, Generic[S]):
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
            passivation_timeout=passivation_timeout,
            forward_headers=forward_headers,
        )
        if not is_message_class(state_type):
            self._problems.append(
                f"state_type must be a generated protobuf message class, not {state_type!r}"
            )
        self.state_type = state_type
        if initial_state is not None:
            if callable(initial_state):
                check_arity(initial_state, ("entity_id",), self._problems)
            else:
                self._problems.append(f"initial_state must be callable, not {initial_state!r}")
        self._initial_state = initial_state
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

    @overload
    def command_handler(self, fn: F, /) -> F: ...
    @overload
    def command_handler(self, name: str | None = None, /) -> Callable[[F], F]: ...
    def command_handler(self, arg: Any = None, /) -> Any:
        """Handle a method of the service: `@entity.command_handler` or `(...)("MethodName")`.

        Without a name, the function name in CamelCase is the method name (`add_item` ->
        `AddItem`).
        """
        if callable(arg):
            self._register_command(arg, None)
            return arg

        def register(fn: F) -> F:
            self._register_command(fn, arg)
            return fn

        return register

    # The class overload comes first: a message class is itself callable.
    @overload
    def event_handler(self, event_type: type[Message], /) -> Callable[[F], F]: ...
    @overload
    def event_handler(self, fn: F, /) -> F: ...
    def event_handler(self, arg: Any, /) -> Any:
        """Apply an event to the state: `(state, event) -> state`, a pure function.

        The event type is the argument, or else the annotation of the `event` parameter.
        """
        if isinstance(arg, type):
            event_type: type[Message] = arg

            def register(fn: F) -> F:
                self._register_event(fn, event_type)
                return fn

            return register
        self._register_event(arg, None)
        return arg

    @overload
    def snapshot_handler(self, snapshot_type: type[Message], /) -> Callable[[F], F]: ...
    @overload
    def snapshot_handler(self, fn: F, /) -> F: ...
    def snapshot_handler(self, arg: Any, /) -> Any:
        """Turn a stored snapshot into the state: `(snapshot) -> state`.

        Without one, a snapshot of `state_type` is used as the state as is.
        """
        if isinstance(arg, type):
            snapshot_type: type[Message] = arg

            def register(fn: F) -> F:
                self._register_snapshot(fn, snapshot_type)
                return fn

            return register
        self._register_snapshot(arg, None)
        return arg

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
        types = [self.state_type.DESCRIPTOR]
        types.extend(cls.DESCRIPTOR for _, cls in self._event_handlers.values())
        types.extend(cls.DESCRIPTOR for _, cls in self._snapshot_handlers.values())
        return types

    # -- used by the runtime -----------------------------------------------------------------

    def initial_state(self, entity_id: str) -> S:
        if self._initial_state is None:
            return self.state_type()
        state = self._initial_state(entity_id)
        if not isinstance(state, self.state_type):
            raise TypeError(
                f"initial_state returned {type(state).__name__}, not "
                f"{self.state_type.DESCRIPTOR.full_name}"
            )
        return state

    def event_class(self, type_name: str) -> type[Message]:
        entry = self._event_handlers.get(type_name)
        if entry is None:
            raise UnknownEventError(
                f"{self.subject} has no event handler for {type_name}; "
                f"it handles: {', '.join(sorted(self._event_handlers)) or 'no events'}"
            )
        return entry[1]

    def apply_event(self, state: S, event: Message) -> S:
        name = event.DESCRIPTOR.full_name
        entry = self._event_handlers.get(name)
        if entry is None:
            raise UnknownEventError(
                f"{self.subject} has no event handler for {name}; "
                f"it handles: {', '.join(sorted(self._event_handlers)) or 'no events'}"
            )
        fn = entry[0]
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
