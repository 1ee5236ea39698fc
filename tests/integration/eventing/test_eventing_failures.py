"""Bad records are logged and skipped or dead-lettered; a killed sidecar loses nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tests.infra.kafka import KafkaServer

from .conftest import ce_headers, create_topics, produce
from .counter_function import CounterProtos
from .test_eventing_flow import ADD, wait_total


async def test_malformed_and_failed_records_are_dead_lettered_and_the_consumer_goes_on(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, topic_reader: Any
) -> None:
    dead_letters = f"dead-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_topics, kafka.bootstrap_servers, dead_letters, partitions=1)
    sidecar = sidecar_factory(LARDER_KAFKA_DEAD_LETTER_TOPIC=dead_letters)
    await sidecar.start()
    entity = f"bad-{uuid.uuid4().hex[:6]}"
    key = entity.encode()
    good = counter.pb.AddRequest(id=entity, amount=2, tag="good").SerializeToString()
    bad = [
        (b"\xff\xff\xff", ce_headers(ADD), "malformed"),  # not a protobuf message
        (good, ce_headers("larder.eventingtest.Nope"), "malformed"),  # unknown ce-type
        (  # no entity key
            counter.pb.AddRequest(amount=1).SerializeToString(), ce_headers(ADD), "malformed"
        ),
        (good, ce_headers(ADD, "application/xml"), "malformed"),
        (  # the user function fails the command
            counter.pb.AddRequest(id=entity, amount=-1, tag="neg").SerializeToString(),
            ce_headers(ADD), "UNKNOWN",
        ),
    ]
    # All on one key, so on one partition, before the good record: it is consumed
    # only if the consumer went past every bad one.
    await asyncio.to_thread(
        produce, kafka.bootstrap_servers, counter.topic_in,
        [(key, value, headers) for value, headers, _ in bad] + [(key, good, ce_headers(ADD))],
    )
    body = await wait_total(sidecar, entity, 2)
    assert body["tags"] == ["good"]

    records = await asyncio.to_thread(
        topic_reader, dead_letters, lambda rs: len(rs) >= len(bad)
    )
    assert len(records) == len(bad)
    reasons = [dict(r.headers())["larder-error-reason"].decode() for r in records]
    assert reasons == [reason for _, _, reason in bad]
    assert [r.value() for r in records] == [value for value, _, _ in bad]
    sources = [dict(r.headers())["larder-error-source"].decode() for r in records]
    assert all(s.startswith(f"{counter.topic_in}[") for s in sources)
    log = sidecar.log()
    for source in sources:
        assert f"record {source} for /larder.eventingtest.Counter/Add rejected" in log
    assert "ce-type 'larder.eventingtest.Nope' is not the method's input type" in log
    assert "empty entity key field 'id'" in log
    assert "amount must be positive, got -1" in log
    assert await sidecar.terminate() == 0


async def test_without_a_dead_letter_topic_bad_records_are_logged_and_skipped(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any
) -> None:
    sidecar = sidecar_factory()
    await sidecar.start()
    entity = f"skip-{uuid.uuid4().hex[:6]}"
    good = counter.pb.AddRequest(id=entity, amount=4, tag="ok").SerializeToString()
    await asyncio.to_thread(
        produce, kafka.bootstrap_servers, counter.topic_in,
        [(entity.encode(), b"\x0a\xff", ce_headers(ADD)),
         (entity.encode(), good, ce_headers(ADD))],
    )
    await wait_total(sidecar, entity, 4)
    assert "rejected (malformed)" in sidecar.log()
    assert "skipped" in sidecar.log()
    assert await sidecar.terminate() == 0


async def test_sidecar_killed_mid_stream_loses_no_record(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any
) -> None:
    entities = [f"kill-{uuid.uuid4().hex[:6]}-{i}" for i in range(6)]
    per_entity = 60
    records = [
        (e.encode(),
         counter.pb.AddRequest(id=e, amount=1, tag=f"{e}/{n}").SerializeToString(),
         ce_headers(ADD))
        for n in range(per_entity) for e in entities
    ]
    await asyncio.to_thread(produce, kafka.bootstrap_servers, counter.topic_in, records)
    sidecar = sidecar_factory()
    await sidecar.start()
    # Kill it once some, but not all, records were applied.
    applied = 0
    for _ in range(500):
        status, text = await sidecar.get(entities[0])
        applied = int(json.loads(text).get("total", 0)) if status == 200 else 0
        if applied > 0:
            break
        await asyncio.sleep(0.02)
    await sidecar.kill()
    assert 0 < applied < per_entity, "the kill did not land in the middle of the stream"
    await sidecar.start()
    for e in entities:
        expected = {f"{e}/{n}" for n in range(per_entity)}
        # Redelivered records count twice, so the total reaches per_entity before the
        # last record is applied: wait for every tag instead.
        tags: list[str] = []
        for _ in range(600):  # another process's state is only visible by asking
            body = await wait_total(sidecar, e, per_entity, seconds=60)
            tags = body["tags"]
            if set(tags) >= expected:
                break
            await asyncio.sleep(0.1)
        assert set(tags) == expected
        # Per-partition order is kept, duplicates included: each tag's first
        # appearance is in production order.
        first_seen = list(dict.fromkeys(tags))
        assert first_seen == [f"{e}/{n}" for n in range(per_entity)]
    assert await sidecar.terminate() == 0
