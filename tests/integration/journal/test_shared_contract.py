"""The sidecar's shared journal contract (tests/unit/sidecar/journal) on real Cassandra."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from larder_sidecar.journal.base import Journal
from larder_sidecar.journal.cassandra import CassandraJournal

from tests.infra.cassandra import CassandraServer
from tests.unit.sidecar.journal.journal_contract import JournalContract

from .conftest import settings_for


class TestCassandraJournalContract(JournalContract):
    @pytest.fixture(params=[1, 3, 10_000], ids=lambda n: f"partition{n}")
    async def journal(
        self, request: pytest.FixtureRequest, cassandra: CassandraServer
    ) -> AsyncIterator[Journal]:
        self.settings = settings_for(cassandra, partition_size=request.param)
        journal = CassandraJournal(self.settings)
        await journal.start()
        yield journal
        await journal.close()

    async def reopen(self, journal: Journal) -> Journal | None:
        await journal.close()
        other = CassandraJournal(self.settings)
        await other.start()
        return other
