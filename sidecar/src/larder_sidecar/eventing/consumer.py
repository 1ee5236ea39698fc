"""One Kafka consumer group: partitions run concurrently; within a partition, records of
different lanes (entities) run concurrently and records of one lane one at a time in
offset order; an offset is committed only when every record before it was handled.

Two threads, each touching only its own things:

- the consumer thread (`ConsumerThread`) owns confluent-kafka's consumer: it fetches,
  runs the rebalance callbacks, commits, pauses and resumes;
- the event loop owns everything below (partitions, lanes, offsets, lag) and talks to
  the consumer only through the thread's request queue, which never blocks it.

So a rebalance callback may wait for the loop to finish a revoked partition's in-flight
records (bounded by the grace period) without any risk of the loop waiting for it.

Per partition:

    fetched queue --(bounded: max_in_flight)--> lanes (one task each) --> done slots
                                                                          |
    committed offset = 1 + the last offset with nothing unfinished before it
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

from .client_thread import TP, ConsumerThread
from .settings import REBOOTSTRAP, KafkaSettings

log = logging.getLogger("larder_sidecar.eventing")

_COMMIT_EVERY_S = 0.2
_REVOKE_GRACE_S = 10.0
"""How long a revoked (or, on stop, every) partition's in-flight records may take."""
_REVOKE_MARGIN_S = 2.0
"""How much longer the rebalance callback waits for the loop before giving up."""
_CLOSE_TIMEOUT_S = 5.0
"""How long `stop()` waits for the final commit and for leaving the group."""
_PAUSE_AT = 5000
"""Queued records per partition above which fetching from it pauses."""
_RESUME_AT = 1000


class Laned(Protocol):
    """A prepared record: the consumer only needs its lane."""

    @property
    def lane(self) -> str: ...


S = TypeVar("S")
"""What the handler is given for each topic (eventing: the method's `Subscription`; a
view fed from a topic: its `TopicFeed`)."""
P = TypeVar("P", bound=Laned)
"""What the handler makes of a record before it runs it."""
S_contra = TypeVar("S_contra", contravariant=True)


class RecordHandler(Protocol[S_contra, P]):
    """What the consumer needs from `RecordProcessor` (or a view's topic feed)."""

    def prepare(self, subscription: S_contra, record: Any) -> P: ...

    async def run(self, prepared: P) -> Coroutine[Any, Any, None] | None: ...


class Progress(Protocol):
    """Where the consumer reports its lag and the broker's reachability (see
    `EventingMetrics`)."""

    def lag(self, topic: str, partition: int, records: int | None) -> None:
        """`None`: unknown (no broker reachable)."""
        ...
    def forget(self, topic: str, partition: int) -> None: ...
    def reachable(self, group: str, reachable: bool) -> None: ...


class ConsumerFailed(Exception):
    """The consumer cannot be created or subscribed: check the Kafka settings."""


class _Slot:
    """One started record, in offset order; `done` once it may be committed."""

    __slots__ = ("done", "offset")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.done = False


class _Partition(Generic[S, P]):
    """The queues and tasks of one assigned partition."""

    def __init__(self, tp: TP, subscription: S) -> None:
        self.tp = tp
        self.subscription = subscription
        self.queue: deque[Any] = deque()
        """Fetched records not started yet."""
        self.ready = asyncio.Event()
        """Set when a record arrives, a slot frees up, or the partition stops."""
        self.slots: deque[_Slot] = deque()
        """Started records not yet committable, in offset order."""
        self.lanes: dict[str, deque[tuple[_Slot, P]]] = {}
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

    def unfinished(self) -> list[asyncio.Task[None]]:
        return [t for t in (self.task, *self.tasks) if t is not None and not t.done()]


class GroupConsumer(Generic[S, P]):
    """Implements the consumer thread's `ClientEvents` (all called on the loop)."""

    def __init__(
        self,
        group: str,
        subscriptions: Mapping[str, S],
        settings: KafkaSettings,
        handler: RecordHandler[S, P],
        progress: Progress | None = None,
        *,
        make_client: Callable[[dict[str, Any]], Any] = Consumer,
    ) -> None:
        """`make_client(config)`: makes the confluent-kafka `Consumer` (a fake in tests)."""
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
            # A broker that comes back is reconnected to within 2 s (default: up to 10 s).
            "reconnect.backoff.max.ms": 2000,
            # Statistics are how the client sees a broker come back (read only during
            # an outage).
            "statistics.interval.ms": 1000,
            # A subscribed topic created after the sidecar started is found at the next
            # metadata refresh: within 5 s instead of librdkafka's default 5 minutes.
            "topic.metadata.refresh.interval.ms": 5000,
            **REBOOTSTRAP,
            **settings.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
        try:
            self._client = ConsumerThread(
                group, make_client, config, list(self._subscriptions), self,
                revoke_timeout=_REVOKE_GRACE_S + _REVOKE_MARGIN_S,
            )
        except KafkaException as e:
            raise ConsumerFailed(
                f"the Kafka consumer for group {group!r} cannot be created: {e}"
            ) from e
        self._assigned: set[TP] = set()
        self._partitions: dict[TP, _Partition[S, P]] = {}
        self._committed: dict[TP, int] = {}
        self._highs: dict[TP, int] = {}
        self._reachable = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._committer: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[None]] = set()
        """Tasks of partitions dropped without waiting for them (cancelled, ending)."""

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        try:
            await self._client.start()
        except (KafkaException, RuntimeError) as e:
            self._running = False
            raise ConsumerFailed(f"group {self.group!r} cannot subscribe: {e}") from e
        assert self._client.finished is not None
        self._client.finished.add_done_callback(self._thread_ended)
        self._committer = self._loop.create_task(
            self._commit_periodically(), name=f"kafka-commit-{self.group}"
        )
        self._committer.add_done_callback(self._task_ended)
        if self._progress is not None:
            self._progress.reachable(self.group, True)
        log.info(
            "consuming %s in group %s", ", ".join(sorted(self._subscriptions)), self.group
        )

    async def stop(self) -> None:
        """Stop fetching, finish in-flight records (within the grace period), commit, and
        leave the group; bounded whatever the broker does."""
        if not self._running:
            return
        self._running = False
        self._client.stop_fetching()
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        offsets = await self._stop_partitions(list(self._partitions))
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._client.close(offsets)
        except TimeoutError:
            log.warning(
                "group %s: the Kafka client did not commit and leave the group within "
                "%.0f s (is the broker reachable?); giving up on it: records after the "
                "last commit will be redelivered", self.group, _CLOSE_TIMEOUT_S,
            )
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=_CLOSE_TIMEOUT_S)

    def _thread_ended(self, finished: asyncio.Future[None]) -> None:
        if self._running and not finished.cancelled():
            log.error(
                "group %s: the Kafka consumer thread ended (%s); this group's topics are "
                "no longer consumed", self.group, finished.exception() or "no error",
            )

    def _task_ended(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "bug: %s failed", task.get_name(), exc_info=task.exception()
            )

    # --- what the consumer thread reports ---------------------------------------------

    def records_fetched(self, records: list[Any]) -> None:
        if not self._running:
            return  # stopping: the next owner gets them
        for record in records:
            self._enqueue(record)

    def partitions_assigned(self, tps: list[TP]) -> None:
        self._assigned.update(tps)

    async def partitions_revoked(self, tps: list[TP]) -> list[TopicPartition]:
        """On the loop while the rebalance callback waits (see `ConsumerThread`)."""
        self._assigned.difference_update(tps)
        return await self._stop_partitions(tps)

    def partitions_lost(self, tps: list[TP]) -> None:
        # Another member may own them already: no waiting, no committing.
        self._assigned.difference_update(tps)
        for tp in tps:
            p = self._partitions.get(tp)
            if p is not None:
                self._drop(p)

    def watermarks_read(self, highs: dict[TP, int]) -> None:
        self._highs = highs

    def reachability_changed(self, reachable: bool) -> None:
        self._reachable = reachable
        if self._progress is not None:
            self._progress.reachable(self.group, reachable)
        self._report_lag()

    def commit_failed(self, tps: list[TP]) -> None:
        for tp in tps:
            self._committed.pop(tp, None)

    # --- fetched records ----------------------------------------------------------------

    def _enqueue(self, record: Any) -> None:
        tp = (record.topic(), record.partition())
        if tp not in self._assigned:
            return  # fetched before its partition was revoked or lost
        partition = self._partitions.get(tp)
        if partition is None:
            subscription = self._subscriptions.get(tp[0])
            if subscription is None:
                return
            partition = self._partitions[tp] = _Partition[S, P](tp, subscription)
            assert self._loop is not None
            partition.task = self._loop.create_task(
                self._work(partition), name=f"kafka-{tp[0]}-{tp[1]}"
            )
            partition.task.add_done_callback(self._task_ended)
        partition.queue.append(record)
        partition.ready.set()
        if not partition.paused and len(partition.queue) >= _PAUSE_AT:
            partition.paused = True
            self._client.pause([tp])

    # --- handling -----------------------------------------------------------------------

    async def _work(self, p: _Partition[S, P]) -> None:
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
                self._client.resume([p.tp])

    async def _run_lane(
        self, p: _Partition[S, P], key: str, lane: deque[tuple[_Slot, P]]
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
        self, p: _Partition[S, P], slot: _Slot, rest: Coroutine[Any, Any, None]
    ) -> None:
        await rest
        p.finish(slot)

    def _spawn(self, p: _Partition[S, P], coro: Coroutine[Any, Any, None], what: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=f"kafka-{p.tp[0]}-{p.tp[1]}-{what}")
        p.tasks.add(task)
        task.add_done_callback(p.tasks.discard)
        task.add_done_callback(self._task_ended)

    async def _stop_partitions(self, tps: list[TP]) -> list[TopicPartition]:
        """Let each partition's in-flight records finish (within the grace period),
        forget the partitions, and return their offsets not yet committed. Cancelled
        (the rebalance callback gave up), it still forgets them."""
        stopping = [p for tp in tps if (p := self._partitions.get(tp)) is not None]
        for p in stopping:
            p.stopping = True
            p.ready.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REVOKE_GRACE_S
        try:
            # Lanes spawn delivery waits while they finish, so look again each round.
            while tasks := [t for p in stopping for t in p.unfinished()]:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait(tasks, timeout=remaining)
            # All of them, committed before or not: an earlier asynchronous commit may
            # still fail, and this is the last chance.
            offsets = [
                TopicPartition(*p.tp, p.done_offset)
                for p in stopping if p.done_offset is not None
            ]
        finally:
            # Records still queued, or cut off after the grace period, were not
            # finished: the next owner gets them again.
            for p in stopping:
                self._drop(p)
        return offsets

    def _drop(self, p: _Partition[S, P]) -> None:
        """Forget the partition; its unfinished tasks are cancelled and end on their own."""
        p.stopping = True
        p.ready.set()
        for task in p.unfinished():
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
        if self._partitions.get(p.tp) is p:
            del self._partitions[p.tp]
        self._committed.pop(p.tp, None)
        self._highs.pop(p.tp, None)
        if self._progress is not None:
            self._progress.forget(*p.tp)

    # --- committing ---------------------------------------------------------------------

    def _uncommitted(self) -> list[TopicPartition]:
        offsets = []
        for tp, p in self._partitions.items():
            if p.done_offset is not None and self._committed.get(tp) != p.done_offset:
                offsets.append(TopicPartition(tp[0], tp[1], p.done_offset))
        return offsets

    def _report_lag(self) -> None:
        """Records behind the partition's end, from the high watermark the consumer
        thread last read (unknown while no broker is reachable)."""
        if self._progress is None:
            return
        for tp, p in self._partitions.items():
            if not self._reachable:
                self._progress.lag(tp[0], tp[1], None)
                continue
            high = self._highs.get(tp)
            if high is not None and p.done_offset is not None:
                self._progress.lag(tp[0], tp[1], max(high - p.done_offset, 0))

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            self._report_lag()
            offsets = self._uncommitted()
            if not offsets:
                continue
            # Believed committed at once; a failure comes back through commit_failed.
            self._client.commit(offsets)
            for o in offsets:
                self._committed[(o.topic, o.partition)] = o.offset
