"""What every journal promises about idempotency records, as tests.

Reuse it like `journal_contract.JournalContract`: subclass it and provide a `journal`
fixture yielding a started journal (and optionally `reopen`). The records an entity
keeps are written by the write that stores the command's events or state, or not at
all, and load with the entity wherever its data moved (snapshots, Cassandra's event
partitions).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import pytest
from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    IdempotencyRecord,
    IdempotencyWrite,
    Journal,
    PersistenceId,
    StoredPayload,
    persistence_id,
)

WINDOW = 3600.0


def _pid() -> PersistenceId:
    return persistence_id("contract.Idempotent", f"e-{uuid.uuid4().hex}")


def _ev(n: int) -> StoredPayload:
    return StoredPayload("type.googleapis.com/test.Event", f"event {n}".encode())


def record(key: str, data: bytes = b"reply", at: float | None = None) -> IdempotencyRecord:
    return IdempotencyRecord(key, time.time() if at is None else at, data)


def change(
    put: Sequence[IdempotencyRecord] = (),
    drop: Sequence[str] = (),
    live: Sequence[IdempotencyRecord] | None = None,
) -> IdempotencyWrite:
    return IdempotencyWrite(
        put=list(put), drop=list(drop), live=list(put if live is None else live), window=WINDOW
    )


def _keyed(records: Sequence[IdempotencyRecord]) -> dict[str, IdempotencyRecord]:
    return {r.key: r for r in records}


class IdempotencyContract:
    async def reopen(self, journal: Journal) -> Journal | None:
        return None

    async def test_a_record_loads_with_the_events_it_was_written_with(
        self, journal: Journal
    ) -> None:
        pid = _pid()
        first = record("k1", b"\x00reply one\xff")
        await journal.append(pid, 0, [_ev(1), _ev(2)], None, change([first]))
        recovery = await journal.load(pid)
        assert recovery.last_sequence_nr == 2
        assert _keyed(recovery.idempotency) == {"k1": first}

    async def test_a_refused_append_stores_no_record(self, journal: Journal) -> None:
        pid = _pid()
        await journal.append(pid, 0, [_ev(1)])
        with pytest.raises(ConcurrentWriteError):
            await journal.append(pid, 0, [_ev(9)], None, change([record("lost")]))
        assert list((await journal.load(pid)).idempotency) == []

    async def test_records_are_dropped_and_replaced(self, journal: Journal) -> None:
        pid = _pid()
        a, b = record("a", at=time.time() - 10), record("b")
        await journal.append(pid, 0, [_ev(1)], None, change([a]))
        await journal.append(pid, 1, [_ev(2)], None, change([b], drop=["a"], live=[b]))
        assert _keyed((await journal.load(pid)).idempotency) == {"b": b}

    async def test_records_outlive_snapshots_and_later_appends(self, journal: Journal) -> None:
        # Many single appends (across Cassandra partitions of size 1 or 3) without new
        # records, a snapshot on the way and one at the end: the record stays.
        pid = _pid()
        kept = record("kept")
        await journal.append(pid, 0, [_ev(1)], None, change([kept]))
        state = StoredPayload("type.googleapis.com/test.State", b"s")
        for seq in range(1, 8):
            snapshot = state if seq in (4, 7) else None
            await journal.append(pid, seq, [_ev(seq + 1)], snapshot, change(live=[kept]))
        recovery = await journal.load(pid)
        assert recovery.last_sequence_nr == 8
        assert recovery.snapshot is not None and recovery.snapshot.sequence_nr == 8
        assert list(recovery.events) == []
        assert _keyed(recovery.idempotency) == {"kept": kept}

    async def test_a_value_record_is_written_with_the_state(self, journal: Journal) -> None:
        pid = _pid()
        state = StoredPayload("type.googleapis.com/test.State", b"v1")
        first = record("v1")
        assert await journal.put_value(pid, 0, state, change([first])) == 1
        loaded = await journal.load_value(pid)
        assert (loaded.payload, loaded.revision) == (state, 1)
        assert _keyed(loaded.idempotency) == {"v1": first}
        # A delete keeps the records: the client may retry the delete.
        second = record("v2")
        await journal.put_value(pid, 1, None, change([second], live=[first, second]))
        loaded = await journal.load_value(pid)
        assert loaded.payload is None
        assert _keyed(loaded.idempotency) == {"v1": first, "v2": second}
        third = record("v3")
        await journal.put_value(pid, 2, state, change([third], drop=["v1"], live=[second, third]))
        assert _keyed((await journal.load_value(pid)).idempotency) == {"v2": second, "v3": third}

    async def test_a_refused_value_write_stores_no_record(self, journal: Journal) -> None:
        pid = _pid()
        state = StoredPayload("type.googleapis.com/test.State", b"v")
        await journal.put_value(pid, 0, state)
        with pytest.raises(ConcurrentWriteError):
            await journal.put_value(pid, 0, state, change([record("lost")]))
        with pytest.raises(ConcurrentWriteError):
            await journal.put_value(persistence_id("contract.Idempotent", "x"), 5, state,
                                    change([record("lost")]))
        assert list((await journal.load_value(pid)).idempotency) == []

    async def test_records_survive_a_reopen(self, journal: Journal) -> None:
        pid, value_pid = _pid(), _pid()
        es, ve = record("es"), record("ve")
        await journal.append(pid, 0, [_ev(1)], None, change([es]))
        await journal.put_value(value_pid, 0, _ev(1), change([ve]))
        other = await self.reopen(journal)
        if other is None:
            pytest.skip("this journal keeps nothing across a reopen")
        try:
            assert _keyed((await other.load(pid)).idempotency) == {"es": es}
            assert _keyed((await other.load_value(value_pid)).idempotency) == {"ve": ve}
        finally:
            await other.close()
