"""An in-memory journal: for tests and throw-away local runs (nothing survives a restart)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import (
    ConcurrentWriteError,
    IdempotencyRecord,
    IdempotencyWrite,
    PersistenceId,
    Recovery,
    Snapshot,
    StoredPayload,
    ValueState,
)


@dataclass(slots=True)
class _Stream:
    events: list[StoredPayload] = field(default_factory=list)
    snapshot: Snapshot | None = None


class MemoryJournal:
    """Implements `Journal`; every call completes without yielding to the loop."""

    def __init__(self) -> None:
        self._streams: dict[PersistenceId, _Stream] = {}
        self._values: dict[PersistenceId, ValueState] = {}
        self._records: dict[PersistenceId, dict[str, IdempotencyRecord]] = {}

    def _records_of(self, pid: PersistenceId) -> tuple[IdempotencyRecord, ...]:
        return tuple(self._records.get(pid, {}).values())

    def _change_records(self, pid: PersistenceId, change: IdempotencyWrite | None) -> None:
        if change is None:
            return
        records = self._records.setdefault(pid, {})
        for key in change.drop:
            records.pop(key, None)
        for record in change.put:
            records[record.key] = record

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def load(self, pid: PersistenceId) -> Recovery:
        stream = self._streams.get(pid)
        if stream is None:
            return Recovery(snapshot=None, events=(), last_sequence_nr=0)
        after = stream.snapshot.sequence_nr if stream.snapshot else 0
        return Recovery(
            snapshot=stream.snapshot,
            events=tuple(stream.events[after:]),
            last_sequence_nr=len(stream.events),
            idempotency=self._records_of(pid),
        )

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        stream = self._streams.setdefault(pid, _Stream())
        if expected_sequence_nr != len(stream.events):
            raise ConcurrentWriteError(
                f"{pid}: expected to append after sequence number {expected_sequence_nr} but "
                f"the journal holds {len(stream.events)}; another writer owns this entity"
            )
        stream.events.extend(events)
        if events:
            self._change_records(pid, idempotency)
        last = len(stream.events)
        if snapshot is not None:
            stream.snapshot = Snapshot(sequence_nr=last, payload=snapshot)
        return last

    async def load_value(self, pid: PersistenceId) -> ValueState:
        state = self._values.get(pid, ValueState(payload=None, revision=0))
        return ValueState(state.payload, state.revision, self._records_of(pid))

    async def put_value(
        self,
        pid: PersistenceId,
        expected_revision: int,
        payload: StoredPayload | None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        current = self._values.get(pid, ValueState(payload=None, revision=0))
        if current.revision != expected_revision:
            raise ConcurrentWriteError(
                f"{pid}: expected revision {expected_revision} but the journal holds "
                f"{current.revision}; another writer owns this entity"
            )
        self._values[pid] = ValueState(payload=payload, revision=current.revision + 1)
        self._change_records(pid, idempotency)
        return current.revision + 1
