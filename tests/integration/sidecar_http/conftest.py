"""A real grpc.aio echo server as the internal target, and the public port in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
import uvloop
from larder_sidecar.http import PublicServer, start_public_server
from larder_sidecar.invoke import MethodModel

from tests.unit.sidecar.http.fakes import FakeInvoker
from tests.unit.sidecar.http.protos import compile_descriptor_set, method_models

MAX_GRPC_MESSAGE = 32 * 1024 * 1024
MAX_HTTP_BODY = 8 * 1024 * 1024


if TYPE_CHECKING:
    _GenericHandler = grpc.GenericRpcHandler[bytes, bytes]
else:  # grpc's classes are not generic at runtime, only in grpc-stubs
    _GenericHandler = grpc.GenericRpcHandler


class EchoHandler(_GenericHandler):
    """Answers every unary method with the request bytes, echoing `x-echo` metadata."""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        return grpc.unary_unary_rpc_method_handler(self._echo)

    async def _echo(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        echoed = [(k, v) for k, v in context.invocation_metadata() or () if k == "x-echo"]
        await context.send_initial_metadata(tuple(echoed))
        return request


@dataclass
class EchoServer:
    server: grpc.aio.Server
    target: str


async def start_echo_server(address: str) -> EchoServer:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
        ]
    )
    server.add_generic_rpc_handlers((EchoHandler(),))
    port = server.add_insecure_port(address)
    await server.start()
    target = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    return EchoServer(server, target)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test here runs on both loops: the sidecar runs on uvloop, whose transports differ.

    Except where the sidecar is a process of its own: the test's loop is only the client's.
    """
    if item.path.name == "test_process_limits.py":
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def methods(tmp_path_factory: pytest.TempPathFactory) -> list[MethodModel]:
    return method_models(compile_descriptor_set(tmp_path_factory.mktemp("http-protos")))


@pytest.fixture
async def echo_server() -> AsyncIterator[EchoServer]:
    echo = await start_echo_server("127.0.0.1:0")
    yield echo
    await echo.server.stop(None)


StartPublic = Callable[..., Awaitable[PublicServer]]


@pytest.fixture
async def start_public(methods: list[MethodModel]) -> AsyncIterator[StartPublic]:
    started: list[PublicServer] = []

    async def start(target: str, invoker: FakeInvoker | None = None, **kw: Any) -> PublicServer:
        kw.setdefault("max_message_bytes", MAX_HTTP_BODY)
        server = await start_public_server(
            "127.0.0.1", 0, target, invoker or FakeInvoker(), methods, **kw
        )
        started.append(server)
        return server

    yield start
    await asyncio.gather(*(server.close(grace=1.0) for server in started))


@pytest.fixture
async def public(echo_server: EchoServer, start_public: StartPublic) -> PublicServer:
    return await start_public(echo_server.target)


@dataclass(frozen=True)
class CurlResult:
    status: int
    body: bytes
    stderr: str


async def curl(*args: str | Path) -> CurlResult:
    """Run curl; the last line of stdout is the HTTP status (from -w)."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-w", "\n%{http_code}", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    body, _, status = stdout.rpartition(b"\n")
    return CurlResult(int(status), body, stderr.decode())
