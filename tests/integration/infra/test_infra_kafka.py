"""The provisioned Kafka creates topics and round-trips records, also after a restart."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.infra.kafka import KafkaServer


def _create_topic(bootstrap: str, partitions: int = 2) -> str:
    topic = f"infra-smoke-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    futures[topic].result(timeout=30)
    return topic


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value, key=value)
    assert producer.flush(30) == 0


def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"infra-smoke-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received: list[bytes] = []
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            value = message.value()
            assert isinstance(value, bytes)
            received.append(value)
            if len(received) == count:
                break
    finally:
        consumer.close()
    return received


def test_create_topic_produce_consume(kafka: KafkaServer) -> None:
    assert kafka.bootstrap_servers.startswith("127.0.0.1:")
    topic = _create_topic(kafka.bootstrap_servers)
    values = [f"record-{i}".encode() for i in range(10)]
    _produce(kafka.bootstrap_servers, topic, values)
    assert sorted(_consume(kafka.bootstrap_servers, topic, len(values))) == sorted(values)


def test_records_survive_a_restart(kafka: KafkaServer) -> None:
    topic = _create_topic(kafka.bootstrap_servers, partitions=1)
    _produce(kafka.bootstrap_servers, topic, [b"before-restart"])
    try:
        kafka.stop()
        assert not kafka.running
    finally:
        kafka.start()
    assert _consume(kafka.bootstrap_servers, topic, 1) == [b"before-restart"]
