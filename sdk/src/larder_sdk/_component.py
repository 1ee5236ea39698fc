"""What every component kind shares: its service, its command handlers, its discovery entry."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar, overload

from google.protobuf.descriptor import (
    Descriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._definition import (
    CommandHandler,
    Handler,
    MessageDescriptor,
    ServiceRef,
    camel_case,
    check_annotation,
    check_arity,
    check_return_annotation,
    describe,
    is_message_class,
    is_method_name,
    message_class,
    method_kind,
    resolve_service,
    suggest,
)
from larder_sdk._errors import DefinitionError

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=Message)


class Component:
    """Base of `EventSourcedEntity`, `ValueEntity` and `Action`."""

    component_type: ClassVar[str]
    kind: ClassVar[str]
    """Human name of the component kind, used in messages."""
    command_parameters: ClassVar[tuple[str, ...]]
    """The positional parameters a command handler takes, by role."""

    def __init__(self, service: ServiceRef, *, forward_headers: Iterable[str] = ()) -> None:
        problems: list[str] = []
        self._problems = problems
        resolved = resolve_service(service, problems)
        self._service = resolved
        self.forward_headers = tuple(forward_headers)
        self._handlers: dict[str, CommandHandler] = {}

    @property
    def service(self) -> ServiceDescriptor:
        assert self._service is not None  # __init__ raised otherwise
        return self._service

    @property
    def service_name(self) -> str:
        return self.service.full_name

    @property
    def subject(self) -> str:
        """How messages name this component."""
        return f"{self.kind} {self._service_label()}"

    def _service_label(self) -> str:
        return self._service.full_name if self._service is not None else "unresolved service"

    @property
    def handlers(self) -> dict[str, CommandHandler]:
        return self._handlers

    def _raise_init_problems(self, subject: str) -> None:
        if self._problems:
            raise DefinitionError(subject, self._problems)

    @overload
    def command_handler(self, fn: F, /) -> F: ...
    @overload
    def command_handler(self, name: str | None = None, /) -> Callable[[F], F]: ...
    def command_handler(self, arg: Any = None, /) -> Any:
        """Handle a method of the service: `@component.command_handler` or `(...)("MethodName")`.

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

    def _allowed_kinds(self) -> tuple[str, ...]:
        return ("unary",)

    def _register_command(self, fn: Handler, name: str | None) -> None:
        problems: list[str] = []
        if not callable(fn):
            raise DefinitionError(self.subject, [f"a command handler must be callable, not {fn!r}"])
        method_name = name if name is not None else camel_case(getattr(fn, "__name__", ""))
        method = self.service.methods_by_name.get(method_name)
        if name is not None and not is_method_name(name):
            problems.append(f"{name!r} is not a method name")
        elif method is None:
            problems.append(
                f"{describe(fn)} handles {method_name!r}, but {self.service_name} has no such "
                f"method{suggest(method_name, self.service.methods_by_name)}"
            )
        elif method_name in self._handlers:
            problems.append(
                f"{method_name!r} already has a handler, "
                f"{describe(self._handlers[method_name].fn)}; {describe(fn)} would replace it"
            )
        if method is not None and method_kind(method) not in self._allowed_kinds():
            problems.append(
                f"{method_name!r} is a {method_kind(method)} method; a {self.kind} supports "
                f"{' and '.join(self._allowed_kinds())} methods only"
            )
        if method is not None:
            problems.extend(self._method_problems(fn, method))
        check_arity(fn, self.command_parameters, problems)
        if method is not None:
            kind = method_kind(method)
            self._check_handler_shape(fn, kind, method.input_type, method.output_type, problems)
        if problems:
            raise DefinitionError(self.subject, problems)
        assert method is not None
        self._handlers[method_name] = CommandHandler(
            fn=fn,
            method=method,
            input_type=message_class(method.input_type),
            output_type=message_class(method.output_type),
            is_async=inspect.iscoroutinefunction(fn),
        )

    def _method_problems(self, fn: Handler, method: MethodDescriptor) -> list[str]:
        """Reasons this kind of component has no handler for `method` (views: queries)."""
        return []

    def _check_handler_shape(
        self,
        fn: Handler,
        kind: str,
        input_type: Descriptor,
        output_type: Descriptor,
        problems: list[str],
    ) -> None:
        """Entities: the command is the parameter after the state; checked against the method."""
        check_annotation(
            fn, self.command_parameters.index("command"), "command", input_type, problems
        )
        check_return_annotation(fn, output_type, problems)
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            problems.append(f"{describe(fn)} is a generator, but {kind} methods reply once")

    def _completeness_problems(self) -> list[str]:
        missing = [m for m in self.service.methods_by_name if m not in self._handlers]
        if not missing:
            return []
        return [
            f"no handler for method{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} of {self.service_name}"
        ]

    def problems(self) -> list[str]:
        """Everything still wrong with this definition (missing handlers and the like)."""
        return self._completeness_problems()

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise DefinitionError(self.subject, problems)

    def message_types(self) -> list[MessageDescriptor]:
        """Message types the sidecar may need to decode besides the service's own."""
        return []

    def descriptor_files(self) -> list[FileDescriptor]:
        files = [self.service.file]
        files.extend(d.file for d in self.message_types())
        return files

    def discovery_component(self) -> Any:
        out = proto.discovery.Component(
            component_type=self.component_type, service_name=self.service_name
        )
        out.component.forward_headers.extend(self.forward_headers)
        return out


class EntityComponent(Component, Generic[S]):
    """An entity: has an entity type, a state type and a passivation timeout."""

    def __init__(
        self,
        service: ServiceRef,
        *,
        entity_type: str,
        state_type: type[S],
        initial_state: Callable[[str], S] | None,
        passivation_timeout: timedelta | None,
        forward_headers: Iterable[str] = (),
    ) -> None:
        super().__init__(service, forward_headers=forward_headers)
        if not isinstance(entity_type, str) or not entity_type:
            self._problems.append(
                f"entity_type must be a non-empty string (it names the entity in the journal), "
                f"not {entity_type!r}"
            )
        self.entity_type = entity_type
        if passivation_timeout is not None and (
            not isinstance(passivation_timeout, timedelta) or passivation_timeout <= timedelta(0)
        ):
            self._problems.append(
                f"passivation_timeout must be a positive timedelta, not {passivation_timeout!r}"
            )
        self.passivation_timeout = passivation_timeout
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

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.entity_type!r} ({self._service_label()})"

    def message_types(self) -> list[MessageDescriptor]:
        return [self.state_type.DESCRIPTOR]

    def initial_state(self, entity_id: str) -> S:
        """The state of an entity nothing has been stored for yet."""
        if self._initial_state is None:
            return self.state_type()
        state = self._initial_state(entity_id)
        if not isinstance(state, self.state_type):
            raise TypeError(
                f"initial_state returned {type(state).__name__}, not "
                f"{self.state_type.DESCRIPTOR.full_name}"
            )
        return state

    def discovery_component(self) -> Any:
        out = proto.discovery.Component(
            component_type=self.component_type, service_name=self.service_name
        )
        out.entity.entity_type = self.entity_type
        if self.passivation_timeout is not None:
            millis = int(self.passivation_timeout / timedelta(milliseconds=1))
            out.entity.passivation_strategy.timeout.timeout = millis
        out.entity.forward_headers.extend(self.forward_headers)
        return out
