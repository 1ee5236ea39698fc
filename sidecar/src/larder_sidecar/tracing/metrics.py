"""Tracing's Prometheus metrics, on the sidecar's registry (registered only with tracing on)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class TracingMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.exported = Counter(
            "larder_trace_spans_exported",
            "Spans the collector took",
            registry=registry,
        )
        self.dropped = Counter(
            "larder_trace_spans_dropped",
            "Sampled spans not exported: the queue for the collector was full, or the "
            "collector did not take them",
            registry=registry,
        )
