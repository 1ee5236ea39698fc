"""Fakes for the processing and consumer tests: a dispatcher, a producer, consumed
records, and confluent-kafka's consumer."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


class FakeConsumer:
    """confluent-kafka's Consumer as GroupConsumer uses it: `feed()` hands it records,
    `consume()` blocks (on a worker thread) until some arrive or the wait is over."""

    def __init__(self) -> None:
        self._batches: queue.Queue[list[FakeRecord]] = queue.Queue()
        self.commits: list[dict[tuple[str, int], int]] = []
        self.committed = asyncio.Event()
        self.closed = False

    def feed(self, records: list[FakeRecord]) -> None:
        self._batches.put(records)

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[FakeRecord]:
        try:
            return self._batches.get(timeout=timeout)
        except queue.Empty:
            return []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        # Called on the event loop's thread (the periodic commit) or, on stop, from
        # a worker thread.
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})
        if threading.current_thread() is threading.main_thread():
            self.committed.set()  # asyncio events are not thread-safe

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        return (0, -1)

    def pause(self, partitions: list[Any]) -> None:
        pass

    def resume(self, partitions: list[Any]) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def last_commit(self, topic: str, partition: int) -> int | None:
        for commit in reversed(self.commits):
            if (topic, partition) in commit:
                return commit[(topic, partition)]
        return None
