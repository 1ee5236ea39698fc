"""Chooses the journal implementation from the settings."""

from __future__ import annotations

import importlib
from typing import cast

from ..settings import Settings
from .base import Journal
from .memory import MemoryJournal
from .sqlite import SqliteJournal


def create_journal(settings: Settings) -> Journal:
    if settings.journal_type == "memory":
        return MemoryJournal()
    if settings.journal_type == "sqlite":
        return SqliteJournal(
            settings.journal_sqlite_path, synchronous=settings.journal_sqlite_synchronous
        )
    # Imported lazily: the Cassandra driver is heavy and only needed here.
    # Contract: `larder_sidecar.journal.cassandra.CassandraJournal(settings: CassandraSettings)`.
    module = importlib.import_module("larder_sidecar.journal.cassandra")
    return cast(Journal, module.CassandraJournal(settings.journal_cassandra))
