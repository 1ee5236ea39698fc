"""Records delivered twice are applied once: a producer's duplicate CloudEvent, and
records redelivered after the consumer group's offsets went back (what a crash before
the commit does), through a real `larder-sidecar` and a real Kafka. The same
redelivery with `LARDER_KAFKA_DEDUPLICATE=off` applies them twice, which shows the
test can fail."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.infra.kafka import KafkaServer

from .conftest import Header, ce_headers, http_get
from .counter_function import CounterProtos
from .test_eventing_flow import ADD, wait_total

GROUP = "larder.eventingtest.Counter"
"""The sidecar's consumer group for the counter: its service, as no consumer_group is set."""


def produce_at(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[Header]]]
) -> list[tuple[int, int]]:
    """Produce in order; return each record's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    places: list[tuple[int, int]] = []

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        places.append((message.partition(), message.offset()))

    for key, value, headers in records:
        producer.produce(topic, value, key=key, headers=headers, on_delivery=delivered)
    assert producer.flush(30) == 0
    return places


def committed(bootstrap: str, topic: str, partitions: set[int]) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(GROUP, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[GROUP].result()
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def rewind(bootstrap: str, topic: str, to: dict[int, int]) -> None:
    """Set the group's committed offsets back (the group must have no member)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        GROUP, [TopicPartition(topic, p, offset) for p, offset in to.items()]
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.alter_consumer_group_offsets([request])[GROUP].result()
            return
        except Exception:
            # The coordinator may not have seen the stopped sidecar leave yet.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def until_committed_past(
    bootstrap: str, topic: str, places: list[tuple[int, int]], seconds: float = 60.0
) -> None:
    """Until the group's committed offset is past each record: all were finished."""
    last: dict[int, int] = {}
    for partition, offset in places:
        last[partition] = max(last.get(partition, -1), offset)
    seen: dict[int, int] = {}
    for _ in range(int(seconds / 0.2)):
        seen = await asyncio.to_thread(committed, bootstrap, topic, set(last))
        if all(seen.get(p, -1) > offset for p, offset in last.items()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"committed offsets {seen} never passed {last}")


async def consumed(sidecar: Any, topic: str) -> float:
    status, text = await http_get(sidecar.admin, "/metrics")
    assert status == 200
    name = f'larder_eventing_records_consumed_total{{topic="{topic}"}}'
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _add(counter: CounterProtos, entity: str, amount: int, tag: str) -> bytes:
    return bytes(counter.pb.AddRequest(id=entity, amount=amount, tag=tag).SerializeToString())


async def test_a_producers_duplicate_event_is_applied_once_and_replied_with_one_id(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, topic_reader: Any
) -> None:
    sidecar = sidecar_factory()
    await sidecar.start()
    entity = f"dup-{uuid.uuid4().hex[:6]}"
    first = ce_headers(ADD)  # a producer that retried sends the same event again
    records = [
        (entity.encode(), _add(counter, entity, 5, "a"), first),
        (entity.encode(), _add(counter, entity, 5, "a"), first),
        (entity.encode(), _add(counter, entity, 7, "b"), ce_headers(ADD)),
    ]
    places = await asyncio.to_thread(
        produce_at, kafka.bootstrap_servers, counter.topic_in, records
    )
    await until_committed_past(kafka.bootstrap_servers, counter.topic_in, places)
    body = await wait_total(sidecar, entity, 12)
    assert body == {"id": entity, "total": "12", "tags": ["a", "b"]}

    def mine(found: list[Any]) -> list[Any]:
        return [r for r in found if dict(r.headers() or []).get("ce-subject") == entity.encode()]

    replies = mine(
        await asyncio.to_thread(topic_reader, counter.topic_out, lambda r: len(mine(r)) >= 3)
    )
    # Every delivery is answered (the first reply may never have reached the broker);
    # the duplicate's reply is the first one's, under the same ce-id.
    ids = [dict(r.headers())["ce-id"] for r in replies]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2], ids
    totals = [counter.pb.Total.FromString(r.value()).total for r in replies]
    assert totals == [5, 5, 12]
    assert await sidecar.terminate() == 0


async def _redeliver(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, **env: str
) -> tuple[dict[str, Any], int]:
    """Apply 20 records to one entity, stop, set the group's offsets back to before them,
    start again and let every record be delivered a second time; return the entity's
    state and how many records the second sidecar consumed."""
    bootstrap = kafka.bootstrap_servers
    entity = f"redo-{uuid.uuid4().hex[:6]}"
    # Every other record without a ce-id: keyed by its place.
    no_id: list[Header] = [("ce-specversion", b"1.0"), ("ce-type", ADD.encode())]
    records = [
        (entity.encode(), _add(counter, entity, 1, f"t{i}"), ce_headers(ADD) if i % 2 else no_id)
        for i in range(20)
    ]
    sidecar = sidecar_factory(**env)
    await sidecar.start()
    places = await asyncio.to_thread(produce_at, bootstrap, counter.topic_in, records)
    await until_committed_past(bootstrap, counter.topic_in, places)
    assert (await wait_total(sidecar, entity, 20))["total"] == "20"
    assert await sidecar.terminate() == 0

    first: dict[int, int] = {}
    for partition, offset in places:
        first[partition] = min(first.get(partition, offset), offset)
    await asyncio.to_thread(rewind, bootstrap, counter.topic_in, first)
    await sidecar.start()  # the same journal and ports
    await until_committed_past(bootstrap, counter.topic_in, places)
    again = int(await consumed(sidecar, counter.topic_in))
    status, text = await sidecar.get(entity)
    assert status == 200, text
    assert await sidecar.terminate() == 0
    return json.loads(text), again


async def test_records_delivered_again_after_the_offsets_went_back_are_applied_once(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any
) -> None:
    state, again = await _redeliver(kafka, counter, sidecar_factory)
    assert again >= 20, "the records were not delivered a second time"
    assert state["total"] == "20"
    assert state["tags"] == [f"t{i}" for i in range(20)]


async def test_without_deduplication_the_same_redelivery_applies_them_twice(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any
) -> None:
    state, again = await _redeliver(
        kafka, counter, sidecar_factory, LARDER_KAFKA_DEDUPLICATE="off"
    )
    assert again >= 20
    assert state["total"] == "40"
