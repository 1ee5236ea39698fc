"""Where view delivery reads what the journal holds beyond what a view applied: at start
(catch-up), and when an entity's published change skips offsets the view never saw.

The SQLite journal's file is read through a read-only connection of its own
(`journal/sqlite_reading.py`), the Cassandra journal's keyspace through a connection of its
own (`journal/cassandra_reading.py`), each on a thread. Listing the heads is a scan: of the
SQLite file's tables, of every Cassandra event partition's static head and every value
state (docs/views.md says what that costs). The memory journal keeps nothing across
restarts, so its views (kept in memory too) have nothing to catch up.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ..journal.base import PersistenceId, StoredPayload
from ..journal.cassandra_settings import CassandraSettings
from ..journal.reading import EventPage
from ..journal.sqlite_reading import SqliteReader


class ChangeSource(Protocol):
    async def value_revisions(self, entity_type: str) -> Mapping[PersistenceId, int]:
        """Current revision of each value entity of the type (deleted ones included)."""

    async def event_heads(self, entity_type: str) -> Mapping[PersistenceId, int]:
        """Last sequence number of each event-sourced entity of the type."""

    async def events(self, pid: PersistenceId, first: int, last: int) -> Sequence[StoredPayload]:
        """The events `first`..`last` of `pid`, in order, every one of them."""

    def close(self) -> None: ...


class _Reader(Protocol):
    def value_revisions(self, entity_type: str) -> Mapping[PersistenceId, int]: ...

    def event_heads(self, entity_type: str) -> Mapping[PersistenceId, int]: ...

    def events(self, pid: PersistenceId, *, from_seq: int, limit: int) -> EventPage: ...

    def close(self) -> None: ...


class _ReaderChangeSource(abc.ABC):
    """Implements `ChangeSource` on a journal reader's blocking calls, each on a thread;
    a subclass says how its journal's reader is opened."""

    PAGE = 500

    @abc.abstractmethod
    async def _reader(self) -> _Reader: ...

    async def value_revisions(self, entity_type: str) -> Mapping[PersistenceId, int]:
        reader = await self._reader()
        return await asyncio.to_thread(reader.value_revisions, entity_type)

    async def event_heads(self, entity_type: str) -> Mapping[PersistenceId, int]:
        reader = await self._reader()
        return await asyncio.to_thread(reader.event_heads, entity_type)

    async def events(self, pid: PersistenceId, first: int, last: int) -> Sequence[StoredPayload]:
        reader = await self._reader()
        out: list[StoredPayload] = []
        start: int | None = first
        while start is not None and start <= last:
            page = await asyncio.to_thread(
                reader.events, pid, from_seq=start, limit=min(self.PAGE, last - start + 1)
            )
            out.extend(e.payload for e in page.events if e.sequence_nr <= last)
            start = page.next_from_seq
        if len(out) != last - first + 1:
            raise LookupError(
                f"{pid}: the journal holds {len(out)} of the events {first}..{last} a view "
                "needs; it was changed underneath the sidecar"
            )
        return out


class SqliteChangeSource(_ReaderChangeSource):
    """Implements `ChangeSource` on the SQLite journal's file."""

    def __init__(self, path: str | Path) -> None:
        self._sqlite = SqliteReader(path)

    async def _reader(self) -> _Reader:
        return self._sqlite

    def close(self) -> None:
        self._sqlite.close()


class CassandraChangeSource(_ReaderChangeSource):
    """Implements `ChangeSource` on the Cassandra journal's keyspace, with a connection
    of its own opened at first use (the driver connects synchronously: on a thread)."""

    def __init__(self, settings: CassandraSettings) -> None:
        self._settings = settings
        self._cassandra: _Reader | None = None
        self._opening = asyncio.Lock()

    async def _reader(self) -> _Reader:
        async with self._opening:
            if self._cassandra is None:
                # Imported lazily: the driver is heavy and only needed on Cassandra.
                module = importlib.import_module("larder_sidecar.journal.cassandra_reading")
                s = self._settings
                reader: _Reader = await asyncio.to_thread(
                    module.CassandraReader,
                    s.contact_points,
                    s.port,
                    s.keyspace,
                    username=s.username,
                    password=s.password,
                    partition_size=s.partition_size,
                    timeout=s.request_timeout,
                    consistency=s.read_consistency,
                    reconnect=True,
                )
                self._cassandra = reader
                return reader
            return self._cassandra

    def close(self) -> None:
        if self._cassandra is not None:
            self._cassandra.close()
            self._cassandra = None
