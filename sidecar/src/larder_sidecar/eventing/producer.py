"""An asyncio face on confluent-kafka's producer: `send(...)` queues a record and returns
its delivery, `publish(...)` also waits for it (idempotent producer, `acks=all`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from .librdkafka_log import LibrdkafkaLog
from .settings import REBOOTSTRAP, KafkaSettings

log = logging.getLogger("larder_sidecar.eventing")

_POLL_S = 0.1


class PublishFailed(Exception):
    """The broker did not take a record; `retriable` says whether trying again may help."""

    def __init__(self, message: str, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class AsyncProducer:
    def __init__(self, settings: KafkaSettings) -> None:
        config: dict[str, Any] = {
            **REBOOTSTRAP,
            **settings.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            # Records wait at most this long for company; latency stays low and
            # bursts still travel in batches.
            "linger.ms": 2,
            "logger": LibrdkafkaLog("producer"),
        }
        try:
            self._producer = Producer(config)
        except KafkaException as e:
            raise PublishFailed(f"the Kafka producer cannot be created: {e}", False) from e
        self._poller: asyncio.Task[None] | None = None
        self._running = False
        self._delivered: list[tuple[asyncio.Future[None], str, KafkaError | None]] = []
        """Filled by delivery callbacks on the polling thread, drained on the loop
        while no poll() runs (the list is swapped, never shared mid-append)."""

    def start(self) -> None:
        self._running = True
        self._poller = asyncio.get_running_loop().create_task(
            self._poll(), name="kafka-producer-poll"
        )

    async def _poll(self) -> None:
        # Delivery callbacks run inside poll(), on the polling thread; the futures are
        # settled here, on the loop, after it returns.
        while self._running:
            await asyncio.to_thread(self._producer.poll, _POLL_S)
            self._settle()

    def _settle(self) -> None:
        delivered, self._delivered = self._delivered, []
        for done, topic, err in delivered:
            if done.done():
                continue
            if err is None:
                done.set_result(None)
            else:
                done.set_exception(
                    PublishFailed(
                        f"publishing to topic {topic!r} failed: {err.str()}",
                        bool(err.retriable()) or err.code() == KafkaError._MSG_TIMED_OUT,
                    )
                )

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Send and wait for the broker's acknowledgement."""
        await (await self.send(topic, value, key, headers))

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> asyncio.Future[None]:
        """Queue the record; the returned future is done when the broker has it (or
        failed with PublishFailed). Waits only while the client's buffer is full."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            # On the polling thread, inside poll(): collected and handed to the loop
            # once per poll (one wake-up for a batch of deliveries, not one each).
            self._delivered.append((done, topic, err))

        while True:
            try:
                self._producer.produce(
                    topic, value, key=key, headers=list(headers), on_delivery=delivered
                )
            except BufferError:
                # The local queue is full: wait for deliveries to drain it.
                await asyncio.sleep(_POLL_S)
            except KafkaException as e:
                raise PublishFailed(f"publishing to topic {topic!r} failed: {e}", False) from e
            else:
                return done

    async def close(self) -> None:
        self._running = False
        if self._poller is not None:
            await self._poller
        remaining = await asyncio.to_thread(self._producer.flush, 10.0)
        self._settle()
        if remaining:
            log.warning("%d records were not delivered before the producer closed", remaining)
