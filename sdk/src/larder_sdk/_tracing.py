"""Handler spans that continue the sidecar's trace, when the application traces.

The sidecar sends each command with a W3C `traceparent` in its metadata. If
`opentelemetry-api` is installed (`pip install larder-sdk[tracing]`) and the application
has set a tracer provider (the OpenTelemetry SDK, configured as it likes), each handler
runs in a span that is a child of the sidecar's `user function` span. Otherwise nothing
happens and nothing is imported: OpenTelemetry is not a dependency of the SDK.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `tracing` extra is not installed
    trace = None  # type: ignore[assignment]

_TRACE_KEYS = ("traceparent", "tracestate")
_UNKNOWN = object()
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""The API then loads a provider by name at its first use (set before the process
starts, as OpenTelemetry's own configuration is)."""


def tracing_configured() -> bool:
    """Whether the application has set a tracer provider (asked on every command)."""
    # Until the application sets a provider the API hands out a proxy to a no-op one:
    # then reading the metadata for a context nobody records would be wasted work.
    if trace is None:
        return False
    # The API keeps the provider the application set in `_TRACER_PROVIDER` (None until
    # then). Reading it first spares every untraced command `get_tracer_provider()`,
    # whose look-up in os.environ was ~3 % of the bench function's CPU; an API without
    # that attribute takes the public path.
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextlib.contextmanager
def handler_span(method: Any, ctx: Any) -> Iterator[None]:
    """A SERVER span named `<package.Service>/<Method>` around one handler call."""
    if not tracing_configured():
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
