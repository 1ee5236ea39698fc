"""Views in a running sidecar: the store chosen from the journal, delivery, the query path.

- memory journal: memory store (nothing survives a restart, like the journal), no catch-up;
- sqlite journal: SQLite store `<journal stem>-views<suffix>` next to the journal's file,
  catch-up reading the journal's file read-only;
- cassandra journal: Cassandra store in the journal's keyspace (its own tables, with
  storage-attached indexes), catch-up reading the journal's tables.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import cast

import grpc.aio
from prometheus_client import CollectorRegistry

from ..eventing.settings import KafkaSettings
from ..eventing.spec import read_eventing
from ..journal.base import Journal
from ..model import SpecError, UserFunctionModel
from ..settings import Settings
from .catchup import CassandraChangeSource, ChangeSource, SqliteChangeSource
from .delivery import ViewDelivery
from .feed import FeedingJournal
from .handle import HandleClient
from .metrics import ViewMetrics
from .queries import ViewQueries
from .sqlite_store import SqliteViewStore
from .store import MemoryViewStore, ViewStore
from .topic_source import TopicSources


def views_path(journal_path: str | Path) -> Path:
    """The view store's file for an SQLite journal file: `journal.db` -> `journal-views.db`."""
    p = Path(journal_path)
    return p.with_name(f"{p.stem}-views{p.suffix or '.db'}")


class Views:
    """Owns the view store, the delivery workers and the query path of one sidecar."""

    def __init__(
        self,
        model: UserFunctionModel,
        journal: Journal,
        store: ViewStore,
        channel: grpc.aio.Channel,
        registry: CollectorRegistry,
        *,
        source: ChangeSource | None = None,
        max_reply_bytes: int = 12 * 1024 * 1024,
        gather: float = 0.0,
    ) -> None:
        metrics = ViewMetrics(registry)
        transforms = any(u.transform for v in model.views.values() for u in v.updates)
        self.delivery = ViewDelivery(
            model.views,
            store,
            HandleClient(channel) if transforms else None,
            metrics,
            load_value=journal.load_value,
            source=source,
            gather=gather,
        )
        self.queries = ViewQueries(
            model.views, self.delivery.tables, store, metrics, max_reply_bytes=max_reply_bytes
        )
        self.journal: Journal = FeedingJournal(journal, self.delivery.publish)
        """The journal the entities write through: committed writes reach the views."""
        self._model = model
        self._registry = registry
        self._local_store = isinstance(store, MemoryViewStore)
        self.topics: TopicSources | None = None
        """The consumers of views fed from Kafka topics (`feed_topics`)."""

    def feed_topics(self, kafka: KafkaSettings) -> None:
        """Views fed from topics read them with `kafka` once started; raises
        `TopicSourceError` when they cannot."""
        self.topics = TopicSources.for_views(
            self._model.views,
            read_eventing(self._model),
            self.delivery,
            kafka,
            self._registry,
            # A store in this process holds what this process applied: it reads the
            # whole topic itself, in a group of its own.
            per_process=self._local_store,
        )

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        model: UserFunctionModel,
        journal: Journal,
        channel: grpc.aio.Channel,
        registry: CollectorRegistry,
    ) -> Views:
        if settings.journal_type == "sqlite":
            return cls(
                model,
                journal,
                SqliteViewStore(views_path(settings.journal_sqlite_path)),
                channel,
                registry,
                source=SqliteChangeSource(settings.journal_sqlite_path),
                max_reply_bytes=settings.max_message_bytes,
            )
        if settings.journal_type == "memory":
            return cls(
                model,
                journal,
                MemoryViewStore(),
                channel,
                registry,
                max_reply_bytes=settings.max_message_bytes,
            )
        if settings.journal_type == "cassandra" and settings.journal_cassandra is not None:
            # Imported lazily: the Cassandra driver is heavy and only needed here.
            # Contract: `CassandraViewStore(settings: CassandraSettings, journal)` is a
            # `ViewStore`; on a `CassandraJournal` it shares the journal's session.
            module = importlib.import_module("larder_sidecar.views.cassandra_store")
            journals = importlib.import_module("larder_sidecar.journal.cassandra")
            shared = journal if isinstance(journal, journals.CassandraJournal) else None
            store = cast(
                ViewStore, module.CassandraViewStore(settings.journal_cassandra, shared)
            )
            return cls(
                model,
                journal,
                store,
                channel,
                registry,
                source=CassandraChangeSource(settings.journal_cassandra),
                max_reply_bytes=settings.max_message_bytes,
                # A wave costs a Paxos round per bucket, however few its changes: let
                # changes gather (the local stores' transaction has no such fixed cost).
                gather=settings.view_gather,
            )
        raise SpecError(
            [
                f"{', '.join(sorted(model.views))}: views need the memory, sqlite or "
                f"cassandra journal with its settings; the {settings.journal_type} journal "
                "has none (docs/views.md)"
            ]
        )

    async def start(self) -> list[str]:
        """Open the store and catch up, then read the views' topics; returns the ids of
        tables rebuilt."""
        rebuilt = await self.delivery.start()
        if self.topics is not None:
            await self.topics.start()
        return rebuilt

    async def close(self) -> None:
        if self.topics is not None:
            # First: records in flight finish (the delivery still runs) and are committed.
            await self.topics.stop()
        await self.delivery.close()
