"""Records in, replies out, through a real `larder-sidecar` process and a real Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tests.infra.kafka import KafkaServer

from .conftest import ce_headers, produce
from .counter_function import CounterProtos

ADD = "larder.eventingtest.AddRequest"


def _add(counter: CounterProtos, entity: str, amount: int, tag: str) -> bytes:
    return bytes(counter.pb.AddRequest(id=entity, amount=amount, tag=tag).SerializeToString())


async def wait_total(
    sidecar: Any, entity: str, at_least: int, seconds: float = 30.0
) -> dict[str, Any]:
    """Poll the HTTP API until the entity's total reaches `at_least` (another process's
    state can only be observed by asking)."""
    body: dict[str, Any] = {}
    for _ in range(int(seconds / 0.1)):
        status, text = await sidecar.get(entity)
        assert status == 200, text
        body = json.loads(text)
        if int(body.get("total", 0)) >= at_least:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{entity} reached only {body} in {seconds} s")


async def test_record_becomes_a_command_visible_over_http(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any
) -> None:
    sidecar = sidecar_factory()
    await sidecar.start()
    entity = f"http-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(
        produce, kafka.bootstrap_servers, counter.topic_in,
        [(entity.encode(), _add(counter, entity, 5, "a"), ce_headers(ADD)),
         (entity.encode(), _add(counter, entity, 7, "b"), ce_headers(ADD))],
    )
    body = await wait_total(sidecar, entity, 12)
    assert body == {"id": entity, "total": "12", "tags": ["a", "b"]}
    assert await sidecar.terminate() == 0


async def test_json_payload_and_out_reply_with_cloudevents_headers(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, topic_reader: Any
) -> None:
    sidecar = sidecar_factory()
    await sidecar.start()
    entity = f"out-{uuid.uuid4().hex[:6]}"
    payload = json.dumps({"id": entity, "amount": "3", "tag": "json"}).encode()
    await asyncio.to_thread(
        produce, kafka.bootstrap_servers, counter.topic_in,
        [(None, payload, ce_headers(ADD, "application/json"))],
    )

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if dict(r.headers() or []).get("ce-subject") == entity.encode()]

    records = mine(await asyncio.to_thread(topic_reader, counter.topic_out, mine))
    assert len(records) == 1
    record = records[0]
    headers = dict(record.headers())
    assert headers["ce-specversion"] == b"1.0"
    assert headers["ce-type"] == b"larder.eventingtest.Total"
    assert headers["ce-source"] == b"/larder.eventingtest.Counter/Add"
    assert headers["ce-datacontenttype"] == b"application/protobuf"
    assert headers["ce-id"]
    assert headers["ce-time"].endswith(b"Z")
    assert record.key() == entity.encode()
    total = counter.pb.Total.FromString(record.value())
    assert (total.id, total.total, list(total.tags)) == (entity, 3, ["json"])
    assert await sidecar.terminate() == 0
