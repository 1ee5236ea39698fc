"""A call of one of the user's methods with one request message, served in process: the
request goes straight to the dispatcher, as the HTTP/1.1 front's requests do. A unary
reply is written as one HEADERS + DATA + trailers burst; a server-streamed reply (a
streamed action, a streamed view query) as HEADERS, one DATA per message as the client's
window allows, then trailers. Relaying those through grpc.aio cost two grpc.aio
operations per message (its write, our read): about 5 ms of CPU for a view query
answering a dozen rows, against 1.4 ms for the same query over HTTP/1.1.

The call's task is owned by the stream: a client's RST_STREAM, the deadline or the
connection's end cancels it. A command that has not started then never runs (its
caller is gone from the entity's queue); one that has started finishes, its reply
unsent, as with grpc.aio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError, Message
from larder_sidecar.function_limit import FunctionLimit
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import EntityIdTooLong, Method

from .connection import Http2Connection, Stream
from .headers import RESPONSE_HEAD, RequestHead
from .messages import (
    CallError,
    MessageReader,
    check_encoding,
    metadata_block,
    parse_timeout,
    prefixed,
    status_trailers,
    trailers_only,
)

log = logging.getLogger(__name__)


class UnaryDispatcher(Protocol):
    """What the front needs of `larder_sidecar.dispatch.Dispatcher`."""

    async def call(
        self, method: Method, payload: bytes, metadata: MetadataPairs,
        parsed: Message | None = None,
    ) -> InvokeResult: ...

    def streamed_out(
        self, method: Method, payload: bytes, metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]: ...


@dataclass(frozen=True)
class UnaryServices:
    dispatcher: UnaryDispatcher
    methods: Mapping[str, Method]
    """The user's methods with one request message (unary and server-streamed) by gRPC
    path; every other path goes to grpc.aio."""
    max_message_bytes: int
    function_limit: FunctionLimit = field(default_factory=FunctionLimit)
    metrics: Metrics = field(default_factory=Metrics)


def client_metadata(method: Method, head: RequestHead) -> MetadataPairs:
    """The request's headers that the method's component asked for (`forward_headers`);
    gRPC's own (`grpc-*`) never travel. `-bin` values travel as their base64 text."""
    return method.component.forwarded(
        [(k, v) for k, v in head.metadata if not k.startswith("grpc-")]
    )


class UnaryCall:
    __slots__ = (
        "_connection",
        "_deadline",
        "_done",
        "_head",
        "_headers_sent",
        "_method",
        "_reader",
        "_services",
        "_stream",
        "_task",
    )

    def __init__(
        self,
        connection: Http2Connection,
        stream: Stream,
        method: Method,
        head: RequestHead,
        services: UnaryServices,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._method = method
        self._head = head
        self._services = services
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._done = False
        self._headers_sent = False
        self._reader = MessageReader(services.max_message_bytes, head.encoding)
        try:
            check_encoding(head.encoding)
            if head.timeout is not None:
                timeout = parse_timeout(head.timeout)
                self._deadline = connection.loop.call_later(timeout, self._expired)
        except CallError as e:
            self._fail(e.code, e.message)

    # StreamHandler

    def data(self, data: bytes) -> None:
        self._connection.consumed(self._stream, len(data))
        if self._done:
            return
        reader = self._reader
        try:
            reader.feed(data)
        except CallError as e:
            self._fail(e.code, e.message)
            return
        if len(reader.messages) > 1:
            self._fail(grpc.StatusCode.INTERNAL,
                       f"{self._method.model.path} is unary but the request has more than "
                       "one message")

    def end(self) -> None:
        if self._done:
            return
        reader = self._reader
        if reader.partial:
            self._fail(grpc.StatusCode.INTERNAL,
                       "the request ended inside a message (fewer bytes than its length "
                       "prefix announced)")
        elif not reader.messages:
            self._fail(grpc.StatusCode.INTERNAL,
                       f"{self._method.model.path} is unary but the request has no message")
        else:
            self._task = self._connection.loop.create_task(
                self._run(reader.messages[0])
            )

    def reset(self) -> None:
        self._finish()
        if self._task is not None:
            self._task.cancel()

    # the call

    async def _run(self, payload: bytes) -> None:
        services = self._services
        method = self._method
        try:
            metadata = client_metadata(method, self._head)
            try:
                services.function_limit.check(method.model, len(payload), metadata)
            except InvokeError:
                services.metrics.limit_refusals.labels("user_function_message_bytes").inc()
                raise
            try:
                parsed = method.parse(payload)
            except DecodeError as e:
                raise InvokeError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {method.model.input.full_name}: {e}",
                ) from e
            if method.model.server_streaming:
                await self._stream_replies(payload, metadata)
                return
            result = await services.dispatcher.call(method, payload, metadata, parsed)
        except InvokeError as e:
            if isinstance(e.__cause__, EntityIdTooLong):
                services.metrics.limit_refusals.labels("entity_id_bytes").inc()
            self._fail(e.code, e.message)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("calling %s over gRPC failed", method.model.path)
            self._fail(grpc.StatusCode.INTERNAL,
                       f"the sidecar failed while calling {method.model.path}; see its log")
            return
        if self._done:
            return
        self._finish()
        head = RESPONSE_HEAD + metadata_block(result.metadata) if result.metadata else RESPONSE_HEAD
        self._connection.send_headers(self._stream, head)
        self._connection.send_data(self._stream, prefixed(result.payload),
                                   status_trailers(grpc.StatusCode.OK, ""))

    async def _stream_replies(self, payload: bytes, metadata: MetadataPairs) -> None:
        """Each reply message as it comes, waiting for the client's window between them so
        a slow reader holds back the producer. The first reply's metadata is the headers;
        later replies' go in the trailers (as on the grpc.aio path, `grpc_front.py`)."""
        connection, stream = self._connection, self._stream
        trailing: list[tuple[str, str]] = []
        replies = self._services.dispatcher.streamed_out(self._method, payload, metadata)
        async for result in replies:
            if self._done:
                return
            if not self._headers_sent:
                self._headers_sent = True
                connection.send_headers(stream, RESPONSE_HEAD + metadata_block(result.metadata)
                                        if result.metadata else RESPONSE_HEAD)
            elif result.metadata:
                trailing.extend(result.metadata)
            connection.send_data(stream, prefixed(result.payload))
            await connection.writable(stream)
        if self._done:
            return
        if not self._headers_sent:
            self._fail(grpc.StatusCode.OK, "")  # no message: a trailers-only OK
            return
        self._finish()
        connection.send_data(stream, b"", status_trailers(grpc.StatusCode.OK, "", trailing))

    def _expired(self) -> None:
        self._deadline = None
        if self._task is not None:
            self._task.cancel()
        self._fail(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _fail(self, code: grpc.StatusCode, message: str) -> None:
        if self._done:
            return
        self._finish()
        if self._headers_sent:
            # A streamed reply that ends badly after its first message: the status goes
            # in the trailers after the messages already sent.
            self._connection.send_data(self._stream, b"", status_trailers(code, message))
        else:
            self._connection.send_headers(self._stream, trailers_only(code, message),
                                          end_stream=True)

    def _finish(self) -> None:
        self._done = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
