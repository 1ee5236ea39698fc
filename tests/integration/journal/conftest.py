"""Cassandra journals on the session's real Cassandra node."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any, Protocol

import pytest
from larder_sidecar.journal.base import PersistenceId, StoredPayload, persistence_id
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings

from tests.infra.cassandra import CassandraServer

# One keyspace for the whole session; tests keep apart by persistence id.
KEYSPACE = "larder_it"


class JournalFactory(Protocol):
    async def __call__(self, **overrides: Any) -> CassandraJournal: ...


def settings_for(cassandra: CassandraServer, **overrides: Any) -> CassandraSettings:
    base = CassandraSettings(
        contact_points=tuple(cassandra.contact_points),
        port=cassandra.port,
        keyspace=KEYSPACE,
        read_consistency="ONE",
        write_consistency="ONE",
        request_timeout=5.0,
    )
    return replace(base, **overrides)


@pytest.fixture
async def make_journal(cassandra: CassandraServer) -> AsyncIterator[JournalFactory]:
    """Starts journals (each one = one sidecar's connection) and closes them after the test."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> CassandraJournal:
            journal = CassandraJournal(settings_for(cassandra, **overrides))
            await journal.start()
            stack.push_async_callback(journal.close)
            return journal

        yield make


@pytest.fixture
def new_pid() -> Callable[[], PersistenceId]:
    return lambda: persistence_id("it.Entity", uuid.uuid4().hex)


def payload(text: str) -> StoredPayload:
    return StoredPayload("type.googleapis.com/it.Event", text.encode())
