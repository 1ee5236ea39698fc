"""Views fed from topics on the Cassandra view store (the real Cassandra; the Kafka client
is eventing's fake, as in `tests/unit/sidecar/views/test_view_topic_delivery.py`): the
partition's offset is kept by the store like an entity's, so records become rows through
an update handler and a record delivered again after a crash is skipped."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cassandra.cluster import Cluster
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.model import build_model
from larder_sidecar.views.cassandra_store import CassandraViewStore

from tests.infra.cassandra import CassandraServer
from tests.unit.sidecar.views.quotes import VOLUMES, compile_quotes, quotes_spec
from tests.unit.sidecar.views.test_view_topic_delivery import TRADES, VolumeHandler, _run


@pytest.fixture
def settings(cassandra: CassandraServer) -> CassandraSettings:
    keyspace = f"larder_view_topics_{uuid.uuid4().hex[:8]}"
    cluster = Cluster(list(cassandra.contact_points), port=cassandra.port)
    try:
        cluster.connect().execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
    finally:
        cluster.shutdown()
    return CassandraSettings(
        contact_points=tuple(cassandra.contact_points), port=cassandra.port, keyspace=keyspace,
        read_consistency="ONE", write_consistency="ONE", request_timeout=10.0,
    )


async def test_records_are_applied_once_across_a_crash_on_cassandra(
    settings: CassandraSettings, tmp_path: Path
) -> None:
    pb, desc = compile_quotes(tmp_path)
    model = build_model(quotes_spec(desc), {(0, 7)})
    first = await _run(pb, model, CassandraViewStore(settings), VolumeHandler(pb))
    try:
        first.client.feed([first.traded("ACME", 5, 10), first.traded("ACME", 3, 11),
                           first.traded("INIT", 2, 12, partition=1)])
        await first.committed(TRADES, 0, 12)
        await first.committed(TRADES, 1, 13)
        assert await first.volume("ACME") == (8, 2)
    finally:
        await first.sources.stop()
        await first.delivery.close()

    # A new consumer on the same store is given the records again (as after a crash
    # between the store's write and the Kafka commit), and one more.
    handler = VolumeHandler(pb)
    second = await _run(pb, model, CassandraViewStore(settings), handler)
    try:
        second.client.feed([second.traded("ACME", 5, 10), second.traded("ACME", 3, 11),
                            second.traded("ACME", 1, 13), second.traded("INIT", 2, 12, 1)])
        await second.committed(TRADES, 0, 14)
        await second.committed(TRADES, 1, 13)
        assert await second.volume("ACME") == (9, 3)
        assert await second.volume("INIT") == (2, 1)
        assert handler.calls == [("ACME", "OnTraded", 1)]
        assert await second.store.offsets(VOLUMES) == {
            f"topic/{TRADES}/0": 14, f"topic/{TRADES}/1": 13,
        }
    finally:
        await second.sources.stop()
        await second.delivery.close()
