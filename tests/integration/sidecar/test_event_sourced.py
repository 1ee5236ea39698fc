"""Event-sourced entities through the real sidecar: commands, journal, snapshots, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from larder_sidecar.app import Sidecar
from larder_sidecar.journal.base import persistence_id
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal

from .conftest import Client, SidecarFactory
from .user_function import PKG, UserFunction


async def test_commands_persist_events_and_reply(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    journal = MemoryJournal()
    client = connect(await start_sidecar(user_function, journal=journal))
    assert await client.add("a", 2) == 2
    assert await client.add("a", 3) == 5
    assert await client.add("b", 10) == 10
    assert await client.get("a") == 5
    recovery = await journal.load(persistence_id("counter", "a"))
    assert recovery.last_sequence_nr == 2
    # One stream per entity: a single Init each.
    assert sorted(i.entity_id for i in user_function.record.inits) == ["a", "b"]


async def test_commands_for_one_entity_run_in_order(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    results = await asyncio.gather(*(client.add("x", 1) for _ in range(20)))
    assert sorted(results) == list(range(1, 21))
    assert await client.get("x") == 20


async def test_snapshot_and_restart_from_sqlite_journal(
    user_function: UserFunction,
    start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
    tmp_path: Path,
) -> None:
    db = tmp_path / "journal.sqlite3"
    first = await start_sidecar(user_function, journal=SqliteJournal(db))
    client = connect(first)
    for amount in (1, 2, 3, 4):  # snapshot after the third event
        await client.add("kept", amount)
    await client.channel.close(None)
    await first.stop()

    # A new sidecar (and a fresh user-function stream) recovers the state from disk:
    # the snapshot at 3 plus one replayed event.
    user_function.record.inits.clear()
    user_function.record.events_replayed.clear()
    second = await start_sidecar(user_function, journal=SqliteJournal(db))
    client = connect(second)
    assert await client.get("kept") == 10
    (init,) = user_function.record.inits
    assert init.snapshot.snapshot_sequence == 3
    assert user_function.record.events_replayed == [("kept", 4)]
    assert await client.add("kept", 5) == 15


async def test_passivation_closes_the_stream_and_reactivates_from_journal(
    compiled: tuple[ModuleType, bytes],
    start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    fn = UserFunction(*compiled, passivation_ms=100)
    await fn.start()
    try:
        sidecar = await start_sidecar(fn)
        client = connect(sidecar)
        await client.add("p", 7)
        assert sidecar.entities is not None
        # The idle timer passivates the entity: the sidecar ends the stream.
        await asyncio.wait_for(fn.record.stream_ended.wait(), 5)
        assert sidecar.entities.active == 0
        assert await client.get("p") == 7
        assert [i.entity_id for i in fn.record.inits] == ["p", "p"]
        assert fn.record.events_replayed == [("p", 1)]
    finally:
        await fn.stop()


async def test_failure_reply_stores_nothing(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    journal = MemoryJournal()
    client = connect(await start_sidecar(user_function, journal=journal))
    await client.add("f", 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.add("f", 100, method="Fail")
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == "not allowed"
    assert (await journal.load(persistence_id("counter", "f"))).last_sequence_nr == 1
    assert await client.get("f") == 1


async def test_protocol_failure_restarts_entity_and_fails_only_that_command(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    await client.add("c", 4)
    crash = asyncio.ensure_future(client.add("c", 1, method="Crash"))
    queued = asyncio.ensure_future(client.add("c", 1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await crash
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "boom" in (info.value.details() or "")
    assert await queued == 5  # restarted from the journal, then ran
    assert [i.entity_id for i in user_function.record.inits] == ["c", "c"]


async def test_forward_returns_the_targets_reply(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    # The forward goes to the same entity: its events are stored first, and the entity
    # is free again by the time the forwarded command reaches it.
    assert await client.add("fw", 6, method="AddAndForward") == 6
    reply = await client.call("Echo", "ReadCounter", client.pb.GetRequest(id="fw"), client.pb.Value)
    assert reply.value == 6


@pytest.mark.parametrize("synchronous", [True, False])
async def test_side_effects_run_through_the_router(
    synchronous: bool,
    user_function: UserFunction,
    start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    sidecar = await start_sidecar(user_function)
    client = connect(sidecar)
    request = client.pb.EffectRequest(id="src", target="dst", amount=9, synchronous=synchronous)
    reply = await client.call("Counter", "AddWithEffect", request, client.pb.Value)
    assert reply.value == 9
    if synchronous:
        assert ("Counter", "Add", "dst") in user_function.record.commands
    assert sidecar.dispatcher is not None
    await sidecar.dispatcher.drain()
    assert await client.get("dst") == 9


async def test_reply_metadata_and_forwarded_request_headers_travel(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    # The entities announce forward_headers ["X-Echo"]: only that header reaches them.
    sidecar = await start_sidecar(user_function)
    client = connect(sidecar)
    call = client._method("Counter", "Get", client.pb.Value)(
        client.pb.GetRequest(id="m"), metadata=(("x-echo", "hello"), ("x-secret", "s")), timeout=10
    )
    await call
    echoed = list(await call.initial_metadata())
    assert ("x-echo", "hello") in echoed
    assert all(k != "x-secret" for k, _ in echoed)

    body = b'{"id": "m"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.public_port)
    writer.write(
        f"POST /{PKG}.Counter/Get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Echo: over-http\r\nX-Secret: s\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    response = (await reader.read()).lower()
    writer.close()
    assert response.startswith(b"http/1.1 200")
    assert b"\r\nx-echo: over-http\r\n" in response
    assert b"x-secret" not in response


async def test_no_request_headers_without_forward_headers(
    compiled: tuple[ModuleType, bytes],
    start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    fn = UserFunction(*compiled, forward_headers=())
    await fn.start()
    try:
        client = connect(await start_sidecar(fn))
        call = client._method("Counter", "Get", client.pb.Value)(
            client.pb.GetRequest(id="m"), metadata=(("x-echo", "hello"),), timeout=10
        )
        await call
        assert all(k != "x-echo" for k, _ in await call.initial_metadata())
    finally:
        await fn.stop()


async def test_user_function_killed_mid_command(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    await client.add("k", 3)
    hang = asyncio.ensure_future(
        client.call("Counter", "Hang", client.pb.GetRequest(id="k"), client.pb.Value)
    )
    await user_function.record.hanging.wait()
    port = user_function.port
    await user_function.stop()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await hang
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # While the user function is down: a precise error, nothing changes.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.add("k", 1)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Back up on the same port: the entity restarts from the journal.
    user_function.record.hang.set()
    await user_function.start(port)
    assert await client.get("k") == 3


async def test_graceful_stop_finishes_in_flight_commands(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    sidecar = await start_sidecar(user_function)
    client = connect(sidecar)
    await client.add("g", 2)
    hang = asyncio.ensure_future(
        client.call("Counter", "Hang", client.pb.GetRequest(id="g"), client.pb.Value)
    )
    await user_function.record.hanging.wait()
    stopping = asyncio.ensure_future(sidecar.stop())
    user_function.record.hang.set()
    assert (await hang).value == 2
    await stopping
    assert user_function.record.proxy_terminated == 1
    assert sidecar.entities is not None and sidecar.entities.active == 0
