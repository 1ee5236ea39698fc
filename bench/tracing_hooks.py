"""What tracing's hooks cost one command, in-process: no sidecar, no network.

The calls one event-sourced command makes into `larder_sidecar.tracing`, in their order
(the SERVER span from the client's metadata, the entity's handle span under the captured
context, its queue wait, the user function span with the metadata injected, the journal
write under the handle span's context), timed with the process's CPU clock, for: tracing
off; on with every trace dropped by the sampler (what 99 % of commands cost at 1 %
sampling), with and without a client `traceparent`. A recorded trace's cost is mostly
the export thread's (encoding, gRPC), which only `tracing_cost.py` measures honestly.

A steadier figure than `tracing_cost.py`'s on a shared machine, where the sidecar's
whole CPU per command moves by more than tracing's share; that one is the end-to-end
check.

    .venv/bin/python bench/tracing_hooks.py [--commands 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import tools
from larder_sidecar import tracing
from larder_sidecar.tracing import TracingConfig
from larder_sidecar.tracing.config import SamplerName

CLIENT = [("content-type", "application/json"), ("x-user", "a")]
TRACEPARENT = ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")


async def _command(metadata: list[tuple[str, str]]) -> None:
    # As `Dispatcher.call`: a dropped trace is made current without a span.
    parent = tracing.extract(metadata)
    if tracing.dropped(parent):
        token = tracing.within(parent)
        try:
            await _entered(metadata)
        finally:
            tracing.leave(token)
        return
    with tracing.span(
        "/b.Counter/Increase",
        tracing.SpanKind.SERVER,
        parent=parent,
        attributes={"rpc.service": "b.Counter", "rpc.method": "Increase"},
    ):
        await _entered(metadata)


async def _entered(metadata: list[tuple[str, str]]) -> None:
    submitted = tracing.capture()
    queued = tracing.now_ns()
    await asyncio.sleep(0)  # the entity's task takes it
    # As `Entity._one`.
    trace = submitted
    if tracing.dropped(submitted):
        token = tracing.within(submitted)
        try:
            _exchange(metadata)
        finally:
            tracing.leave(token)
    else:
        attributes = (
            {"larder.entity_type": "c", "larder.entity_id": "1", "rpc.method": "Increase"}
            if tracing.recording(submitted)
            else None
        )
        with tracing.span("handle b.Counter/Increase", parent=submitted, attributes=attributes):
            tracing.record_span("queue", queued)
            trace = tracing.capture()
            _exchange(metadata)
    # As `Entity._journal_write`.
    written = {"larder.journal.events": 1} if tracing.recording(trace) else None
    if tracing.dropped(trace):
        token = tracing.within(trace)
        try:
            tracing.annotate({"larder.journal.outcome": "stored"})
        finally:
            tracing.leave(token)
        return
    with tracing.span("journal write", parent=trace, attributes=written):
        tracing.annotate({"larder.journal.outcome": "stored"})


def _exchange(metadata: list[tuple[str, str]]) -> None:
    with tracing.span("user function"):
        tracing.inject(metadata)


async def _commands(n: int, metadata: list[tuple[str, str]]) -> float:
    started = time.process_time()
    for _ in range(n):
        await _command(metadata)
    return (time.process_time() - started) / n * 1e6


def _config(endpoint: str, sampler: SamplerName, ratio: float) -> TracingConfig:
    return TracingConfig(
        endpoint=endpoint, sampler=sampler, ratio=ratio, timeout=1, export_delay=3600
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    # Nothing listens there: a dropped trace never reaches the exporter.
    nowhere = f"http://127.0.0.1:{tools.free_port()}"
    cases: list[tuple[str, TracingConfig | None, list[tuple[str, str]]]] = [
        ("off", None, CLIENT),
        ("on, dropped (traceidratio 0)", _config(nowhere, "traceidratio", 0), CLIENT),
        (
            "on, dropped, client traceparent 00",
            _config(nowhere, "parentbased_traceidratio", 0),
            [*CLIENT, TRACEPARENT],
        ),
    ]
    print(f"load average at the start: {os.getloadavg()}")
    # Interleaved rounds: a change in the machine's load hits every case alike.
    rounds: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    for _ in range(args.repeat):
        for label, config, metadata in cases:
            if config is not None:
                tracing.install(config)
            try:
                asyncio.run(_commands(500, metadata))  # warm up
                rounds[label].append(asyncio.run(_commands(args.commands, metadata)))
            finally:
                if config is not None:
                    tracing.shutdown()
    print(f"load average at the end: {os.getloadavg()}")
    off = statistics.median(rounds["off"])
    print(f"| {'case':<36} | {'µs/command':>10} | {'added µs':>8} | rounds")
    for label, values in rounds.items():
        median = statistics.median(values)
        print(
            f"| {label:<36} | {median:>10.2f} | {median - off:>8.2f} | "
            f"{', '.join(f'{v:.2f}' for v in values)}"
        )


if __name__ == "__main__":
    main()
