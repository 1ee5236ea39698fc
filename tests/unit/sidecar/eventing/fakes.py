"""Fakes for the processing tests: a dispatcher, a producer, and consumed records."""

from __future__ import annotations

from collections.abc import Sequence
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

    async def publish(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append((topic, value, key, dict(headers)))
