"""What happens to one consumed record: decode, run the command, publish, or reject.

A record's offset is committed only after `run` and the coroutine it returns are
done, so everything here either finished (command applied; reply acknowledged by the
broker when the method has `eventing.out`; rejected records logged or dead-lettered)
or is retried in place, which keeps the lane's order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from .. import tracing
from ..entities.idempotency import is_already_applied, is_key_reused
from ..invoke import InvokeError, InvokeResult, MetadataPairs
from ..model import Method
from . import dedup
from .cloudevents import (
    Command,
    MalformedRecord,
    decode,
    publishing,
    reply_headers,
    trace_context,
    traced,
)
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
    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[None]:
        """Queue a record (waiting only for room in the client's buffer) and return its
        delivery: done when the broker has it, or failed with PublishFailed. Records
        sent one after another to one partition are delivered in that order."""
        ...


class Counters(Protocol):
    """What the processor counts (see `EventingMetrics`)."""

    def consumed(self, topic: str) -> None: ...
    def rejected(self, topic: str, dead_lettered: bool) -> None: ...
    def published(self, topic: str) -> None: ...


class _NoCounters:
    def consumed(self, topic: str) -> None:
        pass

    def rejected(self, topic: str, dead_lettered: bool) -> None:
        pass

    def published(self, topic: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Prepared:
    """A consumed record, decoded, with the lane it must run in."""

    subscription: Subscription
    record: Any
    lane: str
    """Records with the same lane run one at a time in offset order: the entity id, or
    for actions and undecodable records the record's key (empty without one)."""
    command: Command | None
    problem: str = ""
    """Why the record cannot become a command (when `command` is None)."""


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


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    value: bytes
    key: bytes | None
    headers: Sequence[tuple[str, bytes]]


def _lane(command: Command | None, record: Any) -> str:
    if command is not None and command.entity_id is not None:
        return command.entity_id
    # Kafka keys are usually the entity id, so a record that cannot be decoded queues
    # behind its entity's records; sharing a lane with an unrelated key only costs
    # concurrency, never order.
    key: bytes | None = record.key()
    return key.decode("utf-8", "surrogateescape") if key else ""


class RecordProcessor:
    def __init__(
        self,
        spec: EventingSpec,
        runner: CommandRunner,
        publisher: Publisher | None,
        dead_letter_topic: str = "",
        *,
        backoff: Backoff = Backoff(),
        counters: Counters | None = None,
        deduplicate: bool = True,
    ) -> None:
        self._spec = spec
        self._runner = runner
        self._deduplicate = deduplicate
        self._backoff = backoff
        self._counters: Counters = counters or _NoCounters()
        self._outbox = Outbox(publisher, dead_letter_topic, backoff=backoff, counters=counters)

    def prepare(self, subscription: Subscription, record: Any) -> Prepared:
        """Decode the record (no I/O) and pick its lane."""
        self._counters.consumed(record.topic())
        try:
            command = decode(subscription.method, record.value(), record.headers() or [])
        except MalformedRecord as e:
            return Prepared(subscription, record, _lane(None, record), None, str(e))
        if self._deduplicate:
            command = dedup.keyed(command, record.topic(), record.partition(), record.offset())
        return Prepared(subscription, record, _lane(command, record), command)

    async def run(self, prepared: Prepared) -> Coroutine[Any, Any, None] | None:
        """Run the command (transient failures retried in place) and queue its reply
        or dead letter; return what is left to await before the record's offset may
        be committed (the broker's acknowledgement), or None when nothing is."""
        record, method = prepared.record, prepared.subscription.method
        command = prepared.command
        if command is None:
            return await self._outbox.reject(
                record, method.model.path, "malformed", prepared.problem
            )
        if not tracing.enabled():
            return await self._run(record, method, command)
        with tracing.span(
            f"consume {record.topic()}",
            tracing.SpanKind.CONSUMER,
            # The producer's trace, when the record carries one (W3C or CloudEvents).
            parent=tracing.extract(trace_context(command.metadata)),
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic(),
                "messaging.destination.partition.id": str(record.partition()),
                "messaging.kafka.offset": record.offset(),
                "rpc.method": method.model.path,
            },
        ):
            return await self._run(record, method, command)

    async def _run(
        self, record: Any, method: Method, command: Command
    ) -> Coroutine[Any, Any, None] | None:
        delays = self._backoff.delays()
        while True:
            try:
                result = await self._runner.call(
                    method, command.payload, command.metadata, command.parsed
                )
                break
            except InvokeError as e:
                if e.code not in TRANSIENT:
                    return await self._refused(record, method, command, e)
                delay = next(delays)
                log.warning(
                    "%s on %s failed with %s (%s); retrying in %.1fs",
                    method.model.path, _where(record), e.code.name, e.message, delay,
                )
                await asyncio.sleep(delay)
        publication = self._spec.publication(method)
        if publication is None:
            return None
        key = command.entity_id.encode() if command.entity_id is not None else record.key()
        # A deterministic id: a record redelivered after a crash produces a reply
        # with the same ce-id, so consumers downstream can drop the duplicate.
        event_id = dedup.reply_event_id(
            command, record.topic(), record.partition(), record.offset()
        )
        return await self._outbox.publish(
            publication.topic, result.payload, key,
            reply_headers(method, event_id, command.entity_id), record,
        )

    async def _refused(
        self, record: Any, method: Method, command: Command, error: InvokeError
    ) -> Coroutine[Any, Any, None] | None:
        if command.dedup_key is not None:
            if is_already_applied(error):
                # A delivery of an event the entity applied before, whose reply was too
                # large to keep: nothing to run again, but nothing to publish either.
                log.warning(
                    "record %s for %s was applied before (key %s); its reply was too "
                    "large to keep, so it is not published again",
                    _where(record), method.model.path, command.dedup_key,
                )
                return None
            if is_key_reused(error):
                return await self._outbox.reject(
                    record, method.model.path, error.code.name,
                    f"{error.message} ({dedup.reuse_cause(command.dedup_key)})",
                )
        return await self._outbox.reject(record, method.model.path, error.code.name, error.message)

    async def handle(self, subscription: Subscription, record: Any) -> None:
        """Everything for one record, up to the broker's acknowledgement."""
        rest = await self.run(self.prepare(subscription, record))
        if rest is not None:
            await rest


class Outbox:
    """Records this sidecar produces because of a consumed one (replies, dead letters):
    queued in order, confirmed later, retried until the broker has them."""

    def __init__(
        self,
        publisher: Publisher | None,
        dead_letter_topic: str = "",
        *,
        backoff: Backoff = Backoff(),
        counters: Counters | None = None,
    ) -> None:
        self._publisher = publisher
        self._dead_letter_topic = dead_letter_topic
        self._backoff = backoff
        self._counters: Counters = counters or _NoCounters()

    async def reject(
        self, record: Any, path: str, reason: str, detail: str
    ) -> Coroutine[Any, Any, None] | None:
        """Log a record that cannot be used and send it to the dead-letter topic (when
        one is set); return what is left to await before its offset may be committed."""
        target = self._dead_letter_topic
        log.error(
            "record %s for %s rejected (%s): %s; %s",
            _where(record), path, reason, detail,
            f"sent to dead-letter topic {target!r}" if target else "skipped",
        )
        self._counters.rejected(record.topic(), bool(target))
        if not target:
            return None
        headers = [
            *((k, v) for k, v in (record.headers() or []) if v is not None),
            ("larder-error-reason", reason.encode()),
            ("larder-error-detail", detail.encode("utf-8", "replace")),
            ("larder-error-method", path.encode()),
            ("larder-error-source", _where(record).encode()),
        ]
        return await self.publish(target, record.value() or b"", record.key(), headers, record)

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        record: Any,
    ) -> Coroutine[Any, Any, None]:
        """Queue the record now (so replies keep their order), confirm it later."""
        assert self._publisher is not None, "publications need a producer"
        with publishing(topic):
            outgoing = _Outgoing(topic, value, key, traced(headers))
            delivery = await self._send(outgoing)
        return self._confirm(delivery, outgoing, record)

    async def _send(self, out: _Outgoing) -> Awaitable[None]:
        assert self._publisher is not None
        try:
            return await self._publisher.send(out.topic, out.value, out.key, out.headers)
        except PublishFailed as e:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(e)
            return failed

    async def _confirm(self, delivery: Awaitable[None], out: _Outgoing, record: Any) -> None:
        delays = self._backoff.delays()
        while True:
            try:
                await delivery
            except PublishFailed as e:
                # Not committing until the broker has it is what makes this
                # at-least-once; a non-retriable error (e.g. not authorized) blocks the
                # partition until someone fixes it, and says so each time. A reply sent
                # again may land after a later reply of the same entity.
                delay = next(delays)
                log.log(
                    logging.WARNING if e.retriable else logging.ERROR,
                    "publishing the result of %s to %r failed: %s; retrying in %.1fs",
                    _where(record), out.topic, e, delay,
                )
                await asyncio.sleep(delay)
                delivery = await self._send(out)
            else:
                self._counters.published(out.topic)
                return
