"""OpenTelemetry's OTLP/gRPC span exporter, sending the request as `otlp_wire` writes it
(imported with tracing on).

Everything else is the exporter's own: the channel and its TLS settings (the standard
`OTEL_EXPORTER_OTLP_*` certificate, client key and compression variables), the headers,
the timeout, the retries with backoff and the reconnection after UNAVAILABLE. Only the
request's encoding changes: its bytes are made by `otlp_wire.Encoder` (three times
cheaper, the same message) and go on the wire as they are, by a stub for the same
`TraceService/Export` method whose request serializer is the identity.

The exporter's hooks used here (`_translate_data`, `_initialize_channel_and_stub`,
`_client`, `_channel`) are its subclass interface in the versions we install, not a
documented API: `lean_exporter_supported` checks them, `provider.build` falls back to
the plain exporter without them, and a unit test fails if the installed version lacks
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan

from .otlp_wire import EncodedSpan, Encoder

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _EncodedTraceService:
    """`TraceServiceStub` for a request already encoded: `Export(request=bytes, ...)`."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export: Callable[..., Any] = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,  # bytes as they are
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


def lean_exporter_supported() -> bool:
    """Whether the installed exporter has the hooks `LeanOTLPSpanExporter` overrides."""
    return all(
        callable(getattr(OTLPSpanExporter, name, None))
        for name in ("_translate_data", "_initialize_channel_and_stub", "_export")
    )


class LeanOTLPSpanExporter(OTLPSpanExporter):
    """`OTLPSpanExporter` with the request encoded by `otlp_wire`: `export` takes the
    SDK's spans or `EncodedSpan`s (what `BoundedExport` queues for it)."""

    prepare = EncodedSpan

    def __init__(self, **kwargs: Any) -> None:
        self._encoder = Encoder()
        super().__init__(**kwargs)

    def _initialize_channel_and_stub(self) -> None:
        # Called by the exporter's constructor and again to reconnect after UNAVAILABLE.
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        # Both are declared `None` in the exporter's annotations, set here all the same.
        channel: grpc.Channel = self._channel  # type: ignore[assignment]
        self._client = _EncodedTraceService(channel)  # type: ignore[assignment]

    def _translate_data(  # type: ignore[override]
        self, data: Sequence[ReadableSpan | EncodedSpan]
    ) -> bytes:
        return self._encoder.encode(data)
