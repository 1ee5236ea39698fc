"""HTTP/1.1 on an asyncio transport: httptools parses, requests are served in order.

Keep-alive and pipelining: requests are queued as they complete and served one at a
time, so responses leave in request order. Reading pauses when too many pipelined
requests wait or when the peer stops reading our responses.

Limits: httptools buffers a header line until it ends and knows nothing of sizes, so
input is fed to it in pieces cut where this module can account for them (`_Feed`): a
head is fed at most up to its blank line and never beyond `head_limit` bytes, a body up
to its declared end, a chunked body line by line between chunks, so each chunk's size is
read before its data arrives (and refused at once when over the body limit).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import grpc
import httptools
from larder_sidecar.logs import clip
from larder_sidecar.metrics import Metrics
from larder_sidecar.settings import PublicPortLimits

from .connections import ConnectionSet
from .dispatch import Dispatcher, HttpRequest, HttpResponse, error_response

log = logging.getLogger(__name__)

_MAX_PIPELINED = 32
"""Complete requests a connection may queue before we stop reading from it."""
_LINGER_SECONDS = 2.0
"""How long to keep reading (and dropping) a refused body so the peer sees our answer."""
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}
_STATUS_LINES[499] = b"HTTP/1.1 499 Client Closed Request\r\n"
_HEAD_END = b"\r\n\r\n"
_REQUEST_LINE_SLACK = 64
"""Bytes of a head besides the target and the header fields: method, version, CRLFs."""
_CHUNK_LINE_KEPT = 64
"""Bytes of a chunk-size line kept to read the size (extensions after it are dropped)."""


class _Phase(enum.Enum):
    HEAD = enum.auto()
    """Between requests or inside a head: cut at the blank line, count the bytes."""
    BODY = enum.auto()
    """A Content-Length body: cut at its end."""
    CHUNK_LINE = enum.auto()
    """Between chunks: cut after each line, read the size when a chunk header ends."""
    CHUNK_DATA = enum.auto()
    """Inside a chunk: cut at its end."""
    TRAILERS = enum.auto()
    """After the last chunk: cut after each line, count the bytes like a head's."""
    UNTRACKED = enum.auto()
    """A body whose start was not seen at a cut (e.g. after an earlier desync): fed as
    it comes; the body limit still holds, checked as the data arrives."""


class _Timer(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    CLOSE = "close"


@dataclass(slots=True)
class _Pending:
    request: HttpRequest | None
    response: HttpResponse | None
    """A response decided while parsing (e.g. 400, 413); it ends the connection."""
    keep_alive: bool
    http10: bool


class Http1Connection(asyncio.Protocol):
    def __init__(
        self,
        dispatcher: Dispatcher,
        max_body: int,
        connections: ConnectionSet,
        *,
        limits: PublicPortLimits | None = None,
        metrics: Metrics | None = None,
        first_byte_at: float | None = None,
    ) -> None:
        """`first_byte_at` (loop time): when the first request's first byte arrived, if it
        arrived before this protocol took over the connection."""
        self._dispatcher = dispatcher
        self._max_body = max_body
        self._connections = connections
        self._limits = limits or PublicPortLimits()
        self._metrics = metrics or Metrics()
        self._first_byte_at = first_byte_at
        self._head_limit = (
            self._limits.max_url_bytes + self._limits.max_header_bytes + _REQUEST_LINE_SLACK
        )
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._declared_body = False
        self._content_length: int | None = None
        self._chunked = False
        self._expect_continue = False
        # Where the input is cut (see the module docstring).
        self._phase = _Phase.HEAD
        self._head_bytes = 0
        self._head_tail = b""
        """The last bytes of the previous piece of a head, for a blank line cut in two."""
        self._feeding_head_end = False
        self._remaining = 0
        self._chunk_line = bytearray()
        self._chunk_header_seen = False
        self._in_message = False
        self._head_done = False
        """The head ended in the piece being fed; the piece is not counted as a head's."""
        # Timeouts: one timer, for what the connection waits for now.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind: _Timer | None = None
        self._body_started = 0.0
        self._queue: deque[_Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._draining = False
        """No new requests are read; close when the queue is served."""
        self._refusing = False
        """A fatal response is queued; input is dropped from now on."""
        self._linger: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        loop = asyncio.get_running_loop()
        if self._first_byte_at is None:
            self._arm(_Timer.IDLE, loop.time() + self._limits.idle_timeout)
        else:
            self._arm(_Timer.HEAD, self._first_byte_at + self._limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        if self._linger is not None:
            self._linger.cancel()
        self._disarm()
        self._queue.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._refusing or self._draining:
            return
        view = memoryview(data)
        pos = 0
        while pos < len(data) and self._transport is not None:
            if self._refusing or self._draining:
                return
            cut = self._cut(data, pos)
            if cut == 0:
                return
            piece = view[pos : pos + cut]
            pos += cut
            self._head_done = False
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade as e:
                self._feeding_head_end = False
                self._after_upgrade(bytes(piece[e.args[0] :]) + data[pos:])
                return
            except httptools.HttpParserError as e:
                self._refuse(
                    400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed HTTP/1.1 request: {e}"
                )
                return
            self._fed(piece)

    def _cut(self, data: bytes, pos: int) -> int:
        """How many bytes of `data` from `pos` to feed next; 0 after refusing the request."""
        available = len(data) - pos
        phase = self._phase
        if phase is _Phase.HEAD:
            room = self._head_limit - self._head_bytes
            if room <= 0:
                self._refuse_head_too_large()
                return 0
            cut = -1
            tail = self._head_tail
            if tail:
                # A blank line split between the previous piece and this one.
                joined = (tail + data[pos : pos + len(_HEAD_END) - 1]).find(_HEAD_END)
                if joined >= 0:
                    cut = joined + len(_HEAD_END) - len(tail)
            if cut < 0:
                end = data.find(_HEAD_END, pos, pos + room)
                if end >= 0:
                    cut = end - pos + len(_HEAD_END)
            if 0 < cut <= room:
                self._feeding_head_end = True
                return cut
            return min(room, available)
        if phase is _Phase.BODY or phase is _Phase.CHUNK_DATA:
            return min(self._remaining, available) or available
        if phase is _Phase.CHUNK_LINE or phase is _Phase.TRAILERS:
            newline = data.find(b"\n", pos, pos + 4096)
            return newline - pos + 1 if newline >= 0 else min(4096, available)
        return available

    def _fed(self, piece: memoryview) -> None:
        """Account for a piece the parser took (its callbacks have run)."""
        count = len(piece)
        # The blank line was not a head's end (empty lines before a request).
        self._feeding_head_end = False
        phase = self._phase
        if self._head_done:
            return
        if phase is _Phase.HEAD:
            if self._in_message:
                self._head_bytes += count
                self._head_tail = bytes(piece[-(len(_HEAD_END) - 1) :])
                if self._head_bytes >= self._head_limit:
                    self._refuse_head_too_large()
        elif phase is _Phase.TRAILERS:
            self._head_bytes += count
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse_head_too_large()
        elif phase is _Phase.BODY or phase is _Phase.CHUNK_DATA:
            self._remaining = max(0, self._remaining - count)
            if self._remaining == 0 and phase is _Phase.CHUNK_DATA:
                self._phase = _Phase.CHUNK_LINE
        elif phase is _Phase.CHUNK_LINE:
            if len(self._chunk_line) < _CHUNK_LINE_KEPT:
                self._chunk_line += piece[: _CHUNK_LINE_KEPT - len(self._chunk_line)]
            if self._chunk_header_seen:
                self._chunk_header_seen = False
                self._chunk_started(bytes(self._chunk_line))
            if piece[-1] == ord("\n"):
                self._chunk_line.clear()

    def _chunk_started(self, line: bytes) -> None:
        # The parser accepted this line as a chunk header, so its size is the hex digits
        # at its start (after the CRLF that ended the previous chunk).
        digits = line.strip().split(b";", 1)[0].strip()
        try:
            size = int(digits, 16)
        except ValueError:
            self._phase = _Phase.UNTRACKED
            return
        if size > self._max_body - self._body_size:
            self._refuse_too_large()
        elif size == 0:
            self._phase = _Phase.TRAILERS
            self._head_bytes = 0
        else:
            self._phase = _Phase.CHUNK_DATA
            self._remaining = size

    def eof_received(self) -> bool:
        # The peer will send nothing more; answer what it already sent, then close.
        self._draining = True
        if self._refusing and self._task is None and not self._queue and self._transport:
            self._transport.close()
        self._serve_next()
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._serve_next()

    # Connection (graceful shutdown)

    def begin_close(self) -> None:
        self._draining = True
        self._serve_next()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._declared_body = False
        self._content_length = None
        self._chunked = False
        self._expect_continue = False
        self._in_message = True
        if self._first_byte_at is not None:
            # The first request's head started before this protocol took over.
            started, self._first_byte_at = self._first_byte_at, None
        else:
            started = asyncio.get_running_loop().time()
        self._arm(_Timer.HEAD, started + self._limits.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            self._metrics.limit_refusals.labels("url_bytes").inc()
            self._refuse(
                414,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request target is longer than {self._limits.max_url_bytes} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refusing:
            return
        self._header_bytes += len(name) + len(value) + 4
        if len(self._headers) >= self._limits.max_header_count:
            self._metrics.limit_refusals.labels("header_count").inc()
            self._refuse(
                431,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request has more than {self._limits.max_header_count} header fields",
            )
            return
        if self._header_bytes > self._limits.max_header_bytes:
            self._refuse_head_too_large()
            return
        lowered = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers.append((lowered, text))
        if lowered == "content-length":
            self._declared_body = text.strip() not in ("", "0")
            if text.strip().isdigit():
                self._content_length = int(text)
                if self._content_length > self._max_body:
                    self._refuse_too_large()
        elif lowered == "transfer-encoding":
            self._declared_body = True
            self._chunked = "chunked" in text.lower()
        elif lowered == "expect":
            self._expect_continue = text.strip().lower() == "100-continue"

    def on_chunk_header(self) -> None:
        self._chunk_header_seen = True

    def on_headers_complete(self) -> None:
        aligned, self._feeding_head_end = self._feeding_head_end, False
        self._head_done = True
        self._head_bytes = 0
        self._head_tail = b""
        if self._refusing:
            return
        if not self._declared_body:
            self._disarm()
        else:
            self._body_started = asyncio.get_running_loop().time()
            self._arm(_Timer.BODY, self._body_deadline())
            if not aligned:
                self._phase = _Phase.UNTRACKED
            elif self._chunked:
                self._phase = _Phase.CHUNK_LINE
                self._chunk_line.clear()
            elif self._content_length:
                self._phase = _Phase.BODY
                self._remaining = self._content_length
            else:
                self._phase = _Phase.UNTRACKED
        if (
            self._expect_continue
            and self._transport is not None
            and self._task is None
            and not self._queue
        ):
            # An interim answer may only go out when no earlier response is still owed.
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._refusing:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._refuse_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._phase = _Phase.HEAD
        self._head_bytes = 0
        self._head_tail = b""
        self._in_message = False
        if self._refusing:
            return
        self._disarm()
        if self._declared_body and self._parser.should_upgrade():
            # httptools does not read the body of an upgrade request, so we cannot serve it.
            self._refuse(
                400,
                grpc.StatusCode.INVALID_ARGUMENT,
                "HTTP Upgrade requests with a body are not supported here; send the "
                "request without Upgrade",
            )
            return
        url = bytes(self._url)
        if url.startswith(b"/"):
            raw_path, _, raw_query = url.partition(b"#")[0].partition(b"?")
        else:
            # Absolute form (`GET http://host/path`), as some clients send through proxies.
            parsed = httptools.parse_url(url)
            raw_path, raw_query = parsed.path or b"/", parsed.query or b""
        request = HttpRequest(
            method=self._parser.get_method().decode("latin-1"),
            path=raw_path.decode("utf-8", "replace"),
            query=raw_query.decode("utf-8", "replace") or None,
            headers=self._headers,
            body=b"".join(self._body),
        )
        self._queue.append(
            _Pending(
                request=request,
                response=None,
                keep_alive=self._parser.should_keep_alive(),
                http10=self._parser.get_http_version() == "1.0",
            )
        )
        if len(self._queue) >= _MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
            self._read_paused = True
        self._serve_next()

    # serving

    def _serve_next(self) -> None:
        transport = self._transport
        while transport is not None and self._task is None and self._queue:
            if self._write_paused:
                return
            pending = self._queue.popleft()
            if pending.request is None:
                assert pending.response is not None
                self._write(pending.response, pending)
                return
            self._task = asyncio.get_running_loop().create_task(self._serve(pending))
        if transport is None or self._task is not None:
            return
        if self._read_paused and not self._draining:
            self._read_paused = False
            transport.resume_reading()
        if self._draining and not self._refusing:
            transport.close()
        elif (
            not self._refusing
            and not self._in_message
            and not self._queue
            and self._timer_kind is None
        ):
            # Nothing owed and nothing coming: wait for the next request, not forever.
            self._arm(_Timer.IDLE, asyncio.get_running_loop().time() + self._limits.idle_timeout)

    async def _serve(self, pending: _Pending) -> None:
        assert pending.request is not None
        try:
            response = await self._dispatcher.handle(pending.request)
        except Exception:
            # Dispatcher turns every failure into a response; this is a bug in it.
            log.exception("serving HTTP %s %s failed", pending.request.method,
                          clip(pending.request.path))
            response = error_response(
                500, grpc.StatusCode.INTERNAL, "the sidecar failed to serve this request"
            )
        self._task = None
        self._write(response, pending)
        self._serve_next()

    def _write(self, response: HttpResponse, pending: _Pending) -> None:
        transport = self._transport
        if transport is None:
            return
        keep_alive = pending.keep_alive and not self._draining and pending.response is None
        status_line = _STATUS_LINES.get(response.status) or (
            f"HTTP/1.1 {response.status} Unknown\r\n".encode()
        )
        head = [
            status_line,
            b"content-type: ",
            response.content_type.encode("latin-1", "replace"),
            b"\r\ncontent-length: ",
            str(len(response.body)).encode(),
            b"\r\n",
        ]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        elif pending.http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        if pending.request is None or pending.request.method != "HEAD":
            head.append(response.body)
        transport.write(b"".join(head))
        if keep_alive:
            return
        self._draining = True
        if pending.response is not None and transport.can_write_eof():
            # Half-close and keep dropping input for a moment: closing with unread data
            # would reset the connection and the peer could lose the answer.
            transport.write_eof()
            self._linger = asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    # timeouts

    def _arm(self, kind: _Timer, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_kind = kind
        self._timer = asyncio.get_running_loop().call_at(deadline, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_kind = None

    def _body_deadline(self) -> float:
        # A slow body may go on while it keeps up the minimum rate on average.
        limits = self._limits
        return self._body_started + limits.body_timeout + self._body_size / limits.min_body_rate

    def _timed_out(self) -> None:
        kind, self._timer, self._timer_kind = self._timer_kind, None, None
        transport = self._transport
        if transport is None or kind is None:
            return
        loop = asyncio.get_running_loop()
        if kind is _Timer.BODY and self._body_deadline() > loop.time():
            self._arm(_Timer.BODY, self._body_deadline())
            return
        if kind is _Timer.CLOSE:
            transport.abort()
            return
        self._metrics.public_timeouts.labels(kind.value).inc()
        if kind is _Timer.IDLE:
            transport.close()
            return
        if kind is _Timer.HEAD:
            message = (
                f"the request head did not arrive within {self._limits.head_timeout:g}s"
            )
        else:
            message = (
                f"the request body arrived slower than {self._limits.min_body_rate} bytes/s "
                f"(after {self._limits.body_timeout:g}s)"
            )
        self._refuse(408, grpc.StatusCode.DEADLINE_EXCEEDED, message)
        # Whatever the peer does (not reading our answer, say), the connection ends.
        if self._transport is not None:
            self._arm(_Timer.CLOSE, loop.time() + _LINGER_SECONDS + 1.0)

    # refusals

    def _refuse_too_large(self) -> None:
        self._metrics.limit_refusals.labels("body_bytes").inc()
        self._refuse(
            413,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request body is larger than the limit of {self._max_body} bytes",
        )

    def _refuse_head_too_large(self) -> None:
        self._metrics.limit_refusals.labels("header_bytes").inc()
        self._refuse(
            431,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request's header fields are larger than {self._limits.max_header_bytes} bytes",
        )

    def _refuse(self, status: int, code: grpc.StatusCode, message: str) -> None:
        if self._refusing:
            return
        self._refusing = True
        response = error_response(status, code, message)
        self._queue.append(_Pending(request=None, response=response, keep_alive=False,
                                    http10=False))
        self._serve_next()

    def _after_upgrade(self, rest: bytes) -> None:
        # We never switch protocols (gRPC clients use prior-knowledge HTTP/2, which the
        # port detects before this parser sees a byte), so the upgrade request was served
        # as plain HTTP/1.1 and parsing goes on after it.
        if rest and not self._refusing:
            self.data_received(rest)
