"""The journal implementation follows LARDER_JOURNAL_TYPE."""

from __future__ import annotations

from pathlib import Path

import pytest
from larder_sidecar.journal.factory import create_journal
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.settings import SettingsError, load_settings


def test_memory_and_sqlite(tmp_path: Path) -> None:
    assert isinstance(create_journal(load_settings({})), MemoryJournal)
    sqlite = create_journal(
        load_settings(
            {"LARDER_JOURNAL_TYPE": "sqlite", "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "j")}
        )
    )
    assert isinstance(sqlite, SqliteJournal)


def test_cassandra_gets_its_parsed_settings() -> None:
    settings = load_settings({"LARDER_JOURNAL_TYPE": "cassandra"})
    assert settings.journal_cassandra is not None
    journal = create_journal(settings)
    assert type(journal).__name__ == "CassandraJournal"


async def _synchronous_pragma(journal: SqliteJournal) -> int:
    await journal.start()
    try:
        return int(await journal._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]))
    finally:
        await journal.close()


async def test_sqlite_synchronous_follows_the_setting(tmp_path: Path) -> None:
    env = {"LARDER_JOURNAL_TYPE": "sqlite", "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "j")}
    default = create_journal(load_settings(env))
    full = create_journal(load_settings({**env, "LARDER_JOURNAL_SQLITE_SYNCHRONOUS": "FULL"}))
    assert isinstance(default, SqliteJournal) and isinstance(full, SqliteJournal)
    # SQLite's codes: 1 NORMAL, 2 FULL.
    assert await _synchronous_pragma(default) == 1
    assert await _synchronous_pragma(full) == 2


def test_sqlite_synchronous_must_be_normal_or_full() -> None:
    with pytest.raises(SettingsError, match="LARDER_JOURNAL_SQLITE_SYNCHRONOUS='off' must be"):
        load_settings({"LARDER_JOURNAL_SQLITE_SYNCHRONOUS": "off"})
