"""Views: update handlers turning each event, state change or topic message into the row
the sidecar stores; the sidecar answers the view's queries itself."""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, overload

from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message

from larder_sdk import _protocol as proto
from larder_sdk._component import Component
from larder_sdk._context import ViewContext
from larder_sdk._definition import (
    CommandHandler,
    Handler,
    ServiceRef,
    check_annotation,
    describe,
    positional_names,
    suggest,
    type_hints,
)

logger = logging.getLogger("larder_sdk.view")

F = TypeVar("F", bound=Callable[..., Any])


class DeleteRow:
    """The type of `DELETE_ROW`."""

    _instance: DeleteRow | None = None

    def __new__(cls) -> DeleteRow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DELETE_ROW"


DELETE_ROW: Final = DeleteRow()
"""Returned by an update handler: remove the row of this message's key from the table."""


@dataclass(frozen=True, slots=True)
class ViewUpdate:
    """An update method: the table it writes and whether a handler transforms its input."""

    method: MethodDescriptor
    table: str
    transform: bool

    @property
    def row_type(self) -> Descriptor:
        """A table's rows are of the output type of the methods that write it."""
        return self.method.output_type


def _view_options(method: MethodDescriptor) -> Any | None:
    """The method's `(akkaserverless.method).view`, or None when it has none."""
    # The extension comes from untyped generated code; its typed stubs would not match.
    options: Any = method.GetOptions()
    extension = proto.annotations_pb2.method
    if not options.HasExtension(extension):
        return None
    method_options = options.Extensions[extension]
    return method_options.view if method_options.HasField("view") else None


class View(Component):
    """A view: `(akkaserverless.method).view.update` methods fill its tables and
    `.view.query` methods query them (the sidecar runs the queries).

    Update methods with `transform_updates: true` need an update handler
    `(row, event, context) -> row | None | DELETE_ROW`: `row` is the row stored for the
    message's key (None when there is none) and `event` the method's input. Returning a
    row stores it, `None` leaves the table as it is, `DELETE_ROW` removes the row. Without
    `transform_updates` the sidecar stores the input as the row and no handler is needed.
    """

    component_type = proto.VIEW_COMPONENT
    kind = "view"
    command_parameters = ("row", "event", "context")

    def __init__(self, service: ServiceRef, *, forward_headers: Iterable[str] = ()) -> None:
        super().__init__(service, forward_headers=forward_headers)
        self.updates: dict[str, ViewUpdate] = {}
        """The update methods, by name."""
        self.queries: dict[str, str] = {}
        """The query methods' queries, by method name."""
        if self._service is not None:
            self._read_methods()
        self._raise_init_problems(self.subject)

    def _read_methods(self) -> None:
        tables: dict[str, ViewUpdate] = {}
        for method in self.service.methods:
            options = _view_options(method)
            which = None if options is None else options.WhichOneof("update_or_query")
            if options is None or which is None:
                self._problems.append(
                    f"method {method.name!r} is neither a view update nor a view query; give "
                    "it option (akkaserverless.method).view.update or .view.query"
                )
            elif which == "query":
                self.queries[method.name] = options.query.query
            else:
                update = ViewUpdate(method, options.update.table, options.update.transform_updates)
                self._check_update(update, tables)
                self.updates[method.name] = update

    def _check_update(self, update: ViewUpdate, tables: dict[str, ViewUpdate]) -> None:
        method = update.method
        if not update.table:
            self._problems.append(f"update method {method.name!r} names no table")
            return
        if method.client_streaming or method.server_streaming:
            self._problems.append(
                f"update method {method.name!r} is streamed; update methods take one "
                "message and return one row"
            )
        first = tables.setdefault(update.table, update)
        if first.row_type.full_name != update.row_type.full_name:
            self._problems.append(
                f"table {update.table!r} has rows of {first.row_type.full_name} "
                f"({first.method.name!r}) and of {update.row_type.full_name} "
                f"({method.name!r}); every method writing a table returns its row type"
            )

    def _allowed_kinds(self) -> tuple[str, ...]:
        # Streamed update methods are refused when the view is defined, once; queries of
        # any kind are the sidecar's.
        return ("unary", "streamed-in", "streamed-out", "streamed")

    @property
    def tables(self) -> dict[str, Descriptor]:
        """The row type of each table the view writes."""
        return {update.table: update.row_type for update in self.updates.values()}

    @overload
    def update_handler(self, fn: F, /) -> F: ...
    @overload
    def update_handler(self, name: str | None = None, /) -> Callable[[F], F]: ...
    def update_handler(self, arg: Any = None, /) -> Any:
        """Handle an update method: `@view.update_handler` or `@view.update_handler("Name")`.

        Without a name, the function name in CamelCase is the method name.
        """
        return self.command_handler(arg)

    def _method_problems(self, fn: Handler, method: MethodDescriptor) -> list[str]:
        if method.name in self.queries:
            return [
                f"{method.name!r} is a query; the sidecar answers it, so {describe(fn)} "
                "cannot handle it"
            ]
        update = self.updates.get(method.name)
        if update is not None and not update.transform:
            return [
                f"{method.name!r} does not set transform_updates, so the sidecar stores its "
                f"input as the row and never calls {describe(fn)}; set "
                "transform_updates: true to transform it"
            ]
        return []

    def _check_handler_shape(
        self,
        fn: Handler,
        kind: str,
        input_type: Descriptor,
        output_type: Descriptor,
        problems: list[str],
    ) -> None:
        check_annotation(fn, 1, "event", input_type, problems)
        names = positional_names(fn)
        hints = type_hints(fn)
        if names:
            row_hint = hints.get(names[0])
            self._check_row_annotation(fn, row_hint, "row parameter", output_type, problems)
        self._check_row_annotation(fn, hints.get("return"), "return", output_type, problems)
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            problems.append(f"{describe(fn)} is a generator, but an update returns one row")

    @staticmethod
    def _check_row_annotation(
        fn: Handler, hint: Any, role: str, row_type: Descriptor, problems: list[str]
    ) -> None:
        """`Row | None` (and `| DeleteRow` for the return) must name the method's row type."""
        if hint is None:
            return
        members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if typing.get_origin(hint) is typing.Union:
            members = typing.get_args(hint)
        for member in members:
            if isinstance(member, type) and issubclass(member, Message):
                name = member.DESCRIPTOR.full_name
                if name != row_type.full_name:
                    problems.append(
                        f"{describe(fn)}: its {role} annotation names {name}, but the "
                        f"table's rows are {row_type.full_name}"
                    )

    def _completeness_problems(self) -> list[str]:
        missing = [
            name
            for name, update in self.updates.items()
            if update.transform and name not in self.handlers
        ]
        if not missing:
            return []
        return [
            f"no update handler for {', '.join(repr(m) for m in missing)} of "
            f"{self.service_name} (transform_updates is set)"
        ]


class ViewStreamFailure(Exception):
    """The update cannot be answered; the stream ends with gRPC status `code`."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass(frozen=True, slots=True)
class _Resolved:
    view: View
    update: ViewUpdate
    handler: CommandHandler


def _resolve(views: Mapping[str, View], receive: Any) -> _Resolved:
    view = views.get(receive.service_name)
    if view is None:
        raise ViewStreamFailure(
            "INVALID_ARGUMENT",
            f"no view serves {receive.service_name!r}; this user function has: "
            f"{', '.join(sorted(views)) or 'none'}",
        )
    name = receive.command_name
    update = view.updates.get(name)
    handler = view.handlers.get(name)
    if update is None or handler is None:
        reason = (
            "stores its input itself (transform_updates is not set)"
            if update is not None
            else f"is not an update method{suggest(name, view.handlers)}"
        )
        raise ViewStreamFailure("INVALID_ARGUMENT", f"{view.subject}: {name!r} {reason}")
    return _Resolved(view, update, handler)


def _decode(subject: str, what: str, cls: type[Message], any_message: Any) -> Message:
    type_name = proto.type_name_of(any_message.type_url)
    expected = cls.DESCRIPTOR.full_name
    if type_name != expected:
        raise ViewStreamFailure(
            "INVALID_ARGUMENT", f"{subject}: the {what} is a {type_name}, not a {expected}"
        )
    try:
        return cls.FromString(any_message.value)
    except DecodeError as e:
        raise ViewStreamFailure(
            "INVALID_ARGUMENT", f"{subject}: the {what} is not a valid {expected}: {e}"
        ) from e


def _row_key(subject: str, handler: CommandHandler, given: Any, chosen: object) -> Any:
    """The message's key, or the one the handler set on its context."""
    if chosen is None:
        return given
    if not isinstance(chosen, str) or not chosen:
        raise ViewStreamFailure(
            "UNKNOWN",
            f"{subject}: {describe(handler.fn)} set context.row_key to {chosen!r}; a row key "
            "is a non-empty str",
        )
    return proto.view.Key(parts=[proto.view.KeyPart(string_part=chosen)])


async def handle_receive(receive: Any, views: Mapping[str, View]) -> Any:
    """Answer one `ReceiveEvent` with the `ViewStreamOut` upsert the handler decides."""
    resolved = _resolve(views, receive)
    handler, update = resolved.handler, resolved.update
    subject = f"{resolved.view.subject}: update {update.method.name!r}"
    event = _decode(subject, "message", handler.input_type, receive.payload)
    previous: Message | None = None
    lookup = receive.by_subject_lookup_result
    if receive.HasField("by_subject_lookup_result") and lookup.HasField("value"):
        previous = _decode(subject, "stored row", handler.output_type, lookup.value)
    context = ViewContext(
        receive.service_name,
        receive.command_name,
        receive.initial_table,
        receive.metadata if receive.HasField("metadata") else None,
    )
    try:
        result = handler.fn(previous, event, context)
        if handler.is_async:
            result = await result
    except Exception as e:
        logger.exception("%s failed", subject)
        raise ViewStreamFailure("UNKNOWN", f"{subject} failed: {type(e).__name__}: {e}") from e
    key = _row_key(subject, handler, receive.key, context.row_key)
    out = proto.view.ViewStreamOut()
    upsert = out.upsert
    if result is None:
        upsert.SetInParent()  # an Upsert without a row: leave the table as it is
    elif isinstance(result, DeleteRow):
        # Larder's reading of the protocol: a row with its key and no value removes it.
        upsert.row.index = receive.initial_table
        upsert.row.key.CopyFrom(key)
    elif isinstance(result, handler.output_type):
        upsert.row.index = receive.initial_table
        upsert.row.key.CopyFrom(key)
        upsert.row.value.CopyFrom(proto.pack(result))
    else:
        raise ViewStreamFailure(
            "UNKNOWN",
            f"{subject}: {describe(handler.fn)} returned {type(result).__name__}; it returns "
            f"a {handler.output_type.DESCRIPTOR.full_name}, None or DELETE_ROW",
        )
    return out


async def handle_stream(
    requests: AsyncIterator[Any], views: Mapping[str, View]
) -> AsyncIterator[Any]:
    """`Views/Handle`: one upsert for each `ReceiveEvent`, for as long as the sidecar sends.

    Raises ViewStreamFailure, ending the stream, for a message it cannot answer.
    """
    async for message in requests:
        if message.WhichOneof("message") != "receive":
            raise ViewStreamFailure("INVALID_ARGUMENT", "a ViewStreamIn without a ReceiveEvent")
        yield await handle_receive(message.receive, views)
