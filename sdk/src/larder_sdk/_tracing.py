"""Handler spans that continue the sidecar's trace, when the application traces.

The sidecar sends each command with a W3C `traceparent` in its metadata. If
`opentelemetry-api` is installed (`pip install larder-sdk[tracing]`) and the application
has set a tracer provider (the OpenTelemetry SDK, configured as it likes), each handler
runs in a span that is a child of the sidecar's `user function` span. Otherwise nothing
happens and nothing is imported: OpenTelemetry is not a dependency of the SDK.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `tracing` extra is not installed
    trace = None  # type: ignore[assignment]

_TRACE_KEYS = ("traceparent", "tracestate")


def _tracing_configured() -> bool:
    # Until the application sets a provider the API hands out a proxy to a no-op one:
    # then reading the metadata for a context nobody records would be wasted work.
    return trace is not None and not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


@contextlib.contextmanager
def handler_span(method: Any, ctx: Any) -> Iterator[None]:
    """A SERVER span named `<package.Service>/<Method>` around one handler call."""
    if not _tracing_configured():
        yield
        return
    carrier: dict[str, str] = {}
    for key in _TRACE_KEYS:
        value = ctx.metadata.get(key)
        if isinstance(value, str):
            carrier[key] = value
    parent = TraceContextTextMapPropagator().extract(carrier)
    service = method.containing_service.full_name
    attributes: dict[str, Any] = {"rpc.service": service, "rpc.method": method.name}
    entity_id = getattr(ctx, "entity_id", None)
    if isinstance(entity_id, str):
        attributes["larder.entity_id"] = entity_id[:64]
    tracer = trace.get_tracer("larder_sdk")
    with tracer.start_as_current_span(
        f"{service}/{method.name}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    ):
        yield
