"""The public port with a fake dispatcher behind its unary gRPC path and a grpc.aio
server (one unary method, one server-streaming) behind the streams it forwards."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import grpc.aio
import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message
from larder_sidecar.function_limit import FunctionLimit
from larder_sidecar.http import PublicServer, start_public_server
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs, MethodModel
from larder_sidecar.model import Component, Kind, Method

from tests.unit.sidecar.http.fakes import FakeInvoker

SERVICE = "test.Echo"
UNARY = f"/{SERVICE}/Say"
REPEAT = f"/{SERVICE}/Repeat"
"""Server-streamed, served in process like UNARY."""
STREAMED = "/test.Streamer/Count"
MAX_MESSAGE = 12 * 1024 * 1024


@dataclass
class FakeMethod:
    model: MethodModel
    component: Component

    def parse(self, payload: bytes) -> Message:
        return wrappers_pb2.BytesValue.FromString(payload)


def say_method(name: str = "Say", *, server_streaming: bool = False) -> Method:
    model = MethodModel(
        service=SERVICE, name=name, component_type="akkaserverless.component.action.Actions",
        descriptor=cast(Any, None), input=wrappers_pb2.BytesValue.DESCRIPTOR,
        output=wrappers_pb2.BytesValue.DESCRIPTOR, client_streaming=False,
        server_streaming=server_streaming,
    )
    component = Component(
        service=SERVICE, kind=Kind.ACTION, entity_type=SERVICE, passivation_timeout=None,
        forward_headers=frozenset({"x-tenant", "x-trace-bin"}),
    )
    return cast(Method, FakeMethod(model, component))


def value(payload: bytes) -> bytes:
    return wrappers_pb2.BytesValue(value=payload).SerializeToString()


@dataclass
class FakeDispatcher:
    """Echoes the request; `hang` waits until cancelled, `slow` answers after 0.3 s,
    `fail` is NOT_FOUND."""

    calls: list[tuple[bytes, MetadataPairs]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, method: Method, payload: bytes, metadata: MetadataPairs,
                   parsed: Message | None = None) -> InvokeResult:
        self.calls.append((payload, metadata))
        request = wrappers_pb2.BytesValue.FromString(payload).value
        if request == b"hang":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request == b"slow":
            self.started.set()
            await asyncio.sleep(0.3)
        if request == b"fail":
            raise InvokeError(grpc.StatusCode.NOT_FOUND, "café 100% missing\nfor real")
        return InvokeResult(payload, metadata=(
            ("x-served-by", "fake"),
            ("x-reply-bin", base64.b64encode(b"\x00\xff").decode()),
        ))


    async def streamed_out(
        self, method: Method, payload: bytes, metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]:
        """`<n>` answers n messages, `n` through `n + <n> - 1` (first with metadata
        x-first, later ones x-later-<i>); `<n>-fail` fails after them; `<n>-hang` waits
        after them until cancelled."""
        self.calls.append((payload, metadata))
        request = wrappers_pb2.BytesValue.FromString(payload).value.decode()
        count, _, then = request.partition("-")
        for i in range(int(count)):
            md = (("x-first", "yes"),) if i == 0 else ((f"x-later-{i}", str(i)),)
            yield InvokeResult(value(str(i).encode()), metadata=md)
        if then == "fail":
            raise InvokeError(grpc.StatusCode.ABORTED, "stopped after the messages")
        if then == "hang":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise


async def _count(request: bytes, context: grpc.aio.ServicerContext[Any, Any]
                 ) -> AsyncIterator[bytes]:
    for i in range(int(request or b"0")):
        yield str(i).encode()
    if request == b"3":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "three is enough",
                            trailing_metadata=(("x-why-bin", b"\x01\x02"),))


@pytest.fixture
async def grpc_backend() -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Streamer", {"Count": grpc.unary_stream_rpc_method_handler(_count)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
async def public(grpc_backend: str, dispatcher: FakeDispatcher) -> AsyncIterator[PublicServer]:
    server = await start_public_server(
        "127.0.0.1", 0, grpc_backend, FakeInvoker(), [],
        max_message_bytes=MAX_MESSAGE, unary_grpc=dispatcher,
        # The user function takes all the port takes, so the port's own limit is tested.
        function_limit=FunctionLimit(max_message_bytes=2 * MAX_MESSAGE),
        grpc_methods={
            UNARY: say_method(), REPEAT: say_method("Repeat", server_streaming=True),
        },
    )
    yield server
    await server.close(grace=1.0)
