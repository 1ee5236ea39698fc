"""The installed tracer and the calls the sidecar's layers make: cheap while off, and
nearly as cheap for a command whose trace is not sampled.

A trace is sampled or not once, at its root (`extract`, or a span outside any trace),
by `sampling.RootSampler`. A sampled trace is OpenTelemetry's from there on. An unsampled
one never reaches OpenTelemetry: its `Unsampled` is current (a context variable of ours)
while its command runs, every span site below checks that variable and makes nothing,
and `inject` sends the trace on with its sampled flag clear.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeGuard

from prometheus_client import CollectorRegistry

from .config import TracingConfig
from .sampling import (
    RootSampler,
    Unsampled,
    new_ids,
    parse_traceparent,
    unsampled_new,
    unsampled_remote,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from .provider import ChosenTraceIds

    Parent: TypeAlias = "Context | Unsampled | NewTrace"

log = logging.getLogger("larder_sidecar.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
_TRACEPARENT_LENGTH = len(TRACEPARENT)
_TRACESTATE_LENGTH = len(TRACESTATE)
_TRACE_HEADER_LENGTHS = (_TRACEPARENT_LENGTH, _TRACESTATE_LENGTH)
_LOW_64 = (1 << 64) - 1


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


class NewTrace:
    """A new trace sampled at its root: the trace id the decision was taken on."""

    __slots__ = ("trace_id",)

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id


_NOOP: AbstractContextManager[Span | None] = contextlib.nullcontext()

# The unsampled trace of the command running here, if any. Checked first by every call
# below: where it is set, OpenTelemetry's own context (whatever a task inherited) is moot.
_unsampled: contextvars.ContextVar[Unsampled | None] = contextvars.ContextVar(
    "larder_trace_unsampled", default=None
)


# A dropped trace's hot path, for the sites every command passes (the front's call, the
# entity's handling, the journal write): the trace made current with the context
# variable's own `set` and `reset` (C calls) in a try/finally, instead of a `span` call
# and a `with` on `_Within` (three Python calls and an object): `within(trace)` where
# `dropped(parent)` says the parent is a dropped trace, `leave(token)` after.
within = _unsampled.set
leave = _unsampled.reset


def dropped(parent: Parent | None) -> TypeGuard[Unsampled]:
    """Whether `parent` (`extract`, `capture`) is a trace this sidecar does not record:
    then the caller makes it current with `within` and opens no span."""
    return type(parent) is Unsampled


class _Within(AbstractContextManager["Span | None"]):
    """An unsampled trace, current for a block (in place of its span)."""

    __slots__ = ("_token", "_trace")

    def __init__(self, trace: Unsampled) -> None:
        self._trace = trace

    def __enter__(self) -> Unsampled:
        self._token = _unsampled.set(self._trace)
        return self._trace

    def __exit__(self, *exc: object) -> None:
        _unsampled.reset(self._token)


class _Recorded(AbstractContextManager["Span | None"]):
    """A recorded span, current for a block where an unsampled trace was current (an
    entity's task keeps the context it was created in, of some earlier command)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: AbstractContextManager[Any]) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = _unsampled.set(None)
        entered: Span = self._span.__enter__()
        return entered

    def __exit__(self, *exc: Any) -> bool | None:
        try:
            return self._span.__exit__(*exc)
        finally:
            _unsampled.reset(self._token)


class _Current(AbstractContextManager["Span | None"]):
    """A recorded span, current for a block: what OpenTelemetry's `start_as_current_span`
    does (the span starts on entering, is current inside, records an `Exception` leaving
    the block and is marked failed by it, ends on leaving), as one small object instead
    of two generator-based context managers (a few µs of a recorded span's cost)."""

    __slots__ = ("_attributes", "_context", "_kind", "_name", "_span", "_token", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        context: Context | None,
        kind: Any,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._kind = kind
        self._attributes = attributes

    def __enter__(self) -> Span:
        span = self._tracer.start_span(
            self._name, context=self._context, kind=self._kind, attributes=self._attributes
        )
        self._span = span
        # Current on top of the current context, as OpenTelemetry's `use_span` does.
        self._token = _installed.context.attach(_installed.trace.set_span_in_context(span))
        return span

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        span = self._span
        try:
            # An `Exception` only: GeneratorExit, CancelledError and the like are no
            # failure of the span's work (OpenTelemetry's rule too).
            if isinstance(error, Exception) and span.is_recording():
                span.record_exception(error)
                span.set_status(
                    _installed.trace.Status(
                        _installed.trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"
                    )
                )
        finally:
            _installed.context.detach(self._token)
            span.end()


class _Installed:
    """What `install` set up; one per process, like logging's configuration. The
    OpenTelemetry modules are kept here so the hot path does not import them per call."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    trace: Any = None
    context: Any = None
    propagator: TraceContextTextMapPropagator | None = None
    kinds: dict[SpanKind, Any] = {}  # noqa: RUF012 - replaced, never mutated
    sampler: RootSampler = RootSampler("always_off", 0)
    ids: ChosenTraceIds | None = None


_installed = _Installed()


def enabled() -> bool:
    return _installed.tracer is not None


def install(config: TracingConfig, registry: CollectorRegistry | None = None) -> None:
    """Create the tracer provider and its exporter; spans are recorded from now on."""
    # Imported here: a sidecar without tracing never loads OpenTelemetry.
    from opentelemetry import context, trace  # noqa: PLC0415
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    from .provider import ChosenTraceIds, build, version  # noqa: PLC0415 - OpenTelemetry's SDK

    ids = ChosenTraceIds()
    provider, where = build(config, registry, ids)
    _installed.provider = provider
    _installed.trace = trace
    _installed.context = context
    _installed.propagator = TraceContextTextMapPropagator()
    _installed.kinds = {kind: getattr(trace.SpanKind, kind.value) for kind in SpanKind}
    _installed.sampler = RootSampler(config.sampler, config.ratio)
    _installed.ids = ids
    _installed.tracer = provider.get_tracer("larder_sidecar", version())
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


# --- the sampling decision ------------------------------------------------------------


def _new_root() -> Unsampled | NewTrace:
    """A new trace, sampled or not here."""
    ids = new_ids()
    trace_id = ids >> 64
    # `RootSampler.sampled` without a remote parent, inline: this runs for every command
    # whose client sent no trace.
    if trace_id & _LOW_64 < _installed.sampler.bound:
        return NewTrace(trace_id)
    return unsampled_new(ids)


def _resolved(parent: Parent) -> Unsampled | NewTrace | Context:
    """`parent`, with a context captured outside any trace taken as a new root."""
    if isinstance(parent, (Unsampled, NewTrace)):
        return parent
    if _installed.trace.get_current_span(parent).get_span_context().is_valid:
        return parent
    return _new_root()


def _otel_context(parent: NewTrace | Context) -> Context:
    if isinstance(parent, NewTrace):
        assert _installed.ids is not None  # set with the tracer
        _installed.ids.choose(parent.trace_id)
        empty: Context = _installed.context.Context()
        return empty
    return parent


# --- the calls ------------------------------------------------------------------------


def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Parent | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span around a block, current inside it; `None` (and no cost) while off or
    inside a trace that is not sampled.

    `parent` is a captured context (`capture`, `extract`), which becomes current for the
    block whether sampled or not; without it the current one. An exception leaving the
    block marks the span as failed and is recorded on it.
    """
    tracer = _installed.tracer
    if tracer is None:
        return _NOOP
    current = _unsampled.get()
    if parent is None:
        if current is not None:
            return _NOOP
        if _installed.trace.get_current_span().get_span_context().is_valid:
            return _Current(tracer, name, None, _installed.kinds[kind], attributes)
        parent = _new_root()  # outside any trace
    else:
        parent = _resolved(parent)
    if isinstance(parent, Unsampled):
        return _NOOP if parent is current else _Within(parent)
    started = _Current(tracer, name, _otel_context(parent), _installed.kinds[kind], attributes)
    return started if current is None else _Recorded(started)


def recording(parent: Parent | None = None) -> bool:
    """Whether a span under `parent` (else the current context) would be recorded: to
    build its attributes only when someone will read them."""
    if _installed.tracer is None:
        return False
    if parent is None:
        return _unsampled.get() is None
    return not isinstance(parent, Unsampled)


def capture() -> Parent | None:
    """The current context, to parent spans in another task; None while off."""
    if _installed.tracer is None:
        return None
    current = _unsampled.get()
    if current is not None:
        return current
    context: Context = _installed.context.get_current()
    return context


def extract(metadata: Iterable[tuple[str, str]]) -> Parent | None:
    """The trace a caller sent in `traceparent`/`tracestate`, sampled or not here, as a
    parent for `span`; a new trace when it sent none or a malformed one (W3C: never an
    error); None while off.

    Never "whatever is current": a task (an entity's loop) keeps the context it was
    created in, which belongs to some earlier command."""
    propagator = _installed.propagator
    if _installed.tracer is None or propagator is None:
        return None
    traceparent = tracestate = None
    for key, value in metadata:
        # The length first: most headers are neither, and `lower` makes a string.
        length = len(key)
        if length == _TRACEPARENT_LENGTH and key.lower() == TRACEPARENT:
            traceparent = value
        elif length == _TRACESTATE_LENGTH and key.lower() == TRACESTATE:
            tracestate = value
    remote = parse_traceparent(traceparent) if traceparent is not None else None
    if remote is None:
        return _new_root()
    if not _installed.sampler.sampled(remote.trace_id, remote):
        return unsampled_remote(remote, tracestate)
    carrier = {TRACEPARENT: remote.header}
    if tracestate is not None:
        carrier[TRACESTATE] = tracestate
    context: Context = propagator.extract(carrier, context=_installed.context.Context())
    return context


def inject(metadata: Sequence[tuple[str, str]]) -> Sequence[tuple[str, str]]:
    """`metadata` with `traceparent`/`tracestate` naming the current span, so whoever
    receives it (the user function, another pod, a Kafka consumer) continues this trace;
    in an unsampled trace, the trace flagged unsampled. Unchanged while off or outside
    any trace."""
    propagator = _installed.propagator
    if _installed.tracer is None or propagator is None:
        return metadata
    current = _unsampled.get()
    if current is not None:
        kept = _without_trace_headers(metadata)
        kept.append((TRACEPARENT, current.traceparent))
        if current.tracestate is not None:
            kept.append((TRACESTATE, current.tracestate))
        return kept
    if not _installed.trace.get_current_span().get_span_context().is_valid:
        return metadata
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return [*_without_trace_headers(metadata), *carrier.items()]


def _without_trace_headers(metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    # The length first, as in `extract`.
    return [
        (k, v)
        for k, v in metadata
        if len(k) not in _TRACE_HEADER_LENGTHS or k.lower() not in _TRACE_HEADERS
    ]


def log_trace_id() -> str | None:
    """The current trace's id (32 hex digits) for a log line; None while off or outside
    a trace."""
    if _installed.tracer is None:
        return None
    current = _unsampled.get()
    if current is not None:
        return current.trace_id
    context = _installed.trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the current span; nothing while off or not sampled."""
    if _installed.tracer is None or _unsampled.get() is not None:
        return
    current = _installed.trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)


def now_ns() -> int:
    """A span timestamp (wall clock, nanoseconds); 0 while off or not sampled."""
    if _installed.tracer is None or _unsampled.get() is not None:
        return 0
    return time.time_ns()


def record_span(name: str, start_ns: int, parent: Parent | None = None) -> None:
    """A span that began at `start_ns` (`now_ns`) and ends now, e.g. a wait in a queue."""
    tracer = _installed.tracer
    if tracer is None or not start_ns:
        return
    if parent is None:
        if _unsampled.get() is not None:
            return
        parent = _installed.context.get_current()
    resolved = _resolved(parent)
    if isinstance(resolved, Unsampled):
        return
    tracer.start_span(name, context=_otel_context(resolved), start_time=start_ns).end()


# --- spans open across the steps of a stream ------------------------------------------


class Steps:
    """A span open for a whole streamed call, current only during each of its steps.

    A streamed call's replies are yielded to its consumer (the port's writer, grpc.aio)
    between steps; a span made current with `span` around the yields would stay current
    in the consumer's code between them, and its reset could run in another context (a
    generator closed by its finalizer). Here each step (`step()`: opening the call,
    reading the next reply) sets the span current and resets it within the step, and the
    span ends with `end`, which touches no context. This base class is the span while
    off or in a dropped trace of a stream that opened nothing: each step is a no-op."""

    __slots__ = ()

    def step(self) -> AbstractContextManager[Span | None]:
        return _NOOP

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        return

    def end(self, error: BaseException | None = None) -> None:
        """End the span, failed with `error` if there is one (it is recorded on it)."""
        return


_NO_STEPS = Steps()


class _UnsampledSteps(Steps):
    """A dropped trace's stream: its trace current in each step (so what the steps send
    on, `inject`, carries it flagged unsampled); no OpenTelemetry object."""

    __slots__ = ("_trace",)

    def __init__(self, trace: Unsampled) -> None:
        self._trace = trace

    def step(self) -> AbstractContextManager[Span | None]:
        return _Within(self._trace)


class _RecordedSteps(Steps):
    __slots__ = ("_context", "_span")

    def __init__(self, span: Any, context: Context) -> None:
        self._span = span
        self._context = context

    def step(self) -> AbstractContextManager[Span | None]:
        return _Attached(self._span, self._context)

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        self._span.set_attributes(attributes)

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(
                _installed.trace.Status(
                    _installed.trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"
                )
            )
        self._span.end()


class _Attached(AbstractContextManager["Span | None"]):
    """A recorded span's context current for a block (no unsampled trace current)."""

    __slots__ = ("_context", "_span", "_token", "_unsampled_token")

    def __init__(self, span: Any, context: Context) -> None:
        self._span = span
        self._context = context

    def __enter__(self) -> Span:
        self._unsampled_token = _unsampled.set(None)
        self._token = _installed.context.attach(self._context)
        entered: Span = self._span
        return entered

    def __exit__(self, *exc: object) -> None:
        _installed.context.detach(self._token)
        _unsampled.reset(self._unsampled_token)


def steps(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Parent | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Steps:
    """A span started now, for a stream whose steps run apart (`Steps`); the same
    sampling as `span`: nothing of OpenTelemetry while off or in a dropped trace."""
    tracer = _installed.tracer
    if tracer is None:
        return _NO_STEPS
    current = _unsampled.get()
    context: Context
    if parent is None:
        if current is not None:
            return _UnsampledSteps(current)
        context = _installed.context.get_current()
        if not _installed.trace.get_current_span(context).get_span_context().is_valid:
            parent = _new_root()  # outside any trace
    if parent is not None:
        resolved = _resolved(parent)
        if isinstance(resolved, Unsampled):
            return _UnsampledSteps(resolved)
        context = _otel_context(resolved)
    started = tracer.start_span(
        name, context=context, kind=_installed.kinds[kind], attributes=attributes
    )
    return _RecordedSteps(started, _installed.trace.set_span_in_context(started, context))
