"""One Kafka consumer group: partitions run concurrently, each partition's records one at
a time in offset order, and an offset is committed only after its record was handled.

confluent-kafka's consumer is a blocking API, so `consume()` runs on a worker thread;
everything else (the partition workers, committing) runs on the event loop. The
rebalance callbacks run on the consuming thread inside `consume()`/`close()`; they hand
the work to the loop and wait for it, so a revoked partition's in-flight record is
finished (or abandoned after a grace period) and its progress committed before Kafka
gives the partition to another member.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .settings import KafkaSettings
from .spec import Subscription

log = logging.getLogger("larder_sidecar.eventing")

TP = tuple[str, int]
RecordHandler = Callable[[Subscription, Any], Awaitable[None]]
"""Handles one confluent-kafka `Message`; returns when the record may be committed."""

_CONSUME_BATCH = 500
_CONSUME_WAIT_S = 0.2
_COMMIT_EVERY_S = 0.2
_REVOKE_GRACE_S = 10.0
_PAUSE_AT = 5000
"""Queued records per partition above which fetching from it pauses."""
_RESUME_AT = 1000


class ConsumerFailed(Exception):
    """The consumer cannot be created or subscribed: check the Kafka settings."""


class _Partition:
    """The queue and worker task of one assigned partition."""

    def __init__(self, tp: TP, subscription: Subscription) -> None:
        self.tp = tp
        self.subscription = subscription
        self.queue: deque[Any] = deque()
        self.ready = asyncio.Event()
        self.done_offset: int | None = None
        """The next offset to commit (last handled + 1)."""
        self.paused = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None


class GroupConsumer:
    def __init__(
        self,
        group: str,
        subscriptions: Mapping[str, Subscription],
        settings: KafkaSettings,
        handle: RecordHandler,
    ) -> None:
        self.group = group
        self._subscriptions = dict(subscriptions)
        self._handle = handle
        config: dict[str, Any] = {
            # Defaults a properties file may change:
            "auto.offset.reset": "earliest",
            # A member that died is replaced after this long (librdkafka's default
            # is 45 s, a long outage for a pod that was killed).
            "session.timeout.ms": 10000,
            **settings.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "on_commit": self._on_commit,
        }
        try:
            self._consumer = Consumer(config)
        except KafkaException as e:
            raise ConsumerFailed(
                f"the Kafka consumer for group {group!r} cannot be created: {e}"
            ) from e
        self._partitions: dict[TP, _Partition] = {}
        self._committed: dict[TP, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._poller: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        try:
            self._consumer.subscribe(
                list(self._subscriptions), on_assign=self._on_assign, on_revoke=self._on_revoke
            )
        except KafkaException as e:
            raise ConsumerFailed(f"group {self.group!r} cannot subscribe: {e}") from e
        self._poller = self._loop.create_task(self._poll(), name=f"kafka-poll-{self.group}")
        self._committer = self._loop.create_task(
            self._commit_periodically(), name=f"kafka-commit-{self.group}"
        )
        log.info(
            "consuming %s in group %s", ", ".join(sorted(self._subscriptions)), self.group
        )

    async def stop(self) -> None:
        """Stop fetching, finish in-flight records, commit, and leave the group."""
        self._running = False
        if self._poller is not None:
            await self._poller  # returns within one consume wait
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        offsets = await self._stop_partitions(list(self._partitions))
        if offsets:
            try:
                await asyncio.to_thread(self._consumer.commit, offsets=offsets, asynchronous=False)
            except KafkaException as e:
                log.warning(
                    "group %s: final commit failed (records will be redelivered): %s",
                    self.group, e,
                )
        await asyncio.to_thread(self._consumer.close)

    # --- fetching -----------------------------------------------------------------------

    async def _poll(self) -> None:
        while self._running:
            try:
                batch = await asyncio.to_thread(
                    self._consumer.consume, _CONSUME_BATCH, _CONSUME_WAIT_S
                )
            except KafkaException as e:
                log.error("group %s: consuming failed: %s", self.group, e)  # noqa: TRY400
                await asyncio.sleep(1.0)
                continue
            for record in batch:
                error = record.error()
                if error is not None:
                    self._log_error(error)
                    continue
                self._enqueue(record)

    def _log_error(self, error: KafkaError) -> None:
        # Most consumer errors are transient (the client reconnects by itself).
        level = logging.ERROR if error.fatal() else logging.WARNING
        log.log(level, "group %s: Kafka reports %s", self.group, error.str())

    def _enqueue(self, record: Any) -> None:
        tp = (record.topic(), record.partition())
        partition = self._partitions.get(tp)
        if partition is None:
            subscription = self._subscriptions.get(tp[0])
            if subscription is None:
                return
            partition = self._partitions[tp] = _Partition(tp, subscription)
            assert self._loop is not None
            partition.task = self._loop.create_task(
                self._work(partition), name=f"kafka-{tp[0]}-{tp[1]}"
            )
        partition.queue.append(record)
        partition.ready.set()
        if not partition.paused and len(partition.queue) >= _PAUSE_AT:
            partition.paused = True
            self._consumer.pause([TopicPartition(*tp)])

    # --- handling -----------------------------------------------------------------------

    async def _work(self, partition: _Partition) -> None:
        while not partition.stopping:
            if not partition.queue:
                partition.ready.clear()
                await partition.ready.wait()
                continue
            record = partition.queue[0]
            try:
                await self._handle(partition.subscription, record)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A handler must not fail; if it does, the record stays uncommitted and
                # the partition stops here (redelivered to whoever owns it next).
                log.exception(
                    "bug: handling %s[%d]@%d failed; the partition stops until the "
                    "next rebalance or restart", partition.tp[0], partition.tp[1],
                    record.offset(),
                )
                return
            partition.queue.popleft()
            partition.done_offset = record.offset() + 1
            if partition.paused and len(partition.queue) <= _RESUME_AT:
                partition.paused = False
                self._consumer.resume([TopicPartition(*partition.tp)])

    async def _stop_partitions(self, tps: list[TP]) -> list[TopicPartition]:
        """Let each partition's in-flight record finish (within a grace period), forget
        the partitions, and return their offsets not yet committed."""
        stopping = [p for tp in tps if (p := self._partitions.get(tp)) is not None]
        for p in stopping:
            p.stopping = True
            p.ready.set()
        tasks = [p.task for p in stopping if p.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=_REVOKE_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        offsets = self._uncommitted([p.tp for p in stopping])
        for p in stopping:
            # Records still queued were never handled: the next owner gets them again.
            self._partitions.pop(p.tp, None)
            self._committed.pop(p.tp, None)
        return offsets

    # --- committing ---------------------------------------------------------------------

    def _uncommitted(self, tps: list[TP] | None) -> list[TopicPartition]:
        offsets = []
        for tp, p in self._partitions.items():
            if tps is not None and tp not in tps:
                continue
            if p.done_offset is not None and self._committed.get(tp) != p.done_offset:
                offsets.append(TopicPartition(tp[0], tp[1], p.done_offset))
        return offsets

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            offsets = self._uncommitted(None)
            if not offsets:
                continue
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as e:
                log.warning("group %s: commit failed (will retry): %s", self.group, e)
                continue
            for o in offsets:
                self._committed[(o.topic, o.partition)] = o.offset

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("group %s: commit failed (will retry): %s", self.group, err.str())
            loop = self._loop
            if loop is not None:
                # Forget what we believed committed, so the next round sends it again.
                failed = [(p.topic, p.partition) for p in partitions]
                loop.call_soon_threadsafe(self._forget, failed)

    def _forget(self, tps: list[TP]) -> None:
        for tp in tps:
            self._committed.pop(tp, None)

    # --- rebalance callbacks (run on the consuming thread) ------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info(
            "group %s: assigned %s", self.group,
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing",
        )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        tps = [(p.topic, p.partition) for p in partitions]

        stopped = asyncio.run_coroutine_threadsafe(self._stop_partitions(tps), loop)
        offsets = stopped.result()
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as e:
                log.warning("group %s: commit on revoke failed (records will be redelivered): %s",
                            self.group, e)
        log.info(
            "group %s: revoked %s", self.group,
            ", ".join(f"{t}[{p}]" for t, p in tps) or "nothing",
        )
