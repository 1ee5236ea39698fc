"""A fake Invoker: answers from the request, records what it was asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs, MethodModel

Handler = Callable[[MethodModel, Message, MetadataPairs], Awaitable[InvokeResult]]


@dataclass(frozen=True, slots=True)
class Call:
    method: MethodModel
    request: Message
    metadata: tuple[tuple[str, str], ...]


async def echo(method: MethodModel, request: Message, metadata: MetadataPairs) -> InvokeResult:
    """Copy the request's same-named fields into the reply; `missing` ids are NOT_FOUND.

    A `turkey_id` of `missing` is NOT_FOUND and `fail` is a user-function failure, and
    `in_oven` is set on turkeys, so tests can tell a reply from an echoed request.
    """
    document = json_format.MessageToDict(request, preserving_proto_field_name=True)
    if document.get("turkey_id") == "missing":
        raise InvokeError(grpc.StatusCode.NOT_FOUND, "no turkey with id missing")
    if document.get("turkey_id") == "fail":
        raise InvokeError(grpc.StatusCode.UNKNOWN, "the oven caught fire")
    reply = GetMessageClass(method.output)()
    json_format.ParseDict(document, reply, ignore_unknown_fields=True)
    if "in_oven" in method.output.fields_by_name:
        reply.in_oven = True  # type: ignore[attr-defined]
    return InvokeResult(payload=reply.SerializeToString(), metadata=(("x-served-by", "fake"),))


@dataclass
class FakeInvoker:
    handler: Handler = echo
    calls: list[Call] = field(default_factory=list)

    async def invoke(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> InvokeResult:
        self.calls.append(Call(method, request, tuple(metadata)))
        return await self.handler(method, request, metadata)
