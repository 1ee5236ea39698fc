"""gRPC status codes as HTTP statuses, and the error body every failure carries."""

from __future__ import annotations

import json

import grpc

_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status for a gRPC status code (the google.rpc mapping)."""
    return _HTTP_STATUS.get(code, 500)


def error_body(code: grpc.StatusCode, message: str) -> bytes:
    """A `google.rpc.Status`-shaped JSON body: numeric code, message, no details."""
    numeric: int = code.value[0]
    document = {"code": numeric, "message": message, "details": []}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
