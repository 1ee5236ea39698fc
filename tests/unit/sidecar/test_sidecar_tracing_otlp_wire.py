"""The sidecar's own OTLP encoder (`tracing/otlp_wire.py`) against OpenTelemetry's: the
same request for the same spans, decoded with opentelemetry-proto and compared field by
field; and the exporter that sends it, over real gRPC to an in-process receiver."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest
from larder_sidecar import tracing
from larder_sidecar.tracing import TracingConfig, TracingConfigError, tracing_config
from larder_sidecar.tracing.export import BoundedExport
from larder_sidecar.tracing.metrics import TracingMetrics
from larder_sidecar.tracing.otlp_grpc import LeanOTLPSpanExporter, lean_exporter_supported
from larder_sidecar.tracing.otlp_wire import EncodedSpan, Encoder
from larder_sidecar.tracing.provider import ChosenTraceIds, build
from larder_sidecar.tracing.runtime import _installed
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from prometheus_client import CollectorRegistry

from tests.infra.otlp import OtlpReceiver

REMOTE = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(1),
    trace_state=TraceState([("vendor", "abc"), ("other", "x-1")]),
)
# Every attribute type OTLP carries, with the edge values of each (zeros, negatives,
# 64-bit, empty strings and arrays, non-ASCII).
ATTRIBUTES: dict[str, Any] = {
    "s": "héllo ✓",
    "empty": "",
    "zero": 0,
    "negative": -5,
    "int64_min": -(2**63),
    "int64_max": 2**63 - 1,
    "float": 1.5,
    "negative_zero": -0.0,
    "true": True,
    "false": False,
    "strings": ("a", "", "ü"),
    "ints": [1, -2, 300],
    "floats": [0.25],
    "bools": (True, False),
    "no_items": (),
}


class _Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _sdk_spans() -> list[ReadableSpan]:
    """Spans made by OpenTelemetry's SDK: two scopes, a remote parent with a tracestate,
    links, events, every status, every kind."""
    keep = _Keep()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "cart", "k8s.pod.name": "cart-0", "n": 3, "list": ["x", "y"]},
            schema_url="https://opentelemetry.io/schemas/1.21.0",
        )
    )
    provider.add_span_processor(keep)
    larder = provider.get_tracer(
        "larder_sidecar", "1.2.3", schema_url="https://scope.example", attributes={"a": 1}
    )
    other = provider.get_tracer("other")
    remote = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    with larder.start_as_current_span(
        "POST /cart.Cart/Add",
        context=remote,
        kind=SpanKind.SERVER,
        attributes=ATTRIBUTES,
        links=[Link(REMOTE, {"why": "caller"}), Link(SpanContext(7, 8, is_remote=False))],
    ) as root:
        root.add_event("replayed", {"events": 3, "ids": [1, 2]}, timestamp=1_700_000_000_123)
        root.add_event("")
        for kind in (SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER):
            with other.start_as_current_span(f"kind {kind.name}", kind=kind):
                pass
        with other.start_as_current_span("failed") as failed:
            failed.set_status(Status(StatusCode.ERROR, "journal write fenced"))
        with pytest.raises(ValueError), larder.start_as_current_span("raised"):
            raise ValueError("no such entity")
        with larder.start_as_current_span("ok") as ok:
            ok.set_status(Status(StatusCode.OK))
    assert len(keep.spans) == 7
    return keep.spans


def _decoded(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(Encoder().encode(spans))


def test_the_request_is_opentelemetrys_for_spans_of_the_sdk() -> None:
    spans = _sdk_spans()
    official = encode_spans(spans)
    ours = _decoded(spans)
    assert ours == official
    # Field by field, so that a difference says where it is.
    (resource_spans,) = ours.resource_spans
    (expected_resource_spans,) = official.resource_spans
    assert resource_spans.resource == expected_resource_spans.resource
    assert resource_spans.schema_url == "https://opentelemetry.io/schemas/1.21.0"
    # In the order first seen: the first span to end is a child, of the other scope.
    assert [s.scope.name for s in resource_spans.scope_spans] == ["other", "larder_sidecar"]
    for got_scope, want_scope in zip(
        resource_spans.scope_spans, expected_resource_spans.scope_spans, strict=True
    ):
        assert got_scope.scope == want_scope.scope
        assert got_scope.schema_url == want_scope.schema_url
        for got, want in zip(got_scope.spans, want_scope.spans, strict=True):
            for field in (
                "trace_id",
                "span_id",
                "trace_state",
                "parent_span_id",
                "flags",
                "name",
                "kind",
                "start_time_unix_nano",
                "end_time_unix_nano",
                "attributes",
                "dropped_attributes_count",
                "events",
                "dropped_events_count",
                "links",
                "dropped_links_count",
                "status",
            ):
                assert getattr(got, field) == getattr(want, field), (got.name, field)
    root = next(s for s in resource_spans.scope_spans[1].spans if s.name.startswith("POST"))
    assert root.trace_state == "vendor=abc,other=x-1"
    assert root.flags == 0x300  # the parent is remote
    assert {a.key for a in root.attributes} == set(ATTRIBUTES)
    # The same bytes, too (protobuf writes fields in number order, as we do).
    assert Encoder().encode(spans) == official.SerializeToString()


def _readable(
    name: str,
    resource: Resource,
    scope: InstrumentationScope | None,
    attributes: dict[str, Any],
    span_id: int = 1,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(5, span_id, is_remote=False),
        parent=None,
        resource=resource,
        attributes=MappingProxyType(attributes),
        events=(Event("e", {"nested": {"deep": [1, {"x": b"\x00\xff"}]}}, timestamp=9),),
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
        instrumentation_scope=scope,
    )


def test_grouping_by_resource_and_scope_maps_and_bytes_as_opentelemetry_does() -> None:
    first, second = Resource.create({"service.name": "a"}), Resource.create({"service.name": "b"})
    scope = InstrumentationScope("s", "1")
    spans = [
        _readable("one", first, scope, {"map": {"k": "v", "n": 1}, "raw": b"\x01\x02"}, 1),
        _readable("two", second, None, {}, 2),
        _readable("three", first, InstrumentationScope("t"), {"big": 2**64 - 1 >> 1}, 3),
        _readable("four", first, scope, {}, 4),
    ]
    ours = _decoded(spans)
    assert ours == encode_spans(spans)
    assert [[len(s.spans) for s in r.scope_spans] for r in ours.resource_spans] == [[2, 1], [1]]


def test_a_value_otlp_cannot_carry_is_left_out_and_the_rest_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resource = Resource.create({})
    attributes = {"ok": "yes", "odd": object(), "huge": 2**64, "after": 2}
    span = _readable("odd", resource, None, attributes)
    with caplog.at_level(logging.WARNING, logger="larder_sidecar.tracing"):
        (decoded,) = _decoded([span]).resource_spans[0].scope_spans[0].spans
    assert [a.key for a in decoded.attributes] == ["ok", "after"]
    assert "'odd' left out" in caplog.text
    assert "'huge' left out" in caplog.text
    # As OpenTelemetry's encoder does (it logs each such attribute, and leaves it out).
    assert [
        a.key for a in encode_spans([span]).resource_spans[0].scope_spans[0].spans[0].attributes
    ] == ["ok", "after"]


def test_the_installed_exporter_takes_the_lean_encoder_and_the_switch_works() -> None:
    # An upgrade of opentelemetry-exporter-otlp-proto-grpc without these hooks would
    # quietly fall back to its own encoder: this test says so instead.
    assert lean_exporter_supported()
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    for env, kind in (
        (on, LeanOTLPSpanExporter),
        ({**on, "LARDER_TRACING_ENCODER": "sdk"}, OTLPSpanExporter),
    ):
        config = tracing_config(env)
        assert config is not None
        provider, _ = build(config, None, ChosenTraceIds())
        try:
            (processor,) = provider._active_span_processor._span_processors
            assert isinstance(processor, BoundedExport)
            assert type(processor._exporter) is kind
        finally:
            provider.shutdown()
    with pytest.raises(TracingConfigError, match="LARDER_TRACING_ENCODER='fast'"):
        tracing_config({**on, "LARDER_TRACING_ENCODER": "fast"})


async def test_the_lean_exporter_delivers_over_grpc_and_reconnects() -> None:
    spans = _sdk_spans()
    async with OtlpReceiver() as receiver:
        config = TracingConfig(endpoint=receiver.endpoint, timeout=5)
        exporter = LeanOTLPSpanExporter(endpoint=config.endpoint, insecure=True, timeout=5)
        try:
            result = await asyncio.to_thread(exporter.export, spans)
            assert result is SpanExportResult.SUCCESS
            # As after an UNAVAILABLE: a new channel, and the stub is ours again.
            exporter._initialize_channel_and_stub()
            again = await asyncio.to_thread(exporter.export, spans[:1])
            assert again is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        received = await receiver.wait_for(lambda got: len(got) == 8)
    root = next(s for s in received if s.name == "POST /cart.Cart/Add")
    assert root.kind == "SERVER"
    assert root.parent_id == "00f067aa0ba902b7"
    assert root.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert root.service == "cart"
    assert root.attributes["s"] == "héllo ✓"
    assert root.events == ["replayed", ""]
    failed = next(s for s in received if s.name == "failed")
    assert (failed.status, failed.status_message) == ("ERROR", "journal write fenced")
    raised = next(s for s in received if s.name == "raised")
    assert raised.status_message == "ValueError: no such entity"
    assert raised.events == ["exception"]


async def test_spans_encoded_as_they_end_reach_the_collector_whole() -> None:
    """Through `tracing.install` as the sidecar does it: spans queued as `EncodedSpan`s,
    current while their block runs, a failure recorded on the span it left."""
    async with OtlpReceiver() as receiver:
        tracing.install(
            TracingConfig(endpoint=receiver.endpoint, sampler="always_on", export_delay=0.05)
        )
        try:
            (processor,) = _installed.provider._active_span_processor._span_processors  # type: ignore[union-attr]
            assert isinstance(processor, BoundedExport)
            assert processor._prepare is EncodedSpan
            with tracing.span("call", tracing.SpanKind.SERVER, attributes={"rpc.method": "Add"}):
                with tracing.span("handle"):
                    tracing.annotate({"larder.entity_id": "cart-1"})
                with pytest.raises(KeyError), tracing.span("journal write"):
                    raise KeyError("fenced")
                trace_id = tracing.log_trace_id()
            assert tracing.log_trace_id() is None  # nothing current after the block
            received = await receiver.wait_for(lambda got: len(got) == 3)
        finally:
            await asyncio.to_thread(tracing.shutdown)
    by_name = {s.name: s for s in received}
    call, handle, write = by_name["call"], by_name["handle"], by_name["journal write"]
    assert {s.trace_id for s in received} == {trace_id}
    assert (call.parent_id, handle.parent_id, write.parent_id) == ("", call.span_id, call.span_id)
    assert (call.kind, call.attributes) == ("SERVER", {"rpc.method": "Add"})
    assert handle.attributes == {"larder.entity_id": "cart-1"}
    assert (write.status, write.status_message) == ("ERROR", "KeyError: 'fenced'")
    assert write.events == ["exception"]
    assert call.status == handle.status == "UNSET"


def test_a_span_that_cannot_be_encoded_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(span: ReadableSpan) -> bytes:
        raise RuntimeError("encoder bug")

    class _Never(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            raise AssertionError("nothing reaches the exporter")

        def shutdown(self) -> None:
            return

    registry = CollectorRegistry()
    processor = BoundedExport(
        _Never(), TracingMetrics(registry), 0.01, "collector:4317", prepare=broken
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.ERROR, logger="larder_sidecar.tracing"):
        for n in range(3):  # the span's end, in the command's code, does not raise
            provider.get_tracer("t").start_span(f"s{n}").end()
    provider.shutdown()
    assert registry.get_sample_value("larder_trace_spans_dropped_total") == 3
    assert caplog.text.count("could not be encoded") == 1


def test_force_flush_waits_for_the_batch_on_its_way() -> None:
    """A flush (a test's, the sidecar's at shutdown) returns once the spans are exported,
    not as soon as the export thread has taken them from the queue."""
    entered, release = threading.Event(), threading.Event()
    exported: list[str] = []

    class _Slow(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            entered.set()
            release.wait(5)
            exported.extend(s.name for s in spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return

    processor = BoundedExport(_Slow(), TracingMetrics(CollectorRegistry()), 0.01, "c:4317")
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("on its way").end()
    assert entered.wait(5)  # the thread took it: the queue is empty, the export is not done
    threading.Timer(0.2, release.set).start()
    assert processor.force_flush(5000)
    assert exported == ["on its way"]
    provider.shutdown()
