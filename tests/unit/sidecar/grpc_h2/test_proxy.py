"""Forwarded streams whose server ends the call while the client is still sending."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from larder_sidecar.http import PublicServer, start_public_server

from tests.unit.sidecar.http.fakes import FakeInvoker

from .client import Client, message, request_headers

REFUSE = "/test.Sink/Refuse"
# Enough messages that some are still being written to the internal server when its
# status arrives (grpc.aio used to turn nearly every such call into INTERNAL).
MESSAGES = 20
CALLS = 20


async def _refuse(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
                  ) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused at once",
                        trailing_metadata=(("x-why", "early"),))
    raise AssertionError("abort returns by raising")


@pytest.fixture
async def public() -> AsyncIterator[PublicServer]:
    backend = grpc.aio.server()
    backend.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Sink", {"Refuse": grpc.stream_unary_rpc_method_handler(_refuse)})])
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    server = await start_public_server("127.0.0.1", 0, f"127.0.0.1:{port}", FakeInvoker(), [])
    yield server
    await server.close(grace=1.0)
    await backend.stop(None)


@pytest.mark.parametrize(("path", "status", "text"), [
    (REFUSE, "9", "refused at once"),
    ("/no.Such/Method", "12", "Method not found!"),
])
async def test_a_call_the_server_ends_early_keeps_the_servers_status(
    public: PublicServer, path: str, status: str, text: str
) -> None:
    # grpc.aio replaces a call's status with INTERNAL "Internal error from Core" when a
    # write fails because the status has just arrived (grpc/grpc#36066); the client must
    # get the status the server sent, not that.
    client = await Client.connect(public.port)
    # One exchange first, so the client has the port's flow-control windows.
    await client.call(request_headers("/no.Such/Method"), message(b""))
    body = message(b"x" * 1000) * MESSAGES
    streams = [client.start(request_headers(path), body) for _ in range(CALLS)]
    responses = [await client.wait(stream) for stream in streams]
    assert [(r.status, r.grpc_message) for r in responses] == [(status, text)] * CALLS
    if path == REFUSE:
        # A trailers-only response: its trailing metadata comes in the headers.
        assert [{**r.headers, **r.trailers}.get("x-why") for r in responses] == ["early"] * CALLS
    await client.close()
