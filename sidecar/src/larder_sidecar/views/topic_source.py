"""Views fed from Kafka topics: each view reads its topics in a consumer group of its own,
with eventing's consumer (`eventing/consumer.py`), and applies every record through the
view's delivery worker (`delivery.py`).

A record is a CloudEvent in binary mode, decoded as eventing decodes a command's input
(`eventing/cloudevents.py`: protobuf, JSON or text payloads); its `ce-type` picks the
update method (the one taking that type), its `ce-subject` is the row key. A record that
cannot be used (no such update method, a payload that does not decode, no `ce-subject`)
is rejected like eventing's: logged and skipped, or sent to the dead-letter topic, and
counted.

At least once, applied once: the delivery stores the record's offset in the partition
(`topic/<topic>/<partition>`) with its rows in one store transaction and skips a record
at or below the stored offset; the consumer commits the Kafka offset only after that. A
crash in between redelivers records the store already has, and they are skipped. All
records of a partition run one at a time, in offset order (one lane): the stored offset
is a watermark, so a later record must never be stored before an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer
from larder_protocol import message_class
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..eventing.cloudevents import MalformedRecord, ce_attributes, decode_message
from ..eventing.consumer import ConsumerFailed, GroupConsumer
from ..eventing.processing import Outbox
from ..eventing.producer import AsyncProducer, PublishFailed
from ..eventing.service import EventingError
from ..eventing.settings import KafkaSettings
from ..eventing.spec import EventingSpec
from .delivery import TopicMessage, ViewDelivery, topic_pid
from .spec import SourceKind, ViewSpec, ViewUpdate

log = logging.getLogger("larder_sidecar.views")

_ANY = "google.protobuf.Any"


class TopicSourceError(EventingError):
    """Views cannot read their topics: the message says what to fix (settings or spec).
    A kind of `EventingError`: start-up reports it the same way."""


@dataclass(frozen=True)
class TopicFeed:
    """One topic of one view: the update methods it feeds, by their input type."""

    view: str
    topic: str
    group: str
    updates: tuple[ViewUpdate, ...]

    def route(self, ce_type: str) -> ViewUpdate:
        """The update method for a record of `ce_type` (empty when the record names
        none); raise MalformedRecord when there is none, or no way to choose."""
        by_type = {u.input.full_name: u for u in self.updates}
        if ce_type:
            update = by_type.get(ce_type) or by_type.get(_ANY)
            if update is None:
                raise MalformedRecord(
                    f"ce-type {ce_type!r} is not the input type of an update method of "
                    f"{self.view} reading topic {self.topic!r} (they take "
                    f"{', '.join(sorted(by_type))})"
                )
            return update
        if len(by_type) == 1:
            return self.updates[0]
        raise MalformedRecord(
            f"the record has no ce-type, and {self.view} reads several message types "
            f"from topic {self.topic!r} ({', '.join(sorted(by_type))}); ce-type must "
            "name the record's type"
        )


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A consumed record, decoded (or why it cannot be)."""

    feed: TopicFeed
    record: Any
    update: ViewUpdate | None
    subject: str = ""
    payload: bytes = b""
    metadata: Sequence[tuple[str, str]] = ()
    problem: str = ""

    @property
    def lane(self) -> str:
        # One lane per partition: its records are applied in offset order, since the
        # stored offset is a watermark (see the module's docstring).
        return ""


def _metadata(
    pairs: Sequence[tuple[str, str]], attributes: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The record's headers as the update handler's metadata, with `ce-subject` and
    `ce-type` spelled `ce-` also when the record used the Kafka binding's `ce_`."""
    keys = {k for k, _ in pairs}
    return [
        *pairs,
        *(
            (f"ce-{name}", attributes[name])
            for name in ("subject", "type")
            if f"ce-{name}" not in keys and name in attributes
        ),
    ]


def _subject(attributes: Mapping[str, str]) -> str:
    subject = attributes.get("subject", "")
    if not subject:
        raise MalformedRecord(
            "the record has no ce-subject; a view fed from a topic keeps one row per "
            "ce-subject, so its records must name it"
        )
    return subject


async def _applied(done: asyncio.Future[None]) -> None:
    # Shielded: a partition revoked mid-way stops waiting, the record stays queued and is
    # applied (or found applied by the next owner) all the same.
    await asyncio.shield(done)


class TopicRecordHandler:
    """Implements the consumer's `RecordHandler` for the records of one view's topics."""

    def __init__(self, delivery: ViewDelivery, outbox: Outbox, counters: ViewTopicCounters) -> None:
        self._delivery = delivery
        self._outbox = outbox
        self._counters = counters

    def prepare(self, feed: TopicFeed, record: Any) -> PreparedRecord:
        """Decode the record (no I/O)."""
        self._counters.consumed(record.topic())
        headers = record.headers() or []
        update: ViewUpdate | None = None
        try:
            attributes = ce_attributes(headers)
            update = feed.route(attributes.get("type", "").removeprefix("type.googleapis.com/"))
            decoded = decode_message(message_class(update.input)(), record.value(), headers)
            subject = _subject(decoded.attributes)
        except MalformedRecord as e:
            return PreparedRecord(feed, record, update, problem=str(e))
        return PreparedRecord(
            feed,
            record,
            update,
            subject,
            decoded.payload,
            _metadata(decoded.metadata, decoded.attributes),
        )

    async def run(self, prepared: PreparedRecord) -> Coroutine[Any, Any, None] | None:
        """Queue the record to the view's delivery (which retries failures), or reject
        it; the consumer commits its offset once this and what it returns are done."""
        record, feed = prepared.record, prepared.feed
        if prepared.update is None or prepared.problem:
            path = prepared.update.path if prepared.update is not None else feed.view
            return await self._outbox.reject(record, path, "malformed", prepared.problem)
        loop = asyncio.get_running_loop()
        message = TopicMessage(
            topic_pid(record.topic(), record.partition()),
            record.offset() + 1,  # the store's 0 is "nothing applied"; Kafka's first is 0
            prepared.update,
            prepared.subject,
            prepared.payload,
            prepared.metadata,
            loop.create_future(),
        )
        # Queued in offset order; the partition's next record may be queued behind it
        # (records without an update handler are then stored in one transaction), and
        # this one's offset is committed once it is applied.
        return _applied(self._delivery.apply_topic(feed.view, message))


class ViewTopicMetrics:
    """Counts what the views' topic consumers do, on the sidecar's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "larder_view_topic_records_consumed",
            "Records consumed from a topic feeding a view (redeliveries included)",
            ["view", "topic"],
            registry=registry,
        )
        self.skipped = Counter(
            "larder_view_topic_records_skipped",
            "Records of a view's topic rejected (no update method takes their ce-type, "
            "their payload does not decode, no ce-subject), logged and skipped",
            ["view", "topic"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "larder_view_topic_records_dead_lettered",
            "Records of a view's topic rejected and sent to the dead-letter topic",
            ["view", "topic"],
            registry=registry,
        )
        self.published = Counter(
            "larder_view_topic_dead_letters_published",
            "Dead letters of views' topics the broker acknowledged",
            ["topic"],
            registry=registry,
        )
        self.lag = Gauge(
            "larder_view_topic_lag",
            "Records between a partition's end (as last fetched) and the next offset the "
            "view's consumer group will commit; NaN while no broker is reachable",
            ["view", "topic", "partition"],
            registry=registry,
        )
        self.reachable = Gauge(
            "larder_view_topic_broker_reachable",
            "1 while the view's consumer reaches a Kafka broker, else 0",
            ["view"],
            registry=registry,
        )


class ViewTopicCounters:
    """One view's share of `ViewTopicMetrics`: the processor's `Counters` and the
    consumer's `Progress`."""

    def __init__(self, metrics: ViewTopicMetrics, view: str) -> None:
        self._m = metrics
        self._view = view

    def consumed(self, topic: str) -> None:
        self._m.consumed.labels(self._view, topic).inc()

    def rejected(self, topic: str, dead_lettered: bool) -> None:
        (self._m.dead_lettered if dead_lettered else self._m.skipped).labels(
            self._view, topic
        ).inc()

    def published(self, topic: str) -> None:
        self._m.published.labels(topic).inc()

    def lag(self, topic: str, partition: int, records: int | None) -> None:
        self._m.lag.labels(self._view, topic, str(partition)).set(
            math.nan if records is None else records
        )

    def forget(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):  # never reported
            self._m.lag.remove(self._view, topic, str(partition))

    def reachable(self, group: str, reachable: bool) -> None:
        self._m.reachable.labels(self._view).set(1 if reachable else 0)


def topic_feeds(views: Mapping[str, ViewSpec]) -> list[TopicFeed]:
    feeds: dict[tuple[str, str], list[ViewUpdate]] = {}
    for view in views.values():
        for u in view.updates:
            if u.source is SourceKind.TOPIC:
                feeds.setdefault((view.service, u.entity_type), []).append(u)
    return [
        TopicFeed(view, topic, updates[0].consumer_group, tuple(updates))
        for (view, topic), updates in sorted(feeds.items())
    ]


class TopicSources:
    """The consumers of every view's topics: `start()` after the delivery started,
    `stop()` before it closes (in-flight records finish and are committed)."""

    def __init__(
        self,
        feeds: Sequence[TopicFeed],
        delivery: ViewDelivery,
        settings: KafkaSettings,
        registry: CollectorRegistry,
        *,
        per_process: bool = False,
        make_client: Callable[[dict[str, Any]], Any] = Consumer,
    ) -> None:
        """`per_process`: the view store lives in this process only (the memory store),
        so each process reads the whole topic in a group of its own. `make_client`:
        confluent-kafka's `Consumer` (a fake in tests)."""
        self.feeds = tuple(feeds)
        self._delivery = delivery
        self._settings = settings
        self._metrics = ViewTopicMetrics(registry)
        self._per_process = per_process
        self._make_client = make_client
        self._producer: AsyncProducer | None = None
        self._consumers: list[GroupConsumer[TopicFeed, PreparedRecord]] = []

    @classmethod
    def for_views(
        cls,
        views: Mapping[str, ViewSpec],
        eventing: EventingSpec,
        delivery: ViewDelivery,
        settings: KafkaSettings,
        registry: CollectorRegistry,
        *,
        per_process: bool = False,
    ) -> TopicSources | None:
        """None when no view reads a topic (or eventing is turned off); raise
        TopicSourceError when they cannot be read."""
        feeds = topic_feeds(views)
        if not feeds:
            return None
        names = ", ".join(sorted({f"{u.path} ({f.topic})" for f in feeds for u in f.updates}))
        if settings.turned_off:
            log.warning("LARDER_EVENTING=off: views fed from topics get no records: %s", names)
            return None
        if not settings.enabled:
            raise TopicSourceError(
                f"{names} feed views from Kafka topics, but no Kafka is configured: set "
                "LARDER_KAFKA_BOOTSTRAP_SERVERS (or bootstrap.servers in "
                "LARDER_KAFKA_PROPERTIES_FILE), or LARDER_EVENTING=off to run without them"
            )
        eventing_groups = eventing.groups()
        clashes = [
            f"{f.view} reads {f.topic!r} in consumer group {f.group!r}, which "
            f"{eventing_groups[f.group][f.topic].method.model.path} consumes too"
            for f in feeds
            if f.topic in eventing_groups.get(f.group, {})
        ]
        if clashes:
            raise TopicSourceError(
                "; ".join(clashes)
                + ": Kafka would split the topic's partitions between them; give one of "
                "them its own consumer_group"
            )
        return cls(feeds, delivery, settings, registry, per_process=per_process)

    async def start(self) -> None:
        if self._settings.dead_letter_topic:
            try:
                self._producer = AsyncProducer(self._settings)
            except PublishFailed as e:
                raise TopicSourceError(str(e)) from e
            self._producer.start()
        by_group: dict[tuple[str, str], dict[str, TopicFeed]] = {}
        for feed in self.feeds:
            by_group.setdefault((feed.view, feed.group), {})[feed.topic] = feed
        suffix = f"-{uuid.uuid4().hex[:12]}" if self._per_process else ""
        try:
            for (view, group), feeds in sorted(by_group.items()):
                counters = ViewTopicCounters(self._metrics, view)
                outbox = Outbox(self._producer, self._settings.dead_letter_topic, counters=counters)
                handler = TopicRecordHandler(self._delivery, outbox, counters)
                consumer = GroupConsumer(
                    group + suffix,
                    feeds,
                    self._settings,
                    handler,
                    counters,
                    make_client=self._make_client,
                )
                self._consumers.append(consumer)
                await consumer.start()
        except ConsumerFailed as e:
            await self.stop()
            raise TopicSourceError(str(e)) from e

    async def stop(self) -> None:
        """Finish in-flight records and commit their offsets; then the producer."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()
        if self._producer is not None:
            await self._producer.close()
            self._producer = None
