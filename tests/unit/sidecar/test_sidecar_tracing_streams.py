"""Tracing of streamed calls: a span open across a stream's steps (`tracing.steps`),
current only inside each step; the dispatcher's SERVER span of a streamed call (its
messages, its status when it fails, is cancelled or its consumer stops reading); and a
dropped trace that asks OpenTelemetry for nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import grpc.aio
import pytest
from larder_sidecar import tracing
from larder_sidecar.dispatch import Dispatcher
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs
from larder_sidecar.metrics import Metrics
from larder_sidecar.tracing import TracingConfig
from larder_sidecar.tracing import runtime as tracing_runtime
from larder_sidecar.tracing.config import SamplerName
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SAMPLED = [("traceparent", f"00-{TRACE}-{SPAN}-01")]


class _Counting:
    """OpenTelemetry's tracer, counting the spans it is asked for."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self.asked = 0

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return self._tracer.start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return self._tracer.start_as_current_span(*args, **kwargs)


@pytest.fixture
def exported(request: pytest.FixtureRequest) -> Iterator[tuple[InMemorySpanExporter, _Counting]]:
    sampler: SamplerName
    sampler, ratio = getattr(request, "param", ("parentbased_always_on", 1.0))
    tracing.install(
        TracingConfig(exporter="console", sampler=sampler, ratio=ratio, export_delay=60)
    )
    memory = InMemorySpanExporter()
    provider = tracing_runtime._installed.provider
    assert provider is not None
    provider.add_span_processor(SimpleSpanProcessor(memory))
    counting = _Counting(tracing_runtime._installed.tracer)
    tracing_runtime._installed.tracer = counting  # type: ignore[assignment]
    try:
        yield memory, counting
    finally:
        tracing.shutdown()


def _current_span_id() -> int:
    return int(otel_trace.get_current_span().get_span_context().span_id)


def test_a_steps_span_is_current_only_inside_its_steps(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, _ = exported
    stream = tracing.steps("s", tracing.SpanKind.SERVER, parent=tracing.extract(SAMPLED))
    assert _current_span_id() == 0
    with stream.step() as span:
        assert span is not None and span.is_recording()
        inside = _current_span_id()
        sent = dict(tracing.inject([]))["traceparent"]
        with tracing.span("child"):
            pass
    assert _current_span_id() == 0  # nothing left current between steps
    with stream.step():
        assert _current_span_id() == inside
    stream.annotate({"larder.messages.sent": 2})
    stream.end(RuntimeError("broke"))
    child, server = sorted(memory.get_finished_spans(), key=lambda s: s.name)
    assert server.context is not None and server.context.span_id == inside
    assert sent == f"00-{TRACE}-{inside:016x}-01"
    assert child.parent is not None and child.parent.span_id == inside
    assert server.parent is not None and format(server.parent.span_id, "016x") == SPAN
    assert server.attributes is not None and server.attributes["larder.messages.sent"] == 2
    assert server.status.status_code is otel_trace.StatusCode.ERROR
    assert [e.name for e in server.events] == ["exception"]


@pytest.mark.parametrize("exported", [("traceidratio", 0.0)], indirect=True)
def test_a_dropped_streams_steps_carry_its_trace_and_make_nothing(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, counting = exported
    callers = [("traceparent", f"00-{TRACE}-{SPAN}-01")]  # sampled there, not here
    stream = tracing.steps("s", tracing.SpanKind.SERVER, parent=tracing.extract(callers))
    with stream.step() as span:
        assert span is not None and not span.is_recording()
        assert dict(tracing.inject([]))["traceparent"] == f"00-{TRACE}-{SPAN}-00"
        inner = tracing.steps("view query")  # under the dropped trace: nothing either
        with tracing.span("child") as child:
            assert child is None
    assert tracing.log_trace_id() is None  # not current between steps
    inner.end()
    stream.annotate({"x": 1})
    stream.end(RuntimeError("not recorded"))
    assert counting.asked == 0
    assert not memory.get_finished_spans()


def test_while_off_steps_do_nothing() -> None:
    assert not tracing.enabled()
    stream = tracing.steps("s", tracing.SpanKind.SERVER, parent=tracing.extract(SAMPLED))
    with stream.step() as span:
        assert span is None
    stream.end(RuntimeError("off"))


# --- the dispatcher's streamed calls ----------------------------------------------------


def _dispatcher() -> Dispatcher:
    # Only `_traced` is exercised: the model, router and channel are never used.
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    return Dispatcher(SimpleNamespace(methods={}), Any, channel, Metrics())  # type: ignore[arg-type]


_METHOD: Any = SimpleNamespace(
    model=SimpleNamespace(path="/p.S/Repeat", service="p.S", name="Repeat")
)


class _Producer:
    """A streamed call's replies; records the metadata it was opened with and whether it
    was closed."""

    def __init__(self, replies: int, *, then: BaseException | None = None) -> None:
        self.replies = replies
        self.then = then
        self.opened_with: MetadataPairs = []
        self.closed = False
        self.parents: list[int] = []

    def open(self, metadata: MetadataPairs) -> AsyncIterator[InvokeResult]:
        self.opened_with = metadata
        return self._replies()

    async def _replies(self) -> AsyncIterator[InvokeResult]:
        try:
            for i in range(self.replies):
                self.parents.append(_current_span_id())
                await asyncio.sleep(0)
                yield InvokeResult(str(i).encode())
            if self.then is not None:
                raise self.then
        finally:
            self.closed = True


def _server(memory: InMemorySpanExporter) -> ReadableSpan:
    (server,) = memory.get_finished_spans()
    assert server.name == "/p.S/Repeat" and server.kind is otel_trace.SpanKind.SERVER
    return server


async def test_a_streamed_calls_server_span_counts_its_messages(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, _ = exported
    producer = _Producer(3)
    replies = _dispatcher()._traced(_METHOD, SAMPLED, producer.open)
    got = []
    async for result in replies:
        assert _current_span_id() == 0  # the span never leaks into the consumer
        got.append(result.payload)
    assert got == [b"0", b"1", b"2"]
    server = _server(memory)
    assert server.context is not None
    span_id = server.context.span_id
    # The producer ran under the span, and was opened with its context.
    assert producer.parents == [span_id] * 3
    assert dict(producer.opened_with)["traceparent"] == f"00-{TRACE}-{span_id:016x}-01"
    assert server.attributes == {
        "rpc.service": "p.S",
        "rpc.method": "Repeat",
        "rpc.grpc.status_code": 0,
        "larder.messages.sent": 3,
    }
    assert server.status.status_code is otel_trace.StatusCode.UNSET


async def test_a_streamed_call_that_fails_after_a_message_is_an_error_span(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, _ = exported
    failed = InvokeError(grpc.StatusCode.UNAVAILABLE, "the user function went away")
    replies = _dispatcher()._traced(_METHOD, SAMPLED, _Producer(1, then=failed).open)
    with pytest.raises(InvokeError):
        async for _ in replies:
            pass
    server = _server(memory)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert server.attributes["larder.messages.sent"] == 1
    assert server.status.status_code is otel_trace.StatusCode.ERROR


async def test_a_consumer_that_stops_reading_cancels_the_span_and_closes_the_producer(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, _ = exported
    producer = _Producer(10)
    replies: Any = _dispatcher()._traced(_METHOD, SAMPLED, producer.open)
    assert (await anext(replies)).payload == b"0"
    await replies.aclose()  # the client reset the stream
    assert producer.closed
    server = _server(memory)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert server.attributes["larder.messages.sent"] == 1
    # A cancelled call is not the server's failure (OpenTelemetry's gRPC conventions).
    assert server.status.status_code is otel_trace.StatusCode.UNSET


async def test_a_streamed_call_cancelled_while_producing_ends_its_span(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, _ = exported
    started = asyncio.Event()

    async def hangs(metadata: MetadataPairs) -> AsyncIterator[InvokeResult]:
        started.set()
        await asyncio.Event().wait()
        yield InvokeResult(b"never")

    async def consume() -> None:
        async for _ in _dispatcher()._traced(_METHOD, SAMPLED, hangs):
            pass

    task = asyncio.get_running_loop().create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server = _server(memory)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]


@pytest.mark.parametrize("exported", [("traceidratio", 0.0)], indirect=True)
async def test_a_dropped_streamed_call_sends_its_trace_on_unsampled(
    exported: tuple[InMemorySpanExporter, _Counting],
) -> None:
    memory, counting = exported
    producer = _Producer(2)
    got = [r.payload async for r in _dispatcher()._traced(_METHOD, [], producer.open)]
    assert got == [b"0", b"1"]
    version, trace_id, parent_id, flags = dict(producer.opened_with)["traceparent"].split("-")
    assert (version, flags) == ("00", "00") and int(trace_id, 16) and int(parent_id, 16)
    assert counting.asked == 0
    assert not memory.get_finished_spans()
