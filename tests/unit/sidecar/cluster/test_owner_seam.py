"""The owner seam: the dispatcher submits entity commands, and commands a stopping
entity hands back, to whatever owner the router names."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from akkaserverless.component import component_pb2
from google.protobuf import any_pb2
from larder_sidecar.cluster import LocalRouter, Owner
from larder_sidecar.dispatch import Dispatcher
from larder_sidecar.entities import Command
from larder_sidecar.invoke import InvokeError, MetadataPairs
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import Method, UserFunctionModel, build_model
from larder_sidecar.outcome import Outcome

from ..entities.fakes import emit_one, make_host, until
from ..test_sidecar_model import F, _file, _spec


class FakeChannel:
    """Enough of a channel for the action stub the dispatcher builds (never called)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _reply(text: bytes) -> Outcome:
    return Outcome("reply", component_pb2.Reply(payload=any_pb2.Any(value=text)))


class FakePeer:
    """An owner elsewhere: records what it was asked to run."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str, bytes, MetadataPairs]] = []
        self.hold: asyncio.Event | None = None

    async def submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        self.submitted.append((method.model.name, entity_id, payload, metadata))
        if self.hold is not None:
            await self.hold.wait()
        return _reply(b"from " + entity_id.encode())


class FakeRouter:
    """Names the peer for every entity; may hold callers, as during a hand-off."""

    def __init__(self, owner: Owner) -> None:
        self.asked: list[tuple[str, str]] = []
        self.handed_over = asyncio.Event()
        self.handed_over.set()
        self._owner = owner

    async def owner(self, entity_type: str, entity_id: str) -> Owner:
        self.asked.append((entity_type, entity_id))
        await self.handed_over.wait()
        return self._owner


@pytest.fixture
def model() -> UserFunctionModel:
    return build_model(_spec(_file({"id": (1, F.TYPE_STRING)})), {(0, 7)})


def _method(model: UserFunctionModel) -> Method:
    method = model.method("test.Svc", "Do")
    assert method is not None
    return method


def _request(method: Method, entity_id: str) -> bytes:
    return method.input_class(id=entity_id).SerializeToString()


def _dispatcher(model: UserFunctionModel, router: Any) -> Dispatcher:
    channel: Any = FakeChannel()
    return Dispatcher(model, router, channel, Metrics())


async def test_entity_commands_go_to_the_owner_the_router_names(model: UserFunctionModel) -> None:
    peer = FakePeer()
    router = FakeRouter(peer)
    method = _method(model)
    result = await _dispatcher(model, router).call(method, _request(method, "c1"), [("k", "v")])
    assert result.payload == b"from c1"
    assert router.asked == [("svc", "c1")]
    assert peer.submitted == [("Do", "c1", _request(method, "c1"), [("k", "v")])]


async def test_a_command_waits_while_its_entity_is_handed_over(model: UserFunctionModel) -> None:
    peer = FakePeer()
    router = FakeRouter(peer)
    router.handed_over.clear()
    method = _method(model)
    call = asyncio.create_task(_dispatcher(model, router).call(method, _request(method, "c"), []))
    await until(lambda: bool(router.asked))
    assert router.asked == [("svc", "c")] and not peer.submitted and not call.done()
    router.handed_over.set()
    assert (await call).payload == b"from c"


async def test_a_re_entered_command_goes_through_the_router(model: UserFunctionModel) -> None:
    peer = FakePeer()
    router = FakeRouter(peer)
    dispatcher = _dispatcher(model, router)
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    dispatcher.reenter(Command(_method(model), "late", b"p", (), future))
    outcome = await future
    assert outcome.message.payload.value == b"from late"
    assert router.asked == [("svc", "late")]
    assert peer.submitted == [("Do", "late", b"p", ())]
    await dispatcher.drain()


async def test_a_caller_giving_up_cancels_the_re_entry(model: UserFunctionModel) -> None:
    peer = FakePeer()
    peer.hold = asyncio.Event()
    dispatcher = _dispatcher(model, FakeRouter(peer))
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    dispatcher.reenter(Command(_method(model), "late", b"", (), future))
    await until(lambda: bool(peer.submitted))
    future.cancel()
    # The re-entry task ends (cancelled) instead of waiting for the owner.
    await asyncio.wait_for(dispatcher.drain(), 5)


async def test_an_owners_refusal_reaches_the_re_entered_commands_caller(
    model: UserFunctionModel,
) -> None:
    host, _ = make_host(MemoryJournal(), emit_one)
    await host.shutdown()
    dispatcher = _dispatcher(model, LocalRouter(host))
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    dispatcher.reenter(Command(_method(model), "x", b"", (), future))
    with pytest.raises(InvokeError) as info:
        await future
    assert info.value.code is grpc.StatusCode.UNAVAILABLE


async def test_the_local_router_names_the_entity_host(model: UserFunctionModel) -> None:
    host, stub = make_host(MemoryJournal(), emit_one)
    router = LocalRouter(host)
    assert await router.owner("svc", "any") is host
    # End to end through the local host: the fake user function's reply comes back.
    method = _method(model)
    result = await _dispatcher(model, router).call(method, _request(method, "e"), [])
    assert len(stub.calls) == 1 and result.payload
    await host.shutdown()
