"""Eventing for one sidecar: a consumer per consumer group and one shared producer."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from ..dispatch import Dispatcher
from ..invoke import InvokeResult, MetadataPairs
from ..model import Method, UserFunctionModel
from .consumer import ConsumerFailed, GroupConsumer
from .direct import PublishingDispatcher
from .metrics import EventingMetrics
from .processing import CommandRunner, Prepared, RecordProcessor
from .producer import AsyncProducer, PublishFailed
from .settings import KafkaSettings
from .spec import EventingSpec, Subscription, read_eventing

log = logging.getLogger("larder_sidecar.eventing")


class EventingError(Exception):
    """Eventing cannot start; the message says what to fix (settings or the spec)."""


class Eventing:
    """Life cycle: `open()` (the producer), `dispatcher(...)` for the fronts,
    `start(runner)` (the consumers), `stop_consuming()`, `close()`."""

    def __init__(
        self,
        spec: EventingSpec,
        settings: KafkaSettings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.spec = spec
        self._settings = settings
        self.metrics = EventingMetrics(registry or CollectorRegistry())
        self._producer: AsyncProducer | None = None
        self._consumers: list[GroupConsumer[Subscription, Prepared]] = []

    @classmethod
    def for_model(
        cls,
        model: UserFunctionModel,
        settings: KafkaSettings,
        registry: CollectorRegistry | None = None,
    ) -> Eventing | None:
        """None when the spec declares no eventing (or it is turned off); raise
        EventingError when it declares some that cannot run."""
        spec = read_eventing(model)
        if spec.problems:
            raise EventingError(
                "the user function's eventing options cannot be served:\n  - "
                + "\n  - ".join(spec.problems)
            )
        if not spec.declared:
            return None
        if settings.turned_off:
            log.warning(
                "LARDER_EVENTING=off: %s served without Kafka topics",
                ", ".join(
                    sorted(
                        {s.method.model.path for s in spec.subscriptions}
                        | {p.method.model.path for p in spec.publications}
                    )
                ),
            )
            return None
        if not settings.enabled:
            methods = sorted(
                {s.method.model.path for s in spec.subscriptions}
                | {p.method.model.path for p in spec.publications}
            )
            raise EventingError(
                f"{', '.join(methods)} use eventing (Kafka topics), but no Kafka is "
                "configured: set LARDER_KAFKA_BOOTSTRAP_SERVERS (or bootstrap.servers in "
                "LARDER_KAFKA_PROPERTIES_FILE), or LARDER_EVENTING=off to serve them without "
                "topics"
            )
        return cls(spec, settings, registry)

    async def open(self) -> None:
        """Start the producer, if anything publishes."""
        if self.spec.publications or self._settings.dead_letter_topic:
            try:
                self._producer = AsyncProducer(self._settings)
            except PublishFailed as e:
                raise EventingError(str(e)) from e
            self._producer.start()
        for p in self.spec.publications:
            log.info("%s publishes its replies to %s", p.method.model.path, p.topic)

    def dispatcher(self, *args: Any) -> Dispatcher:
        """The fronts' dispatcher (`Dispatcher`'s arguments): it publishes the replies of
        `out` methods called directly."""
        if self._producer is None or not self.spec.publications:
            return Dispatcher(*args)
        return PublishingDispatcher(
            *args, spec=self.spec, publisher=self._producer, counters=self.metrics
        )

    async def start(self, dispatcher: Dispatcher) -> None:
        """Start consuming; commands go through `dispatcher` without publishing twice."""
        runner: CommandRunner = (
            dispatcher.quiet
            if isinstance(dispatcher, PublishingDispatcher)
            else _Consumed(dispatcher)
        )
        processor = RecordProcessor(
            self.spec,
            runner,
            self._producer,
            self._settings.dead_letter_topic,
            counters=self.metrics,
            deduplicate=self._settings.deduplicate,
        )
        try:
            for group, topics in self.spec.groups().items():
                consumer = GroupConsumer(group, topics, self._settings, processor, self.metrics)
                self._consumers.append(consumer)
                await consumer.start()
        except ConsumerFailed as e:
            await self.stop_consuming()
            raise EventingError(str(e)) from e

    async def stop_consuming(self) -> None:
        """Finish in-flight records and commit their offsets."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()

    async def close(self) -> None:
        """Stop consuming, then flush the producer (after the fronts stopped, since
        their calls publish too)."""
        await self.stop_consuming()
        if self._producer is not None:
            await self._producer.close()
            self._producer = None


class _Consumed:
    """The dispatcher as the consumer calls it: a record's command is not a client's call
    (it is traced under the record's CONSUMER span)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def call(
        self, method: Method, payload: bytes, metadata: MetadataPairs, parsed: Any = None
    ) -> InvokeResult:
        return await self._dispatcher.call(method, payload, metadata, parsed, entry=False)
