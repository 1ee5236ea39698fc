"""`larder inspect` against the session's real Cassandra: paging, listing, bad input."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cassandra.cluster import Cluster
from google.protobuf import wrappers_pb2
from larder_sidecar.inspector import run
from larder_sidecar.journal.base import StoredPayload, persistence_id

from tests.infra.cassandra import CassandraServer

from .conftest import KEYSPACE, JournalFactory

PREFIX = "type.googleapis.com/"


def _event(n: int) -> StoredPayload:
    return StoredPayload(PREFIX + "google.protobuf.Int64Value",
                         wrappers_pb2.Int64Value(value=n).SerializeToString())


def _inspect(cassandra: CassandraServer, *argv: str, keyspace: str = KEYSPACE,
             partition_size: int = 10_000, port: int | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    where = f"{cassandra.host}:{port or cassandra.port}"
    code = run([*argv, "--cassandra", where, "--keyspace", keyspace, "--consistency", "ONE",
                "--timeout", "5", "--partition-size", str(partition_size)], out, err, {})
    return code, out.getvalue(), err.getvalue()


async def _records(cassandra: CassandraServer, *argv: str, **kw: Any) -> list[Any]:
    code, out, err = await asyncio.to_thread(_inspect, cassandra, *argv, "--output", "jsonl",
                                             **kw)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def entity_type() -> str:
    # The keyspace is the session's; a type of its own keeps each test's listing apart.
    return f"it.Inspect{uuid.uuid4().hex[:12]}"


async def test_ten_thousand_events_with_a_snapshot_page_in_order(
    cassandra: CassandraServer, make_journal: JournalFactory, entity_type: str
) -> None:
    journal = await make_journal()
    pid = persistence_id(entity_type, "big")
    last = 0
    # Appends of 100 up to 9,900, then 99 and 1, so event 10,000 starts partition 1.
    sizes = [100] * 99 + [99, 1]
    for size in sizes:
        events = [_event(n) for n in range(last + 1, last + size + 1)]
        snapshot = _event(-last - size) if last + size == 9_000 else None
        last = await journal.append(pid, last, events, snapshot)
    assert last == 10_000
    started = time.monotonic()
    seqs: list[int] = []
    start = 1
    while True:
        page = await _records(cassandra, "events", entity_type, "big",
                              "--from-seq", str(start), "--limit", "700")
        for record in page:
            if "sequence_nr" in record:
                assert record["payload"] == str(record["sequence_nr"])  # int64 is a string
                assert record["written_at"] is not None
                seqs.append(record["sequence_nr"])
        if "next_from_seq" not in page[-1]:
            break
        start = page[-1]["next_from_seq"]
    assert seqs == list(range(1, 10_001))
    assert time.monotonic() - started < 60

    tail = await _records(cassandra, "events", entity_type, "big", "--from-seq", "9998")
    assert [r["sequence_nr"] for r in tail] == [9998, 9999, 10_000]
    (snapshot,) = await _records(cassandra, "snapshot", entity_type, "big")
    assert snapshot["last_sequence_nr"] == 10_000
    assert snapshot["snapshot"]["sequence_nr"] == 9_000
    assert snapshot["snapshot"]["payload"] == "-9000"
    (entity,) = await _records(cassandra, "entity", entity_type, "big")
    assert (entity["last_sequence_nr"], entity["snapshot_sequence_nr"]) == (10_000, 9_000)


async def test_every_starting_point_across_small_partitions(
    cassandra: CassandraServer, make_journal: JournalFactory, entity_type: str
) -> None:
    """Appends of 1..5 events over partitions of 3: an event may sit in a partition
    below its own number's, and paging must still find it."""
    journal = await make_journal(partition_size=3)
    pid = persistence_id(entity_type, "small")
    last = 0
    for size in (1, 2, 3, 4, 5, 1, 5):
        last = await journal.append(pid, last, [_event(n) for n in range(last + 1,
                                                                          last + size + 1)])
    assert last == 21
    for start in range(1, 23):
        page = await _records(cassandra, "events", entity_type, "small", "--from-seq",
                              str(start), "--limit", "4", partition_size=3)
        got = [r["sequence_nr"] for r in page if "sequence_nr" in r]
        assert got == list(range(start, min(start + 4, 22))), start
        more = [r["next_from_seq"] for r in page if "next_from_seq" in r]
        assert more == ([start + 4] if start + 4 <= 21 else [])
    (entity,) = await _records(cassandra, "entity", entity_type, "small", partition_size=3)
    assert entity["last_sequence_nr"] == 21


async def test_types_and_ids_of_both_kinds_paged(
    cassandra: CassandraServer, make_journal: JournalFactory, entity_type: str
) -> None:
    journal = await make_journal(partition_size=2)
    carts = {f"cart-{i}" for i in range(5)} | {"with|bar", "with space"}
    for entity_id in carts:
        # Three partitions each: listed once all the same.
        await journal.append(persistence_id(entity_type, entity_id), 0,
                             [_event(n) for n in range(1, 3)])
        await journal.append(persistence_id(entity_type, entity_id), 2, [_event(3)])
        await journal.append(persistence_id(entity_type, entity_id), 3, [_event(4)])
    value_type = entity_type + "Value"
    for i in range(3):
        await journal.put_value(persistence_id(value_type, f"v{i}"), 0, _event(i))

    kinds = {r["entity_type"]: (r["kind"], r["entities"])
             for r in await _records(cassandra, "types", partition_size=2)}
    assert kinds[entity_type] == ("event-sourced", len(carts))
    assert kinds[value_type] == ("value", 3)

    for listed_type, expected in ((entity_type, carts), (value_type, {"v0", "v1", "v2"})):
        seen: list[str] = []
        after: list[str] = []
        for _ in range(10):
            page = await _records(cassandra, "ids", listed_type, "--limit", "2", *after,
                                  partition_size=2)
            seen += [r["entity_id"] for r in page if "entity_id" in r]
            if not page or "next_after" not in page[-1]:
                break
            after = ["--after", page[-1]["next_after"]]
        assert sorted(seen) == sorted(expected)  # each once, in token order


async def test_value_entity_state_revision_and_time(
    cassandra: CassandraServer, make_journal: JournalFactory, entity_type: str
) -> None:
    journal = await make_journal()
    pid = persistence_id(entity_type, "v")
    await journal.put_value(pid, 0, _event(1))
    await journal.put_value(pid, 1, _event(2))
    (value,) = await _records(cassandra, "value", entity_type, "v")
    assert value["revision"] == 2
    assert value["state"] == {"type_url": PREFIX + "google.protobuf.Int64Value", "payload": "2"}
    assert value["written_at"].endswith("+00:00")
    await journal.put_value(pid, 2, None)
    (deleted,) = await _records(cassandra, "value", entity_type, "v")
    assert (deleted["revision"], deleted["state"]) == (3, None)


async def test_an_unknown_entity_and_a_bad_token_are_said(
    cassandra: CassandraServer, make_journal: JournalFactory, entity_type: str
) -> None:
    await make_journal()  # the schema exists
    code, out, err = await asyncio.to_thread(_inspect, cassandra, "events", entity_type, "x")
    assert (code, out) == (2, "")
    assert err.startswith(f"larder inspect: no entity {entity_type} 'x' in this journal")
    code, _, err = await asyncio.to_thread(
        _inspect, cassandra, "ids", entity_type, "--after", "alice")
    assert code == 2
    assert "'alice' is not a continuation token of a Cassandra journal" in err


@pytest.fixture(scope="module")
def raw_session(cassandra: CassandraServer) -> Iterator[Any]:
    cluster = Cluster(cassandra.contact_points, port=cassandra.port)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def test_a_keyspace_that_does_not_exist_is_said(cassandra: CassandraServer) -> None:
    code, out, err = _inspect(cassandra, "types", keyspace="no_such_keyspace")
    assert (code, out) == (2, "")
    assert err.startswith("larder inspect: keyspace 'no_such_keyspace' does not exist on "
                          f"Cassandra at {cassandra.host}:{cassandra.port} (its keyspaces: ")
    assert "check --keyspace" in err


def test_a_keyspace_without_larder_tables_is_said(
    cassandra: CassandraServer, raw_session: Any
) -> None:
    raw_session.execute("CREATE KEYSPACE IF NOT EXISTS inspect_other WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    raw_session.execute("CREATE TABLE IF NOT EXISTS inspect_other.orders (id int PRIMARY KEY)")
    code, _, err = _inspect(cassandra, "types", keyspace="inspect_other")
    assert code == 2
    assert err == ("larder inspect: keyspace 'inspect_other' has no Larder tables (events, "
                   "snapshots, value_states; it has orders); check --keyspace\n")


def test_a_journal_of_another_schema_version_is_said(
    cassandra: CassandraServer, raw_session: Any
) -> None:
    raw_session.execute("CREATE KEYSPACE IF NOT EXISTS inspect_v0 WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    for cql in (
        "CREATE TABLE IF NOT EXISTS inspect_v0.events (persistence_id text, sequence_nr "
        "bigint, payload blob, PRIMARY KEY (persistence_id, sequence_nr))",
        "CREATE TABLE IF NOT EXISTS inspect_v0.snapshots (persistence_id text PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS inspect_v0.value_states (persistence_id text PRIMARY KEY)",
    ):
        raw_session.execute(cql)
    code, _, err = _inspect(cassandra, "types", keyspace="inspect_v0")
    assert code == 2
    assert "keyspace 'inspect_v0' has a table events but not the columns this Larder reads (" \
        "partition_nr bigint, head bigint, type_url text, written_at timestamp missing" in err
    assert "another version of Larder's journal schema" in err


def test_unreachable_cassandra_is_said_within_the_timeout(cassandra: CassandraServer) -> None:
    # Refused at once: nothing listens.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    started = time.monotonic()
    code, _, err = _inspect(cassandra, "types", port=closed_port)
    assert code == 1
    assert err.startswith(f"larder inspect: cannot reach Cassandra at {cassandra.host}:"
                          f"{closed_port} (waited up to 5s)")
    assert time.monotonic() - started < 5
    # Accepted by the kernel but never answered: the timeout bounds the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        code, _, err = _inspect(cassandra, "types", port=silent.getsockname()[1])
        waited = time.monotonic() - started
    assert code == 1
    assert "cannot reach Cassandra" in err
    assert waited < 5 * 2 + 3


async def test_a_partition_size_other_than_the_sidecars_is_said(
    cassandra: CassandraServer, make_journal: JournalFactory, entity_type: str
) -> None:
    journal = await make_journal(partition_size=3)
    pid = persistence_id(entity_type, "e")
    last = 0
    for _ in range(4):
        last = await journal.append(pid, last, [_event(last + 1), _event(last + 2)])
    for command in ("entity", "events", "snapshot"):
        code, out, err = await asyncio.to_thread(
            _inspect, cassandra, command, entity_type, "e", partition_size=10_000)
        assert (code, out) == (2, ""), command
        assert "which partition size 10000 does not reach after event 2; --partition-size " \
            "must be the sidecar's" in err
