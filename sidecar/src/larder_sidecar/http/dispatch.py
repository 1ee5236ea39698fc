"""One HTTP request → route → request message → `Invoker` → HTTP response.

Every outcome, including bugs, becomes a response: the connection and the server
keep serving whatever one request did.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from larder_sidecar.invoke import InvokeError, Invoker

from .routes import MethodNotAllowed, Route, RouteNotFound, RouteTable
from .status import error_body, http_status
from .transcoding import JSON_CONTENT_TYPE, ReplyDecodeError, TranscodeError, Transcoder

log = logging.getLogger(__name__)

# Headers about this HTTP hop, not about the call: they are not passed on as metadata.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "host",
        "content-length",
        "content-type",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_RESERVED_REPLY_HEADERS = _HOP_HEADERS | {"date", "server"}


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
    def __init__(self, routes: RouteTable, invoker: Invoker) -> None:
        self._routes = routes
        self._invoker = invoker
        self._transcoders = {id(route): Transcoder(route) for route in routes.routes}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            route, bindings = self._routes.match(request.method, request.path)
        except RouteNotFound:
            return error_response(
                404,
                grpc.StatusCode.NOT_FOUND,
                f"no method is bound to {request.method} {request.path}",
            )
        except MethodNotAllowed as e:
            return error_response(
                405, grpc.StatusCode.UNIMPLEMENTED, str(e), [("allow", ", ".join(e.allowed))]
            )
        if route.streaming:
            return _streaming_refused(route)
        transcoder = self._transcoders[id(route)]
        try:
            message = transcoder.decode_request(bindings, request.query, request.body)
        except TranscodeError as e:
            return error_response(400, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        metadata = [(name, value) for name, value in request.headers if name not in _HOP_HEADERS]
        try:
            result = await self._invoker.invoke(route.method, message, metadata)
        except InvokeError as e:
            return error_response(http_status(e.code), e.code, e.message)
        except Exception:
            log.exception("calling %s for HTTP %s %s failed", route.method.path,
                          request.method, request.path)
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
