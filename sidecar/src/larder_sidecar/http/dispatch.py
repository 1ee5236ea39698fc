"""One HTTP request → route → request message → `Invoker` → HTTP response.

Every outcome, including bugs, becomes a response: the connection and the server
keep serving whatever one request did.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from larder_protocol import VIEW
from larder_sidecar.cluster import wire
from larder_sidecar.entities.idempotency import is_key_reused
from larder_sidecar.function_limit import FunctionLimit
from larder_sidecar.invoke import InvokeError, Invoker, StreamInvoker
from larder_sidecar.logs import clip
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import EntityIdTooLong

from .hop import HOP_HEADERS
from .path_template import PercentDecodingError
from .relay import HttpRelay
from .routes import MethodNotAllowed, Route, RouteNotFound, RouteTable
from .status import error_body, http_status
from .transcoding import JSON_CONTENT_TYPE, ReplyDecodeError, TranscodeError, Transcoder

log = logging.getLogger(__name__)

# Headers about this HTTP hop, not about the call, and the body's type (the front has read
# it): they are not passed on as metadata.
_HOP_HEADERS = HOP_HEADERS | {"content-type"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_RESERVED_REPLY_HEADERS = _HOP_HEADERS | {"date", "server"}


def is_json_content_type(value: str | None) -> bool:
    """`application/json` or `application/<anything>+json`, parameters (charset) allowed.

    Only these are accepted with a body: the types an HTML form or a cross-site "simple
    request" can send (text/plain, form encodings) would otherwise change state without
    the browser asking first (CORS preflight).
    """
    if value is None:
        return False
    media = value.split(";", 1)[0].strip().lower()
    kind, slash, subtype = media.partition("/")
    return kind == "application" and slash == "/" and (
        subtype == "json" or (subtype.endswith("+json") and len(subtype) > len("+json"))
    )


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    """The raw (still %-encoded) path, without the query."""
    query: str | None
    headers: list[tuple[str, str]]
    """(lower-cased name, value) pairs in arrival order."""
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: Sequence[tuple[str, str]] = ()


def error_response(
    status: int, code: grpc.StatusCode, message: str, headers: Sequence[tuple[str, str]] = ()
) -> HttpResponse:
    return HttpResponse(status=status, body=error_body(code, message), headers=headers)


class Dispatcher:
    def __init__(
        self,
        routes: RouteTable,
        invoker: Invoker,
        metrics: Metrics | None = None,
        function_limit: FunctionLimit | None = None,
    ) -> None:
        self._routes = routes
        self._invoker = invoker
        self._metrics = metrics or Metrics()
        self._function_limit = function_limit or FunctionLimit()
        self._transcoders = {id(route): Transcoder(route) for route in routes.routes}
        self.relay: HttpRelay | None = None
        """Set on a sharded sidecar: commands for a peer's entities go there as HTTP."""

    async def serve_relayed(self, http: Any) -> Any:
        """A request another sidecar relayed here (`relay.py`; a `peer.proto`
        `HttpRequest`), served as if it had arrived on this port; its `HttpAnswer`."""
        response = await self.handle(
            HttpRequest(
                method=http.method,
                path=http.path,
                query=http.query or None,
                headers=[(h.name, h.value) for h in http.headers],
                body=http.body,
            ),
            relay=False,
        )
        return wire.http_answer(
            response.status, response.content_type, response.headers, response.body
        )

    async def handle(self, request: HttpRequest, *, relay: bool = True) -> HttpResponse:
        """`relay`: a request for an entity a peer owns may be relayed to it (`relay.py`);
        False for one relayed here (this sidecar's router runs it wherever it belongs)."""
        try:
            route, bindings = self._routes.match(request.method, request.path)
        except RouteNotFound:
            return error_response(
                404,
                grpc.StatusCode.NOT_FOUND,
                f"no method is bound to {request.method} {clip(request.path)}",
            )
        except PercentDecodingError as e:
            return error_response(400, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except MethodNotAllowed as e:
            return error_response(
                405, grpc.StatusCode.UNIMPLEMENTED, str(e), [("allow", ", ".join(e.allowed))]
            )
        # A server-streamed view query is answered with a JSON array of its replies.
        collected = _collects(route) and isinstance(self._invoker, StreamInvoker)
        if route.streaming and not collected:
            return _streaming_refused(route)
        if request.body:
            content_type = _header(request.headers, "content-type")
            if not is_json_content_type(content_type):
                return error_response(
                    415,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a request body must be JSON, sent with Content-Type: application/json "
                    f"(got {clip(content_type or 'no Content-Type', 100)!r})",
                )
        if relay and self.relay is not None and not collected:
            relayed = await self.relay.relay(
                route,
                bindings,
                method=request.method,
                path=request.path,
                query=request.query,
                headers=request.headers,
                body=request.body,
            )
            if relayed is not None:
                return HttpResponse(
                    relayed.status, relayed.body, relayed.content_type, relayed.headers
                )
        transcoder = self._transcoders[id(route)]
        try:
            message = transcoder.decode_request(bindings, request.query, request.body)
        except TranscodeError as e:
            return error_response(400, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        metadata = [(name, value) for name, value in request.headers if name not in _HOP_HEADERS]
        try:
            self._function_limit.check(route.method, message.ByteSize(), metadata)
        except InvokeError as e:
            self._metrics.limit_refusals.labels("user_function_message_bytes").inc()
            return error_response(413, e.code, e.message)
        if collected:
            return await self._collected(route, transcoder, message, metadata)
        try:
            result = await self._invoker.invoke(route.method, message, metadata)
        except InvokeError as e:
            if isinstance(e.__cause__, EntityIdTooLong):
                self._metrics.limit_refusals.labels("entity_id_bytes").inc()
            # A reused idempotency key: the request is well-formed but cannot be
            # processed (422, as the IETF Idempotency-Key draft says), not a bad request.
            status = 422 if is_key_reused(e) else http_status(e.code)
            return error_response(status, e.code, e.message)
        except Exception:
            log.exception("calling %s for HTTP %s %s failed", route.method.path,
                          request.method, clip(request.path))
            return error_response(
                500,
                grpc.StatusCode.INTERNAL,
                f"the sidecar failed while calling {route.method.path}; see its log",
            )
        try:
            body, content_type = transcoder.encode_reply(result.payload)
        except ReplyDecodeError as e:
            log.exception("rendering the reply of %s failed", route.method.path)
            return error_response(500, grpc.StatusCode.INTERNAL, str(e))
        headers = _reply_headers(result.metadata)
        return HttpResponse(status=200, body=body, content_type=content_type, headers=headers)

    async def _collected(
        self,
        route: Route,
        transcoder: Transcoder,
        message: Message,
        metadata: Sequence[tuple[str, str]],
    ) -> HttpResponse:
        assert isinstance(self._invoker, StreamInvoker)
        try:
            parts = [
                transcoder.encode_reply(result.payload)[0]
                async for result in self._invoker.invoke_stream(route.method, message, metadata)
            ]
        except InvokeError as e:
            return error_response(http_status(e.code), e.code, e.message)
        except ReplyDecodeError as e:
            log.exception("rendering the reply of %s failed", route.method.path)
            return error_response(500, grpc.StatusCode.INTERNAL, str(e))
        return HttpResponse(
            status=200, body=b"[" + b",".join(parts) + b"]", content_type=JSON_CONTENT_TYPE
        )


def _collects(route: Route) -> bool:
    method = route.method
    return method.server_streaming and not method.client_streaming and (
        method.component_type == VIEW
    )


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _streaming_refused(route: Route) -> HttpResponse:
    method = route.method
    kind = "bidirectional" if method.client_streaming and method.server_streaming else (
        "client-streaming" if method.client_streaming else "server-streaming"
    )
    return error_response(
        501,
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method.path} is a {kind} method; HTTP/JSON serves unary methods only, "
        "call it over gRPC",
    )


def _reply_headers(metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    headers = []
    for name, value in metadata:
        lowered = name.lower()
        if lowered in _RESERVED_REPLY_HEADERS or not _TOKEN.match(lowered):
            continue
        if any(char in value for char in "\r\n\0"):
            continue
        headers.append((lowered, value))
    return headers
