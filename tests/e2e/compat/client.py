"""Clients of the cart as its users call it: gRPC with messages built from the
descriptor set (no generated code in the test process), and HTTP/JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from tests.e2e.compat.carts import SERVICE

_API_PACKAGE = SERVICE.rsplit(".", 1)[0]
_TIMEOUT_S = 30.0


class CartGrpc:
    def __init__(self, descriptor_set: bytes, target: str) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self._pool = descriptor_pool.DescriptorPool()
        for file in files.file:  # protoc writes dependencies first
            self._pool.Add(file)
        self._service = self._pool.FindServiceByName(SERVICE)
        self._channel = grpc.insecure_channel(target)

    def message(self, type_name: str, /, **fields: Any) -> Message:
        """A message of the cart's API package, e.g. ``message("LineItem", quantity=1)``."""
        descriptor = self._pool.FindMessageTypeByName(f"{_API_PACKAGE}.{type_name}")
        return message_factory.GetMessageClass(descriptor)(**fields)

    def call(self, method: str, /, **fields: Any) -> Message:
        descriptor = self._service.FindMethodByName(method)
        request = message_factory.GetMessageClass(descriptor.input_type)(**fields)
        reply_class = message_factory.GetMessageClass(descriptor.output_type)
        stub = self._channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=_serialize,
            response_deserializer=reply_class.FromString,
        )
        reply: Message = stub(request, timeout=_TIMEOUT_S)
        return reply

    def close(self) -> None:
        self._channel.close()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One HTTP/JSON request; the status and the decoded JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
