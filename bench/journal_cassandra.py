"""Journal benchmark: appends/s and latency of fenced, unfenced and in-memory journals,
and replay rate of a 10,000-event entity with and without a snapshot.

    .venv/bin/python -m bench.journal_cassandra                 # starts a test Cassandra
    .venv/bin/python -m bench.journal_cassandra --port 9042     # uses a running one

Appends: `--entities` entities, `--concurrency` tasks, each task appending one event
to an entity it owns at a time (a command's batch), `--appends` appends per mode and
round; `--rounds` rounds alternate the modes, and the median round is reported.

A freshly started Cassandra runs its Paxos path interpreted until the JIT has compiled
it, some 20,000 transactions later, and is several times slower until then; a
production node is warm. So `--jvm-warmup` seconds of fenced appends come first, and
their rate is printed as the cold-JVM figure. CPU per append is charged to this process
(the driver) and to the Cassandra process (found by its listening port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
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

# The script-style benchmarks import their shared helpers as `tools`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tools

EVENT = StoredPayload("type.googleapis.com/bench.Event", b"x" * 200)


@dataclass(frozen=True)
class AppendResult:
    mode: str
    appends: int
    seconds: float
    latencies: list[float]
    client_cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.appends / self.seconds

    def row(self) -> str:
        q = statistics.quantiles(self.latencies, n=100)
        server = (
            "n/a" if self.server_cpu is None else f"{self.server_cpu / self.appends * 1e6:,.0f}"
        )
        return (
            f"| {self.mode} | {self.appends} | **{self.rate:,.0f}** "
            f"| {q[49] * 1000:.1f} | {q[98] * 1000:.1f} "
            f"| {self.client_cpu / self.appends * 1e6:,.0f} | {server} |"
        )


async def bench_appends(
    mode: str,
    journal: Journal,
    entities: int,
    concurrency: int,
    appends: int | None,
    server_pid: int | None,
    seconds: float | None = None,
) -> AppendResult:
    """`appends` appends, or as many as fit in `seconds`."""
    run = uuid.uuid4().hex[:8]
    pids = [persistence_id("bench.Entity", f"{run}-{i}") for i in range(entities)]
    last = dict.fromkeys(pids, 0)
    latencies: list[float] = []
    remaining = appends if appends is not None else 1 << 62
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")

    async def worker(owned: list[PersistenceId]) -> None:
        nonlocal remaining
        i = 0
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            pid = owned[i % len(owned)]
            i += 1
            started = time.perf_counter()
            last[pid] = await journal.append(pid, last[pid], [EVENT])
            latencies.append(time.perf_counter() - started)

    server_before = _cpu(server_pid)
    client_before = time.process_time()
    started = time.perf_counter()
    # Each task owns its entities, as a sidecar owns its shards: no conflicts.
    async with asyncio.TaskGroup() as group:
        for w in range(concurrency):
            group.create_task(worker(pids[w::concurrency]))
    elapsed = time.perf_counter() - started
    client = time.process_time() - client_before
    server_after = _cpu(server_pid)
    server = None if server_before is None or server_after is None else server_after - server_before
    return AppendResult(mode, len(latencies), elapsed, latencies, client, server)


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        return tools.cpu_seconds(pid)
    return None


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
    server_pid = tools.listener_pid(port)
    try:
        if args.jvm_warmup > 0:
            cold = await bench_appends(
                "warm-up", fenced, args.entities, args.concurrency, None, server_pid,
                seconds=args.jvm_warmup,
            )
            print(
                f"JVM warm-up: {cold.appends:,} fenced appends in {cold.seconds:.0f} s "
                f"({cold.rate:,.0f}/s)"
            )
        journals: list[tuple[str, Journal]] = [
            ("Cassandra, fenced (LWT)", fenced),
            ("Cassandra, unfenced", unfenced),
            ("in-memory", MemoryJournal()),
        ]
        rounds: dict[str, list[AppendResult]] = {mode: [] for mode, _ in journals}
        for _ in range(args.rounds):
            for mode, journal in journals:
                rounds[mode].append(
                    await bench_appends(
                        mode, journal, args.entities, args.concurrency, args.appends, server_pid
                    )
                )
        print(
            f"concurrency {args.concurrency}, {args.entities} entities, {args.appends:,} "
            f"appends per mode and round, median of {args.rounds} rounds; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(
            "| journal | appends | appends/s | p50 ms | p99 ms "
            "| client CPU µs/append | Cassandra CPU µs/append |"
        )
        print("|---|---|---|---|---|---|---|")
        for results in rounds.values():
            print(sorted(results, key=lambda r: r.rate)[len(results) // 2].row())
        print("rates of every round: " + "; ".join(
            f"{mode}: " + ", ".join(f"{r.rate:,.0f}" for r in results)
            for mode, results in rounds.items()
        ))
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--jvm-warmup", type=float, default=60.0,
        help="seconds of fenced appends before measuring (0: none)",
    )
    args = parser.parse_args()
    if args.port is not None and args.host is None:
        args.host = "127.0.0.1"
    with cassandra_endpoint(args.host, args.port) as (host, port):
        asyncio.run(main_async(args, host, port))


if __name__ == "__main__":
    main()
