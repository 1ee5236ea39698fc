"""confluent-kafka vs aiokafka on this machine: produce and consume throughput, one run.

Each client produces N records (idempotent, acks=all, like the sidecar's producer) to
its own topic, then consumes them all back in one consumer group with manual commits
(like the sidecar's consumer). Both clients see the same broker, record size and count.

    .venv/bin/python bench/eventing_clients.py [--records 50000] [--size 100]
        [--bootstrap-servers HOST:PORT]

Without --bootstrap-servers a Kafka is started from the test infrastructure's cache
(`python -m tests.infra provision kafka` first).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

REPO = Path(__file__).resolve().parent.parent

HEADERS: list[tuple[str, str | bytes | None]] = [
    ("ce-specversion", b"1.0"),
    ("ce-type", b"bench.Record"),
]


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    sys.path.insert(0, str(REPO))
    from tests.infra.servers import start_kafka  # noqa: PLC0415 - only without a broker

    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as workdir:
        server = start_kafka(Path(workdir))
        try:
            yield server.bootstrap_servers
        finally:
            server.close()


def confluent_produce(bootstrap: str, topic: str, n: int, payload: bytes) -> float:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
         "linger.ms": 5}
    )
    started = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, payload, key=str(i % 64).encode(), headers=HEADERS)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    return n / (time.perf_counter() - started)


def confluent_consume(bootstrap: str, topic: str, n: int) -> float:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    seen = 0
    started = 0.0
    while seen < n:
        batch = consumer.consume(500, 1.0)
        if batch and not started:
            started = time.perf_counter()
        for record in batch:
            if record.error() is None:
                record.headers()
                seen += 1
        if batch:
            consumer.commit(asynchronous=True)
    elapsed = time.perf_counter() - started
    consumer.commit(asynchronous=False)
    consumer.close()
    return n / elapsed


async def aiokafka_produce(bootstrap: str, topic: str, n: int, payload: bytes) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [
            await producer.send(topic, payload, key=str(i % 64).encode(), headers=HEADERS)
            for i in range(n)
        ]
        await asyncio.gather(*pending)
        return n / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def aiokafka_consume(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=uuid.uuid4().hex,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        started = 0.0
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if batches and not started:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    _ = record.headers
                    seen += 1
            if batches:
                await consumer.commit()
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--bootstrap-servers")
    args = parser.parse_args()
    payload = b"x" * args.size
    with broker(args.bootstrap_servers) as bootstrap:
        suffix = uuid.uuid4().hex[:8]
        # A warm-up so neither client pays for the first topic's metadata alone.
        confluent_produce(bootstrap, f"bench-warmup-{suffix}", 100, payload)
        c_topic, a_topic = f"bench-confluent-{suffix}", f"bench-aiokafka-{suffix}"
        results = {
            "confluent-kafka produce": confluent_produce(bootstrap, c_topic, args.records, payload),
            "aiokafka produce": asyncio.run(
                aiokafka_produce(bootstrap, a_topic, args.records, payload)
            ),
            "confluent-kafka consume": confluent_consume(bootstrap, c_topic, args.records),
            "aiokafka consume": asyncio.run(aiokafka_consume(bootstrap, a_topic, args.records)),
        }
    print(f"{args.records} records of {args.size} bytes")
    for name, rate in results.items():
        print(f"{name:26s} {rate:10,.0f} records/s")


if __name__ == "__main__":
    main()
