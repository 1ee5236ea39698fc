"""Cassandra stops under load: appends fail fast, then the same journal recovers by
itself when Cassandra is back, and every acknowledged append is there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from larder_sidecar.journal.base import (
    JournalUnavailable,
    PersistenceId,
    StoredPayload,
    WriteOutcomeUnknown,
)
from larder_sidecar.journal.cassandra import CassandraJournal, SchemaMissing

from tests.infra.cassandra import CassandraServer

from .conftest import JournalFactory, payload

WRITERS = 6
REQUEST_TIMEOUT = 2.0


@dataclass
class Writer:
    pid: PersistenceId
    acknowledged: dict[int, StoredPayload] = field(default_factory=dict)
    failures: list[tuple[type[Exception], float]] = field(default_factory=list)
    acked: asyncio.Condition = field(default_factory=asyncio.Condition)
    """Notified after every attempt, acknowledged or failed."""


async def _write_until_cancelled(journal: CassandraJournal, writer: Writer) -> None:
    n = 0
    last: int | None = None
    while True:
        n += 1
        started = time.monotonic()
        try:
            if last is None:
                # After a failure the entity is reloaded before its next write.
                last = (await journal.load(writer.pid)).last_sequence_nr
            event = payload(f"{writer.pid}/{n}")
            last = await journal.append(writer.pid, last, [event])
        except JournalUnavailable as e:
            writer.failures.append((type(e), time.monotonic() - started))
            last = None
            async with writer.acked:
                writer.acked.notify_all()
            # Back off like a caller retrying a failed command would.
            await asyncio.sleep(0.05)
            continue
        writer.acknowledged[last] = event
        async with writer.acked:
            writer.acked.notify_all()


async def _until(writer: Writer, predicate: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds), writer.acked:
        await writer.acked.wait_for(predicate)


async def test_appends_fail_fast_then_recover_without_a_new_journal(
    cassandra: CassandraServer,
    make_journal: JournalFactory,
    new_pid: Callable[[], PersistenceId],
) -> None:
    journal = await make_journal(partition_size=5, request_timeout=REQUEST_TIMEOUT)
    writers = [Writer(new_pid()) for _ in range(WRITERS)]
    tasks = [asyncio.create_task(_write_until_cancelled(journal, w)) for w in writers]
    try:
        for w in writers:
            await _until(w, lambda w=w: len(w.acknowledged) >= 5, 60)  # type: ignore[misc]

        await asyncio.to_thread(cassandra.stop)
        stopped_at = {id(w): len(w.failures) for w in writers}
        # While Cassandra is down every writer keeps failing, and failing fast.
        for w in writers:
            await _until(w, lambda w=w: len(w.failures) >= stopped_at[id(w)] + 3, 30)  # type: ignore[misc]
        assert not await journal.ready()
        kinds = {kind for w in writers for kind, _ in w.failures}
        assert kinds <= {JournalUnavailable, WriteOutcomeUnknown}
        slowest = max(seconds for w in writers for _, seconds in w.failures)
        assert slowest < REQUEST_TIMEOUT + 1.5, f"a failure took {slowest:.1f}s"

        acked_before_restart = {id(w): len(w.acknowledged) for w in writers}
        await asyncio.to_thread(cassandra.start)
        for w in writers:
            await _until(
                w,
                lambda w=w: len(w.acknowledged) >= acked_before_restart[id(w)] + 3,  # type: ignore[misc]
                90,
            )
        assert await journal.ready()
    finally:
        if not cassandra.running:
            await asyncio.to_thread(cassandra.start)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    for w in writers:
        recovery = await journal.load(w.pid)
        stored = list(recovery.events)
        for seq, event in w.acknowledged.items():
            assert stored[seq - 1] == event, f"{w.pid}: acknowledged event {seq} is missing"


async def test_schema_creation_off_against_a_missing_keyspace(
    make_journal: JournalFactory,
) -> None:
    with pytest.raises(SchemaMissing, match="keyspace 'larder_absent' does not exist") as caught:
        await make_journal(keyspace="larder_absent", create_schema=False)
    assert "LARDER_JOURNAL_CASSANDRA_CREATE_SCHEMA is off" in str(caught.value)


async def test_an_unreachable_cluster_is_unavailable(make_journal: JournalFactory) -> None:
    with pytest.raises(
        JournalUnavailable, match=r"cannot connect to Cassandra at 127\.0\.0\.1:1\b"
    ):
        await make_journal(port=1, request_timeout=2.0)
