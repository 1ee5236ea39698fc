"""HTTP/1.1 on an asyncio transport: httptools parses, requests are served in order.

Keep-alive and pipelining: requests are queued as they complete and served one at a
time, so responses leave in request order. Reading pauses when too many pipelined
requests wait or when the peer stops reading our responses.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import grpc
import httptools

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


@dataclass(slots=True)
class _Pending:
    request: HttpRequest | None
    response: HttpResponse | None
    """A response decided while parsing (e.g. 400, 413); it ends the connection."""
    keep_alive: bool
    http10: bool


class Http1Connection(asyncio.Protocol):
    def __init__(self, dispatcher: Dispatcher, max_body: int, connections: ConnectionSet) -> None:
        self._dispatcher = dispatcher
        self._max_body = max_body
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._declared_body = False
        self._expect_continue = False
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        if self._linger is not None:
            self._linger.cancel()
        self._queue.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._refusing or self._draining:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._after_upgrade(data[e.args[0] :])
        except httptools.HttpParserError as e:
            self._refuse(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed HTTP/1.1 request: {e}")

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
        self._body = []
        self._body_size = 0
        self._declared_body = False
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers.append((lowered, text))
        if lowered == "content-length":
            self._declared_body = text.strip() not in ("", "0")
            if text.strip().isdigit() and int(text) > self._max_body:
                self._refuse_too_large()
        elif lowered == "transfer-encoding":
            self._declared_body = True
        elif lowered == "expect":
            self._expect_continue = text.strip().lower() == "100-continue"

    def on_headers_complete(self) -> None:
        if self._refusing:
            return
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
        if self._refusing:
            return
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

    async def _serve(self, pending: _Pending) -> None:
        assert pending.request is not None
        try:
            response = await self._dispatcher.handle(pending.request)
        except Exception:
            # Dispatcher turns every failure into a response; this is a bug in it.
            log.exception("serving HTTP %s %s failed", pending.request.method,
                          pending.request.path)
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

    # refusals

    def _refuse_too_large(self) -> None:
        self._refuse(
            413,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request body is larger than the limit of {self._max_body} bytes",
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
