"""Cassandra stops in the middle of a load run through a real sidecar process, then
comes back: commands fail fast with UNAVAILABLE, readiness drops after the grace,
and the same sidecar process serves again by itself. Afterwards the journal holds
every acknowledged command exactly where its reply said, and nothing else that the
sidecar reported as not stored."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import grpc
import grpc.aio

from tests.infra.cassandra import CassandraServer

from .conftest import (
    JournalTables,
    Pod,
    PodFactory,
    cassandra_restarted_finally,
    counter_pid,
)

ENTITIES = 6
REQUEST_TIMEOUT = 2.0
GRACE = 3.0
SNAPSHOT_EVERY = 4
DEADLINE = 20.0


@dataclass
class Driver:
    """One client task per entity, so the entity's commands have a known order."""

    entity: str
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    """tag -> (events in the reply = its sequence number, value in the reply)"""
    not_stored: set[str] = field(default_factory=set)
    """UNAVAILABLE saying nothing was stored."""
    unknown: set[str] = field(default_factory=set)
    """UNAVAILABLE saying the outcome is unknown, or our deadline passed."""
    aborted_after_unknown: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    failure_seconds: list[float] = field(default_factory=list)
    attempts: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def failures(self) -> int:
        return len(self.failure_seconds)


async def _drive(pod: Pod, driver: Driver, stop: asyncio.Event) -> None:
    last_was_unknown = False
    for n in itertools.count():
        if stop.is_set():
            return
        tag = f"{driver.entity}-{n}"
        started = time.monotonic()
        try:
            reply = await pod.add(driver.entity, tag, 1 + n % 7, deadline=DEADLINE)
        except grpc.aio.AioRpcError as e:
            driver.failure_seconds.append(time.monotonic() - started)
            code, details = e.code(), e.details() or ""
            if code is grpc.StatusCode.DEADLINE_EXCEEDED or (
                code is grpc.StatusCode.UNAVAILABLE and "outcome unknown" in details
            ):
                driver.unknown.add(tag)
                last_was_unknown = True
            elif code is grpc.StatusCode.UNAVAILABLE and "journal unavailable" in details:
                driver.not_stored.add(tag)
            elif code is grpc.StatusCode.ABORTED and last_was_unknown:
                # A write whose outcome was unknown may still be completed by Cassandra
                # after the entity reloaded; then the reloaded state is stale once.
                driver.aborted_after_unknown.add(tag)
                last_was_unknown = False
            else:
                driver.unexpected.append(f"{tag}: {code.name} {details}")
            async with driver.attempts:
                driver.attempts.notify_all()
            # Back off as a client retrying a failed command would.
            await asyncio.sleep(0.05)
            continue
        last_was_unknown = False
        driver.acked[tag] = (int(reply.events), int(reply.value))
        async with driver.attempts:
            driver.attempts.notify_all()


async def _until(drivers: list[Driver], predicate: Callable[[Driver], bool], within: float) -> None:
    async with asyncio.timeout(within):
        for d in drivers:
            async with d.attempts:
                await d.attempts.wait_for(lambda d=d: predicate(d))  # type: ignore[misc]


async def test_cassandra_stopped_and_restarted_under_load(
    cassandra: CassandraServer, start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod(
        "outage",
        grace=f"{GRACE}s",
        snapshot_every=SNAPSHOT_EVERY,
        REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT}s",
        PARTITION_SIZE=5,
    )
    drivers = [Driver(f"load{i}") for i in range(ENTITIES)]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for d in drivers:
            group.create_task(_drive(pod, d, stop))
        try:
            await _until(drivers, lambda d: len(d.acked) >= 5, 60)
            async with cassandra_restarted_finally(cassandra):
                stopping_at = time.monotonic()
                await asyncio.to_thread(cassandra.stop)
                failed_before = {d.entity: d.failures for d in drivers}
                # Commands fail, and fail fast, while the journal is away.
                await _until(drivers, lambda d: d.failures >= failed_before[d.entity] + 3, 30)
                outage_failures = [
                    s for d in drivers for s in d.failure_seconds[failed_before[d.entity] :]
                ]
                assert max(outage_failures) < REQUEST_TIMEOUT + 1.5, outage_failures
                # Readiness drops once the grace has run out, not before: the last
                # answer came at most one probe interval before the stop began.
                await pod.wait_ready(False, within=GRACE + REQUEST_TIMEOUT + 10)
                assert time.monotonic() - stopping_at >= GRACE - 1.0
                acked_before = {d.entity: len(d.acked) for d in drivers}
                await asyncio.to_thread(cassandra.start)
            # The same process recovers by itself: ready again, commands succeed.
            await pod.wait_ready(True, within=60)
            await _until(drivers, lambda d: len(d.acked) >= acked_before[d.entity] + 3, 90)
        finally:
            # The drivers finish their command in flight, so its outcome is known.
            stop.set()

    for d in drivers:
        assert not d.unexpected, d.unexpected
        stored = await tables.events(counter_pid(d.entity))
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1)), "a gap"
        events = [pb.Added.FromString(payload) for _, payload in stored]
        seq_of = {e.tag: i + 1 for i, e in enumerate(events)}
        assert len(seq_of) == len(events), f"{d.entity}: a command's event is stored twice"
        running = list(itertools.accumulate(e.amount for e in events))
        for tag, (seq, value) in d.acked.items():
            assert seq_of.get(tag) == seq, f"acknowledged {tag} is not event {seq}"
            assert running[seq - 1] == value, f"{tag}: the reply saw other events"
        assert not (d.not_stored | d.aborted_after_unknown) & set(seq_of), (
            "a command reported as not stored is in the journal"
        )
        assert set(seq_of) <= set(d.acked) | d.unknown, "stored, but neither acked nor unknown"
        # Nothing half-applied: the stored snapshot is the state after its event.
        snapshot = await tables.snapshot(counter_pid(d.entity))
        if snapshot is not None:
            seq = snapshot.sequence_nr
            assert seq % SNAPSHOT_EVERY == 0 and seq <= len(events)
            state = pb.CounterState.FromString(snapshot.payload)
            assert (state.value, state.events) == (running[seq - 1], seq)
