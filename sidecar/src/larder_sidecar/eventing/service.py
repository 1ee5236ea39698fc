"""Eventing for one sidecar: a consumer per consumer group and one shared producer."""

from __future__ import annotations

import logging

from ..model import UserFunctionModel
from .consumer import ConsumerFailed, GroupConsumer
from .processing import CommandRunner, RecordProcessor
from .producer import AsyncProducer, PublishFailed
from .settings import KafkaSettings
from .spec import EventingSpec, read_eventing

log = logging.getLogger("larder_sidecar.eventing")


class EventingError(Exception):
    """Eventing cannot start; the message says what to fix (settings or the spec)."""


class Eventing:
    def __init__(self, spec: EventingSpec, runner: CommandRunner, settings: KafkaSettings) -> None:
        self.spec = spec
        self._settings = settings
        self._runner = runner
        self._producer: AsyncProducer | None = None
        self._consumers: list[GroupConsumer] = []

    @classmethod
    def for_model(
        cls, model: UserFunctionModel, runner: CommandRunner, settings: KafkaSettings
    ) -> Eventing | None:
        """None when the spec declares no eventing; raise EventingError when it declares
        some that cannot run."""
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
                ", ".join(s.method.model.path for s in spec.subscriptions) or "eventing methods",
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
        return cls(spec, runner, settings)

    async def start(self) -> None:
        try:
            needs_producer = bool(self.spec.publications or self._settings.dead_letter_topic)
            if needs_producer:
                self._producer = AsyncProducer(self._settings)
                self._producer.start()
            processor = RecordProcessor(
                self.spec, self._runner, self._producer, self._settings.dead_letter_topic
            )
            for group, topics in self.spec.groups().items():
                consumer = GroupConsumer(group, topics, self._settings, processor.handle)
                self._consumers.append(consumer)
                await consumer.start()
        except (ConsumerFailed, PublishFailed) as e:
            await self.stop()
            raise EventingError(str(e)) from e
        for p in self.spec.publications:
            log.info("%s publishes its replies to %s", p.method.model.path, p.topic)

    async def stop(self) -> None:
        """Finish in-flight records and commit, then flush the producer."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()
        if self._producer is not None:
            await self._producer.close()
            self._producer = None
