"""Two sidecars (two journals) and many tasks racing to append to the same entities:
Cassandra itself must let exactly one writer have each sequence number."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    PersistenceId,
    StoredPayload,
    WriteOutcomeUnknown,
)
from larder_sidecar.journal.cassandra import CassandraJournal

from .conftest import JournalFactory, payload

ENTITIES = 3
WRITERS_PER_JOURNAL = 6
WINS_PER_WRITER = 4


@dataclass
class Ledger:
    acknowledged: dict[int, StoredPayload] = field(default_factory=dict)
    """Sequence number -> payload, for every append the journal confirmed."""
    unknown: set[StoredPayload] = field(default_factory=set)
    conflicts: int = 0


async def _writer(
    name: str, journal: CassandraJournal, pid: PersistenceId, ledger: Ledger, rng: random.Random
) -> None:
    wins = attempt = 0
    while wins < WINS_PER_WRITER:
        attempt += 1
        last = (await journal.load(pid)).last_sequence_nr
        batch = [payload(f"{name}/{attempt}/{i}") for i in range(rng.randint(1, 3))]
        try:
            new_last = await journal.append(pid, last, batch)
        except ConcurrentWriteError:
            ledger.conflicts += 1
            continue
        except WriteOutcomeUnknown:
            # Contention can time out a Paxos round; the batch may or may not be in.
            ledger.unknown.update(batch)
            continue
        assert new_last == last + len(batch)
        for offset, event in enumerate(batch, start=1):
            assert last + offset not in ledger.acknowledged, "a sequence number was acked twice"
            ledger.acknowledged[last + offset] = event
        wins += 1


async def test_racing_writers_never_overwrite_or_leave_gaps(
    make_journal: JournalFactory, new_pid: Callable[[], PersistenceId]
) -> None:
    # Small partitions so the race also crosses partition boundaries.
    journals = [await make_journal(partition_size=4) for _ in range(2)]
    pids = [new_pid() for _ in range(ENTITIES)]
    ledgers = {pid: Ledger() for pid in pids}
    rng = random.Random(7)
    async with asyncio.TaskGroup() as group:
        for pid in pids:
            for j, journal in enumerate(journals):
                for w in range(WRITERS_PER_JOURNAL):
                    group.create_task(
                        _writer(
                            f"j{j}w{w}", journal, pid, ledgers[pid], random.Random(rng.random())
                        )
                    )

    for pid in pids:
        ledger = ledgers[pid]
        recovery = await journals[0].load(pid)  # raises JournalCorrupt on any gap
        stored = list(recovery.events)
        assert recovery.last_sequence_nr == len(stored)
        for seq, event in ledger.acknowledged.items():
            assert stored[seq - 1] == event, f"{pid}: acknowledged event {seq} was overwritten"
        extra = {event for seq, event in enumerate(stored, 1) if seq not in ledger.acknowledged}
        assert extra <= ledger.unknown, "an event nobody was told about was stored"
        assert len(set(stored)) == len(stored), "an event was stored twice"
        assert len(ledger.acknowledged) >= 2 * WRITERS_PER_JOURNAL * WINS_PER_WRITER
        assert ledger.conflicts > 0, "the writers never raced; the test proves nothing"
