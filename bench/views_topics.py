"""Views fed from a Kafka topic, in one process (no gRPC, no sidecar process): records/s
from the real Kafka through the view's consumer and delivery into the SQLite view store.

    .venv/bin/python bench/views_topics.py [--records 20000] [--partitions 4]
        [--rounds 3] [--bootstrap-servers HOST:PORT]

Two arms, alternated round by round on the same broker (side by side, so a loaded
machine weighs on both alike), each round on a fresh topic, consumer group and store:

- `plain`: `QuotesView` of the view test protos (`tests/unit/sidecar/views/view_protos/
  larder/viewtopic/quotes.proto`), no `transform_updates`: each record is stored as the
  row (records of a partition share store transactions);
- `transformed`: `VolumesView`, whose update handler (in process here, standing in for
  the user function's `Views/Handle`) adds each trade to the previous row: one record
  at a time, one store transaction each.

The records (keyed and `ce-subject`ed by one of 1,000 symbols) are produced before the
clock starts; it runs from the first record applied (joining the consumer group is left
out) until the store's offsets cover every record, and is scaled to all records. CPU is
the process's (all threads, librdkafka's included) per record; the load
average is printed because the machine is shared.

Without --bootstrap-servers a Kafka is started from the test infrastructure's cache
(`python -m tests.infra provision kafka` first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from google.protobuf import any_pb2
from larder_sidecar.eventing.settings import KafkaSettings
from larder_sidecar.model import build_model
from larder_sidecar.views.delivery import ViewDelivery
from larder_sidecar.views.handle import Answer, HandleClient
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.sqlite_store import SqliteViewStore
from larder_sidecar.views.topic_source import TopicFeed, TopicSources
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.infra.servers import start_kafka  # noqa: E402
from tests.unit.sidecar.views.quotes import (  # noqa: E402
    QUOTES,
    VOLUMES,
    compile_quotes,
    quotes_spec,
)

SYMBOLS = 1000


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


class InProcessHandler(HandleClient):
    """The volumes' update handler without the gRPC hop: adds a trade to the row."""

    def __init__(self, pb: ModuleType) -> None:
        self.pb = pb

    async def receive(self, event: Any, entity_id: str) -> Answer:
        trade = self.pb.Traded.FromString(event.payload.value)
        row = self.pb.Volume(symbol=entity_id)
        if event.HasField("by_subject_lookup_result"):
            row.MergeFromString(event.by_subject_lookup_result.value.value)
        row.total += trade.quantity
        row.trades += 1
        packed = any_pb2.Any()
        packed.Pack(row)
        return Answer(entity_id, row=packed)


def fill(bootstrap: str, topic: str, arm: str, records: int, partitions: int,
         pb: ModuleType) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    ).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    type_name = b"larder.viewtopic." + (b"Quote" if arm == "plain" else b"Traded")
    for i in range(records):
        symbol = f"S{i % SYMBOLS}"
        value = (pb.Quote(symbol=symbol, price=i) if arm == "plain"
                 else pb.Traded(quantity=i)).SerializeToString()
        headers: list[tuple[str, str | bytes | None]] = [
            ("ce-specversion", b"1.0"), ("ce-type", type_name), ("ce-subject", symbol.encode()),
        ]
        while True:
            try:
                producer.produce(topic, value, key=symbol.encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


async def one_round(arm: str, args: argparse.Namespace, bootstrap: str, pb: ModuleType,
                    desc: bytes, workdir: Path) -> tuple[float, float]:
    """Seconds and CPU seconds to apply `args.records` records of a fresh topic."""
    topic = f"bench-view-{arm}-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(fill, bootstrap, topic, arm, args.records, args.partitions, pb)
    model = build_model(quotes_spec(desc), {(0, 7)})
    view = QUOTES if arm == "plain" else VOLUMES
    updates = model.views[view].updates[:1]  # UpdateQuote, or OnTraded
    store = SqliteViewStore(workdir / f"{topic}.db")
    delivery = ViewDelivery(
        {view: model.views[view]}, store, InProcessHandler(pb), ViewMetrics(CollectorRegistry()),
        load_value=None,  # type: ignore[arg-type]  # no entity sources
    )
    await delivery.start()
    sources = TopicSources(
        [TopicFeed(view, topic, f"bench-{topic}", updates)], delivery,
        KafkaSettings(bootstrap_servers=bootstrap), CollectorRegistry(),
    )
    await sources.start()

    async def applied() -> int:
        return sum((await store.offsets(view)).values())

    # Progress is read from the store (nothing signals it): polled.
    while await applied() == 0:  # noqa: ASYNC110 - joining the group takes seconds
        await asyncio.sleep(0.01)
    started, cpu = time.perf_counter(), time.process_time()
    first = await applied()
    while await applied() < args.records:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await sources.stop()
    await delivery.close()
    return seconds / (args.records - first) * args.records, cpu / (
        args.records - first
    ) * args.records


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-views-topics-") as tmp:
        workdir = Path(tmp)
        pb, desc = compile_quotes(workdir)
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "transformed": []}
        for r in range(args.rounds):
            for arm in ("plain", "transformed") if r % 2 == 0 else ("transformed", "plain"):
                seconds, cpu = await one_round(arm, args, bootstrap, pb, desc, workdir)
                results[arm].append((seconds, cpu))
                print(f"round {r + 1} {arm:11}: {args.records / seconds:8,.0f} records/s, "
                      f"{cpu / args.records * 1e6:5.0f} us CPU/record, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        for arm, runs in results.items():
            rates = [args.records / s for s, _ in runs]
            cpus = [c / args.records * 1e6 for _, c in runs]
            print(f"{arm:11}: median {statistics.median(rates):,.0f} records/s "
                  f"(range {min(rates):,.0f}-{max(rates):,.0f}), "
                  f"median {statistics.median(cpus):.0f} us CPU/record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap-servers")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    with broker(args.bootstrap_servers) as bootstrap:
        asyncio.run(run(args, bootstrap))
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
