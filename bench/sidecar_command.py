"""The sidecar end to end: an event-sourced command emitting one event, in-memory journal.

Starts the benchmark user function (`bench/sidecar_function.py`, `larder_sdk` on
uvloop) and one `larder-sidecar` process in front of it, then, side by side in one
run and repeated `--repeat` times:

- baseline: the same command sent straight to the user function over the protocol
  (`bench/sidecar_client.py direct`: one `EventSourcedEntities/Handle` stream per
  entity, Command → Reply), closed loop and at a fixed 500 commands/s;
- the sidecar over gRPC: `ghz` (closed loop, and `--rps 500`) and the same Python
  client as the baseline (so the two paths share a load generator);
- the sidecar over HTTP/JSON: `wrk` on `POST /larder.bench.Counter/Increase` and on the
  `google.api.http` route `POST /counters/{id}/increase`;
- memory: the sidecar's RSS idle, and before/after activating `--entities` entities.

The CPU time per command of every process on the path is printed for every load
phase: the sidecar's (`sidecar_cpu_us`), the user function's (`function_cpu_us`) and
the load generator's (`client_cpu_us`: the Python client's own count over its measured
window; ghz's and wrk's whole run, from the rusage of the finished child). On a shared
machine CPU per command is steadier than throughput, and since client, sidecar and
function share the same 2 cores, commands/s ≈ cores / their sum (`total_cpu_us`).

    .venv/bin/python bench/sidecar_command.py [--seconds 10] [--repeat 3] [--workers 32]
        [--compare <git rev>] [--compare-env NAME=VALUE]

`--compare REV` also runs the sidecar as of REV (from a temporary git worktree) in the
same run, alternating with the working tree's, so an optimization is measured against
its baseline under the same load from the rest of the machine; with `--compare-sdk` that
sidecar's user function is a second process on REV's `larder_sdk` (the function's CPU
per command is then each sidecar's own function's). `--compare-env NAME=VALUE`
does the same with a second sidecar of the working tree that has the variable set (e.g.
`LARDER_USER_FUNCTION_TRANSPORT=grpc`: the entity streams on grpc.aio instead of our
client).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tools
from larder_protocol import compile_protos

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
SIDECAR_BIN = str(Path(sys.executable).with_name("larder-sidecar"))

WRK_SCRIPT = """
local n = 0
local generic = "%(generic)s"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local id = "%(prefix)s" .. (n %% %(entities)d)
  if generic == "yes" then
    return wrk.format(nil, "/larder.bench.Counter/Increase", nil,
                      '{"id":"' .. id .. '","value":1}')
  end
  return wrk.format(nil, "/counters/" .. id .. "/increase", nil, '{"value":1}')
end
"""


@dataclass
class Function:
    process: subprocess.Popen[bytes]
    port: int


@dataclass
class Sidecar:
    label: str
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    function: Function


@dataclass
class Results:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, label: str, phase: str, result: dict[str, Any]) -> None:
        self.rows.setdefault((label, phase), []).append(result)
        shown = {k: v for k, v in result.items() if k != "target"}
        print(f"  {label:>10} {phase:<28} {shown}", flush=True)


def compile_bench_protos(out: Path) -> Path:
    desc = out / "counter.desc"
    compile_protos([BENCH / "protos/larder/bench/counter.proto"], out,
                   include=[BENCH / "protos"], descriptor_set_out=desc)
    return desc


@contextmanager
def user_function(protos: Path, sdk_src: Path | None = None) -> Iterator[Function]:
    """The bench function; with `sdk_src`, on the `larder_sdk` found there."""
    port = tools.free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    if sdk_src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(sdk_src), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([PYTHON, str(BENCH / "sidecar_function.py"), str(protos)],
                               env=env)
    try:
        tools.wait_port(port, process)
        yield Function(process, port)
    finally:
        tools.stop(process)


def wait_ready(sidecar: Sidecar, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{sidecar.admin_port}/readyz"
    while time.monotonic() < deadline:
        if sidecar.process.poll() is not None:
            raise RuntimeError(f"sidecar {sidecar.label} exited with {sidecar.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"sidecar {sidecar.label} not ready after {timeout:.0f}s")


def start_sidecar(
    label: str, function: Function, src: Path | None, extra: dict[str, str] | None = None
) -> Sidecar:
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
        **(extra or {}),
    }
    if src is not None:
        # The older sidecar's sources first, ahead of the editable install.
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([PYTHON, "-c", "from larder_sidecar.main import main; main()"],
                               env=env)
    sidecar = Sidecar(label, process, port, admin, function)
    wait_ready(sidecar)
    return sidecar


def python_client(target: str, port: int, protos: Path, args: argparse.Namespace,
                  prefix: str, rate: float = 0.0) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, str(BENCH / "sidecar_client.py"), target, str(port), str(protos),
         "--workers", str(args.workers), "--seconds", str(args.seconds),
         "--rate", str(rate), "--prefix", prefix],
        capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ghz_run(port: int, desc: Path, extra: list[str], data_id: str,
            call: str = "larder.bench.Counter.Increase") -> dict[str, Any]:
    out = subprocess.run(
        [str(tools.ghz()), "--insecure", "--protoset", str(desc),
         "--call", call,
         "-d", json.dumps({"id": data_id, "value": 1}), "-O", "json", *extra,
         f"127.0.0.1:{port}"],
        capture_output=True, text=True, check=False,
    )
    if not out.stdout.strip():
        raise RuntimeError(f"ghz failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    # ghz closes its connections when a `-z` run ends; the calls still in flight then
    # are its own artifact ("use of closed network connection"), not the sidecar's.
    errors = {k: v for k, v in (report.get("errorDistribution") or {}).items()
              if "use of closed network connection" not in k}
    return {
        "count": (report.get("statusCodeDistribution") or {}).get("OK", 0),
        "errors": sum(errors.values()),
        **({"error_kinds": errors} if errors else {}),
        "rps": round(report["rps"], 1),
        "p50_ms": round(lat.get(50, float("nan")), 3),
        "p90_ms": round(lat.get(90, float("nan")), 3),
        "p99_ms": round(lat.get(99, float("nan")), 3),
    }


def wrk_run(port: int, args: argparse.Namespace, generic: bool, prefix: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"generic": "yes" if generic else "no", "prefix": prefix,
                                   "entities": args.workers})
    try:
        out = subprocess.run(
            [tools.wrk(), "-t1", f"-c{args.workers}", f"-d{args.seconds:.0f}s", "--latency",
             "-s", script.name, f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    lat = {int(p): _wrk_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    return {"errors": int(non2xx.group(1)) if non2xx else 0, "rps": round(rps, 1),
            "p50_ms": lat.get(50), "p90_ms": lat.get(90), "p99_ms": lat.get(99)}


def _wrk_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def children_cpu() -> float:
    """User + system CPU of this process's finished (waited-for) children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(target: Sidecar | Function, run: Any) -> dict[str, Any]:
    """Run one load phase; add the CPU µs per command of each process on the path.

    The load generator is a child that finishes within `run()`, so the growth of the
    children's rusage is its whole run (start-up included); the Python client reports
    its own CPU over its measured window (`cpu_s`), which is used instead when present.
    """
    if isinstance(target, Sidecar):
        pids = {"function": target.function.process.pid, "sidecar": target.process.pid}
    else:
        pids = {"function": target.process.pid}
    before = {name: tools.cpu_seconds(pid) for name, pid in pids.items()}
    before_children = children_cpu()
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = run()
    used = {name: tools.cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used["client"] = result.pop("cpu_s", None) or children_cpu() - before_children
    count = result.get("count") or result["rps"] * float(result.get("seconds", 0) or 0)
    if count:
        for name in ("sidecar", "function", "client"):
            if name in used:
                result[f"{name}_cpu_us"] = round(used[name] / count * 1e6, 1)
        result["total_cpu_us"] = round(sum(used.values()) / count * 1e6, 1)
    result["load"] = round(max(load_before, os.getloadavg()[0]), 2)
    return result


def memory(sidecar: Sidecar, desc: Path, args: argparse.Namespace, results: Results) -> None:
    before = tools.rss_bytes(sidecar.process.pid)
    run = ghz_run(sidecar.port, desc, ["-n", str(args.entities), "-c", "50"],
                  f"mem-{sidecar.label}-{{{{.RequestNumber}}}}")
    after = tools.rss_bytes(sidecar.process.pid)
    # What the RSS growth is divided by must really be active: the sidecar's own count.
    url = f"http://127.0.0.1:{sidecar.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    active = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith("larder_active_entities")
    )
    results.add(sidecar.label, f"rss {args.entities} entities", {
        "before_mb": round(before / 2**20, 1), "after_mb": round(after / 2**20, 1),
        "per_entity_kb": round((after - before) / args.entities / 1024, 1),
        "errors": run.get("errors"), "active_entities": active,
    })


def round_of(n: int, sidecars: list[Sidecar], function: Function, protos: Path,
             desc: Path, args: argparse.Namespace, results: Results) -> None:
    print(f"round {n + 1}/{args.repeat}", flush=True)
    secs = f"{args.seconds:.0f}s"
    function_port, fn = function.port, function
    results.add("baseline", "direct closed loop", measured(fn, lambda:
                python_client("direct", function_port, protos, args, f"d{n}")))
    for s in sidecars:
        tag = f"{s.label}{n}"
        results.add(s.label, "grpc ghz closed loop", measured(s, lambda s=s, tag=tag: {
            **ghz_run(s.port, desc, ["-c", str(args.workers), "--connections", "2", "-z", secs],
                      f"g{tag}-{{{{.WorkerID}}}}"), "seconds": args.seconds}))
        results.add(s.label, "grpc python closed loop", measured(s, lambda s=s, tag=tag:
                    python_client("sidecar", s.port, protos, args, f"p{tag}")))
    if args.closed_loop_only:
        return
    results.add("baseline", "direct 500/s", measured(fn, lambda: python_client(
        "direct", function_port, protos, args, f"dr{n}", rate=500)))
    for s in sidecars:
        tag = f"{s.label}{n}"
        results.add(s.label, "grpc ghz 500/s", measured(s, lambda s=s, tag=tag: {
            **ghz_run(s.port, desc, ["--rps", "500", "-c", "16", "-z", secs],
                      f"r{tag}-{{{{.WorkerID}}}}"), "seconds": args.seconds}))
        results.add(s.label, "grpc python 500/s", measured(s, lambda s=s, tag=tag:
                    python_client("sidecar", s.port, protos, args, f"pr{tag}", rate=500)))
        for generic in (True, False):
            phase = "http generic POST" if generic else "http google.api.http"
            results.add(s.label, phase, measured(s, lambda s=s, tag=tag, g=generic: {
                **wrk_run(s.port, args, g, f"w{tag}{g}-"), "seconds": args.seconds}))
        if args.actions:
            results.add(s.label, "grpc ghz action closed loop", measured(s, lambda s=s: {
                **ghz_run(s.port, desc, ["-c", str(args.workers), "--connections", "2",
                                         "-z", secs], "a", call="larder.bench.Echo.Say"),
                "seconds": args.seconds}))


def summary(results: Results, labels: list[str]) -> None:
    print("\nmedians over the rounds (ratio: against the baseline's direct call)")
    base = {phase: statistics.median(r["rps"] for r in rows)
            for (label, phase), rows in results.rows.items() if label == "baseline"}
    base_p50 = {phase: statistics.median(r["p50_ms"] for r in rows)
                for (label, phase), rows in results.rows.items() if label == "baseline"}
    print("CPU µs per command: sidecar, user function, load generator, their total; load: "
          "the 1-minute load average (highest of before/after the phase)")
    print(f"| {'path':<38} | {'cmd/s':>8} | {'x base':>6} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| {'sidecar':>7} | {'function':>8} | {'client':>6} | {'total':>6} | {'load':>5} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 10}"
          f"|{'-' * 8}|{'-' * 8}|{'-' * 7}|")
    for (label, phase), rows in results.rows.items():
        if "rps" not in rows[0]:
            print(f"| {label + ' ' + phase:<38} | {rows[-1]}")
            continue
        rps = statistics.median(r["rps"] for r in rows)
        ref = base["direct 500/s" if "500/s" in phase else "direct closed loop"]
        p50 = statistics.median(r["p50_ms"] for r in rows)
        p99 = statistics.median(r["p99_ms"] for r in rows)
        cpu = {key: _median(rows, f"{key}_cpu_us")
               for key in ("sidecar", "function", "client", "total")}
        print(f"| {label + ' ' + phase:<38} | {rps:>8.0f} | {rps / ref:>6.2f} | {p50:>7.2f} "
              f"| {p99:>7.2f} | {cpu['sidecar']:>7.0f} | {cpu['function']:>8.0f} "
              f"| {cpu['client']:>6.0f} | {cpu['total']:>6.0f} | {_median(rows, 'load'):>5.2f} |")
    if "direct 500/s" in base_p50:
        for label in labels:
            at_rate = results.rows.get((label, "grpc python 500/s"))
            if at_rate:
                added = statistics.median(r["p50_ms"] for r in at_rate) - base_p50["direct 500/s"]
                print(f"{label}: added p50 latency at 500/s (same Python client): {added:.2f} ms")


def _median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=32,
                        help="concurrent commands (one entity each) in the closed-loop phases")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--compare", metavar="REV", help="also run the sidecar as of this rev")
    parser.add_argument("--closed-loop-only", action="store_true",
                        help="only the closed-loop phases (throughput and CPU per command): "
                             "no 500/s, HTTP or memory phases")
    parser.add_argument("--compare-sdk", action="store_true",
                        help="with --compare: the compared sidecar gets a user function of "
                             "its own, on that revision's larder_sdk")
    parser.add_argument("--actions", action="store_true",
                        help="also a closed-loop gRPC phase on the stateless action Echo.Say")
    parser.add_argument(
        "--compare-env", metavar="NAME=VALUE", action="append", default=[],
        help="also run the working tree's sidecar with this variable set (repeatable: one "
             "more sidecar with all of them)",
    )
    args = parser.parse_args()
    try:
        tools.ghz()
        tools.wrk()
    except tools.ToolUnavailable as e:
        sys.exit(f"sidecar_command: {e}")
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as tmp:
        protos = Path(tmp) / "protos"
        protos.mkdir()
        desc = compile_bench_protos(protos)
        sources: list[tuple[str, Path | None, dict[str, str]]] = [("sidecar", None, {})]
        if args.compare_env:
            extra = dict(item.split("=", 1) for item in args.compare_env)
            sources.insert(0, (",".join(args.compare_env), None, extra))
        if args.compare:
            tree = Path(tmp) / "compare"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                            args.compare], check=True, capture_output=True)
            sources.insert(0, (f"@{args.compare[:10]}", tree / "sidecar" / "src", {}))
        results = Results()
        try:
            with contextlib.ExitStack() as functions:
                function = functions.enter_context(user_function(protos))
                sidecars: list[Sidecar] = []
                try:
                    # One by one, so a sidecar that fails to start does not leave the
                    # ones before it running.
                    for label, src, extra in sources:
                        own = function
                        if args.compare_sdk and src is not None:
                            # The compared revision's sidecar in front of a function on
                            # that revision's SDK.
                            own = functions.enter_context(
                                user_function(protos, src.parent.parent / "sdk" / "src"))
                        sidecars.append(start_sidecar(label, own, src, extra))
                    for s in sidecars:
                        results.add(s.label, "rss idle", {
                            "rss_mb": round(tools.rss_bytes(s.process.pid) / 2**20, 1)})
                    for n in range(args.repeat):
                        round_of(n, sidecars, function, protos, desc, args, results)
                    for s in sidecars:
                        if not args.closed_loop_only:
                            memory(s, desc, args, results)
                finally:
                    for s in sidecars:
                        tools.stop(s.process)
        finally:
            if args.compare:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(Path(tmp) / "compare")], check=False)
        summary(results, [label for label, _, _ in sources])


if __name__ == "__main__":
    main()
