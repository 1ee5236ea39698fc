"""The user function watch: any answer counts, silence past the grace makes the sidecar
unready, and the setting is parsed with its name in the error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from larder_sidecar.function_watch import UserFunctionWatch
from larder_sidecar.settings import SettingsError, load_settings


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def no_discovery_server() -> AsyncIterator[int]:
    """A gRPC server without the Discovery service: every call answers UNIMPLEMENTED."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


async def test_an_unimplemented_health_check_is_an_answer(no_discovery_server: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{no_discovery_server}") as channel:
        assert await UserFunctionWatch(channel, 1.0).probe()


async def test_nothing_listening_is_silence() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert not await UserFunctionWatch(channel, 1.0).probe()


async def test_unready_only_after_the_grace() -> None:
    clock = _Clock()
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        watch = UserFunctionWatch(channel, 3.0, clock=clock)
        assert watch.interval == 0.75
        clock.now += 3.0
        assert watch.status() == (True, "ready")
        clock.now += 0.5
        ok, why = watch.status()
    assert not ok
    assert why.startswith("the user function has not answered for 4s")
    assert "LARDER_USER_FUNCTION_UNAVAILABLE_GRACE=3s" in why


def test_grace_setting() -> None:
    assert load_settings({}).user_function_unavailable_grace == 3.0
    env = {"LARDER_USER_FUNCTION_UNAVAILABLE_GRACE": "500ms"}
    assert load_settings(env).user_function_unavailable_grace == 0.5
    with pytest.raises(SettingsError, match="LARDER_USER_FUNCTION_UNAVAILABLE_GRACE"):
        load_settings({"LARDER_USER_FUNCTION_UNAVAILABLE_GRACE": "soon"})


async def test_a_busy_function_that_is_connected_is_an_answer() -> None:
    # A health check that waits for a free worker (the published Python SDK's thread
    # pool) misses its deadline on a live connection: busy, not away.
    release = asyncio.Event()

    async def busy(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await release.wait()
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "akkaserverless.protocol.Discovery",
                {"HealthCheck": grpc.unary_unary_rpc_method_handler(busy)},
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = UserFunctionWatch(channel, 1.0)
            assert await watch.probe()
            await server.stop(None)
            assert not await watch.probe()
    finally:
        release.set()
        await server.stop(None)
