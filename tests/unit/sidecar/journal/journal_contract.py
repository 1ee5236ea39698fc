"""The journal contract as tests, for every implementation to pass.

Reuse it by subclassing and providing a `journal` fixture that yields a started,
empty journal (unique persistence ids are used per test, so a shared store works)::

    class TestCassandraJournal(JournalContract):
        @pytest.fixture
        async def journal(self, cassandra) -> AsyncIterator[Journal]:
            j = CassandraJournal(settings_for(cassandra))
            await j.start()
            yield j
            await j.close()

`reopen` (optional) returns a second journal object on the same store, to check
durability; implementations without one leave it returning None.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    Journal,
    PersistenceId,
    StoredPayload,
    persistence_id,
)


def _pid() -> PersistenceId:
    return persistence_id("contract.Entity", f"e-{uuid.uuid4().hex}")


def _ev(n: int) -> StoredPayload:
    return StoredPayload(f"type.googleapis.com/test.Event{n}", bytes([n % 256]) * (n + 1))


class JournalContract:
    """Every test takes the `journal` fixture the subclass provides."""

    async def reopen(self, journal: Journal) -> Journal | None:
        return None

    async def test_new_entity_is_empty(self, journal: Journal) -> None:
        recovery = await journal.load(_pid())
        assert recovery.snapshot is None
        assert list(recovery.events) == []
        assert recovery.last_sequence_nr == 0

    async def test_append_then_load_in_order(self, journal: Journal) -> None:
        pid = _pid()
        assert await journal.append(pid, 0, [_ev(1), _ev(2)]) == 2
        assert await journal.append(pid, 2, [_ev(3)]) == 3
        recovery = await journal.load(pid)
        assert list(recovery.events) == [_ev(1), _ev(2), _ev(3)]
        assert recovery.last_sequence_nr == 3

    async def test_snapshot_hides_earlier_events(self, journal: Journal) -> None:
        pid = _pid()
        snap = StoredPayload("type.googleapis.com/test.State", b"s3")
        await journal.append(pid, 0, [_ev(1), _ev(2), _ev(3)], snap)
        await journal.append(pid, 3, [_ev(4)])
        recovery = await journal.load(pid)
        assert recovery.snapshot is not None
        assert (recovery.snapshot.sequence_nr, recovery.snapshot.payload) == (3, snap)
        assert list(recovery.events) == [_ev(4)]
        assert recovery.last_sequence_nr == 4

    async def test_snapshot_without_new_events(self, journal: Journal) -> None:
        pid = _pid()
        await journal.append(pid, 0, [_ev(1)])
        snap = StoredPayload("type.googleapis.com/test.State", b"s1")
        assert await journal.append(pid, 1, [], snap) == 1
        recovery = await journal.load(pid)
        assert recovery.snapshot is not None and recovery.snapshot.sequence_nr == 1
        assert list(recovery.events) == []

    async def test_stale_expected_sequence_is_rejected_and_stores_nothing(
        self, journal: Journal
    ) -> None:
        pid = _pid()
        await journal.append(pid, 0, [_ev(1)])
        with pytest.raises(ConcurrentWriteError):
            await journal.append(pid, 0, [_ev(7), _ev(8)])
        with pytest.raises(ConcurrentWriteError):
            await journal.append(pid, 5, [_ev(7)])
        recovery = await journal.load(pid)
        assert list(recovery.events) == [_ev(1)]

    async def test_racing_writers_exactly_one_wins(self, journal: Journal) -> None:
        pid = _pid()
        results = await asyncio.gather(
            *(journal.append(pid, 0, [_ev(i)]) for i in range(1, 6)), return_exceptions=True
        )
        wins = [r for r in results if r == 1]
        assert len(wins) == 1
        assert all(isinstance(r, ConcurrentWriteError) for r in results if r != 1)
        assert (await journal.load(pid)).last_sequence_nr == 1

    async def test_entities_are_independent(self, journal: Journal) -> None:
        a, b = _pid(), _pid()
        await journal.append(a, 0, [_ev(1)])
        await journal.append(b, 0, [_ev(2), _ev(3)])
        assert list((await journal.load(a)).events) == [_ev(1)]
        assert (await journal.load(b)).last_sequence_nr == 2

    async def test_value_put_delete_and_revisions(self, journal: Journal) -> None:
        pid = _pid()
        state = await journal.load_value(pid)
        assert (state.payload, state.revision) == (None, 0)
        v1 = StoredPayload("type.googleapis.com/test.V", b"one")
        assert await journal.put_value(pid, 0, v1) == 1
        assert await journal.load_value(pid) == type(state)(payload=v1, revision=1)
        assert await journal.put_value(pid, 1, None) == 2
        state = await journal.load_value(pid)
        assert (state.payload, state.revision) == (None, 2)

    async def test_value_stale_revision_is_rejected(self, journal: Journal) -> None:
        pid = _pid()
        await journal.put_value(pid, 0, StoredPayload("t", b"a"))
        with pytest.raises(ConcurrentWriteError):
            await journal.put_value(pid, 0, StoredPayload("t", b"b"))
        state = await journal.load_value(pid)
        assert state.payload == StoredPayload("t", b"a")

    async def test_ready(self, journal: Journal) -> None:
        assert await journal.ready()

    async def test_data_survives_reopening(self, journal: Journal) -> None:
        pid = _pid()
        await journal.append(pid, 0, [_ev(1), _ev(2)], StoredPayload("t", b"snap"))
        await journal.put_value(pid, 0, StoredPayload("t", b"v"))
        other = await self.reopen(journal)
        if other is None:
            return  # not a durable implementation: nothing to check
        try:
            recovery = await other.load(pid)
            assert recovery.last_sequence_nr == 2
            assert recovery.snapshot is not None
            assert (await other.load_value(pid)).revision == 1
        finally:
            await other.close()
