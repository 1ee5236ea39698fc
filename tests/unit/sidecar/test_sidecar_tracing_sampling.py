"""Tracing's sampling: the decision taken once at a trace's root agrees with
OpenTelemetry's samplers of the same name; an unsampled trace makes no OpenTelemetry
span and still travels on, flagged unsampled; a task's inherited context never decides
for a command that names its own parent."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from larder_sidecar import tracing
from larder_sidecar.tracing import TracingConfig
from larder_sidecar.tracing import runtime as tracing_runtime
from larder_sidecar.tracing.config import SamplerName
from larder_sidecar.tracing.sampling import RootSampler, parse_traceparent
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _otel(name: SamplerName, ratio: float) -> Sampler:
    root = name.removeprefix("parentbased_")
    sampler: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }[root]
    return ParentBased(sampler) if root != name else sampler


@pytest.mark.parametrize(
    ("name", "ratio"),
    [
        ("always_on", 1.0),
        ("always_off", 1.0),
        ("traceidratio", 0.01),
        ("traceidratio", 0.5),
        ("parentbased_always_on", 1.0),
        ("parentbased_always_off", 1.0),
        ("parentbased_traceidratio", 0.25),
    ],
)
def test_the_root_decision_is_opentelemetrys(name: SamplerName, ratio: float) -> None:
    ours, theirs = RootSampler(name, ratio), _otel(name, ratio)
    rng = random.Random(18)
    decided = set()
    for n in range(4000):
        trace_id = rng.getrandbits(128) or 1
        flags = n % 3  # no caller (2), a caller's unsampled (0) or sampled (1) trace
        parent, remote = None, None
        if flags < 2:
            header = f"00-{trace_id:032x}-{SPAN}-{flags:02x}"
            remote = parse_traceparent(header)
            context = SpanContext(trace_id, int(SPAN, 16), True, TraceFlags(flags))
            parent = otel_trace.set_span_in_context(NonRecordingSpan(context), Context())
        decision = theirs.should_sample(parent, trace_id, "s").decision
        expected = decision is Decision.RECORD_AND_SAMPLE
        assert ours.sampled(trace_id, remote) == expected, (name, ratio, hex(trace_id), flags)
        decided.add(expected)
    if name == "traceidratio":
        assert decided == {True, False}  # the ratio really split the traces


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        f"00-{TRACE}-{SPAN}",  # no flags
        f"00-{TRACE.upper()}-{SPAN}-01",  # W3C: lowercase only
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has nothing after the flags
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    ],
)
def test_a_malformed_traceparent_is_no_trace(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_is_read() -> None:
    remote = parse_traceparent(f" 00-{TRACE}-{SPAN}-01 ")
    assert remote is not None
    assert (remote.trace_id, remote.parent_id, remote.flags) == (int(TRACE, 16), SPAN, 1)
    later = parse_traceparent(f"01-{TRACE}-{SPAN}-00-more")  # a later version may add
    assert later is not None and later.flags == 0


class _CountingTracer:
    """OpenTelemetry's tracer, counting the spans it is asked for."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self.asked = 0

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return self._tracer.start_as_current_span(*args, **kwargs)

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return self._tracer.start_span(*args, **kwargs)


@pytest.fixture
def counted(request: pytest.FixtureRequest) -> Iterator[_CountingTracer]:
    sampler, ratio = request.param
    tracing.install(
        TracingConfig(exporter="console", sampler=sampler, ratio=ratio, export_delay=60)
    )
    counting = _CountingTracer(tracing_runtime._installed.tracer)
    tracing_runtime._installed.tracer = counting  # type: ignore[assignment]
    try:
        yield counting
    finally:
        tracing.shutdown()


def _command(metadata: list[tuple[str, str]]) -> tuple[dict[str, str], str | None, bool]:
    """The hooks one event-sourced command passes, in their order; what the user
    function would be sent, the trace id a log line would carry, whether recorded."""
    with tracing.span("/p.S/M", tracing.SpanKind.SERVER, parent=tracing.extract(metadata)):
        submitted = tracing.capture()
        queued = tracing.now_ns()
        with tracing.span("handle", parent=submitted):
            tracing.record_span("queue", queued)
            trace = tracing.capture()
            with tracing.span("user function"):
                sent = dict(tracing.inject(metadata))
            logged = tracing.log_trace_id()
        with tracing.span("journal write", parent=trace):
            tracing.annotate({"larder.journal.outcome": "stored"})
        recorded = tracing.recording()
        assert tracing.recording(trace) == recorded
    return sent, logged, recorded


@pytest.mark.parametrize("counted", [("traceidratio", 0.0)], indirect=True)
def test_an_unsampled_trace_makes_no_span_and_travels_on_unsampled(
    counted: _CountingTracer,
) -> None:
    sampled = f"00-{TRACE}-{SPAN}-01"
    sent, logged, recorded = _command(
        [("traceparent", sampled), ("tracestate", "k=v"), ("x-u", "a")]
    )
    assert not recorded
    # The caller's trace, our decision in its flags; its parent is the caller's span
    # (we made none); tracestate passed on as received.
    assert sent == {"x-u": "a", "traceparent": f"00-{TRACE}-{SPAN}-00", "tracestate": "k=v"}
    assert logged == TRACE
    # No caller's trace: a new one, still sent on (so the function does not sample it).
    sent, logged, recorded = _command([])
    assert not recorded
    version, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert (version, flags, trace_id) == ("00", "00", logged)
    assert int(parent_id, 16)  # W3C: never zero
    assert parse_traceparent(sent["traceparent"]) is not None
    assert counted.asked == 0
    # Nothing of OpenTelemetry's context was attached either.
    assert not otel_trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize("counted", [("parentbased_always_off", 1.0)], indirect=True)
def test_a_callers_sampled_trace_is_recorded_under_parentbased(
    counted: _CountingTracer,
) -> None:
    sent, logged, recorded = _command([("traceparent", f"00-{TRACE}-{SPAN}-01")])
    assert recorded and logged == TRACE
    assert sent["traceparent"].startswith(f"00-{TRACE}-") and sent["traceparent"].endswith("-01")
    assert SPAN not in sent["traceparent"]  # our user-function span is its parent now
    assert counted.asked == 5  # server, handle, queue, user function, journal write
    assert not _command([("traceparent", f"00-{TRACE}-{SPAN}-00")])[2]
    assert not _command([])[2]
    assert counted.asked == 5


@pytest.mark.parametrize("counted", [("traceidratio", 0.5)], indirect=True)
def test_a_new_trace_sampled_here_has_the_id_it_was_sampled_on(
    counted: _CountingTracer,
) -> None:
    limit = 1 << 64
    kept = dropped = 0
    for _ in range(200):
        with tracing.span("root") as root:
            trace_id = int(tracing.log_trace_id() or "0", 16)
            assert trace_id
            recorded = root is not None and root.is_recording()
            # What a traceidratio sampler elsewhere decides on the same id.
            assert recorded == (trace_id % limit < limit // 2)
            kept, dropped = kept + recorded, dropped + (not recorded)
    assert kept and dropped
    assert counted.asked == kept


@pytest.mark.parametrize("counted", [("parentbased_always_off", 1.0)], indirect=True)
async def test_a_command_with_its_own_parent_ignores_what_its_task_inherited(
    counted: _CountingTracer,
) -> None:
    recorded = tracing.extract([("traceparent", f"00-{TRACE}-{SPAN}-01")])
    unrecorded = tracing.extract([("traceparent", f"00-{'1' * 32}-{SPAN}-00")])
    results: list[tuple[int, str]] = []

    async def entity(parents: list[Any]) -> None:
        # An entity's loop: created in one command's context, handling others.
        for parent in parents:
            asked = counted.asked
            with tracing.span("handle", parent=parent), tracing.span("user function"):
                traceparent = dict(tracing.inject([]))["traceparent"]
            results.append((counted.asked - asked, traceparent))

    with tracing.span("first", parent=unrecorded):  # the task inherits an unsampled trace
        task = asyncio.get_running_loop().create_task(entity([recorded, unrecorded]))
    await task
    with tracing.span("first", parent=recorded):  # ... or a recorded one
        task = asyncio.get_running_loop().create_task(entity([unrecorded, recorded]))
    await task
    sampled_here, unsampled_here = (2, "-01"), (0, "-00")
    assert [(n, tp[-3:]) for n, tp in results] == [
        sampled_here,
        unsampled_here,
        unsampled_here,
        sampled_here,
    ]
