"""Eventing's Prometheus metrics, on the sidecar's registry."""

from __future__ import annotations

import contextlib
import math

from prometheus_client import CollectorRegistry, Counter, Gauge


class EventingMetrics:
    """Implements the processor's `Counters` and the consumer's `Progress`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._consumed = Counter(
            "larder_eventing_records_consumed",
            "Records consumed from a topic (each delivery, redeliveries included)",
            ["topic"],
            registry=registry,
        )
        self._skipped = Counter(
            "larder_eventing_records_skipped",
            "Records rejected (malformed or failed by the user function), logged and "
            "skipped because no dead-letter topic is set",
            ["topic"],
            registry=registry,
        )
        self._dead_lettered = Counter(
            "larder_eventing_records_dead_lettered",
            "Records rejected and sent to the dead-letter topic, by the topic they came from",
            ["topic"],
            registry=registry,
        )
        self._published = Counter(
            "larder_eventing_records_published",
            "Records the broker acknowledged, by the topic they went to (replies of "
            "eventing.out methods and dead letters)",
            ["topic"],
            registry=registry,
        )
        self._lag = Gauge(
            "larder_eventing_consumer_lag",
            "Records between a partition's end (as last fetched) and the next offset this "
            "sidecar will commit; NaN while no broker is reachable (unknown)",
            ["topic", "partition"],
            registry=registry,
        )
        self._reachable = Gauge(
            "larder_eventing_broker_reachable",
            "1 while the consumer group's client reaches a Kafka broker, 0 from the "
            "moment it reports every broker down until one is back",
            ["group"],
            registry=registry,
        )

    def consumed(self, topic: str) -> None:
        self._consumed.labels(topic).inc()

    def rejected(self, topic: str, dead_lettered: bool) -> None:
        (self._dead_lettered if dead_lettered else self._skipped).labels(topic).inc()

    def published(self, topic: str) -> None:
        self._published.labels(topic).inc()

    def lag(self, topic: str, partition: int, records: int | None) -> None:
        self._lag.labels(topic, str(partition)).set(math.nan if records is None else records)

    def reachable(self, group: str, reachable: bool) -> None:
        self._reachable.labels(group).set(1 if reachable else 0)

    def forget(self, topic: str, partition: int) -> None:
        """The partition went to another member: its lag is no longer ours to report."""
        with contextlib.suppress(KeyError):  # never reported
            self._lag.remove(topic, str(partition))
