"""The journal contract, run against the in-memory and SQLite journals."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from larder_sidecar.journal.base import (
    Journal,
    JournalUnavailable,
    PersistenceId,
    StoredPayload,
)
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal

from .idempotency_contract import IdempotencyContract, change, record
from .journal_contract import JournalContract


class _Memory:
    """The in-memory journal under a contract's tests."""

    @pytest.fixture
    async def journal(self) -> AsyncIterator[Journal]:
        j = MemoryJournal()
        await j.start()
        yield j
        await j.close()


class _Sqlite:
    """The SQLite journal under a contract's tests; it can be reopened from its file."""

    @pytest.fixture
    async def journal(self, tmp_path: Path) -> AsyncIterator[Journal]:
        self.path = tmp_path / "journal.sqlite3"
        j = SqliteJournal(self.path)
        await j.start()
        yield j
        await j.close()

    async def reopen(self, journal: Journal) -> Journal | None:
        await journal.close()
        other = SqliteJournal(self.path)
        await other.start()
        return other


class TestMemoryJournal(_Memory, JournalContract):
    pass


class TestSqliteJournal(_Sqlite, JournalContract):
    pass


async def test_sqlite_unwritable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    j = SqliteJournal(blocker / "journal.sqlite3")
    with pytest.raises(JournalUnavailable, match="LARDER_JOURNAL_SQLITE_PATH"):
        await j.start()


async def test_sqlite_not_started_is_unavailable(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "j.sqlite3")
    with pytest.raises(JournalUnavailable, match="not started"):
        await j.load(PersistenceId("x|y"))
    assert not await j.ready()


class TestMemoryIdempotency(_Memory, IdempotencyContract):
    pass


class TestSqliteIdempotency(_Sqlite, IdempotencyContract):
    pass


async def test_sqlite_file_of_an_older_version_gets_the_records_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE events (pid TEXT NOT NULL, seq INTEGER NOT NULL, type_url TEXT NOT NULL,"
        " value BLOB NOT NULL, PRIMARY KEY (pid, seq)) WITHOUT ROWID;"
        "CREATE TABLE snapshots (pid TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
        " type_url TEXT NOT NULL, value BLOB NOT NULL);"
        "CREATE TABLE value_state (pid TEXT PRIMARY KEY, revision INTEGER NOT NULL,"
        " type_url TEXT, value BLOB);"
        "INSERT INTO events VALUES ('t|a', 1, 'type.googleapis.com/E', x'01');"
    )
    conn.commit()
    conn.close()
    j = SqliteJournal(path)
    await j.start()
    try:
        pid = PersistenceId("t|a")
        kept = record("k")
        await j.append(pid, 1, [StoredPayload("type.googleapis.com/E", b"\x02")], None,
                       change([kept]))
        recovery = await j.load(pid)
        assert recovery.last_sequence_nr == 2
        assert list(recovery.idempotency) == [kept]
    finally:
        await j.close()
