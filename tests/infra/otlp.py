"""An OTLP trace receiver on loopback for the tests: what a collector would get.

The sidecar exports with its real OTLP/gRPC exporter to this server (the collector's
`TraceService/Export`), so a test checks the spans as they travel, not the SDK's
objects. The wire messages are opentelemetry-proto's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

KINDS = {v: k.removeprefix("SPAN_KIND_") for k, v in trace_pb2.Span.SpanKind.items()}
STATUSES = {v: k.removeprefix("STATUS_CODE_") for k, v in trace_pb2.Status.StatusCode.items()}


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    """Empty for a root span."""
    kind: str
    status: str
    status_message: str
    attributes: dict[str, Any] = field(repr=False)
    events: list[str] = field(repr=False)
    start_ns: int = field(repr=False)
    end_ns: int = field(repr=False)
    service: str = field(repr=False)


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """`async with OtlpReceiver() as r:` → `r.endpoint` for OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Event()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OtlpReceiver:
        server = grpc.aio.server()
        # The generated registration is untyped (opentelemetry-proto ships no stubs for it).
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop(None)

    async def Export(self, request: Any, context: Any) -> Any:
        self.requests += 1
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=KINDS[s.kind],
                            status=STATUSES[s.status.code],
                            status_message=s.status.message,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=[e.name for e in s.events],
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            service=str(resource.get("service.name", "")),
                        )
                    )
        self._changed.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], within: float = 10.0
    ) -> list[ReceivedSpan]:
        """The spans received once `done(spans)` holds; fails after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not done(self.spans):
            remaining = deadline - loop.time()
            if remaining <= 0:
                names = sorted(s.name for s in self.spans)
                raise AssertionError(f"spans not received within {within:g}s; have {names}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return list(self.spans)


def children(spans: Iterable[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    """`parent`'s direct children, by start time."""
    return sorted(
        (s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id),
        key=lambda s: s.start_ns,
    )


def tree(spans: Iterable[ReceivedSpan], root: ReceivedSpan, depth: int = 0) -> list[str]:
    """The span tree under `root` as indented names (for assertions and messages)."""
    spans = list(spans)
    lines = ["  " * depth + root.name]
    for child in children(spans, root):
        lines += tree(spans, child, depth + 1)
    return lines
