"""What a handler can ask for besides state changes: replies, forwards and side effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._metadata import EMPTY_METADATA, Metadata, MetadataValue, to_protocol

__all__ = ["Forward", "MethodRef", "Reply", "SideEffect", "forward", "side_effect"]

T = TypeVar("T", bound=Message)

MethodRef = MethodDescriptor | str
"""A method to forward to or call as a side effect: its descriptor, or `"pkg.Service/Method"`."""


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """A reply with metadata; a handler may also return the bare message."""

    message: T
    metadata: Metadata = EMPTY_METADATA


@dataclass(frozen=True, slots=True)
class Forward:
    """Hand the command over to another component; its reply becomes this command's reply."""

    service_name: str
    command_name: str
    message: Message
    metadata: Metadata = EMPTY_METADATA

    def to_protocol(self) -> Any:
        out = proto.component.Forward(
            service_name=self.service_name,
            command_name=self.command_name,
            payload=proto.pack(self.message),
        )
        if self.metadata:
            out.metadata.CopyFrom(to_protocol(self.metadata))
        return out


@dataclass(frozen=True, slots=True)
class SideEffect:
    """A call the sidecar makes after the command: before the reply if `synchronous`."""

    service_name: str
    command_name: str
    message: Message
    synchronous: bool = False
    metadata: Metadata = field(default=EMPTY_METADATA)

    def to_protocol(self) -> Any:
        out = proto.component.SideEffect(
            service_name=self.service_name,
            command_name=self.command_name,
            payload=proto.pack(self.message),
            synchronous=self.synchronous,
        )
        if self.metadata:
            out.metadata.CopyFrom(to_protocol(self.metadata))
        return out


def _metadata(
    metadata: Metadata | dict[str, MetadataValue] | None,
) -> Metadata:
    if metadata is None:
        return EMPTY_METADATA
    if isinstance(metadata, Metadata):
        return metadata
    return Metadata.of(metadata)


def resolve_method(method: MethodRef, message: Message) -> tuple[str, str]:
    """The (service, method) names of `method`, checked against `message` where knowable.

    A string naming a service that is not in this process's descriptor pool is
    accepted as is: it may belong to another user function behind the same sidecar.
    """
    if not isinstance(message, Message):
        raise TypeError(
            f"the message for {method!r} is a {type(message).__name__}, not a protobuf message"
        )
    if isinstance(method, MethodDescriptor):
        descriptor: MethodDescriptor = method
        service_name, method_name = method.containing_service.full_name, method.name
    else:
        service_name, sep, method_name = method.rpartition("/")
        if not sep or not service_name or not method_name:
            raise ValueError(
                f"method reference {method!r} is not of the form 'package.Service/Method'"
            )
        service_name = service_name.lstrip("/")
        try:
            service = descriptor_pool.Default().FindServiceByName(service_name)
        except KeyError:
            return service_name, method_name
        found = service.methods_by_name.get(method_name)
        if found is None:
            known = ", ".join(sorted(service.methods_by_name))
            raise ValueError(
                f"service {service_name} has no method {method_name!r}; it has: {known}"
            )
        descriptor = found
    expected = descriptor.input_type.full_name
    actual = message.DESCRIPTOR.full_name
    if expected != actual:
        raise TypeError(
            f"{service_name}/{method_name} takes {expected}, but the message is a {actual}"
        )
    return service_name, method_name


def forward(
    method: MethodRef,
    message: Message,
    *,
    metadata: Metadata | dict[str, MetadataValue] | None = None,
) -> Forward:
    """Build a forward for a handler to return: `return forward("pkg.Svc/Method", msg)`."""
    service_name, command_name = resolve_method(method, message)
    return Forward(service_name, command_name, message, _metadata(metadata))


def side_effect(
    method: MethodRef,
    message: Message,
    *,
    synchronous: bool = False,
    metadata: Metadata | dict[str, MetadataValue] | None = None,
) -> SideEffect:
    service_name, command_name = resolve_method(method, message)
    return SideEffect(service_name, command_name, message, synchronous, _metadata(metadata))
