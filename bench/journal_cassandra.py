"""Journal benchmark: appends/s and latency of fenced, unfenced and in-memory journals,
and replay rate of a 10,000-event entity with and without a snapshot.

    .venv/bin/python -m bench.journal_cassandra                 # starts a test Cassandra
    .venv/bin/python -m bench.journal_cassandra --port 9042     # uses a running one

Appends: `--entities` entities, `--concurrency` tasks, each task appending one event
to an entity it owns at a time (a command's batch), `--appends` appends per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from larder_sidecar.journal.base import Journal, PersistenceId, StoredPayload, persistence_id
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.journal.memory import MemoryJournal

from tests.infra.servers import start_cassandra

EVENT = StoredPayload("type.googleapis.com/bench.Event", b"x" * 200)


@dataclass(frozen=True)
class AppendResult:
    mode: str
    appends: int
    seconds: float
    latencies: list[float]

    def row(self) -> str:
        q = statistics.quantiles(self.latencies, n=100)
        return (
            f"| {self.mode} | {self.appends} | {self.appends / self.seconds:,.0f} "
            f"| {q[49] * 1000:.1f} | {q[98] * 1000:.1f} |"
        )


async def bench_appends(
    mode: str, journal: Journal, entities: int, concurrency: int, appends: int
) -> AppendResult:
    run = uuid.uuid4().hex[:8]
    pids = [persistence_id("bench.Entity", f"{run}-{i}") for i in range(entities)]
    last = dict.fromkeys(pids, 0)
    latencies: list[float] = []
    remaining = appends

    async def worker(owned: list[PersistenceId]) -> None:
        nonlocal remaining
        i = 0
        while remaining > 0:
            remaining -= 1
            pid = owned[i % len(owned)]
            i += 1
            started = time.perf_counter()
            last[pid] = await journal.append(pid, last[pid], [EVENT])
            latencies.append(time.perf_counter() - started)

    # Each task owns its entities, as a sidecar owns its shards: no conflicts.
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for w in range(concurrency):
            group.create_task(worker(pids[w::concurrency]))
    return AppendResult(mode, appends, time.perf_counter() - started, latencies)


async def bench_replay(journal: CassandraJournal, events: int, snapshot_at: int | None) -> str:
    pid = persistence_id("bench.Replay", uuid.uuid4().hex)
    batch = 100
    for start in range(0, events, batch):
        snap = EVENT if snapshot_at == start + batch else None
        await journal.append(pid, start, [EVENT] * batch, snapshot=snap)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        recovery = await journal.load(pid)
        timings.append(time.perf_counter() - started)
        assert recovery.last_sequence_nr == events
    best = min(timings)
    replayed = len(recovery.events)
    label = "no snapshot" if snapshot_at is None else f"snapshot at {snapshot_at}"
    return (
        f"| {events} events, {label} | {replayed} | {best * 1000:.0f} "
        f"| {replayed / best:,.0f} |"
    )


@contextlib.contextmanager
def cassandra_endpoint(host: str | None, port: int | None) -> Iterator[tuple[str, int]]:
    if host is not None and port is not None:
        yield host, port
        return
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as workdir:
        server = start_cassandra(Path(workdir))
        try:
            yield server.host, server.port
        finally:
            server.close()


async def main_async(args: argparse.Namespace, host: str, port: int) -> None:
    base = CassandraSettings(
        contact_points=(host,),
        port=port,
        keyspace="larder_bench",
        read_consistency="LOCAL_ONE",
        write_consistency="LOCAL_ONE",
        serial_consistency="SERIAL",
    )
    fenced = CassandraJournal(base)
    unfenced = CassandraJournal(replace(base, fencing="unfenced"))
    await fenced.start()
    await unfenced.start()
    try:
        # Warm up connections and prepared statement caches.
        await bench_appends("warm-up", fenced, 16, 16, 200)
        results = [
            await bench_appends(mode, journal, args.entities, args.concurrency, args.appends)
            for mode, journal in (
                ("Cassandra, fenced (LWT)", fenced),
                ("Cassandra, unfenced", unfenced),
                ("in-memory", MemoryJournal()),
            )
        ]
        print("| journal | appends | appends/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for result in results:
            print(result.row())
        print()
        print("| replay | events replayed | load ms | events/s |")
        print("|---|---|---|---|")
        print(await bench_replay(fenced, 10_000, None))
        print(await bench_replay(fenced, 10_000, 9_000))
    finally:
        await fenced.close()
        await unfenced.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--appends", type=int, default=5_000)
    args = parser.parse_args()
    if args.port is not None and args.host is None:
        args.host = "127.0.0.1"
    with cassandra_endpoint(args.host, args.port) as (host, port):
        asyncio.run(main_async(args, host, port))


if __name__ == "__main__":
    main()
