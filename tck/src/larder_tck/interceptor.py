"""A recording gRPC proxy between the sidecar and the frontend.

Every call is relayed byte for byte (all shapes as bidirectional streams: on the
wire they are the same) and recorded in both directions, decoded as the protocol
message of its method, so proxy cases can assert what the sidecar sent and what
the frontend answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from larder_tck import protocol as p
from larder_tck.expect import CaseFailed

_DISCOVERY = "/akkaserverless.protocol.Discovery/"
_ACTIONS = "/akkaserverless.component.action.Actions/"

MESSAGE_TYPES: dict[str, tuple[type[Message], type[Message]]] = {
    _DISCOVERY + "Discover": (p.discovery.ProxyInfo, p.discovery.Spec),
    _DISCOVERY + "ReportError": (p.discovery.UserFunctionError, empty_pb2.Empty),
    _DISCOVERY + "ProxyTerminated": (empty_pb2.Empty, empty_pb2.Empty),
    _DISCOVERY + "HealthCheck": (empty_pb2.Empty, empty_pb2.Empty),
    "/akkaserverless.component.eventsourcedentity.EventSourcedEntities/Handle": (
        p.es.EventSourcedStreamIn,
        p.es.EventSourcedStreamOut,
    ),
    "/akkaserverless.component.valueentity.ValueEntities/Handle": (
        p.ve.ValueEntityStreamIn,
        p.ve.ValueEntityStreamOut,
    ),
    "/akkaserverless.component.view.Views/Handle": (p.view.ViewStreamIn, p.view.ViewStreamOut),
    **{
        _ACTIONS + m: (p.action.ActionCommand, p.action.ActionResponse)
        for m in ("HandleUnary", "HandleStreamedIn", "HandleStreamedOut", "HandleStreamed")
    },
}


@dataclass
class Exchange:
    """One intercepted call."""

    method: str
    requests: list[Any] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    ended_at: float | None = None
    responded_at: float | None = None
    """When the last response passed (monotonic), as the sidecar got it give or take a hop."""
    status: str = ""

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


def _decode(kind: type[Message] | None, raw: bytes) -> Any:
    return raw if kind is None else kind.FromString(raw)


class Interceptor:
    def __init__(self, target: str) -> None:
        self.target = target
        self.exchanges: list[Exchange] = []
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> int:
        self._channel = grpc.aio.insecure_channel(self.target)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Relay(self),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        return port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(1.0)
        if self._channel is not None:
            await self._channel.close(None)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], what: str, within: float = 10.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every recorded message)."""

        async def satisfied() -> Any:
            async with self._changed:
                return await self._changed.wait_for(predicate)

        try:
            return await asyncio.wait_for(satisfied(), within)
        except TimeoutError:
            raise CaseFailed(
                f"the interceptor did not see {what} within {within:.0f}s; calls seen:\n"
                + self.describe()
            ) from None

    def describe(self) -> str:
        lines = []
        for x in self.exchanges:
            state = "ended" if x.ended else "open"
            lines.append(f"  {x.method} ({state}, {len(x.requests)} in, {len(x.responses)} out)")
        return "\n".join(lines) or "  none"

    def streams(self, method: str) -> list[Exchange]:
        return [x for x in self.exchanges if x.method == method]

    async def relay(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        assert self._channel is not None
        request_type, response_type = MESSAGE_TYPES.get(method, (None, None))
        exchange = Exchange(method)
        self.exchanges.append(exchange)
        await self._notify()

        async def forward_requests() -> AsyncIterator[bytes]:
            async for raw in requests:
                exchange.requests.append(_decode(request_type, raw))
                await self._notify()
                yield raw

        # grpc owns the iteration of forward_requests and cancels it with the call.
        call = self._channel.stream_stream(
            method, request_serializer=None, response_deserializer=None
        )(forward_requests())
        try:
            async for raw in call:
                exchange.responses.append(_decode(response_type, raw))
                exchange.responded_at = time.monotonic()
                await self._notify()
                yield raw
            exchange.status = "OK"
        except grpc.aio.AioRpcError as e:
            exchange.status = e.code().name
            await context.abort(e.code(), e.details() or "")
        finally:
            call.cancel()
            exchange.ended_at = time.monotonic()
            await self._notify()


class _Relay(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # generic only in the stubs
    def __init__(self, interceptor: Interceptor) -> None:
        self._interceptor = interceptor

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        interceptor = self._interceptor

        # An async generator function: that is how grpc.aio recognises a streaming handler.
        async def handler(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            async for raw in interceptor.relay(method, requests, context):
                yield raw

        return grpc.stream_stream_rpc_method_handler(handler)
