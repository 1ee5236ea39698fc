"""Tracing's configuration from OTEL_* variables, the off path, propagation and the
trace id in log lines."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest
from larder_sidecar import tracing
from larder_sidecar.logs import JsonFormatter, TextFormatter
from larder_sidecar.settings import SettingsError, load_settings
from larder_sidecar.tracing import TracingConfig, tracing_config
from larder_sidecar.tracing.export import BoundedExport
from larder_sidecar.tracing.metrics import TracingMetrics
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_off_unless_an_exporter_or_an_endpoint_is_named() -> None:
    assert tracing_config({}) is None
    assert tracing_config({"OTEL_SERVICE_NAME": "cart"}) is None
    assert (
        tracing_config(
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}
        )
        is None
    )
    assert tracing_config({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None
    on = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert on is not None
    assert (on.exporter, on.endpoint, on.insecure) == ("otlp", "http://collector:4317", True)
    assert on.sampler == "parentbased_always_on" and on.service_name == "larder-sidecar"


def test_the_standard_variables_are_read() -> None:
    config = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector.example:4317/",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-team=carts",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
            "OTEL_SERVICE_NAME": "shopping-cart",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "POD_NAME": "shopping-cart-abc",
            "POD_NAMESPACE": "shop",
        }
    )
    assert config == TracingConfig(
        exporter="otlp",
        endpoint="https://collector.example:4317",
        insecure=False,
        headers={"authorization": "Bearer abc", "x-team": "carts"},
        timeout=10.0,
        sampler="parentbased_traceidratio",
        ratio=0.01,
        service_name="shopping-cart",
        resource={
            "deployment.environment": "prod",
            "k8s.pod.name": "shopping-cart-abc",
            "k8s.namespace.name": "shop",
        },
        export_delay=0.2,
    )
    assert "Bearer" not in repr(config)  # headers carry credentials


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "otlp .* console .* or none"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTLP over gRPC only",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://c:1"}, "not http"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "one of"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "5"}, "between 0 and 1"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "half"}, "not a number"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "team"}, "key=value"),
    ],
)
def test_a_value_that_cannot_be_used_stops_the_start_with_its_name(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_while_off_the_metadata_passes_unchanged_and_nothing_is_recorded() -> None:
    assert not tracing.enabled()
    metadata = [("traceparent", PARENT), ("x-user", "a")]
    assert tracing.inject(metadata) is metadata
    assert tracing.extract(metadata) is None
    assert tracing.capture() is None and tracing.now_ns() == 0
    with tracing.span("nothing") as span:
        assert span is None
    assert tracing.log_trace_id() is None


@pytest.fixture
def console_tracing() -> Iterator[None]:
    tracing.install(TracingConfig(exporter="console", export_delay=0.05))
    try:
        yield
    finally:
        tracing.shutdown()


def test_inject_replaces_the_callers_traceparent_with_the_current_span(
    console_tracing: None,
) -> None:
    parent = tracing.extract([("TraceParent", PARENT)])
    with tracing.span("child", parent=parent):
        out = dict(tracing.inject([("traceparent", PARENT), ("x-user", "a")]))
        trace_id = tracing.log_trace_id()
    assert out["x-user"] == "a"
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert out["traceparent"].startswith(f"00-{trace_id}-")
    assert out["traceparent"] != PARENT  # the child span, not the caller's


def test_a_missing_or_malformed_traceparent_starts_a_new_trace(console_tracing: None) -> None:
    with tracing.span("outer"):
        for metadata in ([], [("traceparent", "garbage")]):
            with tracing.span("new", parent=tracing.extract(metadata)):
                inner = tracing.log_trace_id()
            # Never the stale context of whatever task runs the code.
            assert inner != tracing.log_trace_id()


def test_log_lines_carry_the_trace_id_inside_a_span(console_tracing: None) -> None:
    record = logging.LogRecord("larder_sidecar", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace=" not in TextFormatter().format(record)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with tracing.span("s", parent=tracing.extract([("traceparent", PARENT)])):
        text = TextFormatter().format(record)
        entry = json.loads(JsonFormatter().format(record))
    assert text.endswith("hello trace=4bf92f3577b34da6a3ce929d0e0e4736")
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_under_a_root_our_sampler_dropped_no_child_span_is_made() -> None:
    tracing.install(
        TracingConfig(exporter="console", sampler="traceidratio", ratio=0.0, export_delay=0.05)
    )
    try:
        with tracing.span("root", parent=tracing.extract([])) as root:
            assert root is not None and not root.is_recording()
            with tracing.span("child") as child:
                assert child is None
                # The dropped trace still travels on, flagged unsampled.
                ((_, traceparent),) = tracing.inject([])
                assert int(traceparent.rsplit("-", 1)[1], 16) & 1 == 0  # not sampled
        # A client's unsampled parent is the sampler's call, not ours to skip.
        remote = tracing.extract([("traceparent", PARENT[:-2] + "00")])
        with tracing.span("server", parent=remote) as server:
            assert server is not None
    finally:
        tracing.shutdown()


class _StuckExporter(SpanExporter):
    """An exporter whose collector hangs: export blocks until released, then fails."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans: object) -> SpanExportResult:
        self.calls += 1
        self.release.wait(10)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


def test_a_stuck_collector_costs_spans_not_commands(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="larder_sidecar.tracing")
    registry = CollectorRegistry()
    exporter = _StuckExporter()
    processor = BoundedExport(
        exporter,
        TracingMetrics(registry),
        0.01,
        "collector:4317",
        max_queue=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for n in range(200):  # never blocks, whatever the exporter does
        tracer.start_span(f"s{n}").end()
    exporter.release.set()
    processor.shutdown()
    # Each one lost: dropped from the full queue, or refused by the collector.
    assert registry.get_sample_value("larder_trace_spans_dropped_total") == 200
    assert registry.get_sample_value("larder_trace_spans_exported_total") == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # Once when the queue filled, once when the collector refused: not once per span.
    assert len(warnings) <= 2, [r.getMessage() for r in warnings]
    assert any("dropped and counted" in r.getMessage() for r in warnings)
