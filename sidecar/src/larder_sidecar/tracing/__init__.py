"""OpenTelemetry tracing of commands through the sidecar: off unless configured.

Configured with OpenTelemetry's standard variables (`config.py`): an OTLP endpoint or
`OTEL_TRACES_EXPORTER` turns it on. While it is off nothing of OpenTelemetry is imported
and every call here is a cheap check; the client's `traceparent` still reaches the user
function unchanged, as any other header does. While it is on, a trace is sampled or not
once, at its root (`sampling.py`); an unsampled trace makes no OpenTelemetry objects at
all, and its context still travels on, flagged unsampled (`runtime.py`).

Process-wide, like logging: `Sidecar.start` installs the tracer, `Sidecar.stop` flushes
and removes it. Spans follow a command across tasks through the OpenTelemetry context
(contextvars); where a command changes task (an entity's own loop, a forward to another
pod, a Kafka record), its context travels with it (`capture`, or `traceparent` in the
metadata: `inject`, `extract`). A streamed call's span stays open across its steps
(`steps`), current only while each step runs.
"""

from .config import TracingConfig, TracingConfigError, tracing_config
from .runtime import (
    Span,
    SpanKind,
    Steps,
    annotate,
    capture,
    dropped,
    enabled,
    extract,
    inject,
    install,
    leave,
    log_trace_id,
    now_ns,
    record_span,
    recording,
    shutdown,
    span,
    steps,
    within,
)

__all__ = [
    "Span",
    "SpanKind",
    "Steps",
    "TracingConfig",
    "TracingConfigError",
    "annotate",
    "capture",
    "dropped",
    "enabled",
    "extract",
    "inject",
    "install",
    "leave",
    "log_trace_id",
    "now_ns",
    "record_span",
    "recording",
    "shutdown",
    "span",
    "steps",
    "tracing_config",
    "within",
]
