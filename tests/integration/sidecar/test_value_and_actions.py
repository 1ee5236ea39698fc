"""Value entities and actions (every stream shape) through the real sidecar."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from larder_sidecar.app import Sidecar
from larder_sidecar.journal.base import persistence_id
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import KEY_SEPARATOR

from .conftest import Client, SidecarFactory
from .user_function import PKG, UserFunction


async def test_value_entity_update_delete_and_reload(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    journal = MemoryJournal()
    sidecar = await start_sidecar(user_function, journal=journal)
    client = connect(sidecar)
    pb = client.pb
    reply = await client.call("Register", "Set", pb.SetRequest(id="r", text="hello"), pb.Text)
    assert reply.text == "hello"
    state = await journal.load_value(persistence_id("register", "r"))
    assert state.revision == 1
    assert state.payload is not None
    assert pb.Text.FromString(state.payload.value).text == "hello"
    await client.call("Register", "Clear", pb.GetRequest(id="r"), pb.Text)
    state = await journal.load_value(persistence_id("register", "r"))
    assert (state.payload, state.revision) == (None, 2)
    await client.call("Register", "Set", pb.SetRequest(id="r", text="again"), pb.Text)

    # A second sidecar on the same journal starts the entity from the stored state.
    await client.channel.close(None)
    await sidecar.stop()
    client = connect(await start_sidecar(user_function, journal=journal))
    reply = await client.call("Register", "Read", pb.GetRequest(id="r"), pb.Text)
    assert reply.text == "again"


async def test_several_key_fields_are_joined_unambiguously(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    pb = client.pb
    reply = await client.call("Register", "WhoAmI", pb.TagRequest(tenant="a,b", number=7), pb.Text)
    assert reply.text == f"a\\,b{KEY_SEPARATOR}7"


async def test_action_unary_and_failure(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    pb = client.pb
    assert (await client.call("Echo", "Say", pb.Text(text="hi"), pb.Text)).text == "hi"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.call("Echo", "Say", pb.Text(text="fail"), pb.Text)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == "echo refused"


def _stream(client: Client, method: str, kind: str) -> Any:
    make = getattr(client.channel, kind)
    return make(
        f"/{PKG}.Echo/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=client.pb.Text.FromString,
    )


async def test_action_streamed_in_out_and_both(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    pb = client.pb

    async def texts(*values: str) -> AsyncIterator[Any]:
        for v in values:
            yield pb.Text(text=v)

    joined = await _stream(client, "Join", "stream_unary")(texts("a", "b", "c"), timeout=10)
    assert joined.text == "a+b+c"
    call = _stream(client, "Repeat", "unary_stream")(pb.Text(text="x"), timeout=10)
    repeated = [r.text async for r in call]
    assert repeated == ["x0", "x1", "x2"]
    # The first reply's metadata is the response's headers (as for a unary reply); the
    # later replies' cannot be headers any more, and come in the trailers.
    assert ("x-reply-0", "0") in tuple(await call.initial_metadata())
    trailers = tuple(await call.trailing_metadata())
    assert ("x-reply-1", "1") in trailers and ("x-reply-2", "2") in trailers
    chat = [
        r.text async for r in _stream(client, "Chat", "stream_stream")(texts("p", "q"), timeout=10)
    ]
    assert chat == ["P", "Q"]
