"""Finished spans to the exporter: a bounded queue, one thread, drops counted.

Commands never wait for the collector: a span is queued on the event loop (as it is, or
already encoded by `otlp_wire` when that is the exporter: `prepare`), and the exporter
(OTLP over gRPC, with its own retries) runs on this processor's thread. When
the collector is slow or gone and the queue is full, new spans are dropped and counted
(`larder_trace_spans_dropped_total`), with one WARNING when dropping starts and one
INFO when spans flow again — not a line per span, as OpenTelemetry's own batch
processor logs them.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

# Imported only with tracing on (`runtime.install` imports this module then).
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .metrics import TracingMetrics

log = logging.getLogger("larder_sidecar.tracing")

MAX_QUEUE = 4096
"""Spans waiting for export; beyond it new ones are dropped (about 0.5 MB of spans)."""
MAX_BATCH = 512


class BoundedExport(SpanProcessor):
    """An OpenTelemetry `SpanProcessor` with a bounded queue and counted drops."""

    def __init__(
        self,
        exporter: SpanExporter,
        metrics: TracingMetrics,
        delay: float,
        where: str,
        *,
        max_queue: int = MAX_QUEUE,
        prepare: Callable[[ReadableSpan], Any] | None = None,
    ) -> None:
        """`prepare`: what is queued for a span instead of the span (`otlp_wire`'s
        `EncodedSpan`, for the exporter that takes it), made when the span ends."""
        self._exporter = exporter
        self._prepare = prepare
        self._metrics = metrics
        self._delay = delay
        self._where = where
        self._max_queue = max_queue
        # deque appends and pops are atomic: the loop appends, the thread pops.
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._dropping = False
        self._failing = False
        self._unpreparable = False
        self._exporting = False
        self._flushed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="larder-span-export", daemon=True)
        self._thread.start()

    # --- SpanProcessor ----------------------------------------------------------------

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping or not span.context.trace_flags.sampled:
            return
        if len(self._queue) >= self._max_queue:
            self._metrics.dropped.inc()
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "tracing: %d spans wait for the collector at %s; new spans are dropped "
                    "and counted (larder_trace_spans_dropped_total) until it takes them",
                    self._max_queue,
                    self._where,
                )
            return
        if self._prepare is None:
            self._queue.append(span)
        else:
            try:
                self._queue.append(self._prepare(span))
            except Exception:  # never the command's failure; said once, counted
                self._metrics.dropped.inc()
                if not self._unpreparable:
                    self._unpreparable = True
                    log.exception("tracing: a span could not be encoded; it is dropped")
                return
        if len(self._queue) >= MAX_BATCH:
            self._wake.set()

    def shutdown(self) -> None:
        """Export what is queued (the exporter's own timeout bounds it), then stop."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._flushed:
            self._wake.set()
            # Until the last batch is exported, not only taken from the queue.
            return self._flushed.wait_for(
                lambda: not self._queue and not self._exporting, timeout_millis / 1000
            )

    # --- the export thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            while self._queue:
                self._exporting = True
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._export(batch)
            self._exporting = False
            with self._flushed:
                self._flushed.notify_all()
            if self._stopping:
                return

    def _export(self, batch: list[Any]) -> None:
        try:
            ok = self._exporter.export(batch) is SpanExportResult.SUCCESS
            problem = "the exporter gave up"
        except Exception as e:  # an exporter bug must not end the thread
            ok, problem = False, f"{type(e).__name__}: {e}"
        if ok:
            self._metrics.exported.inc(len(batch))
            if self._failing or self._dropping:
                log.info("tracing: the collector at %s takes spans again", self._where)
            self._failing = self._dropping = False
            return
        self._metrics.dropped.inc(len(batch))
        if not self._failing:
            self._failing = True
            log.warning(
                "tracing: the collector at %s did not take %d spans (%s); they are dropped "
                "and counted, commands are not affected",
                self._where,
                len(batch),
                problem,
            )
