"""The seam between the public front ends (gRPC, HTTP/JSON) and the entity machinery.

Front ends parse a request into the method's input message, call `Invoker.invoke`,
and render the result or the `InvokeError`. They never see protocol streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import grpc
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

MetadataPairs = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class MethodModel:
    """One method of a user service, as discovered."""

    service: str
    """Full service name, e.g. `com.example.ShoppingCart`."""
    name: str
    component_type: str
    """Full name of the component's protocol service, e.g.
    `akkaserverless.component.eventsourcedentity.EventSourcedEntities`."""
    descriptor: MethodDescriptor
    input: Descriptor
    output: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        """The gRPC path, `/package.Service/Method`."""
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class InvokeResult:
    payload: bytes
    """The serialized reply message (of the method's output type)."""
    metadata: MetadataPairs = ()


class InvokeError(Exception):
    """A command did not produce a reply.

    `code` says why, `message` says what to tell the caller.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invoker(Protocol):
    async def invoke(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> InvokeResult:
        """Run one unary command; raise InvokeError for anything but a reply."""


@runtime_checkable
class StreamInvoker(Invoker, Protocol):
    def invoke_stream(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]:
        """The replies of a server-streamed view query (the HTTP front collects them into
        a JSON array); raise InvokeError for other methods."""
