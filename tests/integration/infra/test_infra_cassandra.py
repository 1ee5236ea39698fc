"""The provisioned Cassandra answers CQL, and keeps its data across stop/start and a crash."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Cluster, Session

from tests.infra.cassandra import CassandraServer


def _session(server: CassandraServer) -> tuple[Cluster, Session]:
    cluster = Cluster(server.contact_points, port=server.port)
    return cluster, cluster.connect()


@pytest.fixture
def session(cassandra: CassandraServer) -> Iterator[Session]:
    cluster, session = _session(cassandra)
    yield session
    cluster.shutdown()


def test_keyspace_table_insert_select(session: Session) -> None:
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS infra_smoke "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS infra_smoke.kv (k text PRIMARY KEY, v int)")
    key = uuid.uuid4().hex
    session.execute("INSERT INTO infra_smoke.kv (k, v) VALUES (%s, %s)", (key, 42))
    rows = list(session.execute("SELECT v FROM infra_smoke.kv WHERE k = %s", (key,)))
    assert [row.v for row in rows] == [42]
    # The journal's fencing relies on lightweight transactions: they must work on one node.
    applied = session.execute(
        "INSERT INTO infra_smoke.kv (k, v) VALUES (%s, %s) IF NOT EXISTS", (key, 7)
    ).one()
    assert applied[0] is False


def test_data_survives_stop_start_and_kill(cassandra: CassandraServer) -> None:
    cluster, session = _session(cassandra)
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS infra_smoke "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS infra_smoke.kv (k text PRIMARY KEY, v int)")
    session.execute("INSERT INTO infra_smoke.kv (k, v) VALUES ('durable', 1)")
    cluster.shutdown()
    port = cassandra.port
    try:
        cassandra.stop()
        assert not cassandra.running
        cassandra.start()
        cassandra.kill()
        assert not cassandra.running
    finally:
        if not cassandra.running:
            cassandra.start()
    assert cassandra.port == port
    cluster, session = _session(cassandra)
    try:
        row = session.execute("SELECT v FROM infra_smoke.kv WHERE k = 'durable'").one()
        assert row is not None
        assert row.v == 1
    finally:
        cluster.shutdown()
