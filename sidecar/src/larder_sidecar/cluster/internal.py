"""The internal port's server (`LARDER_INTERNAL_PORT`): other members forward entity
commands here and ask for shards to be released.

Every call is checked before anything runs: it must carry the sender's map view (else
INVALID_ARGUMENT), come from a current member at that member's address (else
PERMISSION_DENIED), with the same shard count (else FAILED_PRECONDITION). A forward then
runs only if this member serves the entity's shard; otherwise it is answered with a
redirect, having run nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc
import grpc.aio

from ..invoke import InvokeError
from ..model import Kind, Method
from ..outcome import Outcome, metadata_pairs
from . import wire
from .metrics import ClusterMetrics
from .sharded import MAX_PEER_HOPS, ShardedRouter, clip_id

log = logging.getLogger("larder_sidecar.cluster")


class InternalServer:
    def __init__(
        self,
        router: ShardedRouter,
        methods: Mapping[str, Method],
        metrics: ClusterMetrics,
        max_message_bytes: int,
    ) -> None:
        self._router = router
        self._methods = methods
        self._metrics = metrics
        self._max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Bind `host:port` (0: any free port) and serve; returns the bound port."""
        server = grpc.aio.server(
            options=[
                *wire.SERVER_OPTIONS,
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
            ]
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    wire.SERVICE,
                    {
                        "Forward": grpc.unary_unary_rpc_method_handler(
                            self._forward,
                            request_deserializer=wire.ForwardRequest.FromString,
                            response_serializer=wire.ForwardReply.SerializeToString,
                        ),
                        "Release": grpc.unary_unary_rpc_method_handler(
                            self._release,
                            request_deserializer=wire.ReleaseRequest.FromString,
                            response_serializer=wire.ReleaseReply.SerializeToString,
                        ),
                    },
                ),
            )
        )
        self.port = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    async def _forward(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        refusal = await self._router.refusal(request.view, context.peer())
        if refusal is not None:
            self._metrics.forwarded_in.labels("refused").inc()
            await context.abort(*refusal)
        try:
            result = await self._run(request)
        except InvokeError as e:
            self._metrics.forwarded_in.labels("error").inc()
            return wire.ForwardReply(error=wire.error_message(e))
        if isinstance(result, Outcome):
            self._metrics.forwarded_in.labels("ok").inc()
            return wire.ForwardReply(outcome=wire.outcome_message(result))
        self._metrics.forwarded_in.labels("redirect").inc()
        return wire.ForwardReply(redirect=result)

    async def _run(self, request: Any) -> Outcome | Any:
        if request.hops > MAX_PEER_HOPS:
            raise InvokeError(
                grpc.StatusCode.UNAVAILABLE,
                f"the command was redirected {request.hops} times: the sidecars disagree on "
                "its owner while membership changes; retry",
            )
        method = self._methods.get(request.method)
        if method is None or method.component.kind is Kind.ACTION:
            raise InvokeError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"the owner's user function has no entity method {request.method}: do all the "
                "function's pods run the same version?",
            )
        if method.component.entity_type != request.entity_type:
            raise InvokeError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.method} belongs to entity type {method.component.entity_type!r} "
                f"here, not {request.entity_type!r}: do all the function's pods run the same "
                "version?",
            )
        log.debug(
            "forwarded %s for %s/%s from %s",
            request.method,
            request.entity_type,
            clip_id(request.entity_id),
            request.view.sender,
        )
        return await self._router.serve(
            method, request.entity_id, request.payload, metadata_pairs(request.metadata)
        )

    async def _release(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        refusal = await self._router.refusal(request.view, context.peer())
        if refusal is not None:
            await context.abort(*refusal)
        return await self._router.serve_release(request.shards)
