"""Two sidecar processes that both believe they own the same entities (as during a
shard hand-off), on one Cassandra with the fenced journal: the journal admits one
writer per sequence number, the losers get ABORTED and reload."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from types import ModuleType

import grpc
import grpc.aio
import pytest

from .conftest import JournalTables, Pod, PodFactory, counter_pid, status_of

ENTITIES = 4
TASKS_PER_POD = 8
COMMANDS_PER_POD = 240


def amount_of(tag: str) -> int:
    return 1 + sum(tag.encode()) % 9


async def test_the_stale_writer_is_aborted_and_reloads(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    a, b = await start_pod("a"), await start_pod("b")
    assert (await b.add("shared", "b1")).events == 1  # b now holds the entity at 1
    assert (await a.add("shared", "a1")).events == 2  # a loads 1 event and writes 2

    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await b.add("shared", "b2")  # b still expects 1
    assert lost.value.code() is grpc.StatusCode.ABORTED
    assert "another writer changed this entity" in (lost.value.details() or "")

    # The loser reloaded: its next command runs on the journal's state.
    reply = await b.add("shared", "b3", 5)
    assert (reply.value, reply.events) == (7, 3)
    stored = await tables.events(counter_pid("shared"))
    assert [(seq, pb.Added.FromString(p).tag) for seq, p in stored] == [
        (1, "b1"),
        (2, "a1"),
        (3, "b3"),
    ]


@dataclass
class Ledger:
    """What the clients saw, per tag."""

    acked: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """tag -> (entity, events in the reply = its sequence number, value in the reply)"""
    aborted: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    """UNAVAILABLE: not expected with Cassandra up, but allowed to have landed."""
    other: list[str] = field(default_factory=list)


async def _drive(pod: Pod, ledger: Ledger, tags: itertools.count[int], budget: list[int]) -> None:
    while budget[0] > 0:
        budget[0] -= 1
        n = next(tags)
        tag, entity = f"{pod.name}-{n}", f"e{n % ENTITIES}"
        try:
            reply = await pod.add(entity, tag, amount_of(tag))
        except grpc.aio.AioRpcError as e:
            code = status_of(e)
            if code is grpc.StatusCode.ABORTED:
                ledger.aborted[tag] = entity
            elif code is grpc.StatusCode.UNAVAILABLE:
                ledger.unknown[tag] = entity
            else:
                ledger.other.append(f"{tag}: {e.code().name} {e.details()}")
            continue
        ledger.acked[tag] = (entity, int(reply.events), int(reply.value))


async def test_racing_sidecars_never_gap_or_overwrite(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pods = [await start_pod("a"), await start_pod("b")]
    ledger = Ledger()
    tags = itertools.count()
    async with asyncio.TaskGroup() as group:
        for pod in pods:
            budget = [COMMANDS_PER_POD]
            for _ in range(TASKS_PER_POD):
                group.create_task(_drive(pod, ledger, tags, budget))

    assert not ledger.other, ledger.other
    assert ledger.aborted, "the two sidecars never raced: the test proves nothing"
    assert ledger.acked

    for i in range(ENTITIES):
        entity = f"e{i}"
        stored = await tables.events(counter_pid(entity))
        # No gap: the sequence numbers are exactly 1..n.
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
        events = [pb.Added.FromString(p) for _, p in stored]
        seq_of = {e.tag: seq for seq, e in zip((s for s, _ in stored), events, strict=True)}
        assert len(seq_of) == len(events), f"{entity}: a command's event is stored twice"
        running = list(itertools.accumulate(e.amount for e in events))
        for tag, (acked_entity, seq, value) in ledger.acked.items():
            if acked_entity != entity:
                continue
            # Every acknowledged command is stored exactly where its reply said,
            # after exactly the events its reply had seen: nothing overwrote it.
            assert seq_of.get(tag) == seq, f"acknowledged {tag} is not event {seq} of {entity}"
            assert running[seq - 1] == value
        for tag, aborted_entity in ledger.aborted.items():
            assert not (aborted_entity == entity and tag in seq_of), f"aborted {tag} was stored"
        unexplained = set(seq_of) - set(ledger.acked) - set(ledger.unknown)
        assert not unexplained, f"{entity}: stored but never acknowledged: {unexplained}"

        # Each sidecar's next command on the entity succeeds on the journal's state,
        # at most after one ABORTED that makes it reload.
        for pod in pods:
            try:
                reply = await pod.add(entity, f"final-{pod.name}", 1)
            except grpc.aio.AioRpcError as e:
                assert e.code() is grpc.StatusCode.ABORTED
                reply = await pod.add(entity, f"final-{pod.name}-again", 1)
            assert reply.events == len(await tables.events(counter_pid(entity)))

