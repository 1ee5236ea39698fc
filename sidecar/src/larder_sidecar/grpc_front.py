"""The gRPC front: the user's services, served dynamically, plus reflection and health.

Handlers take and return raw bytes (no serializers) so a request is parsed exactly
once, by the dispatcher, into the method's dynamic message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .dispatch import Dispatcher, parse
from .invoke import InvokeError, InvokeResult, MetadataPairs
from .model import Method


def client_metadata(context: grpc.aio.ServicerContext[Any, Any], method: Method) -> MetadataPairs:
    """The caller's string headers that the method's component asked for in discovery
    (`forward_headers`); gRPC's own and binary (`-bin`) headers never travel."""
    wanted = method.component.forward_headers
    if not wanted:
        return ()
    return [
        (k, v)
        for k, v in context.invocation_metadata() or ()
        if k in wanted and isinstance(v, str) and not k.startswith((":", "grpc-"))
    ]


async def _send_metadata(context: grpc.aio.ServicerContext[Any, Any], result: InvokeResult) -> None:
    if result.metadata:
        await context.send_initial_metadata(tuple(result.metadata))


def _handlers(dispatcher: Dispatcher, method: Method) -> grpc.RpcMethodHandler[Any, Any]:
    model = method.model

    async def requests(it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for r in it:
            yield r

    if not model.client_streaming and not model.server_streaming:

        async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                parsed = parse(method, request)
                result = await dispatcher.call(
                    method, request, client_metadata(context, method), parsed
                )
            except InvokeError as e:
                await context.abort(e.code, e.message)
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
            try:
                async for result in dispatcher.streamed_out(
                    method, request, client_metadata(context, method)
                ):
                    yield result.payload
            except InvokeError as e:
                await context.abort(e.code, e.message)

        return grpc.unary_stream_rpc_method_handler(stream_out)

    async def streamed(
        request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        try:
            async for result in dispatcher.streamed(
                method, requests(request_iterator), client_metadata(context, method)
            ):
                yield result.payload
        except InvokeError as e:
            await context.abort(e.code, e.message)

    return grpc.stream_stream_rpc_method_handler(streamed)


def build_grpc_server(
    dispatcher: Dispatcher, max_message_bytes: int
) -> tuple[grpc.aio.Server, Any]:
    """A server with the user's services, reflection and health (not yet bound or started)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for method in dispatcher.model.methods.values():
        by_service.setdefault(method.model.service, {})[method.model.name] = _handlers(
            dispatcher, method
        )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]
    )
    # grpc_health's asyncio servicer (health.aio) is missing from its type hints.
    health_servicer: Any = getattr(health, "aio").HealthServicer()  # noqa: B009
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        *by_service,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server, pool=dispatcher.model.pool)
    return server, health_servicer
