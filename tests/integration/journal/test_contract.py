"""The journal contract on a real Cassandra, over partition sizes that force every
boundary case (1: every event its own partition; 3: batches straddle; default)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    PersistenceId,
    Snapshot,
    StoredPayload,
)
from larder_sidecar.journal.cassandra import CassandraJournal

from .conftest import JournalFactory, payload

PidFactory = Callable[[], PersistenceId]


@pytest.fixture(params=[1, 3, 10_000], ids=lambda n: f"partition{n}")
async def journal(request: pytest.FixtureRequest, make_journal: JournalFactory) -> CassandraJournal:
    return await make_journal(partition_size=request.param)


def events(*texts: str) -> list[StoredPayload]:
    return [payload(t) for t in texts]


async def test_a_new_entity_is_empty(journal: CassandraJournal, new_pid: PidFactory) -> None:
    recovery = await journal.load(new_pid())
    assert recovery.snapshot is None
    assert list(recovery.events) == []
    assert recovery.last_sequence_nr == 0


async def test_appends_replay_in_order(journal: CassandraJournal, new_pid: PidFactory) -> None:
    pid = new_pid()
    last = 0
    written: list[StoredPayload] = []
    for size in (1, 2, 5, 1, 4, 7, 1):
        batch = events(*(f"e{last + i}" for i in range(1, size + 1)))
        assert await journal.append(pid, last, batch) == last + size
        last += size
        written += batch
    recovery = await journal.load(pid)
    assert list(recovery.events) == written
    assert recovery.last_sequence_nr == last == 21


async def test_empty_payloads_round_trip(journal: CassandraJournal, new_pid: PidFactory) -> None:
    pid = new_pid()
    empty = StoredPayload("type.googleapis.com/google.protobuf.Empty", b"")
    await journal.append(pid, 0, [empty, empty])
    assert list((await journal.load(pid)).events) == [empty, empty]


async def test_a_large_batch_is_one_append(journal: CassandraJournal, new_pid: PidFactory) -> None:
    pid = new_pid()
    # 400 KB in one batch: far above Cassandra's multi-partition batch limits.
    batch = [StoredPayload("t", bytes([i % 256]) * 2000) for i in range(200)]
    assert await journal.append(pid, 0, batch) == 200
    assert await journal.append(pid, 200, events("after")) == 201
    recovery = await journal.load(pid)
    assert list(recovery.events) == [*batch, payload("after")]


async def test_a_stale_writer_is_rejected(journal: CassandraJournal, new_pid: PidFactory) -> None:
    pid = new_pid()
    await journal.append(pid, 0, events("a", "b", "c"))
    await journal.append(pid, 3, events("d"))
    for stale in (0, 1, 2, 3):
        with pytest.raises(ConcurrentWriteError):
            await journal.append(pid, stale, events("stale"))
    recovery = await journal.load(pid)
    assert list(recovery.events) == events("a", "b", "c", "d")


async def test_a_writer_ahead_of_the_journal_is_rejected(
    journal: CassandraJournal, new_pid: PidFactory
) -> None:
    pid = new_pid()
    with pytest.raises(ConcurrentWriteError):
        await journal.append(pid, 5, events("x"))
    await journal.append(pid, 0, events("a", "b"))
    for ahead in (3, 4, 7, 50):
        with pytest.raises(ConcurrentWriteError):
            await journal.append(pid, ahead, events("gap"))
    recovery = await journal.load(pid)
    assert recovery.last_sequence_nr == 2
    assert list(recovery.events) == events("a", "b")


async def test_snapshot_shortens_recovery(journal: CassandraJournal, new_pid: PidFactory) -> None:
    pid = new_pid()
    await journal.append(pid, 0, events("a", "b"))
    state = StoredPayload("type.googleapis.com/it.State", b"ab")
    await journal.append(pid, 2, events("c"), snapshot=state)
    recovery = await journal.load(pid)
    assert recovery.snapshot == Snapshot(sequence_nr=3, payload=state)
    assert list(recovery.events) == []
    assert recovery.last_sequence_nr == 3

    await journal.append(pid, 3, events("d", "e"))
    recovery = await journal.load(pid)
    assert recovery.snapshot == Snapshot(sequence_nr=3, payload=state)
    assert list(recovery.events) == events("d", "e")
    assert recovery.last_sequence_nr == 5


async def test_a_rejected_append_stores_no_snapshot(
    journal: CassandraJournal, new_pid: PidFactory
) -> None:
    pid = new_pid()
    await journal.append(pid, 0, events("a", "b"))
    with pytest.raises(ConcurrentWriteError):
        await journal.append(pid, 1, events("x"), snapshot=payload("wrong"))
    recovery = await journal.load(pid)
    assert recovery.snapshot is None
    assert list(recovery.events) == events("a", "b")


async def test_value_state_revisions(journal: CassandraJournal, new_pid: PidFactory) -> None:
    pid = new_pid()
    state = await journal.load_value(pid)
    assert (state.payload, state.revision) == (None, 0)

    assert await journal.put_value(pid, 0, payload("v1")) == 1
    assert await journal.put_value(pid, 1, payload("v2")) == 2
    state = await journal.load_value(pid)
    assert (state.payload, state.revision) == (payload("v2"), 2)

    for wrong in (0, 1, 3):
        with pytest.raises(ConcurrentWriteError):
            await journal.put_value(pid, wrong, payload("lost"))

    assert await journal.put_value(pid, 2, None) == 3
    state = await journal.load_value(pid)
    assert (state.payload, state.revision) == (None, 3)
    assert await journal.put_value(pid, 3, StoredPayload("t", b"")) == 4
    assert (await journal.load_value(pid)).payload == StoredPayload("t", b"")


async def test_deleting_a_never_written_value(
    journal: CassandraJournal, new_pid: PidFactory
) -> None:
    pid = new_pid()
    assert await journal.put_value(pid, 0, None) == 1
    state = await journal.load_value(pid)
    assert (state.payload, state.revision) == (None, 1)
    with pytest.raises(ConcurrentWriteError):
        await journal.put_value(pid, 0, payload("late"))


async def test_ready_while_cassandra_answers(journal: CassandraJournal) -> None:
    assert await journal.ready() is True


async def test_a_second_journal_sees_the_first_ones_writes(
    make_journal: JournalFactory, new_pid: PidFactory
) -> None:
    pid = new_pid()
    first = await make_journal(partition_size=2)
    second = await make_journal(partition_size=2)
    await first.append(pid, 0, events("a", "b", "c"))
    await second.append(pid, 3, events("d"))
    with pytest.raises(ConcurrentWriteError):
        await first.append(pid, 3, events("late"))
    assert list((await first.load(pid)).events) == events("a", "b", "c", "d")


async def test_unfenced_appends_replay(make_journal: JournalFactory, new_pid: PidFactory) -> None:
    journal = await make_journal(partition_size=3, fencing="unfenced")
    pid = new_pid()
    last = 0
    for size in (2, 4, 1):
        last = await journal.append(pid, last, events(*(f"u{last + i}" for i in range(size))))
    recovery = await journal.load(pid)
    assert recovery.last_sequence_nr == 7
    assert len(recovery.events) == 7
    assert await journal.put_value(pid, 0, payload("v")) == 1
    assert (await journal.load_value(pid)).payload == payload("v")
