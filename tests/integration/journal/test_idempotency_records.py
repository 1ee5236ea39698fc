"""Idempotency records (docs/http.md) in the Cassandra journal, on the real node: the
shared contract with partitions of 1, 3 and 10,000 events (the records move to each new
partition the entity's appends reach), and a keyspace created before the records
existed, which the journal extends at start-up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from cassandra.cluster import Cluster
from larder_sidecar.journal.base import Journal, StoredPayload, persistence_id
from larder_sidecar.journal.cassandra import CassandraJournal, SchemaMissing
from larder_sidecar.journal.cassandra_schema import ADDED_COLUMNS, schema_cql
from larder_sidecar.journal.cassandra_settings import Replication

from tests.infra.cassandra import CassandraServer
from tests.unit.sidecar.journal.idempotency_contract import (
    IdempotencyContract,
    change,
    record,
)

from .conftest import settings_for


class TestCassandraIdempotency(IdempotencyContract):
    @pytest.fixture(params=[1, 3, 10_000], ids=lambda n: f"partition{n}")
    async def journal(
        self, request: pytest.FixtureRequest, cassandra: CassandraServer
    ) -> AsyncIterator[Journal]:
        self.settings = settings_for(cassandra, partition_size=request.param)
        journal = CassandraJournal(self.settings)
        await journal.start()
        yield journal
        await journal.close()

    async def reopen(self, journal: Journal) -> Journal | None:
        await journal.close()
        other = CassandraJournal(self.settings)
        await other.start()
        return other


def _old_schema(keyspace: str) -> list[str]:
    """The CQL of the version before idempotency records: the same tables without the
    added columns."""
    statements = schema_cql(keyspace, Replication("SimpleStrategy", 1, ()))
    for _table, column, kind in ADDED_COLUMNS:
        statements = [
            s.replace(f"    {column} {kind},\n", "").replace(f",\n    {column} {kind}\n", "\n")
            for s in statements
        ]
    assert not any("idempotency" in s for s in statements), statements
    return statements


def _run_cql(cassandra: CassandraServer, statements: list[str]) -> None:
    cluster = Cluster(list(cassandra.contact_points), port=cassandra.port)
    try:
        session = cluster.connect()
        for statement in statements:
            session.execute(statement, timeout=60)
    finally:
        cluster.shutdown()


async def test_a_keyspace_of_the_previous_version_gets_the_columns(
    cassandra: CassandraServer,
) -> None:
    keyspace = f"old_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(_run_cql, cassandra, _old_schema(keyspace))
    pid = persistence_id("it.Old", "e")
    # Without schema creation the journal names what is missing.
    strict = CassandraJournal(settings_for(cassandra, keyspace=keyspace, create_schema=False))
    with pytest.raises(SchemaMissing, match=r"events\.idempotency"):
        await strict.start()
    for _ in range(2):  # the second start finds the columns there
        journal = CassandraJournal(settings_for(cassandra, keyspace=keyspace))
        await journal.start()
        try:
            kept = record("k")
            recovery = await journal.load(pid)
            nr = recovery.last_sequence_nr
            await journal.append(pid, nr, [StoredPayload("t/E", b"e")], None, change([kept]))
            assert record("k").key in {r.key for r in (await journal.load(pid)).idempotency}
            await journal.put_value(pid, nr, StoredPayload("t/S", b"s"), change([kept]))
            assert [r.key for r in (await journal.load_value(pid)).idempotency] == ["k"]
        finally:
            await journal.close()


async def test_unfenced_appends_keep_the_records_across_partitions(
    cassandra: CassandraServer,
) -> None:
    journal = CassandraJournal(settings_for(cassandra, partition_size=3, fencing="unfenced"))
    await journal.start()
    try:
        pid = persistence_id("it.Unfenced", uuid.uuid4().hex)
        kept = record("kept")
        await journal.append(pid, 0, [StoredPayload("t/E", b"1")], None, change([kept]))
        # One event per append: each partition's first append copies the records on.
        for seq in range(1, 8):
            await journal.append(pid, seq, [StoredPayload("t/E", b"n")], None, change(live=[kept]))
        recovery = await journal.load(pid)
        assert recovery.last_sequence_nr == 8
        assert list(recovery.idempotency) == [kept]
    finally:
        await journal.close()


@pytest.mark.parametrize("partition_size", [3, 10_000])
async def test_a_write_landing_between_the_events_and_the_records_is_read_too(
    cassandra: CassandraServer, partition_size: int
) -> None:
    """Loading reads the events, then the records: a write that lands in between (here
    made to, deterministically; in life an outcome-unknown write of the entity's own, as
    a frozen node resumes) must not leave records newer than the events, or the entity
    answers the retry from the record and then writes from a stale position."""
    journal = CassandraJournal(settings_for(cassandra, partition_size=partition_size))
    await journal.start()
    try:
        pid = persistence_id("it.Landing", uuid.uuid4().hex)
        await journal.append(pid, 0, [StoredPayload("t/E", b"1")], None, change([record("k1")]))
        read_records = journal._highest_below  # the seam between the two reads
        landed: list[int] = []

        async def land_first(*args: object, **kwargs: object) -> object:
            if not landed:
                landed.append(1)
                await journal.append(
                    pid, 1, [StoredPayload("t/E", b"2")], None, change([record("k2")])
                )
            return await read_records(*args, **kwargs)  # type: ignore[arg-type]

        journal._highest_below = land_first  # type: ignore[method-assign,assignment]
        recovery = await journal.load(pid)
        assert landed == [1]
        assert {r.key for r in recovery.idempotency} == {"k1", "k2"}
        # The events agree with the records: the entity starts after the write landed.
        assert recovery.last_sequence_nr == 2
        assert [e.value for e in recovery.events] == [b"1", b"2"]
    finally:
        await journal.close()
