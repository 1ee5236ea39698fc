"""The journal implementation follows LARDER_JOURNAL_TYPE."""

from __future__ import annotations

from pathlib import Path

from larder_sidecar.journal.factory import create_journal
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.settings import load_settings


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
