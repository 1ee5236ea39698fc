"""The journal contract, run against the in-memory and SQLite journals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from larder_sidecar.journal.base import Journal, JournalUnavailable, PersistenceId
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal

from .journal_contract import JournalContract


class TestMemoryJournal(JournalContract):
    @pytest.fixture
    async def journal(self) -> AsyncIterator[Journal]:
        j = MemoryJournal()
        await j.start()
        yield j
        await j.close()


class TestSqliteJournal(JournalContract):
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
