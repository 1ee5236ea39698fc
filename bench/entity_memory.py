"""Memory per active entity in the sidecar, and where it goes.

Starts the benchmark user function (`bench/sidecar_function.py`, an event-sourced
counter on `larder_sdk`) and one `larder-sidecar` in front of it (in-memory journal,
passivation after 30 minutes), warms it up, then activates `--entities` entities with
one command each (`ghz -n N -c 50`, each request its own entity id) and reports the
sidecar's RSS before and after: RSS per active entity. A second pass sends each of
those (now active) entities one more command and reports the sidecar's CPU per
command, so a memory change can be checked for a CPU cost.

`--compare REV` also runs the sidecar as of REV (from a temporary git worktree) in the
same run, alternating with the working tree's, so a change is measured against its
baseline under the same load from the rest of the machine.

`--breakdown` runs one more sidecar (the working tree's, or REV's with `--breakdown-rev`)
with `tracemalloc` on. tracemalloc is switched on by this harness only: the sidecar is
started through this script (`--sidecar-child`), which starts tracemalloc and a thread
that answers snapshot requests through files, then calls the sidecar's own `main()`.
It prints the traced (Python allocator) growth per entity by file:line, grouped by
file, and the growth in live objects by type; RSS growth minus traced growth is what
is outside Python's allocator (grpc-core's C allocations, protobuf's upb arenas, and
malloc's own overhead).

`--floor` (with `--floor-options JSON`: also with these channel options) measures
what one bare protocol stream costs a grpc.aio client with the
sidecar's channel options and nothing else (no entity, no task per stream): N
`EventSourcedEntities/Handle` calls opened to the same user function, each sent Init
and one Command and read its Reply, left open. It is the floor of the current design
(one HTTP/2 stream per active entity).

    .venv/bin/python bench/entity_memory.py [--entities 10000] [--repeat 2] \
        [--compare REV] [--breakdown [--breakdown-rev REV]] [--floor [--floor-options JSON]]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import linecache
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import types
from pathlib import Path
from typing import Any

import grpc.aio
import sidecar_command
import tools
import uvloop
from akkaserverless.component.entity import entity_pb2
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es_pb2
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2_grpc as es_grpc,
)
from larder_sidecar.main import main as sidecar_main

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
TRACE_ENV = "LARDER_BENCH_TRACEMALLOC"
"""Read by this harness's `--sidecar-child` only: the file prefix for snapshots."""
TRACE_FRAMES = 12


# --- the sidecar child: tracemalloc on, snapshots on request -------------------------


def _type_name(t: type) -> str:
    # Some extension types have a descriptor, not a string, as `__module__`.
    module = t.__dict__.get("__module__")
    return f"{module}.{t.__qualname__}" if isinstance(module, str) else t.__qualname__


def _object_name(o: object) -> str:
    """Its type; for a coroutine or task also the function it runs (who made it)."""
    if isinstance(o, asyncio.Task):
        coro = o.get_coro()
        return f"Task of {getattr(coro, '__qualname__', '?')}"
    if isinstance(o, types.CoroutineType) or type(o).__name__ == "coroutine":  # and Cython's
        return f"coroutine {getattr(o, '__qualname__', '?')}"
    return _type_name(type(o))


def _answer_snapshots(prefix: str) -> None:
    """Poll for `<prefix>.<n>.req`; answer with a pickled breakdown in `<prefix>.<n>`."""
    n = 0
    while True:
        request = Path(f"{prefix}.{n}.req")
        if not request.exists():
            time.sleep(0.1)
            continue
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        kinds = collections.Counter(_object_name(o) for o in gc.get_objects())
        traced, _peak = tracemalloc.get_traced_memory()
        out = Path(f"{prefix}.{n}")
        with open(f"{out}.tmp", "wb") as f:
            pickle.dump({"snapshot": snapshot, "types": dict(kinds), "traced": traced}, f)
        os.rename(f"{out}.tmp", out)
        request.unlink()
        n += 1


def sidecar_child() -> None:
    prefix = os.environ.get(TRACE_ENV)
    if prefix:
        tracemalloc.start(TRACE_FRAMES)
        threading.Thread(target=_answer_snapshots, args=(prefix,), daemon=True,
                         name="bench-tracemalloc").start()
    sidecar_main()


def request_snapshot(prefix: str, n: int, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    Path(f"{prefix}.{n}.req").touch()
    out = Path(f"{prefix}.{n}")
    deadline = time.monotonic() + 300
    while not out.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the traced sidecar did not answer the snapshot request")
        time.sleep(0.2)
    with open(out, "rb") as f:
        data: dict[str, Any] = pickle.load(f)
    return data


# --- the floor: bare protocol streams from a grpc.aio client --------------------------


def floor_child(port: int, count: int, traced: bool,
                extra_options: list[tuple[str, Any]] | None = None) -> None:
    """Open `count` Handle streams like the sidecar's, print RSS (and traced) growth."""

    payload_type = "type.googleapis.com/larder.bench.IncreaseValue"
    if traced:
        tracemalloc.start(TRACE_FRAMES)

    async def run() -> dict[str, Any]:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_receive_message_length", 12 * 2**20),
                     ("grpc.max_send_message_length", 12 * 2**20),
                     *(extra_options or [])],
        )
        stub = es_grpc.EventSourcedEntitiesStub(channel)
        calls: list[Any] = []

        async def one(i: int) -> None:
            entity_id = f"floor-{os.getpid()}-{i}"
            call = stub.Handle()
            calls.append(call)
            await call.write(es_pb2.EventSourcedStreamIn(init=es_pb2.EventSourcedInit(
                service_name="larder.bench.Counter", entity_id=entity_id)))
            await call.write(es_pb2.EventSourcedStreamIn(command=entity_pb2.Command(
                entity_id=entity_id, id=1, name="Increase",
                payload={"type_url": payload_type, "value": b"\x10\x01"})))
            await call.read()

        await asyncio.gather(*(one(i) for i in range(50)))  # warm-up
        gc.collect()
        rss0 = tools.rss_bytes(os.getpid())
        t0 = tracemalloc.get_traced_memory()[0] if traced else 0
        for start in range(50, 50 + count, 50):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 50, 50 + count))))
        await asyncio.sleep(0.5)
        gc.collect()
        rss1 = tools.rss_bytes(os.getpid())
        t1 = tracemalloc.get_traced_memory()[0] if traced else 0
        result = {"streams": count, "rss_kb_per_stream": round((rss1 - rss0) / count / 1024, 2),
                  "traced_kb_per_stream": round((t1 - t0) / count / 1024, 2) if traced else None}
        for call in calls:
            call.cancel()
        await channel.close(None)
        return result

    print(json.dumps(uvloop.run(run())), flush=True)


# --- the harness ----------------------------------------------------------------------


def start_sidecar(label: str, function: sidecar_command.Function, src: Path | None,
                  trace_prefix: str | None = None) -> Any:
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
    env.pop(TRACE_ENV, None)
    if trace_prefix is not None:
        env[TRACE_ENV] = trace_prefix
    if src is not None:
        # The older sidecar's sources first, ahead of the editable install.
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([PYTHON, str(Path(__file__)), "--sidecar-child"], env=env)
    sidecar = sidecar_command.Sidecar(label, process, port, admin, function)
    sidecar_command.wait_ready(sidecar)
    return sidecar


def activate(sidecar: Any, desc: Path, count: int, prefix: str) -> dict[str, Any]:
    """`count` commands, each to its own entity id (`<prefix>-<n>`), 50 at a time."""
    cpu0 = tools.cpu_seconds(sidecar.process.pid)
    result = sidecar_command.ghz_run(sidecar.port, desc, ["-n", str(count), "-c", "50"],
                                     f"{prefix}-{{{{.RequestNumber}}}}")
    used = tools.cpu_seconds(sidecar.process.pid) - cpu0
    if result["errors"] or result["count"] != count:
        raise RuntimeError(f"{sidecar.label}: {count} commands gave {result}")
    result["sidecar_cpu_us"] = round(used / count * 1e6, 1)
    return result


def settle(pid: int) -> int:
    """RSS once the last replies' buffers are gone (a short pause, then read)."""
    time.sleep(1.0)
    return tools.rss_bytes(pid)


def measure_round(n: int, sidecar: Any, desc: Path, entities: int) -> dict[str, Any]:
    prefix = f"m{n}-{sidecar.label}"
    before = settle(sidecar.process.pid)
    first = activate(sidecar, desc, entities, prefix)
    after = settle(sidecar.process.pid)
    again = activate(sidecar, desc, entities, prefix)  # the same entities, now active
    return {
        "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
        "kb_per_entity": round((after - before) / entities / 1024, 2),
        "cpu_us_activating": first["sidecar_cpu_us"], "cpu_us_active": again["sidecar_cpu_us"],
        "rps_active": again["rps"], "p50_ms_active": again["p50_ms"],
    }


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def _site(frame: Any) -> str:
    path = frame.filename
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{frame.lineno}"


def breakdown(function: sidecar_command.Function, desc: Path, entities: int, src: Path | None,
              label: str, rss_per_entity: float | None) -> None:
    """A traced sidecar: what the Python allocator holds per entity, by site and type."""
    with tempfile.TemporaryDirectory(prefix="larder-trace-") as tmp:
        prefix = f"{tmp}/snap"
        sidecar = start_sidecar(f"{label}+trace", function, src, prefix)
        try:
            activate(sidecar, desc, 2000, "warm-trace")
            rss0 = settle(sidecar.process.pid)
            s0 = request_snapshot(prefix, 0, sidecar.process)
            activate(sidecar, desc, entities, "trace")
            rss1 = settle(sidecar.process.pid)
            s1 = request_snapshot(prefix, 1, sidecar.process)
        finally:
            tools.stop(sidecar.process)
    traced = (s1["traced"] - s0["traced"]) / entities
    print(f"\n== breakdown: {label}, {entities} entities, tracemalloc on "
          f"(RSS with tracing overhead: {(rss1 - rss0) / entities / 1024:.2f} KB/entity)")
    print(f"traced by Python's allocator: {traced / 1024:.2f} KB per entity")
    if rss_per_entity is not None:
        print(f"RSS per entity without tracemalloc (same run): {rss_per_entity:.2f} KB; "
              f"outside Python's allocator: {rss_per_entity - traced / 1024:.2f} KB")
    snap0, snap1 = s0["snapshot"], s1["snapshot"]
    filters = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    snap0, snap1 = snap0.filter_traces(filters), snap1.filter_traces(filters)
    print("\nby file (bytes per entity, objects per entity):")
    for stat in snap1.compare_to(snap0, "filename")[:15]:
        print(f"  {stat.size_diff / entities:8.0f} B  {stat.count_diff / entities:6.2f}  "
              f"{_site(stat.traceback[0]).rsplit(':', 1)[0]}")
    print("\nby line (the allocating line; bytes per entity):")
    for stat in snap1.compare_to(snap0, "lineno")[:25]:
        frame = stat.traceback[0]
        code = linecache.getline(frame.filename, frame.lineno).strip()[:70]
        print(f"  {stat.size_diff / entities:8.0f} B  {stat.count_diff / entities:6.2f}  "
              f"{_site(frame):<48} {code}")
    print("\nby call path (the first frames in larder code; bytes per entity):")
    grouped: collections.Counter[str] = collections.Counter()
    for stat in snap1.compare_to(snap0, "traceback"):
        frames = [f for f in stat.traceback if "larder" in f.filename] or list(stat.traceback)
        # The innermost larder frame names our code that caused the allocation.
        grouped[_site(frames[-1]) if stat.traceback else "?"] += stat.size_diff
    for site, size in grouped.most_common(20):
        print(f"  {size / entities:8.0f} B  {site}")
    print("\nlive objects (gc-tracked) per entity, by type:")
    types0, types1 = s0["types"], s1["types"]
    growth = {t: (types1.get(t, 0) - types0.get(t, 0)) / entities for t in types1}
    for name, per in sorted(growth.items(), key=lambda kv: -kv[1])[:30]:
        if per >= 0.01:
            print(f"  {per:6.2f}  {name}")


def floor(function_port: int, count: int, options: str) -> None:
    variants = [("the sidecar's channel options", "[]")]
    if options != "[]":
        variants.append((f"and {options}", options))
    for name, extra in variants:
        print(f"\n== floor: {count} bare Handle streams from a grpc.aio client, {name}")
        for traced in (False, True):
            out = subprocess.run([PYTHON, str(Path(__file__)), "--floor-child", str(function_port),
                                  str(count), "--floor-options", extra]
                                 + (["--traced"] if traced else []),
                                 capture_output=True, text=True, check=True)
            print("  " + out.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--compare", metavar="REV", help="also run the sidecar as of this rev")
    parser.add_argument("--breakdown", action="store_true",
                        help="a traced sidecar: tracemalloc breakdown per entity")
    parser.add_argument("--breakdown-rev", metavar="REV",
                        help="the breakdown of this rev instead of the working tree")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bare grpc.aio protocol streams")
    parser.add_argument("--sidecar-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-options", default="[]", metavar="JSON",
                        help='with --floor, also with these channel options, e.g. '
                             '\'[["grpc.enable_retries", 0]]\'')
    args = parser.parse_args()
    if args.sidecar_child:
        sys.argv = sys.argv[:1]
        sidecar_child()
        return
    if args.floor_child:
        port, count = args.floor_child
        floor_child(port, count, traced=args.traced,
                    extra_options=[tuple(o) for o in json.loads(args.floor_options)])
        return

    try:
        tools.ghz()
    except tools.ToolUnavailable as e:
        sys.exit(f"entity_memory: {e}")
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as tmp:
        protos = Path(tmp) / "protos"
        protos.mkdir()
        desc = sidecar_command.compile_bench_protos(protos)
        sources: list[tuple[str, Path | None]] = [("sidecar", None)]
        revs = {r for r in (args.compare, args.breakdown_rev) if r}
        trees: dict[str, Path] = {}
        for rev in revs:
            tree = Path(tmp) / f"rev-{len(trees)}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                            rev], check=True, capture_output=True)
            trees[rev] = tree / "sidecar" / "src"
        if args.compare:
            sources.insert(0, (f"@{args.compare[:10]}", trees[args.compare]))
        rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in sources}
        loads = [load_average()]
        try:
            with sidecar_command.user_function(protos) as function:
                for n in range(args.repeat):
                    # A fresh sidecar per round and label, started and measured in turn,
                    # the order alternating between rounds.
                    order = sources if n % 2 == 0 else sources[::-1]
                    for label, src in order:
                        sidecar = start_sidecar(label, function, src)
                        try:
                            idle = settle(sidecar.process.pid)
                            activate(sidecar, desc, 2000, f"warm{n}")  # 2,000 entities
                            row = measure_round(n, sidecar, desc, args.entities)
                        finally:
                            tools.stop(sidecar.process)
                        row["rss_idle_mb"] = round(idle / 2**20, 1)
                        rows[label].append(row)
                        loads.append(load_average())
                        print(f"round {n + 1} {label:>12}: {row}", flush=True)
                if args.breakdown:
                    src = trees[args.breakdown_rev] if args.breakdown_rev else None
                    label = f"@{args.breakdown_rev[:10]}" if args.breakdown_rev else "sidecar"
                    measured = rows.get(label)
                    rss = (sorted(r["kb_per_entity"] for r in measured)[len(measured) // 2]
                           if measured else None)
                    breakdown(function, desc, args.entities, src, label, rss)
                if args.floor:
                    floor(function.port, args.entities, args.floor_options)
        finally:
            for rev in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(rev.parent.parent)], check=False)
        print(f"\nload average (1 min) during the run: {', '.join(loads)}")
        print(f"| sidecar | RSS idle MB | KB per active entity ({args.entities:,}) "
              "| CPU µs/cmd activating | CPU µs/cmd active |")
        print("|---|---|---|---|---|")
        for label, measured in rows.items():
            if not measured:  # --repeat 0: only the breakdown or the floor
                continue

            def span(key: str, measured: list[dict[str, Any]] = measured) -> str:
                values = sorted(r[key] for r in measured)
                return f"{values[0]}" if len(values) == 1 else f"{values[0]} to {values[-1]}"
            print(f"| {label} | {span('rss_idle_mb')} | {span('kb_per_entity')} "
                  f"| {span('cpu_us_activating')} | {span('cpu_us_active')} |")


if __name__ == "__main__":
    main()
