"""Replies of `eventing.out` methods called over gRPC or HTTP are published too.

The fronts call the dispatcher's `call` (gRPC) and `invoke` (HTTP, which goes through
`call`), so a dispatcher whose `call` publishes covers both. The consumer must not
publish that way (it publishes with a deterministic id and commits after the broker's
acknowledgement), so it gets `quiet`, which calls the plain dispatcher.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from ..dispatch import Dispatcher, parse
from ..invoke import InvokeError, InvokeResult, MetadataPairs
from ..model import KeyError_, Method
from .cloudevents import new_event_id, publishing, reply_headers, traced
from .processing import CommandRunner, Counters, Publisher
from .producer import PublishFailed
from .spec import EventingSpec


class PublishingDispatcher(Dispatcher):
    """A `Dispatcher` whose direct calls of `out` methods publish their replies before
    answering the caller."""

    def __init__(
        self, *args: Any, spec: EventingSpec, publisher: Publisher, counters: Counters
    ) -> None:
        super().__init__(*args)
        self._topics = {p.method.model.path: p.topic for p in spec.publications}
        self._publisher = publisher
        self._counters = counters

    @property
    def quiet(self) -> CommandRunner:
        """Calls that do not publish (for the consumer)."""
        return _Quiet(self)

    async def call(
        self,
        method: Method,
        payload: bytes,
        metadata: MetadataPairs,
        parsed: Message | None = None,
        *,
        entry: bool = True,
    ) -> InvokeResult:
        result = await super().call(method, payload, metadata, parsed, entry=entry)
        topic = self._topics.get(method.model.path)
        if topic is not None:
            entity_id = None
            if method.key is not None:
                try:
                    entity_id = method.key.extract(parsed or parse(method, payload))
                except KeyError_:  # the command ran, so the key was there
                    entity_id = None
            await self._publish(method, topic, result, entity_id)
        return result

    async def streamed_in(
        self, method: Method, payloads: AsyncIterator[bytes], metadata: MetadataPairs
    ) -> InvokeResult:
        result = await super().streamed_in(method, payloads, metadata)
        topic = self._topics.get(method.model.path)
        if topic is not None:
            await self._publish(method, topic, result, None)
        return result

    async def _publish(
        self, method: Method, topic: str, result: InvokeResult, entity_id: str | None
    ) -> None:
        # The caller learns about a reply the broker does not have: a caller that
        # retries may run the command twice, which is what the message says.
        key = entity_id.encode() if entity_id is not None else None
        try:
            with publishing(topic):
                headers = traced(reply_headers(method, new_event_id(), entity_id))
                delivery = await self._publisher.send(topic, result.payload, key, headers)
            await delivery
        except PublishFailed as e:
            raise InvokeError(
                grpc.StatusCode.UNAVAILABLE,
                f"{method.model.path} ran, but its reply was not published to topic "
                f"{topic!r}: {e}; calling again runs the command again",
            ) from e
        self._counters.published(topic)


class _Quiet:
    def __init__(self, dispatcher: PublishingDispatcher) -> None:
        self._dispatcher = dispatcher

    async def call(
        self, method: Method, payload: bytes, metadata: MetadataPairs, parsed: Any = None
    ) -> InvokeResult:
        # The base class's call: the same command path, without publishing; traced under
        # the record's CONSUMER span, not as a client's call.
        return await Dispatcher.call(
            self._dispatcher, method, payload, metadata, parsed, entry=False
        )
