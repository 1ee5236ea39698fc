"""Records/s consumed into an event-sourced entity, end to end:
Kafka -> larder-sidecar (a real process) -> user function (our SDK) -> journal -> commit.

A topic with --partitions partitions is filled with --records AddRequest records over
--entities entities (keyed by entity, so each entity's records stay in order on one
partition). Then the sidecar starts and the clock runs from its first committed offset
until the consumer group's committed offsets cover every record. The counter's `out`
topic is published too, so each record also costs one produced reply.

    .venv/bin/python bench/eventing_consume.py [--records 20000] [--partitions 8]
        [--entities 200] [--journal memory|sqlite] [--max-in-flight 100]
        [--bootstrap-servers HOST:PORT]

--max-in-flight is the sidecar's LARDER_KAFKA_MAX_IN_FLIGHT (records of one partition
in flight); 1 is the strictly sequential mode, one record after another per partition.

--compare-dedup N runs N rounds of each of LARDER_KAFKA_DEDUPLICATE=on and off, in
alternating order, on one topic (each round appends --records records and a fresh
sidecar consumes them), and reports records/s and the sidecar's CPU per record for each:
what deriving an idempotency key per record and keeping it in the journal costs.

Without --bootstrap-servers a Kafka is started from the test infrastructure's cache
(`python -m tests.infra provision kafka` first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.infra.servers import start_kafka  # noqa: E402
from tests.integration.eventing.counter_function import (  # noqa: E402
    compile_counter,
    counter_service,
)

sys.path.insert(0, str(REPO / "bench"))
from tools import cpu_seconds  # noqa: E402

SIDECAR = Path(sys.executable).parent / "larder-sidecar"
GROUP = "larder.eventingtest.Counter"  # the service name: the default consumer group


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as workdir:
        server = start_kafka(Path(workdir))
        try:
            yield server.bootstrap_servers
        finally:
            server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create(bootstrap: str, topic: str, out_topic: str, args: argparse.Namespace) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([
        NewTopic(topic, num_partitions=args.partitions, replication_factor=1),
        NewTopic(out_topic, num_partitions=args.partitions, replication_factor=1),
    ]).values():
        future.result(30)


def fill(bootstrap: str, topic: str, args: argparse.Namespace, pb: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    headers: list[tuple[str, str | bytes | None]] = [
        ("ce-specversion", b"1.0"), ("ce-type", b"larder.eventingtest.AddRequest"),
               ("ce-datacontenttype", b"application/protobuf")]
    add = pb.AddRequest  # type: ignore[attr-defined]
    for n in range(args.records):
        entity = f"e{n % args.entities}"
        value = add(id=entity, amount=1, tag=str(n)).SerializeToString()
        # CloudEvents ids, as the published SDKs' producers send them.
        with_id = [*headers, ("ce-source", b"/bench"), ("ce-id", uuid.uuid4().hex.encode())]
        while True:
            try:
                producer.produce(topic, value, key=entity.encode(), headers=with_id)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def committed(consumer: Consumer, topic: str, partitions: int) -> int:
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    return sum(max(o.offset, 0) for o in offsets)


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> float:
    protos = compile_counter(workdir / "protos")
    await asyncio.to_thread(create, bootstrap, protos.topic_in, protos.topic_out, args)
    await asyncio.to_thread(fill, bootstrap, protos.topic_in, args, protos.pb)
    service = counter_service(protos.pb)
    await service.start()
    assert service.port is not None
    try:
        rate, _ = await consume(args, bootstrap, workdir, protos.topic_in, service.port, 1, "on")
        return rate
    finally:
        await service.stop(0)


async def compare_dedup(args: argparse.Namespace, bootstrap: str, workdir: Path) -> None:
    protos = compile_counter(workdir / "protos")
    await asyncio.to_thread(create, bootstrap, protos.topic_in, protos.topic_out, args)
    service = counter_service(protos.pb)
    await service.start()
    assert service.port is not None
    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    try:
        batch = 0
        for n in range(args.compare_dedup):
            for mode in (("on", "off") if n % 2 == 0 else ("off", "on")):
                batch += 1
                await asyncio.to_thread(fill, bootstrap, protos.topic_in, args, protos.pb)
                load = os.getloadavg()[0]
                rate, cpu = await consume(
                    args, bootstrap, workdir, protos.topic_in, service.port, batch, mode
                )
                results[mode].append((rate, cpu))
                print(f"round {n + 1}, dedup {mode}: {rate:,.0f} records/s, sidecar "
                      f"{cpu:,.0f} µs CPU/record (load {load:.1f})", flush=True)
    finally:
        await service.stop(0)
    for mode, rows in results.items():
        rates = sorted(r for r, _ in rows)
        cpus = sorted(c for _, c in rows)
        print(f"dedup {mode}: median {rates[len(rates) // 2]:,.0f} records/s, "
              f"{cpus[len(cpus) // 2]:,.0f} µs CPU/record")
    ratios = sorted(on[1] / off[1] for on, off in zip(results["on"], results["off"], strict=True))
    print("CPU/record on/off per round: " + ", ".join(f"{r:.2f}" for r in ratios))


async def consume(
    args: argparse.Namespace, bootstrap: str, workdir: Path, topic: str, function_port: int,
    batch: int, dedup: str,
) -> tuple[float, float]:
    """Start a sidecar, wait until the group's commits cover `batch` fills; return
    records/s and the sidecar's CPU µs per record over that window."""
    env = {
        **os.environ,
        "USER_FUNCTION_PORT": str(function_port),
        "LARDER_PORT": str(free_port()),
        "LARDER_ADMIN_PORT": str(free_port()),
        "LARDER_INTERNAL_PORT": str(free_port()),
        "LARDER_JOURNAL_TYPE": args.journal,
        "LARDER_JOURNAL_SQLITE_PATH": str(workdir / f"journal-{batch}.sqlite3"),
        "LARDER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LARDER_LOG_LEVEL": "WARNING",
        "LARDER_KAFKA_MAX_IN_FLIGHT": str(args.max_in_flight),
        "LARDER_KAFKA_DEDUPLICATE": dedup,
    }
    with (workdir / "sidecar.log").open("ab") as log:
        sidecar = await asyncio.create_subprocess_exec(str(SIDECAR), env=env, stderr=log)
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    target = batch * args.records
    try:
        started = cpu_start = 0.0
        first = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = await asyncio.to_thread(committed, watcher, topic, args.partitions)
            if done > target - args.records and not started:
                started, first = time.perf_counter(), done
                cpu_start = cpu_seconds(sidecar.pid)
            if done >= target:
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(sidecar.pid) - cpu_start
                return (done - first) / elapsed, cpu * 1e6 / max(1, done - first)
            assert sidecar.returncode is None, (workdir / "sidecar.log").read_text()
            # Another process's progress is only visible by asking the broker.
            await asyncio.sleep(0.05)
        raise TimeoutError("the records were not all consumed in 10 minutes")
    finally:
        watcher.close()
        sidecar.terminate()
        await sidecar.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--entities", type=int, default=200)
    parser.add_argument("--journal", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--compare-dedup", type=int, default=0, metavar="ROUNDS")
    args = parser.parse_args()
    if args.compare_dedup:
        with broker(args.bootstrap_servers) as bootstrap, tempfile.TemporaryDirectory() as tmp:
            asyncio.run(compare_dedup(args, bootstrap, Path(tmp)))
        return
    with broker(args.bootstrap_servers) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        rate = asyncio.run(run(args, bootstrap, Path(tmp)))
    print(f"{args.records} records, {args.partitions} partitions, {args.entities} entities, "
          f"{args.journal} journal, max in flight {args.max_in_flight}: "
          f"{rate:,.0f} records/s end to end")


if __name__ == "__main__":
    main()
