"""Tracing through Kafka: a record carrying a producer's `traceparent` is consumed in that
trace, and the reply the sidecar publishes carries the trace on (a real sidecar process
and Kafka, spans exported over OTLP to a receiver in this test)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.infra.kafka import KafkaServer
from tests.infra.otlp import OtlpReceiver, children, tree

from .conftest import ce_headers, produce
from .counter_function import CounterProtos

ADD = "larder.eventingtest.AddRequest"
PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"


async def test_a_record_is_consumed_in_its_producers_trace_and_the_reply_carries_it_on(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, topic_reader: Any
) -> None:
    entity = f"traced-{uuid.uuid4().hex[:6]}"
    async with OtlpReceiver() as receiver:
        sidecar = sidecar_factory(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_SERVICE_NAME="counter",
        )
        await sidecar.start()
        value = counter.pb.AddRequest(id=entity, amount=4, tag="t").SerializeToString()
        headers = [
            *ce_headers(ADD),
            ("traceparent", f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01".encode()),
        ]
        await asyncio.to_thread(
            produce, kafka.bootstrap_servers, counter.topic_in, [(None, value, headers)]
        )

        def mine(records: list[Any]) -> list[Any]:
            return [
                r for r in records if dict(r.headers() or []).get("ce-subject") == entity.encode()
            ]

        [reply] = mine(await asyncio.to_thread(topic_reader, counter.topic_out, mine))
        spans = await receiver.wait_for(
            lambda s: any(x.name == f"publish {counter.topic_out}" for x in s)
            and any(x.name == "journal write" for x in s)
        )
        assert await sidecar.terminate() == 0

    consume = next(s for s in spans if s.name == f"consume {counter.topic_in}")
    assert (consume.kind, consume.trace_id, consume.parent_id) == (
        "CONSUMER", PRODUCER_TRACE, PRODUCER_SPAN,
    )
    assert consume.attributes["messaging.system"] == "kafka"
    assert consume.attributes["messaging.destination.name"] == counter.topic_in
    assert consume.service == "counter"
    names = tree(spans, consume)
    assert names[:2] == [f"consume {counter.topic_in}", "  handle larder.eventingtest.Counter/Add"]
    assert "    user function" in names and "    journal write" in names, names
    assert names[-1] == f"  publish {counter.topic_out}", names
    publish = children(spans, consume)[-1]
    assert publish.kind == "PRODUCER"
    # Whoever consumes the reply continues from the publish span, in either spelling.
    reply_headers = dict(reply.headers())
    for name in ("traceparent", "ce-traceparent"):
        _, trace_id, parent_id, _ = reply_headers[name].decode().split("-")
        assert (trace_id, parent_id) == (PRODUCER_TRACE, publish.span_id), name
