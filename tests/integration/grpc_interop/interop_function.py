"""gRPC's interop test service (`grpc.testing.TestService`) as a stateless action on our
SDK, for the official interop client run against the sidecar.

It answers as the interop test servers do (grpc-go's `interop.NewTestServer`, whose
behaviour the cases check): payloads of zero bytes of the asked size, the asked status,
the `x-grpc-test-echo-initial` header echoed. What the user-function protocol cannot
express is said where it matters below.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

from larder_protocol import compile_protos
from larder_sdk import Action, ActionContext, LarderService, Metadata, Reply, ServerSettings

PROTOS = Path(__file__).parent / "protos"
SERVICE = "grpc.testing.TestService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
# grpc.StatusCode.UNKNOWN: what the sidecar answers for a failed command.
_UNKNOWN = 2


def compile_interop_protos(out: Path) -> ModuleType:
    """Compile the interop proto into `out`; its generated module."""
    compile_protos([PROTOS / "interoptest" / "grpc_testing.proto"], out, include=[PROTOS])
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("interoptest.grpc_testing_pb2")


def _fail_if_asked(status: Any, ctx: ActionContext) -> None:
    """Answer with the status the request asks for (`response_status`).

    A protocol `Failure` carries a description but no status code: the sidecar reports
    it as UNKNOWN with the description as the message. The interop cases ask for UNKNOWN
    (code 2); another code cannot be answered, and the failure says so.
    """
    if status.code == 0:
        return
    if status.code == _UNKNOWN:
        ctx.fail(status.message)
    ctx.fail(
        f"asked to answer status code {status.code}, which a user function cannot set "
        f"(failures are UNKNOWN): {status.message}"
    )


def _echoed(ctx: ActionContext) -> Metadata:
    """The initial metadata to echo. `x-grpc-test-echo-trailing-bin` belongs in the
    trailers, and reply metadata always leaves as response headers: it is not echoed."""
    value = ctx.metadata.get(ECHO_INITIAL)
    return Metadata.of([(ECHO_INITIAL, value)] if value is not None else [])


def interop_action(pb: ModuleType) -> Action:
    # The echoed headers reach the action only if its component asks for them.
    action = Action(
        pb.DESCRIPTOR.services_by_name["TestService"],
        forward_headers=[ECHO_INITIAL, ECHO_TRAILING],
    )

    def payload(payload_type: int, size: int, ctx: ActionContext) -> Any:
        if payload_type != pb.COMPRESSABLE:
            ctx.fail(f"unsupported payload type {payload_type}")
        if size < 0:
            ctx.fail(f"a response of negative size {size} was asked for")
        return pb.Payload(type=payload_type, body=bytes(size))

    async def replies(request: Any, ctx: ActionContext) -> AsyncIterator[Any]:
        for parameters in request.response_parameters:
            if parameters.interval_us > 0:
                await asyncio.sleep(parameters.interval_us / 1e6)
            yield pb.StreamingOutputCallResponse(
                payload=payload(request.response_type, parameters.size, ctx)
            )

    @action.command_handler("EmptyCall")
    def empty_call(command: Any, ctx: ActionContext) -> Any:
        return Reply(pb.Empty(), metadata=_echoed(ctx))

    @action.command_handler("UnaryCall")
    def unary_call(command: Any, ctx: ActionContext) -> Any:
        _fail_if_asked(command.response_status, ctx)
        reply = pb.SimpleResponse(
            payload=payload(command.response_type, command.response_size, ctx)
        )
        return Reply(reply, metadata=_echoed(ctx))

    @action.command_handler("StreamingInputCall")
    async def streaming_input_call(commands: AsyncIterator[Any], ctx: ActionContext) -> Any:
        total = 0
        async for request in commands:
            total += len(request.payload.body)
        return Reply(
            pb.StreamingInputCallResponse(aggregated_payload_size=total), metadata=_echoed(ctx)
        )

    @action.command_handler("StreamingOutputCall")
    async def streaming_output_call(command: Any, ctx: ActionContext) -> AsyncIterator[Any]:
        async for reply in replies(command, ctx):
            yield reply
        _fail_if_asked(command.response_status, ctx)

    @action.command_handler("FullDuplexCall")
    async def full_duplex_call(
        commands: AsyncIterator[Any], ctx: ActionContext
    ) -> AsyncIterator[Any]:
        first = True
        async for request in commands:
            _fail_if_asked(request.response_status, ctx)
            async for reply in replies(request, ctx):
                # The first reply carries the echo, as a server's initial metadata would.
                yield Reply(reply, metadata=_echoed(ctx)) if first else reply
                first = False

    return action


def interop_service(pb: ModuleType) -> LarderService:
    return LarderService(
        [interop_action(pb)],
        service_name="grpc-interop-test",
        settings=ServerSettings("127.0.0.1", 0),
    )
