"""The gRPC front: the user's services, served dynamically, plus reflection and health.

Handlers take and return raw bytes (no serializers) so a request is parsed exactly
once, by the dispatcher, into the method's dynamic message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2_grpc

from .dispatch import Dispatcher, parse
from .function_limit import FunctionLimit
from .invoke import InvokeError, InvokeResult, MetadataPairs
from .metrics import Metrics
from .model import ALWAYS_FORWARDED, EntityIdTooLong, Method
from .reflection import enable_reflection


def client_metadata(context: grpc.aio.ServicerContext[Any, Any], method: Method) -> MetadataPairs:
    """The caller's headers that the method's component asked for in discovery
    (`forward_headers`), and those that always travel (the idempotency key, which the
    entity reads, and the W3C trace context); binary (`-bin`) ones as their base64 text,
    as the public port's own gRPC path passes them; gRPC's own headers never travel."""
    wanted = {*method.component.forward_headers, *ALWAYS_FORWARDED}
    return [
        (k, base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v)
        for k, v in context.invocation_metadata() or ()
        if k in wanted and not k.startswith((":", "grpc-"))
    ]


async def _send_metadata(context: grpc.aio.ServicerContext[Any, Any], result: InvokeResult) -> None:
    if result.metadata:
        await context.send_initial_metadata(
            tuple((k, _aio_value(k, v)) for k, v in result.metadata)
        )


class _StreamedMetadata:
    """Metadata of a streamed reply's messages: the first message's is sent as the
    response's headers (where a unary reply's goes); headers go out once, so every later
    message's is gathered into the trailers instead of being dropped."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._first = True
        self._trailers: list[tuple[str, str | bytes]] = []

    async def add(self, result: InvokeResult) -> None:
        if self._first:
            self._first = False
            await _send_metadata(self._context, result)
        elif result.metadata:
            self._trailers.extend((k, _aio_value(k, v)) for k, v in result.metadata)
            self._context.set_trailing_metadata(tuple(self._trailers))


def _aio_value(key: str, value: str) -> str | bytes:
    # grpc.aio takes binary metadata as bytes; ours carries it as base64 text (a string
    # entry under a -bin key that is not base64 goes as its UTF-8 bytes).
    if not key.endswith("-bin"):
        return value
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return value.encode()


def _counted(e: InvokeError, metrics: Metrics) -> InvokeError:
    # The dispatcher raises an entity key's problem from the model's KeyError_.
    if isinstance(e.__cause__, EntityIdTooLong):
        metrics.limit_refusals.labels("entity_id_bytes").inc()
    return e


def _handlers(
    dispatcher: Dispatcher, method: Method, limit: FunctionLimit, metrics: Metrics
) -> grpc.RpcMethodHandler[Any, Any]:
    model = method.model

    def check_size(request: bytes, metadata: MetadataPairs) -> None:
        try:
            limit.check(model, len(request), metadata)
        except InvokeError:
            metrics.limit_refusals.labels("user_function_message_bytes").inc()
            raise

    async def requests(it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for r in it:
            yield r

    if not model.client_streaming and not model.server_streaming:

        async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            metadata = client_metadata(context, method)
            try:
                check_size(request, metadata)
                parsed = parse(method, request)
                result = await dispatcher.call(method, request, metadata, parsed)
            except InvokeError as e:
                await context.abort(e.code, _counted(e, metrics).message)
            await _send_metadata(context, result)
            return result.payload

        return grpc.unary_unary_rpc_method_handler(unary)

    if model.client_streaming and not model.server_streaming:

        async def stream_in(
            request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> bytes:
            try:
                result = await dispatcher.streamed_in(
                    method, requests(request_iterator), client_metadata(context, method)
                )
            except InvokeError as e:
                await context.abort(e.code, e.message)
            await _send_metadata(context, result)
            return result.payload

        return grpc.stream_unary_rpc_method_handler(stream_in)

    # grpc.aio only streams replies from handlers that are async generator functions.
    if model.server_streaming and not model.client_streaming:

        async def stream_out(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            metadata = client_metadata(context, method)
            try:
                check_size(request, metadata)
                sent = _StreamedMetadata(context)
                async for result in dispatcher.streamed_out(method, request, metadata):
                    await sent.add(result)
                    yield result.payload
            except InvokeError as e:
                await context.abort(e.code, e.message)

        return grpc.unary_stream_rpc_method_handler(stream_out)

    async def streamed(
        request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        sent = _StreamedMetadata(context)
        try:
            async for result in dispatcher.streamed(
                method, requests(request_iterator), client_metadata(context, method)
            ):
                await sent.add(result)
                yield result.payload
        except InvokeError as e:
            await context.abort(e.code, e.message)

    return grpc.stream_stream_rpc_method_handler(streamed)


def build_grpc_server(
    dispatcher: Dispatcher,
    max_message_bytes: int,
    *,
    idle_timeout: float | None = None,
    function_limit: FunctionLimit | None = None,
    metrics: Metrics | None = None,
) -> tuple[grpc.aio.Server, Any]:
    """A server with the user's services, reflection and health (not yet bound or started).

    `idle_timeout`: seconds a connection without calls stays open before the server sends
    GOAWAY and closes it (it passes through the public port's relay to the client).
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if idle_timeout is not None:
        options.append(("grpc.max_connection_idle_ms", max(1, round(idle_timeout * 1000))))
    server = grpc.aio.server(options=options)
    limit = function_limit or FunctionLimit()
    metrics = metrics or Metrics()
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for method in dispatcher.model.methods.values():
        by_service.setdefault(method.model.service, {})[method.model.name] = _handlers(
            dispatcher, method, limit, metrics
        )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]
    )
    # grpc_health's asyncio servicer (health.aio) is missing from its type hints.
    health_servicer: Any = getattr(health, "aio").HealthServicer()  # noqa: B009
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, list(by_service), dispatcher.model.pool)
    return server, health_servicer
