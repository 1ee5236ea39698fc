"""What idempotency keys cost the Cassandra journal: fenced one-event appends without a
key and with one (each append then also stores the command's record, as the entity
does), side by side; and an entity's activation (`load`) with and without records.

    .venv/bin/python -m bench.idempotency_journal                 # starts a test Cassandra
    .venv/bin/python -m bench.idempotency_journal --port 9042     # uses a running one

Appends: `--entities` entities, `--concurrency` tasks, each owning its entities and
appending one event at a time; `--appends` appends per mode and round, `--rounds`
rounds alternating the modes, the median round reported. A keyed append's record is
what the entity stores for a small reply (fingerprint + ~100 bytes); each entity keeps
its records under the default bound (100), so once that is reached every keyed append
also drops the oldest record. `--jvm-warmup` seconds of fenced appends come first (a
fresh node runs Paxos interpreted, see docs/performance.md). CPU per append is charged
to this process and to the Cassandra process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from larder_sidecar.entities.idempotency import IdempotencyPolicy, Records
from larder_sidecar.journal.base import IdempotencyRecord, PersistenceId, persistence_id
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings

# The script-style benchmarks import each other and their shared helpers by file name.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tools
from journal_cassandra import EVENT, AppendResult, _cpu, bench_appends, cassandra_endpoint

REPLY = b"r" * 100


async def bench_keyed(
    journal: CassandraJournal,
    entities: int,
    concurrency: int,
    appends: int,
    server_pid: int | None,
) -> AppendResult:
    run = uuid.uuid4().hex[:8]
    pids = [persistence_id("bench.Keyed", f"{run}-{i}") for i in range(entities)]
    last = dict.fromkeys(pids, 0)
    records = {pid: Records(IdempotencyPolicy()) for pid in pids}
    latencies: list[float] = []
    remaining = appends

    async def worker(owned: list[PersistenceId]) -> None:
        nonlocal remaining
        i = 0
        while remaining > 0:
            remaining -= 1
            pid = owned[i % len(owned)]
            i += 1
            record = IdempotencyRecord(uuid.uuid4().hex, time.time(), bytes(18) + REPLY)
            change = records[pid].write([record])
            started = time.perf_counter()
            last[pid] = await journal.append(pid, last[pid], [EVENT], None, change)
            latencies.append(time.perf_counter() - started)
            assert change is not None
            records[pid].stored(change)

    server_before = _cpu(server_pid)
    client_before = time.process_time()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for w in range(concurrency):
            group.create_task(worker(pids[w::concurrency]))
    elapsed = time.perf_counter() - started
    client = time.process_time() - client_before
    server_after = _cpu(server_pid)
    server = None if server_before is None or server_after is None else server_after - server_before
    return AppendResult(
        "fenced, with a key", len(latencies), elapsed, latencies, client, server
    )


async def bench_activation(journal: CassandraJournal, keyed: bool) -> str:
    """`load` of an entity with 200 events (no snapshot), with 100 records or none."""
    pid = persistence_id("bench.Activation", uuid.uuid4().hex)
    records = Records(IdempotencyPolicy())
    for seq in range(200):
        change = None
        if keyed:
            record = IdempotencyRecord(uuid.uuid4().hex, time.time(), bytes(18) + REPLY)
            change = records.write([record])
        await journal.append(pid, seq, [EVENT], None, change)
        if change is not None:
            records.stored(change)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        recovery = await journal.load(pid)
        timings.append(time.perf_counter() - started)
    assert len(recovery.idempotency) == (100 if keyed else 0)
    label = "100 records" if keyed else "no records"
    return (
        f"| 200 events, {label} | {statistics.median(timings) * 1000:.2f} "
        f"| {min(timings) * 1000:.2f} |"
    )


async def main_async(args: argparse.Namespace, host: str, port: int) -> None:
    journal = CassandraJournal(
        CassandraSettings(
            contact_points=(host,),
            port=port,
            keyspace="larder_bench",
            read_consistency="LOCAL_ONE",
            write_consistency="LOCAL_ONE",
            serial_consistency="SERIAL",
        )
    )
    await journal.start()
    server_pid = tools.listener_pid(port)
    try:
        if args.jvm_warmup > 0:
            cold = await bench_appends(
                "warm-up", journal, args.entities, args.concurrency, None, server_pid,
                seconds=args.jvm_warmup,
            )
            print(f"JVM warm-up: {cold.appends:,} fenced appends ({cold.rate:,.0f}/s)")
        rounds: dict[str, list[AppendResult]] = {"plain": [], "keyed": []}
        for _ in range(args.rounds):
            rounds["plain"].append(
                await bench_appends(
                    "fenced, no key", journal, args.entities, args.concurrency, args.appends,
                    server_pid,
                )
            )
            rounds["keyed"].append(
                await bench_keyed(
                    journal, args.entities, args.concurrency, args.appends, server_pid
                )
            )
        print(
            f"concurrency {args.concurrency}, {args.entities} entities, {args.appends:,} "
            f"appends per mode and round, median of {args.rounds} rounds; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(
            "| append | appends | appends/s | p50 ms | p99 ms "
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
        print("| activation (`load`) | median ms | best ms |")
        print("|---|---|---|")
        for keyed in (False, True, False, True):
            print(await bench_activation(journal, keyed))
    finally:
        await journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--appends", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jvm-warmup", type=float, default=60.0)
    args = parser.parse_args()
    if args.port is not None and args.host is None:
        args.host = "127.0.0.1"
    with cassandra_endpoint(args.host, args.port) as (host, port):
        asyncio.run(main_async(args, host, port))


if __name__ == "__main__":
    main()
