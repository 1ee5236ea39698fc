"""Replies of an `eventing.out` method called over HTTP and gRPC are published too, and
the sidecar's /metrics counts eventing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import grpc

from tests.infra.kafka import KafkaServer

from .conftest import ce_headers, http_get, produce
from .counter_function import CounterProtos
from .test_eventing_flow import ADD, wait_total


async def http_post(port: int, path: str, body: dict[str, Any]) -> tuple[int, str]:
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, text = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), text


async def test_direct_calls_publish_their_replies(
    counter: CounterProtos, sidecar_factory: Any, topic_reader: Any
) -> None:
    sidecar = sidecar_factory()
    await sidecar.start()
    entity = f"direct-{uuid.uuid4().hex[:6]}"
    status, text = await http_post(
        sidecar.port, "/larder.eventingtest.Counter/Add",
        {"id": entity, "amount": "2", "tag": "http"},
    )
    assert status == 200, text
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        add = channel.unary_unary(
            "/larder.eventingtest.Counter/Add",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=counter.pb.Total.FromString,
        )
        reply = await add(counter.pb.AddRequest(id=entity, amount=3, tag="grpc"), timeout=30)
    assert reply.total == 5

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if dict(r.headers() or []).get("ce-subject") == entity.encode()]

    records = mine(await asyncio.to_thread(
        topic_reader, counter.topic_out, lambda rs: len(mine(rs)) >= 2
    ))
    totals = [counter.pb.Total.FromString(r.value()) for r in records]
    assert [(t.total, list(t.tags)) for t in totals] == [(2, ["http"]), (5, ["http", "grpc"])]
    for record in records:
        headers = dict(record.headers())
        assert record.key() == entity.encode()
        assert headers["ce-type"] == b"larder.eventingtest.Total"
        assert headers["ce-source"] == b"/larder.eventingtest.Counter/Add"
        uuid.UUID(headers["ce-id"].decode())  # a fresh id: no source record to derive it from
    assert await sidecar.terminate() == 0


async def test_metrics_count_consumed_and_published_records(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any
) -> None:
    sidecar = sidecar_factory()
    await sidecar.start()
    entity = f"metrics-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(
        produce, kafka.bootstrap_servers, counter.topic_in,
        [(entity.encode(), counter.pb.AddRequest(id=entity, amount=1, tag="m")
          .SerializeToString(), ce_headers(ADD))],
    )
    await wait_total(sidecar, entity, 1)
    text = ""
    for _ in range(100):  # the lag gauge is refreshed with each commit round (0.2 s)
        status, text = await http_get(sidecar.admin, "/metrics")
        assert status == 200
        if 'larder_eventing_consumer_lag{partition=' in text:
            break
        await asyncio.sleep(0.1)
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines() if line.startswith("larder_eventing_")
    }
    # This sidecar consumed the topic from the start: at least this test's record.
    assert samples[f'larder_eventing_records_consumed_total{{topic="{counter.topic_in}"}}'] >= 1
    assert samples[f'larder_eventing_records_published_total{{topic="{counter.topic_out}"}}'] >= 1
    lags = [v for k, v in samples.items() if k.startswith("larder_eventing_consumer_lag{")]
    assert lags
    assert all(v >= 0 for v in lags)
    assert await sidecar.terminate() == 0
