"""Our SDK continues the sidecar's trace: each handler runs in a span whose parent is the
`traceparent` of the command's metadata — once the application has set a tracer
provider; before that nothing is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from larder_sdk import ValueEntity
from larder_sdk.testkit import ValueEntityTestKit
from larder_sdktest import cart_pb2  # type: ignore[import-not-found]
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process; these tests are its only user.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def test_before_the_application_sets_a_provider_nothing_is_even_read(
    cart: ValueEntity[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs first in this module (pytest keeps file order): no provider is set yet.
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("another test in this process already set a tracer provider")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the trace context was read with no provider to record it")

    monkeypatch.setattr(TraceContextTextMapPropagator, "extract", refuse)
    kit = ValueEntityTestKit(cart, "cart-s")
    added = kit.run(
        "AddItem",
        cart_pb2.AddLineItem(cart_id="cart-s", product_id="p", quantity=1),
        metadata={"traceparent": TRACEPARENT},
    )
    assert added.failure is None


def test_a_handler_span_is_a_child_of_the_sidecars_span(
    spans: InMemorySpanExporter, cart: ValueEntity[Any]
) -> None:
    kit = ValueEntityTestKit(cart, "cart-t")
    kit.run(
        "AddItem",
        cart_pb2.AddLineItem(cart_id="cart-t", product_id="p", quantity=1),
        metadata={"traceparent": TRACEPARENT},
    )
    (span,) = spans.get_finished_spans()
    assert span.name == "larder.sdktest.CartService/AddItem"
    assert span.kind is trace.SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT
    assert span.attributes is not None
    assert span.attributes["larder.entity_id"] == "cart-t"
    assert span.attributes["rpc.method"] == "AddItem"


def test_a_failing_handler_leaves_a_failed_span_and_no_traceparent_a_new_trace(
    spans: InMemorySpanExporter, cart: ValueEntity[Any]
) -> None:
    kit = ValueEntityTestKit(cart, "cart-u")
    failed = kit.run("CheckoutCart", cart_pb2.Checkout(fail=True))
    assert failed.failure is not None
    (span,) = spans.get_finished_spans()
    assert span.parent is None  # no traceparent: a trace of its own
    assert span.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
