"""Value entities: the stored state on activation, each update stored before its reply."""

from __future__ import annotations

import time
from typing import Any

from ..journal.base import IdempotencyRecord, JournalError, StoredPayload
from ..model import Kind
from ..outcome import Outcome
from ..protocol import value_entity_pb2 as ve_pb2
from .command import Command
from .entity import Entity, InDoubt
from .environment import EntityEnvironment
from .lifecycle import Event


class ValueEntity(Entity):
    __slots__ = ("_revision",)

    kind = Kind.VALUE

    def __init__(self, env: EntityEnvironment, entity_id: str) -> None:
        self._revision = 0
        super().__init__(env, entity_id)

    async def _open(self) -> None:
        started = time.perf_counter()
        state = await self.env.journal.load_value(self.pid)
        self.env.metrics.journal_latency.labels("load").observe(time.perf_counter() - started)
        self._call = call = self.env.stub.Handle()
        init = ve_pb2.ValueEntityInit(service_name=self.env.service, entity_id=self.entity_id)
        if state.payload is not None:
            init.state.value.type_url = state.payload.type_url
            init.state.value.value = state.payload.value
        await call.write(ve_pb2.ValueEntityStreamIn(init=init))
        self._revision = state.revision
        self.records.load(state.idempotency)

    def _command_in(self, command: Any) -> Any:
        return ve_pb2.ValueEntityStreamIn(command=command)

    async def _complete(
        self, command: Command, reply: Any, outcome: Outcome, key: str | None
    ) -> None:
        # Each update is stored before the next command: only a failure reply or one
        # without a state action skips the journal (and stores no idempotency record).
        which = None if outcome.kind == "failure" else reply.state_action.WhichOneof("action")
        if which is not None:
            self.lifecycle.fire(Event.WRITE)
            record = self._record(command, key, outcome) if key is not None else None
            await self._store(reply, which, record)
        if not command.future.done():
            command.future.set_result(outcome)

    async def _store(self, reply: Any, which: str, record: IdempotencyRecord | None) -> None:
        payload = (
            StoredPayload(
                reply.state_action.update.value.type_url, reply.state_action.update.value.value
            )
            if which == "update"
            else None
        )
        journal = self.env.journal
        change = self.records.write([record] if record is not None else [])
        in_doubt = InDoubt(
            self._revision,
            [payload.value if payload is not None else None],
            frozenset([record.key] if record is not None else []),
        )
        self._revision = await self._journal_write(
            lambda: journal.put_value(self.pid, self._revision, payload, change), in_doubt
        )
        if change is not None:
            self.records.stored(change)

    async def _reloaded_in_doubt(self) -> tuple[bool, dict[str, IdempotencyRecord]]:
        try:
            state = await self.env.journal.load_value(self.pid)
        except JournalError:
            return False, {}
        records = {r.key: r for r in state.idempotency}
        stored = state.payload.value if state.payload is not None else None
        for doubt in self._in_doubt:
            if state.revision <= doubt.position:
                continue
            if doubt.keys:
                if doubt.keys <= records.keys():
                    return True, records
            elif state.revision == doubt.position + 1 and [stored] == list(doubt.payloads):
                # Without a key, the same state at the revision it was to take is
                # the best evidence there is.
                return True, records
        return False, records
