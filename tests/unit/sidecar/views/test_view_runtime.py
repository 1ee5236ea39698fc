"""Which view store a sidecar gets from its journal settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import ModuleType

import grpc.aio
import pytest
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.model import SpecError, build_model
from larder_sidecar.settings import Settings
from larder_sidecar.views.cassandra_store import CassandraViewStore
from larder_sidecar.views.catchup import CassandraChangeSource
from larder_sidecar.views.runtime import Views, views_path
from larder_sidecar.views.sqlite_store import SqliteViewStore
from larder_sidecar.views.store import MemoryViewStore
from prometheus_client import CollectorRegistry

from .shop import compile_shop, shop_spec


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_shop(tmp_path_factory.mktemp("shop"))


def test_the_view_file_sits_next_to_the_journal_file() -> None:
    assert views_path("/data/cart/journal.db") == Path("/data/cart/journal-views.db")
    assert views_path("j.sqlite3") == Path("j-views.sqlite3")
    assert views_path("journal") == Path("journal-views.db")


async def test_the_store_follows_the_journal(
    shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    model = build_model(shop_spec(shop[1]), {(0, 7)})
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never called here
    try:
        memory = Views.for_settings(
            Settings(), model, MemoryJournal(), channel, CollectorRegistry()
        )
        assert isinstance(memory.delivery._store, MemoryViewStore)
        assert memory.delivery._gather == 0  # a local store: nothing to share by waiting
        path = tmp_path / "journal.db"
        journal = SqliteJournal(path)
        await journal.start()
        try:
            sqlite = Views.for_settings(
                replace(Settings(), journal_type="sqlite", journal_sqlite_path=str(path)),
                model, journal, channel, CollectorRegistry(),
            )
            store = sqlite.delivery._store
            assert isinstance(store, SqliteViewStore)
            assert store.path == str(tmp_path / "journal-views.db")
            assert sqlite.delivery._gather == 0
            await sqlite.close()
        finally:
            await journal.close()
        # Built, not started: nothing connects to Cassandra here.
        on_cassandra = replace(
            Settings(), journal_type="cassandra", journal_cassandra=CassandraSettings()
        )
        cassandra = Views.for_settings(
            on_cassandra, model, MemoryJournal(), channel, CollectorRegistry()
        )
        assert isinstance(cassandra.delivery._store, CassandraViewStore)
        assert cassandra.delivery._store._journal is None  # a connection of its own
        assert isinstance(cassandra.delivery._source, CassandraChangeSource)
        assert cassandra.delivery._gather == on_cassandra.view_gather == 0.05
        # On the Cassandra journal (a sidecar's), the store shares the journal's session.
        journal_on_cassandra = CassandraJournal(CassandraSettings())
        shared = Views.for_settings(
            on_cassandra, model, journal_on_cassandra, channel, CollectorRegistry()
        )
        assert isinstance(shared.delivery._store, CassandraViewStore)
        assert shared.delivery._store._journal is journal_on_cassandra
        with pytest.raises(SpecError, match="the cassandra journal has none"):
            Views.for_settings(
                replace(Settings(), journal_type="cassandra"), model, MemoryJournal(), channel,
                CollectorRegistry(),
            )
    finally:
        await channel.close(None)
