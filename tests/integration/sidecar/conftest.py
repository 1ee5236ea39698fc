"""Fixtures: the test user function (real gRPC on loopback) and an in-process sidecar."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from larder_sidecar.app import Sidecar
from larder_sidecar.journal.base import Journal
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.settings import Settings

from .user_function import PKG, UserFunction, compile_test_protos

SidecarFactory = Callable[..., Awaitable[Sidecar]]


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_test_protos(tmp_path_factory.mktemp("sidecar-protos"))


@pytest.fixture
def pb(compiled: tuple[ModuleType, bytes]) -> ModuleType:
    return compiled[0]


@pytest.fixture
async def user_function(compiled: tuple[ModuleType, bytes]) -> AsyncIterator[UserFunction]:
    fn = UserFunction(*compiled)
    await fn.start()
    yield fn
    await fn.stop()


def sidecar_settings(user_function_port: int, **overrides: Any) -> Settings:
    base = Settings(
        user_function_port=user_function_port,
        port=0,
        admin_port=0,
        internal_port=0,
        discovery_timeout=10.0,
    )
    return replace(base, **overrides)


@pytest.fixture(params=["h2", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every in-process sidecar test runs on both clients of the user function: ours
    (the default) and grpc.aio (`LARDER_USER_FUNCTION_TRANSPORT=grpc`)."""
    return str(request.param)


@pytest.fixture
async def start_sidecar(transport: str) -> AsyncIterator[SidecarFactory]:
    started: list[Sidecar] = []

    async def start(fn: UserFunction, journal: Journal | None = None, **overrides: Any) -> Sidecar:
        overrides.setdefault("user_function_transport", transport)
        sidecar = Sidecar(
            sidecar_settings(fn.port, **overrides),
            journal=journal if journal is not None else MemoryJournal(),
        )
        started.append(sidecar)
        await sidecar.start_admin()
        await sidecar.start()
        return sidecar

    yield start
    for sidecar in reversed(started):
        await sidecar.stop()


class Client:
    """Calls the sidecar's public gRPC port with the test messages."""

    def __init__(self, channel: grpc.aio.Channel, pb: ModuleType) -> None:
        self.channel = channel
        self.pb = pb

    def _method(self, service: str, method: str, response: type[Message]) -> Any:
        return self.channel.unary_unary(
            f"/{PKG}.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )

    async def call(
        self, service: str, method: str, request: Message, response: type[Message], **kw: Any
    ) -> Any:
        return await self._method(service, method, response)(request, timeout=10, **kw)

    async def add(self, entity: str, amount: int, method: str = "Add") -> int:
        reply = await self.call(
            "Counter", method, self.pb.AddRequest(id=entity, amount=amount), self.pb.Value
        )
        return int(reply.value)

    async def get(self, entity: str) -> int:
        reply = await self.call("Counter", "Get", self.pb.GetRequest(id=entity), self.pb.Value)
        return int(reply.value)


@pytest.fixture
async def connect(pb: ModuleType) -> AsyncIterator[Callable[[Sidecar], Client]]:
    channels: list[grpc.aio.Channel] = []

    def make(sidecar: Sidecar) -> Client:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.public_port}")
        channels.append(channel)
        return Client(channel, pb)

    yield make
    for channel in channels:
        await channel.close(None)


__all__ = ["Client", "Path", "SidecarFactory"]
