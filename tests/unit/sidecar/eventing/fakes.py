"""Fakes for the processing and consumer tests: a dispatcher, a producer, consumed
records, confluent-kafka's consumer, and where lag is reported."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs
from larder_sidecar.model import Method


@dataclass
class FakeRecord:
    """The part of confluent-kafka's `Message` the sidecar reads."""

    _value: bytes | None
    _headers: list[tuple[str, bytes]] = field(default_factory=list)
    _key: bytes | None = None
    _topic: str = "adds"
    _partition: int = 2
    _offset: int = 41

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers or None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


@dataclass
class FakeRunner:
    """Answers with `reply`, after raising the queued `errors` one call at a time."""

    reply: bytes = b""
    errors: list[InvokeError] = field(default_factory=list)
    calls: list[tuple[str, bytes, MetadataPairs]] = field(default_factory=list)

    async def call(
        self, method: Method, payload: bytes, metadata: MetadataPairs, parsed: Any = None
    ) -> InvokeResult:
        self.calls.append((method.model.path, payload, metadata))
        if self.errors:
            raise self.errors.pop(0)
        return InvokeResult(self.reply)


@dataclass
class FakePublisher:
    published: list[tuple[str, bytes, bytes | None, dict[str, bytes]]] = field(
        default_factory=list
    )
    failures: list[Exception] = field(default_factory=list)

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[None]:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            delivery.set_exception(self.failures.pop(0))
        else:
            self.published.append((topic, value, key, dict(headers)))
            delivery.set_result(None)
        return delivery


@dataclass
class FakeTopicPartition:
    topic: str
    partition: int
    offset: int = -1


class Signal:
    """One asyncio event for "something changed", settable from any thread; `until`
    waits for a condition without polling on a timer."""

    def __init__(self) -> None:
        """Made on the loop's thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._event = asyncio.Event()

    def set(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._event.set()
            return
        # A client thread may outlive its test's loop.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while True:
                self._event.clear()
                if condition():
                    return
                await self._event.wait()


class FakeConsumer:
    """confluent-kafka's Consumer as GroupConsumer uses it. Passed as `make_client`: it
    keeps the configuration (for its callbacks) and returns itself.

    As in librdkafka, rebalance, error and statistics callbacks run inside `consume()`:
    `assign()`, `revoke()`, `lose()`, `error()` and `stats()` queue them for the next
    one, and `close()` revokes what is still assigned. Records of a partition not
    assigned yet assign it first.

    As strict as the real client, which makes `get_watermark_offsets` from another
    thread wait while a `consume()` runs (measured): any call from another thread waits
    for the running `consume()`, here for at most `patience` seconds; then it is
    recorded in `blocked` and raises, so a deadlock fails a test instead of hanging it.
    `threads` records which threads called it.

    `hang` makes synchronous commits and `close()` wait for `release` (a broker that
    never answers)."""

    patience = 2.0

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self._busy = threading.RLock()
        self._batches: queue.Queue[list[FakeRecord]] = queue.Queue()
        self._inside: queue.Queue[Callable[[], None]] = queue.Queue()
        self.config: dict[str, Any] = {}
        self.callbacks: dict[str, Any] = {}
        self.assignment: set[tuple[str, int]] = set()
        self.highs: dict[tuple[str, int], int] = {}
        self.commits: list[dict[tuple[str, int], int]] = []
        self.sync_commits: list[dict[tuple[str, int], int]] = []
        self.rebalances: list[tuple[str, list[tuple[str, int]], float]] = []
        """(kind, partitions, seconds the callback took), once it returned."""
        self.in_callback = ""
        self.blocked: list[str] = []
        self.threads: set[str] = set()
        self.hang = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def __call__(self, config: dict[str, Any]) -> FakeConsumer:
        self.config = config
        return self

    @contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        name = threading.current_thread().name
        self.threads.add(name)
        if not self._busy.acquire(timeout=self.patience):
            self.blocked.append(f"{what} on {name}")
            raise RuntimeError(f"{what} on {name} waited {self.patience} s for consume()")
        try:
            yield
        finally:
            self._busy.release()

    # --- what a test does ---------------------------------------------------------------

    def feed(self, records: list[FakeRecord]) -> None:
        self._batches.put(records)

    def assign(self, tps: list[tuple[str, int]]) -> None:
        self._inside.put(lambda: self._rebalance("assign", tps))

    def revoke(self, tps: list[tuple[str, int]]) -> None:
        self._inside.put(lambda: self._rebalance("revoke", tps))

    def lose(self, tps: list[tuple[str, int]]) -> None:
        self._inside.put(lambda: self._rebalance("lose", tps))

    def error(self, code: int) -> None:
        self._inside.put(lambda: self.config["error_cb"](KafkaError(code)))

    def stats(self, broker_state: str) -> None:
        stats = {"brokers": {"127.0.0.1:9092/1": {"source": "learned", "state": broker_state}}}
        self._inside.put(lambda: self.config["stats_cb"](json.dumps(stats)))

    def last_commit(self, topic: str, partition: int) -> int | None:
        for commit in reversed(self.commits):
            if (topic, partition) in commit:
                return commit[(topic, partition)]
        return None

    # --- the client's API ---------------------------------------------------------------

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None
    ) -> None:
        with self._exclusive("subscribe"):
            self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lose": on_lost}

    def consume(self, num_messages: int, timeout: float) -> list[FakeRecord]:
        with self._exclusive("consume"):
            while True:
                try:
                    self._inside.get_nowait()()
                except queue.Empty:
                    break
            try:
                batch = self._batches.get(timeout=timeout)
            except queue.Empty:
                return []
            new = sorted({(r.topic(), r.partition()) for r in batch} - self.assignment)
            if new:
                self._rebalance("assign", new)
            return batch

    def _rebalance(self, kind: str, tps: list[tuple[str, int]]) -> None:
        if kind == "assign":
            self.assignment |= set(tps)
        else:
            self.assignment -= set(tps)
        # librdkafka hands a lost assignment to on_revoke when there is no on_lost.
        callback = self.callbacks[kind] or self.callbacks["revoke"]
        self.in_callback = kind
        self.signal.set()
        started = time.monotonic()
        callback(self, [FakeTopicPartition(*tp) for tp in tps])
        self.in_callback = ""
        self.rebalances.append((kind, tps, time.monotonic() - started))
        self.signal.set()

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        with self._exclusive("commit"):
            if not asynchronous and self.hang.is_set():
                self.release.wait()
            commit = {(o.topic, o.partition): o.offset for o in offsets}
            self.commits.append(commit)
            if not asynchronous:
                self.sync_commits.append(commit)
        self.signal.set()

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        with self._exclusive("get_watermark_offsets"):
            return (0, self.highs.get((tp.topic, tp.partition), -1))

    def pause(self, partitions: list[Any]) -> None:
        with self._exclusive("pause"):
            pass

    def resume(self, partitions: list[Any]) -> None:
        with self._exclusive("resume"):
            pass

    def close(self) -> None:
        with self._exclusive("close"):
            if self.hang.is_set():
                self.release.wait()
            if self.assignment:
                self._rebalance("revoke", sorted(self.assignment))
            self.closed = True
        self.signal.set()


@dataclass
class FakeProgress:
    """Lag and reachability as `EventingMetrics` would get them."""

    signal: Signal
    lags: list[tuple[str, int, int | None]] = field(default_factory=list)
    reachable_now: dict[str, bool] = field(default_factory=dict)

    def lag(self, topic: str, partition: int, records: int | None) -> None:
        self.lags.append((topic, partition, records))
        self.signal.set()

    def forget(self, topic: str, partition: int) -> None:
        pass

    def reachable(self, group: str, reachable: bool) -> None:
        self.reachable_now[group] = reachable
        self.signal.set()

    def last_lag(self, topic: str, partition: int) -> int | str | None:
        """The last lag reported for the partition, "never" if none was."""
        for t, p, records in reversed(self.lags):
            if (t, p) == (topic, partition):
                return records
        return "never"
