"""The installed tracer and the calls the sidecar's layers make; all cheap while off."""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from importlib import metadata as package_metadata
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from .config import TracingConfig
from .metrics import TracingMetrics

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("larder_sidecar.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)


class SpanKind(enum.Enum):
    """OpenTelemetry's span kinds, without importing OpenTelemetry while tracing is off."""

    INTERNAL = "INTERNAL"
    SERVER = "SERVER"
    CLIENT = "CLIENT"
    PRODUCER = "PRODUCER"
    CONSUMER = "CONSUMER"


class Span(Protocol):
    """What the sidecar does with a span (a subset of OpenTelemetry's `Span`)."""

    def set_attribute(self, key: str, value: Any) -> None: ...
    def add_event(self, name: str, attributes: Any = None) -> None: ...
    def is_recording(self) -> bool: ...


_NOOP: AbstractContextManager[Span | None] = contextlib.nullcontext()


class _Installed:
    """What `install` set up; one per process, like logging's configuration. The
    OpenTelemetry modules are kept here so the hot path does not import them per call."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    trace: Any = None
    context: Any = None
    propagator: TraceContextTextMapPropagator | None = None
    kinds: dict[SpanKind, Any] = {}  # noqa: RUF012 - replaced, never mutated


_installed = _Installed()


def enabled() -> bool:
    return _installed.tracer is not None


def install(config: TracingConfig, registry: CollectorRegistry | None = None) -> None:
    """Create the tracer provider and its exporter; spans are recorded from now on."""
    # Imported here: a sidecar without tracing never loads OpenTelemetry.
    from opentelemetry import context, trace  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        Sampler,
        TraceIdRatioBased,
    )
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    from .export import BoundedExport  # noqa: PLC0415 - it needs OpenTelemetry's SDK

    roots: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(config.ratio),
    }
    sampler = roots[config.sampler.removeprefix("parentbased_")]
    if config.sampler.startswith("parentbased_"):
        # A client's sampled flag decides for its trace; our ratio only for new traces.
        sampler = ParentBased(sampler)
    version = _version()
    resource = Resource.create(
        {**config.resource, "service.name": config.service_name, "service.version": version}
    )
    provider = TracerProvider(resource=resource, sampler=sampler)
    exporter: SpanExporter
    if config.exporter == "console":
        exporter, where = ConsoleSpanExporter(), "stdout"
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter(
            endpoint=config.endpoint,
            insecure=config.insecure,
            headers=dict(config.headers),
            timeout=int(config.timeout),
        )
        where = config.endpoint
        # It logs each failed export and each retry; BoundedExport says it once per
        # outage and counts the spans lost, which is what an operator can act on.
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(
            logging.CRITICAL
        )
    processor = BoundedExport(exporter, TracingMetrics(registry), config.export_delay, where)
    provider.add_span_processor(processor)
    _installed.provider = provider
    _installed.trace = trace
    _installed.context = context
    _installed.propagator = TraceContextTextMapPropagator()
    _installed.kinds = {kind: getattr(trace.SpanKind, kind.value) for kind in SpanKind}
    _installed.tracer = provider.get_tracer("larder_sidecar", version)
    log.info(
        "tracing on: %s to %s, sampler %s%s",
        config.exporter,
        where,
        config.sampler,
        f" {config.ratio:g}" if "ratio" in config.sampler else "",
    )


def shutdown() -> None:
    """Export what is buffered and stop recording (blocking: up to the export timeout)."""
    provider = _installed.provider
    _installed.provider = _installed.tracer = None
    if provider is not None:
        provider.shutdown()


def _version() -> str:
    try:
        return package_metadata.version("larder-sidecar")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def _dropped(parent: Context | None) -> bool:
    """Whether the span above (`parent`, else the current one) is ours and unsampled.

    Our sampler dropped that trace at its root here, and every sampler we offer decides
    the same for the rest of it (by the parent, or by the trace id), so a child would be
    one more span that records nothing. Not making it is most of what makes a 1 % sample
    cheap; the context travels on unchanged. A client's unsampled parent (remote) is
    the sampler's to judge."""
    above = _installed.trace.get_current_span(parent).get_span_context()
    return bool(above.is_valid and not above.is_remote and not above.trace_flags.sampled)


def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span around a block, current inside it; `None` (and no cost) while off.

    `parent` is a captured context (`capture`, `extract`); without it the current one.
    An exception leaving the block marks the span as failed and is recorded on it.
    """
    tracer = _installed.tracer
    if tracer is None or _dropped(parent):
        return _NOOP
    return tracer.start_as_current_span(
        name,
        context=parent,
        kind=_installed.kinds[kind],
        attributes=dict(attributes) if attributes else None,
    )


def capture() -> Context | None:
    """The current context, to parent spans in another task; None while off."""
    if _installed.tracer is None:
        return None
    context: Context = _installed.context.get_current()
    return context


def extract(metadata: Iterable[tuple[str, str]]) -> Context | None:
    """The trace context a caller sent in `traceparent`/`tracestate`, as a parent for
    `span`; an empty context (a new trace) when it sent none or a malformed one; None
    while off.

    Never "whatever is current": a task (an entity's loop) keeps the context it was
    created in, which belongs to some earlier command."""
    propagator = _installed.propagator
    if _installed.tracer is None or propagator is None:
        return None
    empty: Context = _installed.context.Context()
    carrier = {k.lower(): v for k, v in metadata if k.lower() in _TRACE_HEADERS}
    if TRACEPARENT not in carrier:
        return empty
    # A malformed traceparent yields the empty context too (W3C: start a new trace).
    return propagator.extract(carrier, context=empty)


def inject(metadata: Sequence[tuple[str, str]]) -> Sequence[tuple[str, str]]:
    """`metadata` with `traceparent`/`tracestate` naming the current span, so whoever
    receives it (the user function, another pod, a Kafka consumer) continues this trace.
    Unchanged while off or outside any span."""
    propagator = _installed.propagator
    if _installed.tracer is None or propagator is None:
        return metadata
    if not _installed.trace.get_current_span().get_span_context().is_valid:
        return metadata
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    kept = [(k, v) for k, v in metadata if k.lower() not in _TRACE_HEADERS]
    return [*kept, *carrier.items()]


def log_trace_id() -> str | None:
    """The current trace's id (32 hex digits) for a log line; None while off or outside
    a span."""
    if _installed.tracer is None:
        return None
    context = _installed.trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the current span; nothing while off."""
    if _installed.tracer is None:
        return
    current = _installed.trace.get_current_span()
    if current.is_recording():
        current.set_attributes(dict(attributes))


def now_ns() -> int:
    """A span timestamp (wall clock, nanoseconds), or 0 while off."""
    return time.time_ns() if _installed.tracer is not None else 0


def record_span(name: str, start_ns: int, parent: Context | None = None) -> None:
    """A span that began at `start_ns` (`now_ns`) and ends now, e.g. a wait in a queue."""
    tracer = _installed.tracer
    if tracer is None or not start_ns or _dropped(parent):
        return
    tracer.start_span(name, context=parent, start_time=start_ns).end()
