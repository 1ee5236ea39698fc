"""One Kafka consumer group: partitions run concurrently; within a partition, records of
different lanes (entities) run concurrently and records of one lane one at a time in
offset order; an offset is committed only when every record before it was handled.

confluent-kafka's consumer is a blocking API, so `consume()` runs on a worker thread;
everything else (the partition workers, committing) runs on the event loop. The
rebalance callbacks run on the consuming thread inside `consume()`/`close()`; they hand
the work to the loop and wait for it, so a revoked partition's in-flight records are
finished (or abandoned after a grace period) and its progress committed before Kafka
gives the partition to another member.

Per partition:

    fetched queue --(bounded: max_in_flight)--> lanes (one task each) --> done slots
                                                                          |
    committed offset = 1 + the last offset with nothing unfinished before it
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .processing import Prepared
from .settings import KafkaSettings
from .spec import Subscription

log = logging.getLogger("larder_sidecar.eventing")

TP = tuple[str, int]

_CONSUME_BATCH = 500
_CONSUME_WAIT_S = 0.2
_COMMIT_EVERY_S = 0.2
_REVOKE_GRACE_S = 10.0
_PAUSE_AT = 5000
"""Queued records per partition above which fetching from it pauses."""
_RESUME_AT = 1000


class RecordHandler(Protocol):
    """What the consumer needs from `RecordProcessor`."""

    def prepare(self, subscription: Subscription, record: Any) -> Prepared: ...

    async def run(self, prepared: Prepared) -> Coroutine[Any, Any, None] | None: ...


class Progress(Protocol):
    """Where the consumer reports its lag (see `EventingMetrics`)."""

    def lag(self, topic: str, partition: int, records: int) -> None: ...
    def forget(self, topic: str, partition: int) -> None: ...


class ConsumerFailed(Exception):
    """The consumer cannot be created or subscribed: check the Kafka settings."""


class _Slot:
    """One started record, in offset order; `done` once it may be committed."""

    __slots__ = ("done", "offset")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.done = False


class _Partition:
    """The queues and tasks of one assigned partition."""

    def __init__(self, tp: TP, subscription: Subscription) -> None:
        self.tp = tp
        self.subscription = subscription
        self.queue: deque[Any] = deque()
        """Fetched records not started yet."""
        self.ready = asyncio.Event()
        """Set when a record arrives, a slot frees up, or the partition stops."""
        self.slots: deque[_Slot] = deque()
        """Started records not yet committable, in offset order."""
        self.lanes: dict[str, deque[tuple[_Slot, Prepared]]] = {}
        """Per lane, records waiting for (or in) their turn; a lane is here while its
        task runs, and forever after a bug stopped it (its records then never run)."""
        self.in_flight = 0
        self.done_offset: int | None = None
        """The next offset to commit (1 + the last offset with nothing unfinished
        before it)."""
        self.paused = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        """The feeder: moves records from `queue` into lanes."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Lane tasks and delivery waits."""

    def finish(self, slot: _Slot) -> None:
        slot.done = True
        self.in_flight -= 1
        while self.slots and self.slots[0].done:
            self.done_offset = self.slots.popleft().offset + 1
        self.ready.set()


class GroupConsumer:
    def __init__(
        self,
        group: str,
        subscriptions: Mapping[str, Subscription],
        settings: KafkaSettings,
        handler: RecordHandler,
        progress: Progress | None = None,
        *,
        client: Any = None,
    ) -> None:
        """`client`: a confluent-kafka `Consumer` to use instead of making one (tests)."""
        self.group = group
        self._subscriptions = dict(subscriptions)
        self._handler = handler
        self._progress = progress
        self._max_in_flight = settings.max_in_flight
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
            self._consumer = client if client is not None else Consumer(config)
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

    async def _work(self, p: _Partition) -> None:
        """Feed the partition's records into their lanes, at most max_in_flight
        unfinished at a time."""
        while not p.stopping:
            if not p.queue or p.in_flight >= self._max_in_flight:
                p.ready.clear()
                await p.ready.wait()
                continue
            record = p.queue.popleft()
            try:
                prepared = self._handler.prepare(p.subscription, record)
            except Exception:
                # Must not happen (decoding problems are rejections, not exceptions);
                # the record stays uncommitted and the partition stops feeding.
                log.exception(
                    "bug: preparing %s[%d]@%d failed; the partition stops until the "
                    "next rebalance or restart", p.tp[0], p.tp[1], record.offset(),
                )
                return
            slot = _Slot(record.offset())
            p.slots.append(slot)
            p.in_flight += 1
            lane = p.lanes.get(prepared.lane)
            if lane is None:
                lane = p.lanes[prepared.lane] = deque()
                self._spawn(p, self._run_lane(p, prepared.lane, lane), "lane")
            lane.append((slot, prepared))
            if p.paused and len(p.queue) <= _RESUME_AT:
                p.paused = False
                self._consumer.resume([TopicPartition(*p.tp)])

    async def _run_lane(
        self, p: _Partition, key: str, lane: deque[tuple[_Slot, Prepared]]
    ) -> None:
        """One lane's records, one at a time; the task ends when the lane is empty."""
        while lane and not p.stopping:
            slot, prepared = lane[0]
            try:
                rest = await self._handler.run(prepared)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A handler must not fail; if it does, the record stays unfinished, so
                # nothing at or after it is committed, and the lane's later records
                # wait behind it (redelivered to whoever owns the partition next).
                log.exception(
                    "bug: handling %s[%d]@%d failed; the partition stops committing "
                    "until the next rebalance or restart", p.tp[0], p.tp[1], slot.offset,
                )
                return
            lane.popleft()
            if rest is None:
                p.finish(slot)
            else:
                # The next record of the lane may run while this one's reply travels;
                # its offset counts as done only once the broker has the reply.
                self._spawn(p, self._deliver(p, slot, rest), "delivery")
        # No await between the emptiness check and here: a record the feeder adds
        # after this point finds no lane and starts a new task.
        if p.lanes.get(key) is lane:
            del p.lanes[key]

    async def _deliver(
        self, p: _Partition, slot: _Slot, rest: Coroutine[Any, Any, None]
    ) -> None:
        await rest
        p.finish(slot)

    def _spawn(self, p: _Partition, coro: Coroutine[Any, Any, None], what: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=f"kafka-{p.tp[0]}-{p.tp[1]}-{what}")
        p.tasks.add(task)
        task.add_done_callback(p.tasks.discard)

    async def _stop_partitions(self, tps: list[TP]) -> list[TopicPartition]:
        """Let each partition's in-flight records finish (within a grace period), forget
        the partitions, and return their offsets not yet committed."""
        stopping = [p for tp in tps if (p := self._partitions.get(tp)) is not None]
        for p in stopping:
            p.stopping = True
            p.ready.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REVOKE_GRACE_S
        while True:
            # Lanes spawn delivery waits while they finish, so look again each round.
            tasks = [t for p in stopping for t in (p.task, *p.tasks) if t and not t.done()]
            if not tasks:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                break
            await asyncio.wait(tasks, timeout=remaining)
        offsets = self._uncommitted([p.tp for p in stopping])
        for p in stopping:
            # Records still queued were never handled: the next owner gets them again.
            self._partitions.pop(p.tp, None)
            self._committed.pop(p.tp, None)
            if self._progress is not None:
                self._progress.forget(*p.tp)
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

    def _report_lag(self) -> None:
        """Records behind the partition's end, from the high watermark the client cached
        with its last fetch (no request to the broker)."""
        if self._progress is None:
            return
        for tp, p in self._partitions.items():
            if p.done_offset is None:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(*tp), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self._progress.lag(tp[0], tp[1], max(high - p.done_offset, 0))

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            self._report_lag()
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
