"""What a recorded command's spans cost the sidecar, in-process, part by part.

The hooks of one event-sourced command (`tracing_hooks._command`: SERVER span from the
metadata, handle span, queue wait, user function span, journal write: five spans) with
every trace sampled, timed with the process's CPU clock (every thread, so the export
thread's encoding and sending count), the spans flushed at the end of each round. Each
case adds one part of the way to the collector:

- `spans only`: OpenTelemetry's SDK making and ending the spans, a processor that does
  nothing with them;
- `+ queue`: the sidecar's `BoundedExport` (bounded queue, export thread), an exporter
  that takes the batch and does nothing;
- `+ sdk encoder`: the exporter encodes the batch on the export thread (the OTLP
  exporter's `encode_spans` and serialisation), sends nothing;
- `+ lean encoder`: each span encoded as it ends (`otlp_wire.EncodedSpan`, what the
  sidecar queues for its own exporter), the batch's request made on the export
  thread, nothing sent;
- `+ sdk otlp/grpc` / `+ lean otlp/grpc`: the real exporter (`LARDER_TRACING_ENCODER`
  sdk or lean) to an OTLP receiver in another process (its CPU is not counted).

Rounds interleave the cases, so a change in the machine's load touches all alike. With
an older sidecar package on `PYTHONPATH` (no `otlp_wire`), the lean cases are skipped.

    .venv/bin/python bench/tracing_span_cost.py [--commands 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from larder_sidecar import tracing
from larder_sidecar.tracing import TracingConfig
from larder_sidecar.tracing.export import BoundedExport
from larder_sidecar.tracing.runtime import _installed
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from tracing_hooks import CLIENT, _command

try:
    from larder_sidecar.tracing.otlp_wire import EncodedSpan, Encoder
except ImportError:  # an older sidecar package on PYTHONPATH
    EncodedSpan = Encoder = None  # type: ignore[assignment,misc]

SPANS_PER_COMMAND = 5
ROOT = Path(__file__).resolve().parents[1]
RECEIVER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from tests.infra.otlp import OtlpReceiver

async def main():
    async with OtlpReceiver() as receiver:
        print(receiver.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


class _Nothing(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        return


class _Encoding(SpanExporter):
    """Encodes each batch with `encode`, sends nothing."""

    def __init__(self, encode: Callable[[Sequence[ReadableSpan]], object]) -> None:
        self._encode = encode

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._encode(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return


def _sdk_encode(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def _processor() -> BoundedExport:
    (processor,) = _installed.provider._active_span_processor._span_processors  # type: ignore[union-attr]
    assert isinstance(processor, BoundedExport)
    return processor


def _setup(case: str) -> None:
    """Adapt the installed provider to `case` (a benchmark may reach inside; code may not)."""
    if case == "spans only":
        _installed.provider._active_span_processor._span_processors = (_Nothing(),)  # type: ignore[union-attr]
    elif case == "+ queue":
        _processor()._exporter = _Encoding(lambda spans: None)
    elif case == "+ sdk encoder":
        _processor()._exporter = _Encoding(_sdk_encode)
    elif case == "+ lean encoder":
        _processor()._exporter = _Encoding(Encoder().encode)
        _processor()._prepare = EncodedSpan


async def _round(n: int) -> float:
    provider = _installed.provider
    started = time.process_time()
    for done in range(1, n + 1):
        await _command(CLIENT)
        # Flushed every 100 commands (500 spans), as the sidecar's queue is emptied by
        # the export thread while commands run: without it, a loop that makes spans flat
        # out fills the queue (4,096 spans) faster than a slow exporter drains it, and
        # the spans dropped are work not done, not counted.
        if provider is not None and done % 100 == 0:
            provider.force_flush()
    if provider is not None:
        provider.force_flush()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = ["spans only", "+ queue", "+ sdk encoder", "+ sdk otlp/grpc"]
    if Encoder is not None:
        cases[3:3] = ["+ lean encoder"]
        cases.append("+ lean otlp/grpc")
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        endpoint = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
        print(f"load average at the start: {os.getloadavg()}")
        rounds: dict[str, list[float]] = {case: [] for case in ["off", *cases]}
        for _ in range(args.repeat):
            for case, values in rounds.items():
                config: TracingConfig | None = None
                if case != "off":
                    encoder: dict[str, Any] = {}
                    if Encoder is not None:
                        encoder["encoder"] = "lean" if "lean" in case else "sdk"
                    # The export thread wakes for a full batch (512 spans) or a flush.
                    config = TracingConfig(
                        endpoint=endpoint, sampler="always_on", export_delay=3600, **encoder
                    )
                    tracing.install(config)
                    _setup(case)
                try:
                    asyncio.run(_round(300))  # warm up
                    values.append(asyncio.run(_round(args.commands)))
                finally:
                    if config is not None:
                        tracing.shutdown()
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        if receiver.stdin is not None:
            receiver.stdin.close()
        receiver.wait(10)
    off = statistics.median(rounds["off"])
    print(f"| {'case':<18} | {'µs/command':>10} | {'added µs/span':>13} | rounds (µs/command)")
    for case, values in rounds.items():
        median = statistics.median(values)
        print(
            f"| {case:<18} | {median:>10.1f} | {(median - off) / SPANS_PER_COMMAND:>13.1f} | "
            f"{', '.join(f'{v:.0f}' for v in values)}"
        )


if __name__ == "__main__":
    main()
