"""The reachability check itself against the real Cassandra (no Kubernetes involved)."""

from __future__ import annotations

import time

from cassandra.cluster import Cluster
from larder_operator.credentials import Credentials
from larder_operator.journal_check import check_journal
from larder_operator.journals import parse_journal
from larder_operator.status import Reason

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port


async def test_connects_to_the_real_cassandra(cassandra: CassandraServer) -> None:
    config = parse_journal(
        "ns", {"type": "Cassandra", "cassandra": {"contactPoints": [cassandra.host],
                                                  "port": cassandra.port}}
    )
    result = await check_journal(config, None, within=10)
    assert (result.ready, result.reason) == (True, Reason.REACHABLE), result.message
    assert result.message.startswith("connected to Cassandra 5.")


async def test_a_closed_port_is_unreachable_quickly() -> None:
    port = free_port()
    config = parse_journal(
        "ns", {"type": "Cassandra", "cassandra": {"contactPoints": ["127.0.0.1"], "port": port}}
    )
    started = time.monotonic()
    result = await check_journal(config, Credentials("u", "p"), within=2)
    assert (result.ready, result.reason) == (False, Reason.UNREACHABLE)
    assert f"127.0.0.1:{port}" in result.message
    assert time.monotonic() - started < 6.5


async def test_in_memory_needs_no_check() -> None:
    result = await check_journal(parse_journal("ns", {"type": "InMemory"}), None, within=1)
    assert (result.ready, result.reason) == (True, Reason.IN_MEMORY)


async def test_durable_condition_reads_the_nodes_commit_log_mode_and_the_keyspace(
    cassandra: CassandraServer,
) -> None:
    # The session's node has Cassandra's default periodic commit log (tests/infra).
    where = {"contactPoints": [cassandra.host], "port": cassandra.port}
    single = parse_journal("ns", {"type": "Cassandra", "cassandra": {
        **where, "keyspace": "durable_probe_absent",
        "replication": {"replicationFactor": 1},
        "consistency": {"write": "LOCAL_QUORUM"},
    }})
    result = await check_journal(single, None, within=10)
    assert result.durable is not None
    assert (result.durable.status, result.durable.reason) == (
        False, Reason.UNSYNCED_SINGLE_COPY
    ), result.durable.message
    assert "commitlog_sync is periodic" in result.durable.message

    # The defaults (three copies, LOCAL_QUORUM) for a keyspace yet to be created.
    defaults = parse_journal("ns", {"type": "Cassandra", "cassandra": {
        **where, "keyspace": "durable_probe_absent"}})
    result = await check_journal(defaults, None, within=10)
    assert result.durable is not None
    assert (result.durable.status, result.durable.reason) == (True, Reason.REPLICATED)

    # A keyspace that exists is judged by its own replication, not the spec's.
    cluster = Cluster([cassandra.host], port=cassandra.port)
    try:
        cluster.connect().execute(
            "CREATE KEYSPACE IF NOT EXISTS durable_probe_rf1 WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
    finally:
        cluster.shutdown()
    existing = parse_journal("ns", {"type": "Cassandra", "cassandra": {
        **where, "keyspace": "durable_probe_rf1"}})
    result = await check_journal(existing, None, within=10)
    assert result.durable is not None
    assert (result.durable.status, result.durable.reason) == (
        False, Reason.UNSYNCED_SINGLE_COPY
    ), result.durable.message
    assert "the keyspace has replication factor 1" in result.durable.message
