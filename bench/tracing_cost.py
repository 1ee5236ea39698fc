"""What tracing costs the sidecar: off, on with 1 % of traces sampled, on with all.

One benchmark user function (`bench/sidecar_function.py`) and three `larder-sidecar`
processes in front of it, in-memory journal, alike but for tracing:

- `off`: no OTEL_* variables (nothing of OpenTelemetry is imported);
- `1%`: `OTEL_TRACES_SAMPLER=traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`;
- `100%`: `OTEL_TRACES_SAMPLER=always_on`.

The two traced sidecars export over OTLP/gRPC to a receiver in this process (the
collector's `TraceService/Export`, `tests/infra/otlp.py`), which counts what arrives.
Side by side in each round, the order of the sidecars rotating between rounds:

- HTTP/JSON closed loop: `wrk`, `POST /larder.bench.Counter/Increase`, `--workers`
  connections (one entity each);
- gRPC at a fixed 500 commands/s: `ghz --rps 500`;
- HTTP/JSON at a fixed 500 commands/s: the open-loop client of `sharding_forward.py`
  (32 kept-alive connections, a command due every 2 ms whether or not the earlier ones
  were answered), the same command as the closed loop. At a fixed rate every sidecar
  handles the same commands per second, so commands share wake-ups alike; in the closed
  loop a sidecar that is a little slower also batches less, which counts its cost twice.

With `--together` the three sidecars take their load at the same time instead (one
`wrk` or `ghz` each, on the same user function): on a shared machine whose load moves
from second to second, all three then run under the same conditions.

Each phase reports commands/s, p50/p99 and the sidecar's CPU µs per command (from
/proc, steadier than throughput on a shared machine), and its ratio against `off`.
`bench/tracing_hooks.py` times tracing's own calls in-process, steadier still.

    .venv/bin/python bench/tracing_cost.py [--seconds 10] [--repeat 3] [--workers 32]
                                           [--together]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import tools
from sidecar_command import (
    PYTHON,
    Function,
    Results,
    Sidecar,
    compile_bench_protos,
    ghz_run,
    measured,
    user_function,
    wait_ready,
    wrk_run,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.infra.otlp import OtlpReceiver  # the repository root, just added

MODES: dict[str, dict[str, str]] = {
    "off": {},
    "1%": {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "100%": {"OTEL_TRACES_SAMPLER": "always_on"},
}
# A mode's variant, after a space in its label ("1% sdk"): `sdk`, the OTLP exporter's
# own encoder (`LARDER_TRACING_ENCODER=sdk`); `base`, the sidecar package of `--baseline`.
VARIANTS = ("sdk", "base")


def _label_env(label: str, baseline: Path | None) -> dict[str, str]:
    mode, _, variant = label.partition(" ")
    if mode not in MODES or (variant and variant not in VARIANTS):
        sys.exit(f"tracing_cost: {label!r}: a mode ({', '.join(MODES)}), then optionally "
                 f"a space and {' or '.join(VARIANTS)}")
    env = dict(MODES[mode])
    if variant == "sdk":
        env["LARDER_TRACING_ENCODER"] = "sdk"
    if variant == "base":
        if baseline is None:
            sys.exit(f"tracing_cost: {label!r} needs --baseline <an older sidecar/src>")
        env["PYTHONPATH"] = os.pathsep.join([str(baseline), os.environ.get("PYTHONPATH", "")])
    return env


class Receiver:
    """An OTLP receiver on its own thread and event loop, for the whole run."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.receiver = OtlpReceiver()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            async with self.receiver:
                self._ready.set()
                await self._stop.wait()

        self._loop.run_until_complete(serve())

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def spans(self) -> int:
        return len(self.receiver.spans)


def start(label: str, function: Function, endpoint: str, baseline: Path | None) -> Sidecar:
    port, admin, internal = tools.free_port(), tools.free_port(), tools.free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_HOST": "127.0.0.1",
        "USER_FUNCTION_PORT": str(function.port),
        "LARDER_PORT": str(port),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(internal),
        "LARDER_JOURNAL_TYPE": "memory",
        "LARDER_LOG_LEVEL": "WARNING",
        "LARDER_PASSIVATION_TIMEOUT": "30m",
    }
    extra = _label_env(label, baseline)
    if extra.keys() - {"PYTHONPATH"}:
        env.update(extra, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME=label)
    else:
        env.update(extra)
    process = subprocess.Popen([PYTHON, "-c", "from larder_sidecar.main import main; main()"],
                               env=env)
    sidecar = Sidecar(label, process, port, admin, function)
    wait_ready(sidecar)
    return sidecar


def _median(values: Any) -> float:
    """The median of the values a tool reported (wrk leaves out a percentile it lacks)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def summary(results: Results) -> None:
    print("\nmedians over the rounds (x off: CPU per command against `off`, the ratio of the"
          "\nmedians; per round: the median of each round's ratio, `off` measured in the same"
          "\nround, which a machine whose load drifts between rounds disturbs less)")
    print(f"| {'sidecar / phase':<34} | {'cmd/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| {'CPU µs/cmd':>10} | {'x off':>5} | {'per round':>9} |")
    print(f"|{'-' * 36}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 7}|{'-' * 11}|")
    off = {phase: rows for (label, phase), rows in results.rows.items() if label == "off"}
    for (label, phase), rows in results.rows.items():
        cpu = statistics.median(r["sidecar_cpu_us"] for r in rows)
        base = [r["sidecar_cpu_us"] for r in off[phase]]
        ratios = [r["sidecar_cpu_us"] / b for r, b in zip(rows, base, strict=True)]
        print(f"| {label + ' ' + phase:<34} | {statistics.median(r['rps'] for r in rows):>7.0f} "
              f"| {_median(r['p50_ms'] for r in rows):>7.2f} "
              f"| {_median(r['p99_ms'] for r in rows):>7.2f} | {cpu:>10.0f} "
              f"| {cpu / statistics.median(base):>5.2f} | {statistics.median(ratios):>9.2f} |")
        print(f"    rounds: CPU µs/cmd {[r['sidecar_cpu_us'] for r in rows]}, "
              f"x off {[round(x, 2) for x in ratios]}, cmd/s {[r['rps'] for r in rows]}")


def http_open_loop(port: int, tag: str, seconds: float, rate: float = 500.0,
                   entities: int = 32) -> dict[str, Any]:
    """HTTP/JSON at a fixed rate through `sharding_forward.py`'s open-loop client. Its
    activation of each entity (one command each, before the paced ones, no warm-up
    phase) falls inside the measured CPU, so it is counted as commands too."""
    ids = [f"h{tag}-{k}" for k in range(entities)]
    client = subprocess.Popen(
        [PYTHON, str(Path(__file__).with_name("sharding_forward.py")), "--client",
         "--port", str(port), "--kind", "counter", "--ids", ",".join(ids),
         "--rate", str(rate), "--seconds", str(seconds), "--connections", "32",
         "--warmup", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    if client.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the open-loop client failed to start ({client.wait()})")
    client.stdin.write("go\n")
    client.stdin.flush()
    result: dict[str, Any] = json.loads(client.stdout.readline())
    client.wait()
    return {"count": result["count"] + len(ids), "errors": result["errors"],
            "rps": result["rps"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "seconds": seconds, "cpu_s": result["client_cpu_s"]}


def _tag(label: str, n: int) -> str:
    """A prefix for the round's entity ids: no `%` or space (wrk's and ghz's templates)."""
    return f"{label}{n}".replace("%", "p").replace(" ", "-")


def _together(sidecars: list[Sidecar], run: Any, n: int) -> list[dict[str, Any]]:
    """One load phase on every sidecar at once, each measured on its own."""
    with concurrent.futures.ThreadPoolExecutor(len(sidecars)) as pool:
        futures = [
            pool.submit(measured, s, lambda s=s: run(s, _tag(s.label, n)))
            for s in sidecars
        ]
        return [f.result() for f in futures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--together", action="store_true",
                        help="load the sidecars at the same time, not one after another")
    parser.add_argument("--modes", default="off,1%,100%",
                        help="the sidecars, comma-separated: off, 1%%, 100%%, each "
                             "optionally with ' sdk' or ' base' (e.g. 'off,1%%,1%% sdk'); "
                             "`off` first: the ratios are against it")
    parser.add_argument("--baseline", type=Path,
                        help="an older revision's sidecar/src, for the ' base' variants")
    args = parser.parse_args()
    try:
        tools.ghz()
        tools.wrk()
    except tools.ToolUnavailable as e:
        sys.exit(f"tracing_cost: {e}")
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as tmp:
        protos = Path(tmp) / "protos"
        protos.mkdir()
        desc = compile_bench_protos(protos)
        labels = [label.strip() for label in args.modes.split(",")]
        if labels[0] != "off":
            sys.exit("tracing_cost: --modes must start with off (the ratios are against it)")
        for label in labels:
            _label_env(label, args.baseline)  # a wrong label stops before anything starts
        with Receiver() as receiver, user_function(protos) as function:
            endpoint = receiver.receiver.endpoint
            sidecars: list[Sidecar] = []
            try:
                for label in labels:
                    # One at a time: those started are stopped if the next one fails.
                    sidecars.append(start(label, function, endpoint, args.baseline))  # noqa: PERF401
            except BaseException:
                for s in sidecars:
                    tools.stop(s.process)
                raise
            try:
                secs = f"{args.seconds:.0f}s"
                for n in range(args.repeat):
                    print(f"round {n + 1}/{args.repeat}, load {os.getloadavg()[0]:.1f}",
                          flush=True)
                    turn = sidecars[n % len(sidecars):] + sidecars[:n % len(sidecars)]
                    phases = {
                        "http closed loop": lambda s, t: {
                            **wrk_run(s.port, args, True, f"w{t}-"), "seconds": args.seconds},
                        "grpc 500/s": lambda s, t: {
                            **ghz_run(s.port, desc, ["--rps", "500", "-c", "16", "-z", secs],
                                      f"r{t}-{{{{.WorkerID}}}}"), "seconds": args.seconds},
                        "http 500/s": lambda s, t: http_open_loop(s.port, t, args.seconds),
                    }
                    if args.together:
                        for phase, run in phases.items():
                            for s, result in zip(turn, _together(turn, run, n), strict=True):
                                results.add(s.label, phase, result)
                        continue
                    for s in turn:
                        tag = _tag(s.label, n)
                        for phase, run in phases.items():
                            results.add(s.label, phase,
                                        measured(s, lambda s=s, t=tag, run=run: run(s, t)))
            finally:
                for s in sidecars:
                    tools.stop(s.process)
            print(f"spans received by the OTLP receiver: {receiver.spans()}")
    print(f"load average at the end: {os.getloadavg()}")
    summary(results)


if __name__ == "__main__":
    main()
