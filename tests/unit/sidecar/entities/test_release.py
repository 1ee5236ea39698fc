"""Releasing a chosen set of entities (hand-off), and commands that reach an entity
after it stopped taking them."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from larder_sidecar.entities import Command, EntityKey, EntityReleased
from larder_sidecar.entities.lifecycle import State
from larder_sidecar.invoke import InvokeError
from larder_sidecar.journal.base import persistence_id
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import Method

from .fakes import GatedJournal, emit_one, make_host, until


def _commands(call: object) -> list[str]:
    sent = getattr(call, "sent")  # noqa: B009  # FakeCall, typed loosely by the stub
    return [m.command.entity_id for m in sent if m.WhichOneof("message") == "command"]


def _in_shard_a(key: EntityKey) -> bool:
    return key.entity_id.startswith("a")


async def test_release_passivates_only_the_selected_entities(method: Method) -> None:
    host, stub = make_host(MemoryJournal(), emit_one)
    for entity_id in ("a1", "a2", "b1"):
        await host.enqueue(method, entity_id, b"", ())
    assert await host.release(_in_shard_a) == 2
    assert host.active == 1
    assert host.state(EntityKey("svc", "a1")) is None
    assert host.state(EntityKey("svc", "b1")) is State.ACTIVE
    a1, a2, b1 = stub.calls
    assert a1.cancelled and a2.cancelled and not b1.cancelled
    # The others keep their stream.
    await host.enqueue(method, "b1", b"", ())
    assert len(stub.calls) == 3 and _commands(b1) == ["b1", "b1"]
    await host.shutdown()


async def test_a_released_entity_is_refused_until_readmitted(method: Method) -> None:
    journal = MemoryJournal()
    host, stub = make_host(journal, emit_one)
    await host.enqueue(method, "a1", b"", ())
    await host.release(_in_shard_a)
    # Active or not before: every entity the predicate selects is refused.
    for entity_id in ("a1", "a9"):
        with pytest.raises(EntityReleased) as info:
            await host.submit(method, entity_id, b"", ())
        assert info.value.code is grpc.StatusCode.UNAVAILABLE
        assert info.value.key == EntityKey("svc", entity_id)
    assert (await host.submit(method, "b1", b"", ())).kind == "reply"
    host.readmit(_in_shard_a)
    await host.submit(method, "a1", b"", ())
    # Activated again from the journal: the first command's event is replayed.
    replayed = [m.event.sequence for m in stub.calls[-1].sent if m.WhichOneof("message") == "event"]
    assert replayed == [1]
    assert (await journal.load(persistence_id("svc", "a1"))).last_sequence_nr == 2
    await host.shutdown()


async def test_release_lets_queued_commands_and_their_writes_finish(method: Method) -> None:
    journal = GatedJournal()
    host, stub = make_host(journal, emit_one)
    first = host.enqueue(method, "a1", b"", ())
    await journal.waiting.wait()
    queued = [host.enqueue(method, "a1", b"", ()) for _ in range(3)]
    release = asyncio.create_task(host.release(_in_shard_a))
    # Taken before the release: they are handled (their events wait for the write in
    # flight), and then the entity releases itself; a command after it is refused.
    await until(lambda: host.state(EntityKey("svc", "a1")) is State.RELEASING)
    assert len(stub.calls[0].sent) == 1 + 4
    with pytest.raises(EntityReleased):
        await host.submit(method, "a1", b"", ())
    assert not release.done() and not first.done()
    journal.gate.set()
    outcomes = await asyncio.gather(first, *queued)
    assert [o.kind for o in outcomes] == ["reply"] * 4
    assert await release == 1
    assert (await journal.load(persistence_id("svc", "a1"))).last_sequence_nr == 4
    assert stub.calls[0].cancelled and host.active == 0
    await host.shutdown()


async def test_a_command_reaching_a_passivating_entity_re_enters(method: Method) -> None:
    journal = GatedJournal()
    reentered: list[Command] = []
    # Passivation after 0 s: the entity passivates as soon as its queue is empty.
    host, stub = make_host(journal, emit_one, passivation=0.0, reenter=reentered.append)
    first = host.enqueue(method, "e", b"", ())
    await journal.waiting.wait()
    # The entity passivates, and waits for its write before the host forgets it...
    await until(lambda: host.state(EntityKey("svc", "e")) is State.PASSIVATING)
    # ...so this command is queued there, but never handled by it.
    late = host.enqueue(method, "e", b"", ())
    journal.gate.set()
    assert (await first).kind == "reply"
    await until(lambda: host.active == 0)
    assert [c.future for c in reentered] == [late]
    assert _commands(stub.calls[0]) == ["e"]
    assert not late.done()
    late.cancel()


async def test_without_a_router_re_entered_commands_start_a_new_incarnation(
    method: Method,
) -> None:
    journal = GatedJournal()
    host, stub = make_host(journal, emit_one, passivation=0.0)
    first = host.enqueue(method, "e", b"", ())
    await journal.waiting.wait()
    await until(lambda: host.state(EntityKey("svc", "e")) is State.PASSIVATING)
    late = host.enqueue(method, "e", b"", ())
    journal.gate.set()
    await first
    assert (await late).kind == "reply"
    assert len(stub.calls) == 2 and _commands(stub.calls[1]) == ["e"]
    await host.shutdown()


async def test_shutdown_fails_commands_that_re_enter(method: Method) -> None:
    host, _ = make_host(MemoryJournal(), emit_one)
    await host.shutdown()
    with pytest.raises(InvokeError) as info:
        await host.submit(method, "x", b"", ())
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert not isinstance(info.value, EntityReleased)
