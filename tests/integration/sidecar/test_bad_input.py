"""Bad requests get precise gRPC errors and change nothing; the sidecar keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import ModuleType

import grpc
import pytest
from larder_sidecar.app import Sidecar
from larder_sidecar.discovery import discover
from larder_sidecar.model import SpecError

from .conftest import Client, SidecarFactory
from .user_function import PKG, UserFunction


def _raw(client: Client, path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return client.channel.unary_unary(path, None, None)


async def test_malformed_bytes_unknown_method_and_missing_key(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    await client.add("safe", 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _raw(client, f"/{PKG}.Counter/Add")(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larder.test.AddRequest" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _raw(client, f"/{PKG}.Counter/Nope")(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.add("", 5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entity key" in (info.value.details() or "")
    assert await client.get("safe") == 1
    assert all(entity != "" for _, _, entity in user_function.record.commands if _ == "Counter")


async def test_message_over_the_size_limit(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function, max_message_bytes=64 * 1024))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.call("Echo", "Say", client.pb.Text(text="x" * 100_000), client.pb.Text)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        await client.call("Echo", "Say", client.pb.Text(text="ok"), client.pb.Text)
    ).text == "ok"


async def test_unsupported_protocol_version_is_reported_and_refused(
    compiled: tuple[ModuleType, bytes],
) -> None:
    fn = UserFunction(*compiled, protocol_version=(0, 3))
    await fn.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{fn.port}") as channel:
            with pytest.raises(SpecError) as info:
                await discover(channel, "test", 5.0)
        assert "protocol version 0.3" in str(info.value)
        assert len(fn.record.errors_reported) == 1
        assert "protocol version 0.3" in fn.record.errors_reported[0]
    finally:
        await fn.stop()


async def test_unknown_service_and_component_type_all_reported_at_once(
    compiled: tuple[ModuleType, bytes],
) -> None:
    fn = UserFunction(
        *compiled,
        components=[
            ("com.example.Missing", "akkaserverless.component.action.Actions"),
            # Not served yet: one problem (views are discovered, tests/integration/views).
            (f"{PKG}.Counter", "akkaserverless.component.replicatedentity.ReplicatedEntities"),
        ],
    )
    await fn.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{fn.port}") as channel:
            with pytest.raises(SpecError) as info:
                await discover(channel, "test", 5.0)
        assert len(info.value.problems) == 2
    finally:
        await fn.stop()


@pytest.mark.parametrize("shape", ["stream_unary", "stream_stream"])
async def test_malformed_message_later_in_a_stream(
    shape: str,
    user_function: UserFunction,
    start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    client = connect(await start_sidecar(user_function))
    method = "Join" if shape == "stream_unary" else "Chat"
    call = getattr(client.channel, shape)(f"/{PKG}.Echo/{method}", None, None)

    async def requests() -> AsyncIterator[bytes]:
        yield client.pb.Text(text="fine").SerializeToString()
        yield b"\xff\xff\xff"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        if shape == "stream_unary":
            await call(requests(), timeout=10)
        else:
            async for _ in call(requests(), timeout=10):
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larder.test.Text" in (info.value.details() or "")
    assert (
        await client.call("Echo", "Say", client.pb.Text(text="ok"), client.pb.Text)
    ).text == "ok"


async def test_http_body_over_the_size_limit(
    user_function: UserFunction, start_sidecar: SidecarFactory
) -> None:
    # LARDER_MAX_MESSAGE_BYTES bounds HTTP/JSON bodies on the public port too.
    sidecar = await start_sidecar(user_function, max_message_bytes=64 * 1024)
    body = b'{"text": "' + b"x" * 100_000 + b'"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.public_port)
    writer.write(
        f"POST /{PKG}.Echo/Say HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
