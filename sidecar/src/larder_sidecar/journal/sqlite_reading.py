"""Read-only inspection of an SQLite journal file (the `JournalReader` of `reading.py`).

The file is opened read-only (`mode=ro`), so inspecting the journal of a running
`larder dev` is safe: WAL mode lets this reader see the last committed state while
the sidecar writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import JournalUnavailable, PersistenceId, StoredPayload
from .reading import (
    EntityInfo,
    EntityKind,
    EntityPage,
    EntityRef,
    EntityTypeCount,
    EventPage,
    NotAJournal,
    SchemaMismatch,
    StoredEvent,
    StoredSnapshot,
    StoredValue,
    check_columns,
    split_persistence_id,
    type_range,
)

# The columns `sqlite.py` creates and this reader reads, with their declared types.
_TABLES: dict[str, dict[str, str]] = {
    "events": {"pid": "text", "seq": "integer", "type_url": "text", "value": "blob"},
    "snapshots": {"pid": "text", "seq": "integer", "type_url": "text", "value": "blob"},
    "value_state": {"pid": "text", "revision": "integer", "type_url": "text", "value": "blob"},
}

# Persistence ids of event-sourced entities: a snapshot is only ever stored with events,
# but a union costs nothing here and shows a journal that holds only snapshots.
_ES_PIDS = "SELECT pid FROM events UNION SELECT pid FROM snapshots"


class SqliteReader:
    """Implements `JournalReader` on one SQLite journal file."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        where = f"{self._path}"
        if not self._path.exists():
            raise NotAJournal(f"{where} does not exist; give the journal.db of `larder dev` "
                              "(by default .larder/<name>/journal.db)")
        if not self._path.is_file():
            raise NotAJournal(f"{where} is not a file; give the journal.db file itself")
        try:
            self._conn = sqlite3.connect(
                f"{self._path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise JournalUnavailable(f"cannot open {where} read-only: {e}") from e
        try:
            self._check_schema(where)
        except BaseException:
            self._conn.close()
            raise

    def _check_schema(self, where: str) -> None:
        try:
            names = {
                row[0]
                for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as e:
            raise NotAJournal(
                f"{where} is not a Larder journal: it is not an SQLite database ({e})"
            ) from e
        ours = [t for t in _TABLES if t in names]
        if not ours:
            tables = ", ".join(sorted(names)) or "none"
            raise NotAJournal(
                f"{where} is an SQLite database but not a Larder journal: it has none of the "
                f"tables events, snapshots, value_state (its tables: {tables})"
            )
        missing = [t for t in _TABLES if t not in names]
        if missing:
            raise SchemaMismatch(
                f"{where} has some of a Larder journal's tables but not {', '.join(missing)}; "
                "it was written by another version of Larder's journal schema (or is not a "
                "Larder journal)"
            )
        for table, wanted in _TABLES.items():
            found = {
                row[1]: str(row[2])
                for row in self._conn.execute(f"PRAGMA table_info({table})")
            }
            mismatch = check_columns(where, table, found, wanted)
            if mismatch is not None:
                raise mismatch

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise JournalUnavailable(f"SQLite journal {self._path}: {e}") from e

    def close(self) -> None:
        self._conn.close()

    def entity_types(self) -> Sequence[EntityTypeCount]:
        counts: dict[tuple[str, EntityKind], int] = {}
        sources: tuple[tuple[str, EntityKind], ...] = (
            (_ES_PIDS, "event-sourced"),
            ("SELECT pid FROM value_state", "value"),
        )
        for sql, kind in sources:
            for (pid,) in self._query(sql):
                key = (split_persistence_id(pid)[0], kind)
                counts[key] = counts.get(key, 0) + 1
        return [
            EntityTypeCount(entity_type, kind, n)
            for (entity_type, kind), n in sorted(counts.items())
        ]

    def entity_ids(self, entity_type: str, *, limit: int, after: str | None) -> EntityPage:
        low, high = type_range(entity_type)
        # The continuation token is the last entity id shown: ids sort as their pids do.
        start, above = (low + after, ">") if after is not None else (low, ">=")
        rows = self._query(
            "SELECT pid, MAX(kind) FROM ("
            f"SELECT pid, 'event-sourced' AS kind FROM ({_ES_PIDS}) "
            "UNION ALL SELECT pid, 'value' FROM value_state"
            f") WHERE pid {above} ? AND pid < ? GROUP BY pid ORDER BY pid LIMIT ?",
            (start, high, limit + 1),
        )
        refs = [
            EntityRef(entity_type, split_persistence_id(pid)[1], kind) for pid, kind in rows
        ]
        more = len(refs) > limit
        refs = refs[:limit]
        return EntityPage(refs, refs[-1].entity_id if more and refs else None)

    def entity(self, pid: PersistenceId) -> EntityInfo | None:
        (last,) = self._query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE pid = ?", (pid,))[0]
        snapshot = self._query("SELECT seq FROM snapshots WHERE pid = ?", (pid,))
        value = self._query("SELECT revision FROM value_state WHERE pid = ?", (pid,))
        if value:
            return EntityInfo(pid, "value", 0, None, int(value[0][0]))
        if last or snapshot:
            return EntityInfo(pid, "event-sourced", int(last),
                              int(snapshot[0][0]) if snapshot else None, None)
        return None

    def events(self, pid: PersistenceId, *, from_seq: int, limit: int) -> EventPage:
        rows = self._query(
            "SELECT seq, type_url, value FROM events WHERE pid = ? AND seq >= ? "
            "ORDER BY seq LIMIT ?",
            (pid, from_seq, limit + 1),
        )
        events = [StoredEvent(seq, StoredPayload(t, bytes(v)), None) for seq, t, v in rows]
        more = len(events) > limit
        return EventPage(events[:limit], events[limit].sequence_nr if more else None)

    def snapshot(self, pid: PersistenceId) -> StoredSnapshot | None:
        rows = self._query("SELECT seq, type_url, value FROM snapshots WHERE pid = ?", (pid,))
        if not rows:
            return None
        seq, type_url, value = rows[0]
        return StoredSnapshot(seq, StoredPayload(type_url, bytes(value)), None)

    def value(self, pid: PersistenceId) -> StoredValue | None:
        rows = self._query(
            "SELECT revision, type_url, value FROM value_state WHERE pid = ?", (pid,)
        )
        if not rows:
            return None
        revision, type_url, value = rows[0]
        payload = StoredPayload(type_url, bytes(value)) if type_url is not None else None
        return StoredValue(revision, payload, None)

    def value_revisions(self, entity_type: str) -> dict[PersistenceId, int]:
        """The current revision of every value entity of `entity_type` (deleted ones
        included): what view catch-up compares with the revisions a view applied."""
        low, high = type_range(entity_type)
        rows = self._query(
            "SELECT pid, revision FROM value_state WHERE pid >= ? AND pid < ?", (low, high)
        )
        return {PersistenceId(pid): int(revision) for pid, revision in rows}

    def event_heads(self, entity_type: str) -> dict[PersistenceId, int]:
        """The last sequence number of every event-sourced entity of `entity_type`."""
        low, high = type_range(entity_type)
        rows = self._query(
            "SELECT pid, MAX(seq) FROM events WHERE pid >= ? AND pid < ? GROUP BY pid",
            (low, high),
        )
        return {PersistenceId(pid): int(seq) for pid, seq in rows}
