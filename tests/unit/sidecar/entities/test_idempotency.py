"""Idempotency keys in the entity: a retry with the key is answered from the record the
command's own write stored, never run twice (docs/http.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es_pb2
from akkaserverless.component.valueentity import value_entity_pb2 as ve_pb2
from larder_protocol import VALUE_ENTITY
from larder_sidecar.entities import EntityHost
from larder_sidecar.entities.idempotency import (
    HEADER,
    KEY_REUSED,
    MAX_KEY_LENGTH,
    MAX_RECORD_BYTES,
    MAX_REPLY_BYTES,
    IdempotencyPolicy,
    Records,
    forward_key,
)
from larder_sidecar.entities.kinds import EntityKind
from larder_sidecar.entities.value_entity import ValueEntity
from larder_sidecar.invoke import InvokeError
from larder_sidecar.journal.base import (
    IdempotencyRecord,
    IdempotencyWrite,
    PersistenceId,
    StoredPayload,
    WriteOutcomeUnknown,
    persistence_id,
)
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import Kind, Method, build_model
from larder_sidecar.settings import SettingsError, load_settings

from ..test_sidecar_model import F, _file, _spec
from .fakes import FakeStub, GatedJournal, ReadyChannel, emit_one, event, make_host

PID = persistence_id("svc", "x")
BODY = b"\x0a\x01x"  # test.Req{id: "x"}
OTHER_BODY = b"\x0a\x01x\x4a\x01y"  # test.Req{id: "x", payload: "y"}


def keyed(key: str) -> list[tuple[str, str]]:
    return [(HEADER, key)]


def counting(responder: Any) -> tuple[Any, list[int]]:
    """The responder, and the list of command ids the user function handled."""
    seen: list[int] = []

    async def respond(command: Any) -> Any:
        seen.append(command.id)
        return await responder(command)

    return respond, seen


def replays(host: EntityHost) -> float:
    value = host.metrics.registry.get_sample_value(
        "larder_idempotent_replays_total", {"entity_type": "svc"}
    )
    return value or 0.0


async def test_a_retry_is_answered_from_the_record_and_not_run(method: Method) -> None:
    journal = MemoryJournal()
    respond, seen = counting(emit_one)
    host, _ = make_host(journal, respond)
    first = await host.submit(method, "x", BODY, keyed("k1"))
    again = await host.submit(method, "x", BODY, keyed("k1"))
    assert again.kind == "reply" and again.message == first.message
    assert seen == [1]
    assert (await journal.load(PID)).last_sequence_nr == 1
    assert replays(host) == 1
    # Another key, or none, is another command.
    await host.submit(method, "x", BODY, keyed("k2"))
    await host.submit(method, "x", BODY, ())
    assert (await journal.load(PID)).last_sequence_nr == 3
    await host.shutdown()


async def test_a_retry_after_a_restart_is_answered_from_the_journal(method: Method) -> None:
    journal = MemoryJournal()
    host, _ = make_host(journal, emit_one)
    first = await host.submit(method, "x", BODY, keyed("k1"))
    await host.shutdown()
    respond, seen = counting(emit_one)
    restarted, _ = make_host(journal, respond)
    again = await restarted.submit(method, "x", BODY, keyed("k1"))
    assert again.message == first.message
    assert seen == []
    assert (await journal.load(PID)).last_sequence_nr == 1
    await restarted.shutdown()


async def test_a_key_reused_for_another_request_is_refused(
    method: Method, caplog: pytest.LogCaptureFixture
) -> None:
    journal = MemoryJournal()
    host, _ = make_host(journal, emit_one)
    await host.submit(method, "x", BODY, keyed("k1"))
    with pytest.raises(InvokeError) as info:
        await host.submit(method, "x", OTHER_BODY, keyed("k1"))
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message.startswith(KEY_REUSED), info.value.message
    assert "'k1'" in info.value.message
    assert "reused" in caplog.text
    assert (await journal.load(PID)).last_sequence_nr == 1
    await host.shutdown()


async def test_a_long_key_is_clipped_in_the_log(
    method: Method, caplog: pytest.LogCaptureFixture
) -> None:
    journal = MemoryJournal()
    host, _ = make_host(journal, emit_one)
    key = "k" * MAX_KEY_LENGTH
    await host.submit(method, "x", BODY, keyed(key))
    with pytest.raises(InvokeError):
        await host.submit(method, "x", OTHER_BODY, keyed(key))
    assert key not in caplog.text and "more characters" in caplog.text
    await host.shutdown()


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        (keyed("k" * (MAX_KEY_LENGTH + 1)), f"at most {MAX_KEY_LENGTH}"),
        (keyed(""), "empty"),
        ([(HEADER, "a"), (HEADER, "b")], "2 different"),
    ],
)
async def test_a_malformed_key_is_invalid(
    method: Method, metadata: list[tuple[str, str]], says: str
) -> None:
    journal = MemoryJournal()
    respond, seen = counting(emit_one)
    host, _ = make_host(journal, respond)
    with pytest.raises(InvokeError) as info:
        await host.submit(method, "x", BODY, metadata)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert says in info.value.message
    assert seen == []
    await host.shutdown()


async def test_a_command_that_stores_nothing_leaves_no_record(method: Method) -> None:
    async def read_only(command: Any) -> Any:
        reply = es_pb2.EventSourcedReply(command_id=command.id)
        reply.client_action.reply.payload.CopyFrom(event(command.id))
        return es_pb2.EventSourcedStreamOut(reply=reply)

    journal = MemoryJournal()
    respond, seen = counting(read_only)
    host, _ = make_host(journal, respond)
    await host.submit(method, "x", BODY, keyed("k1"))
    await host.submit(method, "x", OTHER_BODY, keyed("k1"))  # not a reuse: nothing stored
    assert seen == [1, 2]
    recovery = await journal.load(PID)
    assert (recovery.last_sequence_nr, list(recovery.idempotency)) == (0, [])
    await host.shutdown()


async def test_a_retry_while_the_first_is_being_stored_gets_its_outcome(method: Method) -> None:
    journal = GatedJournal()
    respond, seen = counting(emit_one)
    host, _ = make_host(journal, respond)
    first = host.enqueue(method, "x", BODY, keyed("k1"))
    await journal.waiting.wait()  # the first command's write is in flight
    second = host.enqueue(method, "x", BODY, keyed("k1"))
    await asyncio.sleep(0)
    assert not second.done()
    journal.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a.message == b.message
    assert seen == [1]
    assert journal.appends == [(0, 1, False)]
    await host.shutdown()


class LandsThenTimesOut(MemoryJournal):
    """The first write lands, but the sidecar is told its outcome is unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.doubtful = 1

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        last = await super().append(pid, expected_sequence_nr, events, snapshot, idempotency)
        if self.doubtful:
            self.doubtful -= 1
            raise WriteOutcomeUnknown("timed out after sending (it landed)")
        return last


async def test_a_retry_after_an_unknown_outcome_that_landed_is_not_run(method: Method) -> None:
    journal = LandsThenTimesOut()
    respond, seen = counting(emit_one)
    host, _ = make_host(journal, respond)
    with pytest.raises(InvokeError) as info:
        await host.submit(method, "x", BODY, keyed("k1"))
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    again = await host.submit(method, "x", BODY, keyed("k1"))
    assert again.kind == "reply" and again.message.payload == event(1)
    assert seen == [1]  # the retry reloaded the entity and found the record
    assert (await journal.load(PID)).last_sequence_nr == 1
    await host.shutdown()


class LandsLate(MemoryJournal):
    """The first write times out unanswered and lands just before the next write, after
    the entity reloaded: the next write is refused by the sidecar's own earlier one."""

    def __init__(self) -> None:
        super().__init__()
        self.held: tuple[Any, ...] | None = None
        self.first = True

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        if self.first:
            self.first = False
            self.held = (pid, expected_sequence_nr, events, snapshot, idempotency)
            raise WriteOutcomeUnknown("timed out after sending (it lands later)")
        if self.held is not None:
            held, self.held = self.held, None
            await super().append(*held)
        return await super().append(pid, expected_sequence_nr, events, snapshot, idempotency)


async def test_a_retry_refused_by_its_own_late_write_answers_from_it(method: Method) -> None:
    journal = LandsLate()
    respond, seen = counting(emit_one)
    host, _ = make_host(journal, respond)
    with pytest.raises(InvokeError):
        await host.submit(method, "x", BODY, keyed("k1"))
    # The retry runs (the reload saw nothing), its write is refused because the first
    # landed meanwhile; the reloaded record answers it.
    again = await host.submit(method, "x", BODY, keyed("k1"))
    assert again.kind == "reply" and again.message.payload == event(1)
    assert seen == [1, 1]
    recovery = await journal.load(PID)
    assert recovery.last_sequence_nr == 1
    assert [r.key for r in recovery.idempotency] == ["k1"]
    await host.shutdown()


async def test_a_write_refused_by_our_own_late_write_says_so(method: Method) -> None:
    journal = LandsLate()
    host, _ = make_host(journal, emit_one)
    with pytest.raises(InvokeError):
        await host.submit(method, "x", BODY, ())
    with pytest.raises(InvokeError) as info:
        await host.submit(method, "x", OTHER_BODY, ())
    assert info.value.code is grpc.StatusCode.ABORTED
    assert "own earlier journal write" in info.value.message
    assert "has landed since" in info.value.message
    assert "another writer" not in info.value.message
    assert (await journal.load(PID)).last_sequence_nr == 1
    # Then the entity carries on from what the journal holds.
    await host.submit(method, "x", OTHER_BODY, ())
    assert (await journal.load(PID)).last_sequence_nr == 2
    await host.shutdown()


async def test_a_forward_gets_a_key_of_its_own(method: Method) -> None:
    async def forward(command: Any) -> Any:
        reply = es_pb2.EventSourcedReply(command_id=command.id, events=[event(command.id)])
        fwd = reply.client_action.forward
        fwd.service_name, fwd.command_name = "test.Svc", "Other"
        fwd.payload.CopyFrom(event(7))
        return es_pb2.EventSourcedStreamOut(reply=reply)

    journal = MemoryJournal()
    respond, seen = counting(forward)
    host, _ = make_host(journal, respond)
    first = await host.submit(method, "x", BODY, keyed("k1"))
    again = await host.submit(method, "x", BODY, keyed("k1"))
    expected = [(HEADER, forward_key(PID, "k1"))]
    for outcome in (first, again):
        assert outcome.kind == "forward"
        assert [(e.key, e.string_value) for e in outcome.message.metadata.entries] == expected
    assert seen == [1]
    await host.shutdown()


# --- value entities ---------------------------------------------------------------------


def ve_method() -> Method:
    model = build_model(_spec(_file({"id": (1, F.TYPE_STRING)}), VALUE_ENTITY), {(0, 7)})
    m = model.method("test.Svc", "Do")
    assert m is not None
    return m


async def set_state(command: Any) -> Any:
    reply = ve_pb2.ValueEntityReply(command_id=command.id)
    reply.state_action.update.value.CopyFrom(event(command.id))
    reply.client_action.reply.payload.CopyFrom(event(command.id))
    return ve_pb2.ValueEntityStreamOut(reply=reply)


def ve_host(journal: MemoryJournal, responder: Any) -> EntityHost:
    stub = FakeStub(responder)
    kinds = {Kind.VALUE: EntityKind(ValueEntity, lambda channel: stub)}
    channel: Any = ReadyChannel()
    return EntityHost(journal, channel, Metrics(), 30.0, kinds=kinds)


async def test_a_value_entity_retry_is_answered_from_the_record() -> None:
    method = ve_method()
    journal = MemoryJournal()
    respond, seen = counting(set_state)
    host = ve_host(journal, respond)
    first = await host.submit(method, "x", BODY, keyed("k1"))
    await host.shutdown()
    restarted = ve_host(journal, respond)
    again = await restarted.submit(method, "x", BODY, keyed("k1"))
    assert again.message == first.message
    assert seen == [1]
    state = await journal.load_value(PID)
    assert state.revision == 1
    with pytest.raises(InvokeError) as info:
        await restarted.submit(method, "x", OTHER_BODY, keyed("k1"))
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    await restarted.shutdown()


# --- the records themselves -------------------------------------------------------------


def _rec(key: str, at: float) -> IdempotencyRecord:
    return IdempotencyRecord(key, at, b"")


def test_records_expire_after_the_window_and_keep_a_bounded_number() -> None:
    now = time.time()
    records = Records(IdempotencyPolicy(window=60, max_keys=3))
    records.load([_rec("old", now - 61), _rec("a", now - 30), _rec("b", now - 20)], now)
    assert len(records) == 2
    assert records.get("old", now) is None
    assert records.get("a", now + 31) is None  # expired meanwhile
    change = records.write([_rec("c", now), _rec("d", now)], now)
    assert change is not None
    # Four would be kept: the oldest goes.
    assert [r.key for r in change.live] == ["b", "c", "d"]
    assert [r.key for r in change.put] == ["c", "d"]
    assert change.drop == ["a"]
    records.stored(change)
    assert {k for k in ("a", "b", "c", "d") if records.get(k, now)} == {"b", "c", "d"}


def test_no_records_means_nothing_to_write() -> None:
    assert Records(IdempotencyPolicy()).write([]) is None


def test_the_window_and_the_bound_are_settings() -> None:
    defaults = load_settings({})
    assert (defaults.idempotency_window, defaults.idempotency_max_keys) == (86400.0, 100)
    s = load_settings({"LARDER_IDEMPOTENCY_WINDOW": "90m", "LARDER_IDEMPOTENCY_MAX_KEYS": "5"})
    assert (s.idempotency_window, s.idempotency_max_keys) == (5400.0, 5)
    with pytest.raises(SettingsError, match="LARDER_IDEMPOTENCY_MAX_KEYS"):
        load_settings({"LARDER_IDEMPOTENCY_MAX_KEYS": "0"})


def test_every_front_passes_the_key_whatever_the_component_asked_for(method: Method) -> None:
    headers = [("x-other", "1"), (HEADER, "k"), ("authorization", "secret")]
    assert list(method.component.forwarded(headers)) == [(HEADER, "k")]
    asked = dataclasses.replace(method.component, forward_headers=frozenset({"x-other"}))
    assert list(asked.forwarded(headers)) == [("x-other", "1"), (HEADER, "k")]


async def test_a_retry_refused_by_another_sidecars_write_of_it_answers_from_it(
    method: Method,
) -> None:
    # Two owners of one entity (a hand-off gone wrong): the client's retry went to the
    # other one, which stored the command; the first one's write of it is refused.
    journal = MemoryJournal()
    stale, _ = make_host(journal, emit_one)
    await stale.submit(method, "x", BODY, ())  # active here with one event
    other, _ = make_host(journal, emit_one)
    stored = await other.submit(method, "x", BODY, keyed("k1"))
    again = await stale.submit(method, "x", BODY, keyed("k1"))
    assert again.message == stored.message
    assert (await journal.load(PID)).last_sequence_nr == 2
    await stale.shutdown()
    await other.shutdown()


async def test_a_reply_too_large_to_keep_is_not_sent_again_but_not_run_either(
    method: Method,
) -> None:
    big = b"\x00" * (MAX_REPLY_BYTES + 1)

    async def large(command: Any) -> Any:
        reply = es_pb2.EventSourcedReply(command_id=command.id, events=[event(command.id)])
        reply.client_action.reply.payload.type_url = "type.googleapis.com/test.Res"
        reply.client_action.reply.payload.value = big
        return es_pb2.EventSourcedStreamOut(reply=reply)

    journal = MemoryJournal()
    respond, seen = counting(large)
    host, _ = make_host(journal, respond)
    first = await host.submit(method, "x", BODY, keyed("k1"))
    assert first.message.payload.value == big
    with pytest.raises(InvokeError) as info:
        await host.submit(method, "x", BODY, keyed("k1"))
    assert info.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert "was applied already" in info.value.message
    assert seen == [1]
    (record,) = (await journal.load(PID)).idempotency
    assert len(record.data) < 100
    await host.shutdown()


def test_records_are_bounded_in_bytes_too() -> None:
    now = time.time()
    records = Records(IdempotencyPolicy(window=60, max_keys=1000))
    chunk = MAX_RECORD_BYTES // 4
    records.load([IdempotencyRecord(f"k{n}", now - 10 + n, b"x" * chunk) for n in range(4)], now)
    change = records.write([IdempotencyRecord("new", now, b"x" * chunk)], now)
    assert change is not None
    assert [r.key for r in change.live] == ["k2", "k3", "new"]
    assert sorted(change.drop) == ["k0", "k1"]
