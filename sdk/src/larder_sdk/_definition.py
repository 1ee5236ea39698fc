"""Definition-time checks shared by every component kind.

Problems are collected, not raised one by one, so a user sees everything that is
wrong with a handler (or a component) in one `DefinitionError`.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, TypeGuard

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

ServiceRef = ServiceDescriptor | str
"""A user service: its descriptor (`my_pb2.DESCRIPTOR.services_by_name["Svc"]`) or full name."""

Handler = Callable[..., Any]

# types-protobuf models the upb descriptor classes as a separate union member, so a
# message class's DESCRIPTOR is not a plain `Descriptor` to mypy.
MessageDescriptor = Any


def resolve_service(service: ServiceRef, problems: list[str]) -> ServiceDescriptor | None:
    if isinstance(service, ServiceDescriptor):
        return service
    if not isinstance(service, str):
        problems.append(
            f"service must be a ServiceDescriptor or a full service name, not {service!r}"
        )
        return None
    try:
        return descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        problems.append(
            f"service {service!r} is not in the protobuf descriptor pool; import its "
            "generated _pb2 module before defining the component, and use the full name "
            "(package.Service)"
        )
        return None


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def is_message_class(value: object) -> TypeGuard[type[Message]]:
    return isinstance(value, type) and issubclass(value, Message) and value is not Message


def camel_case(function_name: str) -> str:
    """`add_item` -> `AddItem`: the default method name for a handler function."""
    return "".join(part[:1].upper() + part[1:] for part in function_name.split("_") if part)


def suggest(name: str, known: typing.Iterable[str]) -> str:
    known = sorted(known)
    close = get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; it has: {', '.join(known) or 'no methods'}"


def describe(fn: Handler) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def check_arity(fn: Handler, expected: tuple[str, ...], problems: list[str]) -> None:
    """`fn` must accept exactly the positional arguments named in `expected`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and some C callables have no signature; nothing to check
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    var_positional = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    required_keyword = [
        p.name
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    n = len(expected)
    if len(required) > n or (len(positional) < n and not var_positional) or required_keyword:
        problems.append(
            f"{describe(fn)} must take {n} positional parameter{'s' if n != 1 else ''} "
            f"({', '.join(expected)}), but its signature is {signature}"
        )


def type_hints(fn: Handler) -> dict[str, Any]:
    # Annotations that cannot be resolved (names imported only for TYPE_CHECKING)
    # simply go unchecked: they are a help, not a requirement.
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def positional_names(fn: Handler) -> list[str]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def annotated_message(fn: Handler, index: int) -> type[Message] | None:
    """The message class the `index`th positional parameter is annotated with, if any."""
    names = positional_names(fn)
    if index >= len(names):
        return None
    hint = type_hints(fn).get(names[index])
    return hint if hint is not None and is_message_class(hint) else None


def check_annotation(
    fn: Handler, index: int, role: str, expected: MessageDescriptor, problems: list[str]
) -> None:
    annotated = annotated_message(fn, index)
    if annotated is not None and annotated.DESCRIPTOR.full_name != expected.full_name:
        problems.append(
            f"{describe(fn)}: its {role} parameter is annotated "
            f"{annotated.DESCRIPTOR.full_name}, but the method takes {expected.full_name}"
        )


def check_return_annotation(fn: Handler, expected: MessageDescriptor, problems: list[str]) -> None:
    hint = type_hints(fn).get("return")
    if (
        hint is not None
        and is_message_class(hint)
        and hint.DESCRIPTOR.full_name != expected.full_name
    ):
        problems.append(
            f"{describe(fn)} is annotated to return {hint.DESCRIPTOR.full_name}, "
            f"but the method returns {expected.full_name}"
        )


@dataclass(frozen=True, slots=True)
class CommandHandler:
    """A validated command handler, with everything needed to run it fast."""

    fn: Handler
    method: MethodDescriptor
    input_type: type[Message]
    output_type: type[Message]
    is_async: bool


def method_kind(method: MethodDescriptor) -> str:
    client = bool(getattr(method, "client_streaming", False))
    server = bool(getattr(method, "server_streaming", False))
    return {
        (False, False): "unary",
        (True, False): "streamed-in",
        (False, True): "streamed-out",
        (True, True): "streamed",
    }[(client, server)]


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_method_name(name: object) -> bool:
    return isinstance(name, str) and bool(_IDENTIFIER.match(name))
