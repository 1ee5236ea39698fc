"""Where view delivery reads what the journal holds beyond what a view applied: at start
(catch-up), and when an entity's published change skips offsets the view never saw.

Only the SQLite journal has one here: its file is read through a read-only connection of
its own (`journal/sqlite_reading.py`), on a thread. The memory journal keeps nothing
across restarts, so its views (kept in memory too) have nothing to catch up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ..journal.base import PersistenceId, StoredPayload
from ..journal.sqlite_reading import SqliteReader


class ChangeSource(Protocol):
    async def value_revisions(self, entity_type: str) -> Mapping[PersistenceId, int]:
        """Current revision of each value entity of the type (deleted ones included)."""

    async def event_heads(self, entity_type: str) -> Mapping[PersistenceId, int]:
        """Last sequence number of each event-sourced entity of the type."""

    async def events(self, pid: PersistenceId, first: int, last: int) -> Sequence[StoredPayload]:
        """The events `first`..`last` of `pid`, in order, every one of them."""

    def close(self) -> None: ...


class SqliteChangeSource:
    """Implements `ChangeSource` on the SQLite journal's file."""

    PAGE = 500

    def __init__(self, path: str | Path) -> None:
        self._reader = SqliteReader(path)

    async def value_revisions(self, entity_type: str) -> Mapping[PersistenceId, int]:
        return await asyncio.to_thread(self._reader.value_revisions, entity_type)

    async def event_heads(self, entity_type: str) -> Mapping[PersistenceId, int]:
        return await asyncio.to_thread(self._reader.event_heads, entity_type)

    async def events(self, pid: PersistenceId, first: int, last: int) -> Sequence[StoredPayload]:
        out: list[StoredPayload] = []
        start: int | None = first
        while start is not None and start <= last:
            page = await asyncio.to_thread(
                self._reader.events, pid, from_seq=start, limit=self.PAGE
            )
            out.extend(e.payload for e in page.events if e.sequence_nr <= last)
            start = page.next_from_seq
        if len(out) != last - first + 1:
            raise LookupError(
                f"{pid}: the journal holds {len(out)} of the events {first}..{last} a view "
                "needs; it was changed underneath the sidecar"
            )
        return out

    def close(self) -> None:
        self._reader.close()
