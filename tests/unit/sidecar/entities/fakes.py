"""Fakes for the entity host: a protocol stream answered by a function, a journal that
can fail, and the host built over them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es_pb2
from google.protobuf import any_pb2, wrappers_pb2
from larder_protocol import EVENT_SOURCED_ENTITY
from larder_sidecar.entities import EntityHost, Reenter
from larder_sidecar.entities.event_sourced import EventSourcedEntity
from larder_sidecar.entities.kinds import EntityKind
from larder_sidecar.journal.base import (
    IdempotencyWrite,
    JournalError,
    PersistenceId,
    StoredPayload,
)
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import Kind, Method, build_model

from ..test_sidecar_model import F, _file, _spec

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

Responder = Callable[[Any], Any]


class FakeCall:
    """One protocol stream: each command's reply comes from the responder."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.sent: list[Any] = []
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False
        self.ended = False

    def end(self) -> None:
        """The user function ends the stream (it stopped): as a grpc.aio call, the call
        is done and writes fail."""
        self.ended = True

    def done(self) -> bool:
        return self.ended or self.cancelled

    async def write(self, msg: Any) -> None:
        if self.done():
            raise asyncio.InvalidStateError("the call is done")
        self.sent.append(msg)
        if msg.WhichOneof("message") == "command":
            self.out.put_nowait(await self.responder(msg.command))

    async def read(self) -> Any:
        return await self.out.get()

    async def done_writing(self) -> None:
        self.out.put_nowait(_EOF)

    async def wait_for_connection(self) -> None:
        return None

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.calls: list[FakeCall] = []

    def Handle(self) -> FakeCall:
        self.calls.append(FakeCall(self.responder))
        return self.calls[-1]


class ReadyChannel:
    """Connected; stubs built on it are replaced by fakes before use."""

    def stream_stream(self, *args: Any, **kwargs: Any) -> None:
        return None

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY


class FlakyJournal(MemoryJournal):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next: JournalError | None = None

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return await super().append(pid, expected_sequence_nr, events, snapshot, idempotency)


def event(n: int) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(wrappers_pb2.Int64Value(value=n))
    return a


async def emit_one(command: Any) -> Any:
    reply = es_pb2.EventSourcedReply(command_id=command.id, events=[event(command.id)])
    reply.client_action.reply.payload.CopyFrom(event(command.id))
    return es_pb2.EventSourcedStreamOut(reply=reply)


def es_method() -> Method:
    model = build_model(_spec(_file({"id": (1, F.TYPE_STRING)}), EVENT_SOURCED_ENTITY), {(0, 7)})
    m = model.method("test.Svc", "Do")
    assert m is not None
    return m


def make_host(
    journal: MemoryJournal,
    responder: Responder,
    *,
    passivation: float = 30.0,
    reenter: Reenter | None = None,
) -> tuple[EntityHost, FakeStub]:
    stub = FakeStub(responder)
    kinds = {Kind.EVENT_SOURCED: EntityKind(EventSourcedEntity, lambda channel: stub)}
    channel: Any = ReadyChannel()
    host = EntityHost(journal, channel, Metrics(), passivation, reenter=reenter, kinds=kinds)
    return host, stub


class GatedJournal(FlakyJournal):
    """Holds every append until `gate` opens; records what each append carried."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.appends: list[tuple[int, int, bool]] = []  # (expected, events, snapshot?)
        self.waiting = asyncio.Event()

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        self.appends.append((expected_sequence_nr, len(events), snapshot is not None))
        self.waiting.set()
        await self.gate.wait()
        return await super().append(pid, expected_sequence_nr, events, snapshot, idempotency)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
