"""OpenTelemetry's tracer provider as the sidecar sets it up (imported with tracing on).

The provider records every span it is asked for: the sampling decision is taken before
it is asked (`sampling.py`, at a trace's root), and an unsampled trace never reaches it.
"""

from __future__ import annotations

import logging
from importlib import metadata as package_metadata
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import get_current_span
from prometheus_client import CollectorRegistry

from .config import TracingConfig
from .export import BoundedExport
from .metrics import TracingMetrics
from .sampling import new_span_id, new_trace_id

log = logging.getLogger("larder_sidecar.tracing")


class RecordEvery(Sampler):
    """Every span recorded and sampled, with its parent's tracestate: what
    `ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)` decides for the spans
    this provider is asked for, in one call instead of three.

    Roots and a caller's context reach the provider only once sampled (`sampling.py`,
    so recorded even under a caller's unsampled flag that `traceidratio` overrode); a
    local parent is one of its own spans, all sampled; a child follows its parent."""

    def should_sample(  # noqa: PLR0917 - the Sampler interface
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state if parent.is_valid else None
        )

    def get_description(self) -> str:
        return "RecordEvery"


class ChosenTraceIds(IdGenerator):
    """Random ids, except the trace id of a new root: the one the sampling decision was
    taken on (`choose` just before the span starts), so that a `traceidratio` sampler
    elsewhere decides the same for it. Spans start on the event loop's thread only, so
    nothing comes between `choose` and the start."""

    def __init__(self) -> None:
        self._chosen = 0

    def choose(self, trace_id: int) -> None:
        self._chosen = trace_id

    def generate_trace_id(self) -> int:
        chosen, self._chosen = self._chosen, 0
        return chosen or new_trace_id()

    def generate_span_id(self) -> int:
        return new_span_id()

    def is_trace_id_random(self) -> bool:
        return True


def version() -> str:
    try:
        return package_metadata.version("larder-sidecar")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def _otlp_exporter(config: TracingConfig) -> SpanExporter:
    """OTLP/gRPC, the request encoded by `otlp_wire` unless told otherwise."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    from .otlp_grpc import LeanOTLPSpanExporter, lean_exporter_supported  # noqa: PLC0415

    kind: type[OTLPSpanExporter] = OTLPSpanExporter
    if config.encoder == "lean":
        if lean_exporter_supported():
            kind = LeanOTLPSpanExporter
        else:
            log.info(
                "tracing: this opentelemetry-exporter-otlp-proto-grpc lacks the hooks of "
                "the sidecar's own OTLP encoder; exporting with its own (slower) one"
            )
    return kind(
        endpoint=config.endpoint,
        insecure=config.insecure,
        headers=dict(config.headers),
        timeout=int(config.timeout),
    )


def build(
    config: TracingConfig, registry: CollectorRegistry | None, ids: ChosenTraceIds
) -> tuple[TracerProvider, str]:
    """The provider, exporting through a bounded queue; and where it exports to."""
    exporter: SpanExporter
    if config.exporter == "console":
        exporter, where = ConsoleSpanExporter(), "stdout"
    else:
        exporter = _otlp_exporter(config)
        where = config.endpoint
        # It logs each failed export and each retry; BoundedExport says it once per
        # outage and counts the spans lost, which is what an operator can act on.
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(
            logging.CRITICAL
        )
    resource = Resource.create(
        {**config.resource, "service.name": config.service_name, "service.version": version()}
    )
    provider = TracerProvider(resource=resource, sampler=RecordEvery(), id_generator=ids)
    provider.add_span_processor(
        BoundedExport(
            exporter,
            TracingMetrics(registry),
            config.export_delay,
            where,
            # Ours encodes each span as it ends, rather than keep its objects alive.
            prepare=getattr(exporter, "prepare", None),
        )
    )
    return provider, where
