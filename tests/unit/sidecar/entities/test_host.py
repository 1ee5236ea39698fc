"""The entity host against a fake protocol stream and a journal that can fail."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es_pb2
from larder_sidecar.entities import EntityHost
from larder_sidecar.invoke import InvokeError
from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    JournalError,
    JournalUnavailable,
    StoredPayload,
    persistence_id,
)
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import Method

from .fakes import (
    FakeStub,
    FlakyJournal,
    GatedJournal,
    Responder,
    emit_one,
    event,
    make_host,
    until,
)


def _manager(journal: MemoryJournal, responder: Responder) -> tuple[EntityHost, FakeStub]:
    return make_host(journal, responder)


async def test_commands_run_in_order_and_events_are_stored(method: Method) -> None:
    journal = MemoryJournal()
    manager, stub = _manager(journal, emit_one)
    outcomes = await asyncio.gather(*(manager.enqueue(method, "a", b"", ()) for _ in range(5)))
    assert [o.kind for o in outcomes] == ["reply"] * 5
    recovery = await journal.load(persistence_id("svc", "a"))
    assert recovery.last_sequence_nr == 5
    (call,) = stub.calls
    ids = [m.command.id for m in call.sent if m.WhichOneof("message") == "command"]
    assert ids == [1, 2, 3, 4, 5]
    await manager.shutdown()
    assert manager.active == 0


async def test_entities_run_concurrently(method: Method) -> None:
    release = asyncio.Event()

    async def respond(command: Any) -> Any:
        if command.entity_id == "slow":
            await release.wait()
        return await emit_one(command)

    manager, _ = _manager(MemoryJournal(), respond)
    slow = manager.enqueue(method, "slow", b"", ())
    # "fast" completes while "slow" is still waiting for its reply.
    await manager.enqueue(method, "fast", b"", ())
    assert not slow.done()
    release.set()
    await slow
    await manager.shutdown()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConcurrentWriteError("taken"), grpc.StatusCode.ABORTED),
        (JournalUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_journal_error_fails_command_and_restarts_from_journal(
    method: Method, error: JournalError, code: grpc.StatusCode
) -> None:
    journal = FlakyJournal()
    manager, stub = _manager(journal, emit_one)
    await manager.enqueue(method, "e", b"", ())
    journal.fail_next = error
    with pytest.raises(InvokeError) as info:
        await manager.enqueue(method, "e", b"", ())
    assert info.value.code == code
    assert stub.calls[0].cancelled
    # The next command runs on a fresh stream that replays the one stored event.
    await manager.enqueue(method, "e", b"", ())
    assert len(stub.calls) == 2
    replayed = [m.event.sequence for m in stub.calls[1].sent if m.WhichOneof("message") == "event"]
    assert replayed == [1]
    assert (await journal.load(persistence_id("svc", "e"))).last_sequence_nr == 2
    await manager.shutdown()


async def test_queued_command_whose_caller_gave_up_is_skipped(method: Method) -> None:
    release = asyncio.Event()
    seen: list[int] = []

    async def respond(command: Any) -> Any:
        seen.append(command.id)
        await release.wait()
        return await emit_one(command)

    manager, _ = _manager(MemoryJournal(), respond)
    first = manager.enqueue(method, "q", b"", ())
    second = manager.enqueue(method, "q", b"", ())
    third = manager.enqueue(method, "q", b"", ())
    second.cancel()
    release.set()
    await first
    await third
    assert seen == [1, 2]  # the cancelled one never reached the user function
    await manager.shutdown()


async def test_shutdown_refuses_new_commands(method: Method) -> None:
    manager, _ = _manager(MemoryJournal(), emit_one)
    await manager.shutdown()
    with pytest.raises(InvokeError) as info:
        await manager.enqueue(method, "z", b"", ())
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_commands_handled_during_a_write_are_stored_together(method: Method) -> None:
    journal = GatedJournal()
    manager, stub = _manager(journal, emit_one)
    first = manager.enqueue(method, "hot", b"", ())
    await journal.waiting.wait()
    rest = [manager.enqueue(method, "hot", b"", ()) for _ in range(4)]
    # The user function handles the queued commands while the first write is held...
    await until(lambda: len(stub.calls[0].sent) == 1 + 5)
    # ...but no reply is released before its events are stored.
    assert not first.done() and not any(f.done() for f in rest)
    journal.gate.set()
    outcomes = await asyncio.gather(first, *rest)
    assert [o.kind for o in outcomes] == ["reply"] * 5
    # One write for the first command, one for the four handled meanwhile.
    assert journal.appends == [(0, 1, False), (1, 4, False)]
    recovery = await journal.load(persistence_id("svc", "hot"))
    assert [StoredPayload(e.type_url, e.value) for e in recovery.events] == [
        StoredPayload(event(n).type_url, event(n).value) for n in range(1, 6)
    ]
    assert manager.metrics.group_commits.labels("svc")._value.get() == 1
    await manager.shutdown()


async def test_a_reply_without_events_waits_for_the_events_before_it(method: Method) -> None:
    async def respond(command: Any) -> Any:
        if command.id == 2:
            reply = es_pb2.EventSourcedReply(command_id=command.id)
            reply.client_action.failure.description = "no"
            return es_pb2.EventSourcedStreamOut(reply=reply)
        return await emit_one(command)

    journal = GatedJournal()
    manager, _ = _manager(journal, respond)
    first = manager.enqueue(method, "w", b"", ())
    await journal.waiting.wait()
    second = manager.enqueue(method, "w", b"", ())
    await asyncio.sleep(0.01)
    # Its answer was computed on state that includes the first command's event.
    assert not second.done()
    journal.gate.set()
    assert (await first).kind == "reply"
    assert (await second).kind == "failure"
    await manager.shutdown()


async def test_a_failed_write_fails_its_group_and_every_later_command(method: Method) -> None:
    journal = GatedJournal()
    manager, stub = _manager(journal, emit_one)
    await_first = manager.enqueue(method, "f", b"", ())
    journal.gate.set()
    await await_first
    journal.gate.clear()
    journal.waiting.clear()
    second = manager.enqueue(method, "f", b"", ())
    await journal.waiting.wait()
    journal.fail_next = ConcurrentWriteError("taken")
    third = manager.enqueue(method, "f", b"", ())
    await until(lambda: len(stub.calls[0].sent) == 1 + 3)
    journal.gate.set()
    with pytest.raises(InvokeError) as failed:
        await second
    assert failed.value.code == grpc.StatusCode.ABORTED
    with pytest.raises(InvokeError) as later:
        await third
    assert later.value.code == grpc.StatusCode.ABORTED
    assert "nothing was stored for this command" in later.value.message
    # The entity restarts from what is stored: the first command's event only.
    await manager.enqueue(method, "f", b"", ())
    assert len(stub.calls) == 2
    replayed = [m.event.sequence for m in stub.calls[1].sent if m.WhichOneof("message") == "event"]
    assert replayed == [1]
    assert (await journal.load(persistence_id("svc", "f"))).last_sequence_nr == 2
    await manager.shutdown()


async def test_only_the_last_snapshot_of_a_group_is_stored(method: Method) -> None:
    async def respond(command: Any) -> Any:
        out = await emit_one(command)
        if command.id in (2, 3):
            out.reply.snapshot.CopyFrom(event(100 + command.id))
        return out

    journal = GatedJournal()
    manager, stub = _manager(journal, respond)
    first = manager.enqueue(method, "s", b"", ())
    await journal.waiting.wait()
    rest = [manager.enqueue(method, "s", b"", ()) for _ in range(2)]
    await until(lambda: len(stub.calls[0].sent) == 1 + 3)
    journal.gate.set()
    await asyncio.gather(first, *rest)
    assert journal.appends == [(0, 1, False), (1, 2, True)]
    recovery = await journal.load(persistence_id("svc", "s"))
    assert recovery.snapshot is not None
    assert recovery.snapshot.sequence_nr == 3
    assert recovery.snapshot.payload.value == event(103).value
    await manager.shutdown()


async def test_a_stream_that_ended_between_commands_is_reopened_before_the_next(
    method: Method,
) -> None:
    # The user function restarted while the entity was idle: the next command must reach
    # a new stream, recovered from the journal, instead of failing on the dead one.
    journal = MemoryJournal()
    manager, stub = _manager(journal, emit_one)
    await manager.enqueue(method, "a", b"", ())
    stub.calls[0].end()
    outcome = await manager.enqueue(method, "a", b"", ())
    assert outcome.kind == "reply"
    assert len(stub.calls) == 2
    first, *rest = stub.calls[1].sent
    assert first.init.entity_id == "a"
    assert [m.event.sequence for m in rest if m.WhichOneof("message") == "event"] == [1]
    assert (await journal.load(persistence_id("svc", "a"))).last_sequence_nr == 2
    await manager.shutdown()
