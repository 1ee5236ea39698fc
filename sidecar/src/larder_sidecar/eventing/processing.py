"""What happens to one consumed record: decode, run the command, publish, or reject.

The record's offset is committed only after this returns, so everything here either
finished (command applied; reply published when the method has `eventing.out`;
rejected records logged or dead-lettered) or is retried in place, which keeps the
partition's order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from ..invoke import InvokeError, InvokeResult, MetadataPairs
from ..model import Method
from .cloudevents import MalformedRecord, decode, reply_headers
from .producer import PublishFailed
from .spec import EventingSpec, Subscription

log = logging.getLogger("larder_sidecar.eventing")

TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
"""Codes that say "try again": the user function or the journal is briefly away, or
another writer won a race. Anything else is the command's own answer."""


class CommandRunner(Protocol):
    """The dispatcher's entry point (the same one the gRPC and HTTP fronts use)."""

    async def call(
        self, method: Method, payload: bytes, metadata: MetadataPairs, parsed: Any = None
    ) -> InvokeResult: ...


class Publisher(Protocol):
    async def publish(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 10.0

    def delays(self) -> Any:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * 2, self.maximum)


def _where(record: Any) -> str:
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"


class RecordProcessor:
    def __init__(
        self,
        spec: EventingSpec,
        runner: CommandRunner,
        publisher: Publisher | None,
        dead_letter_topic: str = "",
        backoff: Backoff = Backoff(),
    ) -> None:
        self._spec = spec
        self._runner = runner
        self._publisher = publisher
        self._dead_letter_topic = dead_letter_topic
        self._backoff = backoff

    async def handle(self, subscription: Subscription, record: Any) -> None:
        method = subscription.method
        try:
            command = decode(method, record.value(), record.headers() or [])
        except MalformedRecord as e:
            await self._reject(record, method, "malformed", str(e))
            return
        delays = self._backoff.delays()
        while True:
            try:
                result = await self._runner.call(
                    method, command.payload, command.metadata, command.parsed
                )
                break
            except InvokeError as e:
                if e.code not in TRANSIENT:
                    await self._reject(record, method, e.code.name, e.message)
                    return
                delay = next(delays)
                log.warning(
                    "%s on %s failed with %s (%s); retrying in %.1fs",
                    method.model.path, _where(record), e.code.name, e.message, delay,
                )
                await asyncio.sleep(delay)
        publication = self._spec.publication(method)
        if publication is not None:
            key = command.entity_id.encode() if command.entity_id is not None else record.key()
            # A deterministic id: a record redelivered after a crash produces a reply
            # with the same ce-id, so consumers downstream can drop the duplicate.
            event_id = f"{record.topic()}-{record.partition()}-{record.offset()}"
            await self._publish(
                publication.topic, result.payload, key,
                reply_headers(method, event_id, command.entity_id), record,
            )

    async def _reject(self, record: Any, method: Method, reason: str, detail: str) -> None:
        target = self._dead_letter_topic
        log.error(
            "record %s for %s rejected (%s): %s; %s",
            _where(record), method.model.path, reason, detail,
            f"sent to dead-letter topic {target!r}" if target else "skipped",
        )
        if not target:
            return
        headers = [
            *((k, v) for k, v in (record.headers() or []) if v is not None),
            ("larder-error-reason", reason.encode()),
            ("larder-error-detail", detail.encode("utf-8", "replace")),
            ("larder-error-method", method.model.path.encode()),
            ("larder-error-source", _where(record).encode()),
        ]
        await self._publish(target, record.value() or b"", record.key(), headers, record)

    async def _publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        record: Any,
    ) -> None:
        assert self._publisher is not None, "publications need a producer"
        delays = self._backoff.delays()
        while True:
            try:
                await self._publisher.publish(topic, value, key, headers)
            except PublishFailed as e:
                # Not committing until the broker has it is what makes this
                # at-least-once; a non-retriable error (e.g. not authorized) blocks the
                # partition until someone fixes it, and says so each time.
                delay = next(delays)
                log.log(
                    logging.WARNING if e.retriable else logging.ERROR,
                    "publishing the result of %s to %r failed: %s; retrying in %.1fs",
                    _where(record), topic, e, delay,
                )
                await asyncio.sleep(delay)
            else:
                return
