"""Forwarding cost: the same HTTP commands sent to their entity's owner and to a non-owner.

Starts three "pods" on 127.0.0.1, each a user function (`bench/sidecar_function.py`,
the counter on `larder_sdk`) and a `larder-sidecar` in front of it, with a static member
list (`LARDER_CLUSTER_MEMBERS`, `POD_NAME`, `LARDER_INTERNAL_PORT`,
`LARDER_SHARD_COUNT`) and the in-memory journal: each sidecar has its own, which is
enough here because only an entity's owner writes its events. Test entities are picked
so that `s0` owns all of them (computed with `larder_sidecar.cluster.shards` from the
same member list, then confirmed by every sidecar's `/cluster/owner`). Then, repeated
`--repeat` times, alternating the order from round to round:

- owner: `POST /larder.bench.Counter/Increase` (JSON) to `s0`, which runs the command;
- forwarded: the same commands to `s1`, which forwards each over the internal port to
  `s0` and returns its reply;
- front alone: the same open-loop client against `bench/http_front.py --serve` (the
  public port with an invoker that answers at once): the HTTP front's own CPU per
  command, the reference for what forwarding may cost;

each at a fixed `--rate` (open loop: a command is due every 1/rate s whether or not the
earlier ones were answered; latency is counted from the moment it was due to be sent,
so waiting for a free connection counts), then closed loop with `wrk` to the owner and
to the non-owner (`--closed-seconds 0` skips it). For every phase: commands/s, latency
percentiles, and CPU µs per command for each process (forwarding sidecar, owner
sidecar, owner's function, the other idle pods, client) from `/proc/<pid>/stat` deltas,
as in the other benches; and the load average, since the machine is shared.

    .venv/bin/python bench/sharding_forward.py [--seconds 10] [--repeat 3] [--rate 500]
        [--entities 32] [--connections 32] [--closed-seconds 6] [--rev REV]

`--rev REV` runs the sidecars from REV's sources (a temporary git worktree, as
`sidecar_command.py --compare` does) instead of the working tree. `--baseline-rev REV`
runs the third sidecar, `s2` (which owns none of the test entities either), from REV's
sources and adds a phase "forwarded (baseline)": the same commands sent to `s2`, which
forwards them to the same owner. A change to the forwarding path is then measured against
its baseline side by side, under the same load (the internal port's wire format must be
the same in both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tools
from larder_sidecar.cluster.membership import Member, MemberId, Membership
from larder_sidecar.cluster.shards import ShardMap
from sidecar_command import Function, Sidecar, compile_bench_protos, user_function, wait_ready

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
ENTITY_TYPE = "counter"
COUNTER_PATH = "/larder.bench.Counter/Increase"
FRONT_PATH = "/com.example.TurkeyService/GetTurkey"
NAMES = ("s0", "s1", "s2")
OWNER, FORWARDER = "s0", "s1"


@dataclass
class Pod:
    name: str
    function_pid: int
    sidecar: Sidecar


# --- the open-loop HTTP client (this script with --client, its own process) ------------


def _request(path: str, body: str) -> bytes:
    data = body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
    """Send one request on a kept-alive connection; read the reply; its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines
                   if line.lower().startswith("content-length:")), None)
    if length is None:
        raise RuntimeError(f"a reply without Content-Length: {lines[0]}")
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def open_loop(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    ids = args.ids.split(",")
    if args.kind == "counter":
        requests = [_request(COUNTER_PATH, json.dumps({"id": i, "value": 1})) for i in ids]
    else:
        requests = [_request(FRONT_PATH, json.dumps({"turkeyId": i})) for i in ids]
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", args.port))
    latencies: list[float] = []
    errors = 0
    lag = 0.0

    async def one(request: bytes, due: float, record: bool) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await _exchange(*conn, request)
        finally:
            pool.put_nowait(conn)
        if status != 200:
            errors += 1
        elif record:
            latencies.append(time.perf_counter() - due)

    async def paced(seconds: float, record: bool) -> float:
        # perf_counter, not loop.time(): uvloop's clock has millisecond steps.
        nonlocal lag
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.005
        n = 0
        while (due := start + n / args.rate) < start + seconds:
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            lag = max(lag, time.perf_counter() - due) if record else lag
            task = loop.create_task(one(requests[n % len(requests)], due, record))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    for request in requests:  # activate every entity (and every peer channel) first
        await one(request, time.perf_counter(), record=False)
    await paced(args.warmup, record=False)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu = time.process_time()
    elapsed = await paced(args.seconds, record=True)
    cpu = time.process_time() - cpu
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]
                     * 1000, 3)

    print(json.dumps({
        "count": len(latencies), "errors": errors, "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        "max_send_lag_ms": round(lag * 1000, 2), "client_cpu_s": cpu,
    }), flush=True)


# --- the pods ----------------------------------------------------------------------------


BASELINE = "s2"


def start_sidecar(name: str, function: Function, internal: dict[str, int],
                  shard_count: int, src: Path | None) -> Sidecar:
    port, admin = tools.free_port(), tools.free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_HOST": "127.0.0.1",
        "USER_FUNCTION_PORT": str(function.port),
        "LARDER_PORT": str(port),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(internal[name]),
        "LARDER_CLUSTER_MEMBERS": ",".join(f"{n}=127.0.0.1:{p}" for n, p in internal.items()),
        "POD_NAME": name,
        "LARDER_SHARD_COUNT": str(shard_count),
        "LARDER_JOURNAL_TYPE": "memory",
        "LARDER_LOG_LEVEL": "WARNING",
        "LARDER_PASSIVATION_TIMEOUT": "30m",
    }
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([PYTHON, "-c", "from larder_sidecar.main import main; main()"],
                               env=env)
    return Sidecar(name, process, port, admin, function)


@contextmanager
def pods(protos: Path, shard_count: int, src: Path | None,
         baseline_src: Path | None = None) -> Iterator[dict[str, Pod]]:
    internal = {name: tools.free_port() for name in NAMES}
    with ExitStack() as stack:
        started: dict[str, Pod] = {}
        for name in NAMES:
            function = stack.enter_context(user_function(protos))
            function_port = function.port
            sidecar = start_sidecar(name, function, internal, shard_count,
                                    baseline_src if name == BASELINE and baseline_src else src)
            stack.callback(tools.stop, sidecar.process)
            function_pid = tools.listener_pid(function_port)
            if function_pid is None:
                raise RuntimeError(f"no process listens on the function port {function_port}")
            started[name] = Pod(name, function_pid, sidecar)
        for pod in started.values():
            wait_ready(pod.sidecar)
        yield started


def admin_json(sidecar: Sidecar, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{sidecar.admin_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def owned_entities(started: dict[str, Pod], shard_count: int, count: int) -> list[str]:
    """`count` counter ids that OWNER owns: by the shard map, confirmed by every sidecar."""
    internal = {m["id"]: m["address"] for m in admin_json(started[OWNER].sidecar,
                                                         "/cluster")["members"]}
    shard_map = ShardMap(Membership(tuple(Member(MemberId(i), a) for i, a in internal.items()),
                                    1), shard_count)
    ids = [i for i in (f"fw{n}" for n in range(100 * count))
           if shard_map.owner_of(ENTITY_TYPE, i) == OWNER][:count]
    for pod in started.values():
        for entity_id in ids:
            owner = admin_json(pod.sidecar, f"/cluster/owner?type={ENTITY_TYPE}&id={entity_id}")
            if owner["owner"] != OWNER or owner["map_version"] < 1:
                raise RuntimeError(f"{pod.name} says {entity_id} is {owner['owner']}'s")
    # Every sidecar serves its whole share (first-map hand-offs finished).
    for pod in started.values():
        view = admin_json(pod.sidecar, "/cluster")
        share = len(shard_map.shards_of(MemberId(pod.name)))
        deadline = time.monotonic() + 15
        while view["shards_served_here"] != share and time.monotonic() < deadline:
            time.sleep(0.2)
            view = admin_json(pod.sidecar, "/cluster")
        print(f"  {pod.name}: serves {view['shards_served_here']} of its {share} shards",
              flush=True)
    return ids


def forwarded(started: dict[str, Pod],
              since: dict[str, float] | None = None) -> dict[str, float]:
    """Commands each sidecar forwarded successfully (since `since`): a check that the
    owner phases forward nothing and the forwarded phases forward everything."""
    now = {name: metric(pod.sidecar, 'larder_forwarded_commands_out_total{result="ok"}')
           for name, pod in started.items()}
    return now if since is None else {name: now[name] - since[name] for name in now}


def metric(sidecar: Sidecar, name: str) -> float:
    url = f"http://127.0.0.1:{sidecar.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)} (\S+)$", text, re.M))


# --- phases ------------------------------------------------------------------------------


@dataclass
class Results:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)

    def add(self, phase: str, result: dict[str, Any]) -> None:
        self.rows.setdefault(phase, []).append(result)
        print(f"  {phase:<26} {result}", flush=True)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: tools.cpu_seconds(pid) for name, pid in pids.items()}


def per_command(before: dict[str, float], after: dict[str, float],
                count: int) -> dict[str, float]:
    return {name: round((after[name] - before[name]) / count * 1e6, 1) for name in before}


def open_loop_phase(port: int, kind: str, ids: list[str], pids: dict[str, int],
                    args: argparse.Namespace) -> dict[str, Any]:
    client = subprocess.Popen(
        [PYTHON, __file__, "--client", "--port", str(port), "--kind", kind,
         "--ids", ",".join(ids), "--rate", str(args.rate), "--seconds", str(args.seconds),
         "--connections", str(args.connections)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    if client.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the client failed to start ({client.wait()})")
    before = cpu_of(pids)
    client.stdin.write("go\n")
    client.stdin.flush()
    result: dict[str, Any] = json.loads(client.stdout.readline())
    after = cpu_of(pids)
    client.wait()
    cpu = per_command(before, after, result["count"])
    cpu["client"] = round(result.pop("client_cpu_s") / result["count"] * 1e6, 1)
    return {**result, "cpu_us": cpu, "load": load_average()}


WRK_SCRIPT = """
local ids = {%(ids)s}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local id = ids[(n %% #ids) + 1]
  return wrk.format(nil, "%(path)s", nil, '{"%(field)s":"' .. id .. '"%(more)s}')
end
"""


def closed_loop_phase(port: int, ids: list[str], pids: dict[str, int],
                      args: argparse.Namespace, kind: str = "counter") -> dict[str, Any]:
    if kind == "counter":
        request = {"path": COUNTER_PATH, "field": "id", "more": ',"value":1'}
    else:
        request = {"path": FRONT_PATH, "field": "turkeyId", "more": ""}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"ids": ",".join(f'"{i}"' for i in ids), **request})
    try:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = cpu_of(pids)
        started = time.monotonic()
        out = subprocess.run(
            [tools.wrk(), "-t1", f"-c{args.connections}", f"-d{args.closed_seconds:.0f}s",
             "--latency", "-s", script.name, f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        ).stdout
        elapsed = time.monotonic() - started
        after = cpu_of(pids)
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(script.name)
    found = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    count = int(found.group(1))
    lat = {int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    cpu = per_command(before, after, count)
    cpu["client"] = round((done.ru_utime + done.ru_stime - children.ru_utime
                           - children.ru_stime) / count * 1e6, 1)
    return {"count": count, "errors": int(non2xx.group(1)) if non2xx else 0,
            "rps": round(count / elapsed, 1), "p50_ms": lat.get(50), "p99_ms": lat.get(99),
            "cpu_us": cpu, "load": load_average()}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


@contextmanager
def front_alone() -> Iterator[tuple[int, int]]:
    """`bench/http_front.py --serve`: (its public port, its pid)."""
    server = subprocess.Popen([PYTHON, str(BENCH / "http_front.py"), "--serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        yield ports["public"], server.pid
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)


def run_rounds(started: dict[str, Pod], ids: list[str], front: tuple[int, int],
               args: argparse.Namespace, results: Results) -> None:
    owner, forwarder = started[OWNER], started[FORWARDER]
    baseline = started[BASELINE] if args.baseline_rev else None
    pids = {
        "forwarder": forwarder.sidecar.process.pid,
        "owner": owner.sidecar.process.pid,
        "function": owner.function_pid,
        **{f"idle {name}": pod.sidecar.process.pid for name, pod in started.items()
           if name not in (OWNER, FORWARDER) and pod is not baseline},
    }
    if baseline is not None:
        pids["baseline forwarder"] = baseline.sidecar.process.pid
    rate = f"{args.rate:g}/s"
    for n in range(args.repeat):
        print(f"round {n + 1}/{args.repeat} (load average {load_average():.1f})", flush=True)
        targets = [("owner", owner), ("forwarded", forwarder)]
        if baseline is not None:
            targets.append(("forwarded (baseline)", baseline))
        # A different order each round: owner first, forwarded first, baseline first...
        shift = n % len(targets)
        targets = targets[shift:] + targets[:shift]
        for label, pod in targets:
            before = forwarded(started)
            row = open_loop_phase(pod.sidecar.port, "counter", ids, pids, args)
            results.add(f"{label} {rate}", {**row, "forwards": forwarded(started, before)})
        results.add(f"front alone {rate}", open_loop_phase(
            front[0], "turkey", ids, {"front": front[1]}, args))
        if args.closed_seconds > 0:
            for label, pod in targets:
                before = forwarded(started)
                row = closed_loop_phase(pod.sidecar.port, ids, pids, args)
                results.add(f"{label} closed loop",
                            {**row, "forwards": forwarded(started, before)})
            # The front's own cost where wake-ups are shared by many commands, as in the
            # closed-loop phases above.
            results.add("front alone closed loop", closed_loop_phase(
                front[0], ids, {"front": front[1]}, args, kind="turkey"))


def summary(results: Results) -> None:
    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"

    print("\nranges over the rounds (min..max); CPU in µs per command")
    for phase, rows in results.rows.items():
        cpu_names = list(rows[0]["cpu_us"])
        cpu = ", ".join(f"{name} {span([r['cpu_us'][name] for r in rows])}"
                        for name in cpu_names)
        print(f"| {phase:<22} | {span([r['rps'] for r in rows])} cmd/s | p50 "
              f"{span([r['p50_ms'] for r in rows])} ms | p99 {span([r['p99_ms'] for r in rows])}"
              f" ms | errors {sum(r['errors'] for r in rows)} | {cpu} |")
    def fixed(prefix: str) -> list[dict[str, Any]]:
        return next((v for k, v in results.rows.items() if k.startswith(prefix)
                     and "closed" not in k), [])

    owner_rows, fwd_rows = fixed("owner "), fixed("forwarded ")
    base_rows = fixed("forwarded (baseline) ")
    for q in ("p50_ms", "p99_ms"):
        added = [f[q] - o[q]
                 for o, f in zip(owner_rows, fwd_rows, strict=True)]
        if added:
            print(f"added {q[:3]} (forwarded - owner, per round): "
                  f"{', '.join(f'{a:.2f}' for a in added)} ms; median "
                  f"{statistics.median(added):.2f} ms")
        if base_rows:
            added = [b[q] - o[q] for o, b in zip(owner_rows, base_rows, strict=True)]
            print(f"  baseline: {', '.join(f'{a:.2f}' for a in added)} ms; median "
                  f"{statistics.median(added):.2f} ms")
    front_rows = fixed("front ")
    if fwd_rows and owner_rows and front_rows:
        print("CPU µs per command at the fixed rate: forwarding sidecar (forwarded) "
              f"{span([r['cpu_us']['forwarder'] for r in fwd_rows])}; owner sidecar (owner) "
              f"{span([r['cpu_us']['owner'] for r in owner_rows])}; owner sidecar "
              f"(forwarded) {span([r['cpu_us']['owner'] for r in fwd_rows])}; the HTTP front "
              f"alone {span([r['cpu_us']['front'] for r in front_rows])}")
        ratios = [f["cpu_us"]["forwarder"] / h["cpu_us"]["front"]
                  for f, h in zip(fwd_rows, front_rows, strict=True)]
        print(f"forwarding sidecar / HTTP front alone, per round: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}")
        if base_rows:
            ratios = [b["cpu_us"]["baseline forwarder"] / h["cpu_us"]["front"]
                      for b, h in zip(base_rows, front_rows, strict=True)]
            base_cpu = span([r["cpu_us"]["baseline forwarder"] for r in base_rows])
            print(f"  baseline forwarder ({base_cpu} µs) / front alone: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"load average during the run: {span(results.load)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per open-loop phase")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop commands/s")
    parser.add_argument("--entities", type=int, default=32)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--closed-seconds", type=float, default=6.0,
                        help="per closed-loop (wrk) phase; 0 skips them")
    parser.add_argument("--shard-count", type=int, default=16384)
    parser.add_argument("--rev", help="run the sidecars from this git revision's sources")
    parser.add_argument("--baseline-rev",
                        help="run s2 from this revision and forward through it too (A/B)")
    # The open-loop client (this script as its own process).
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=("counter", "turkey"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop  # noqa: PLC0415 - only the client process needs it

        uvloop.run(open_loop(args))
        return
    if args.closed_seconds > 0:
        try:
            tools.wrk()
        except tools.ToolUnavailable as e:
            sys.exit(f"sharding_forward: {e}")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev or "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                            "sidecar/src/larder_sidecar"], capture_output=True, text=True,
                           check=True).stdout
    print(f"sidecar sources: {'revision' if args.rev else 'working tree at'} {head}"
          f"{' (with uncommitted changes in larder_sidecar)' if dirty and not args.rev else ''}"
          f"{f'; s2 from revision {args.baseline_rev} (baseline)' if args.baseline_rev else ''}"
          f"; load average {load_average():.1f}; {os.cpu_count()} CPUs", flush=True)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as tmp, ExitStack() as stack:
        protos = Path(tmp) / "protos"
        protos.mkdir()
        compile_bench_protos(protos)
        src = _worktree(args.rev, Path(tmp) / "rev", stack) if args.rev else None
        baseline_src = (_worktree(args.baseline_rev, Path(tmp) / "baseline", stack)
                        if args.baseline_rev else None)
        started = stack.enter_context(pods(protos, args.shard_count, src, baseline_src))
        ids = owned_entities(started, args.shard_count, args.entities)
        front = stack.enter_context(front_alone())
        sampler = stack.enter_context(_load_sampler(results))
        run_rounds(started, ids, front, args, results)
        sampler.set()
        summary(results)


def _worktree(rev: str, tree: Path, stack: ExitStack) -> Path:
    """REV's sidecar sources, in a temporary git worktree removed at the end."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(tree)], check=False)
    return tree / "sidecar" / "src"


@contextmanager
def _load_sampler(results: Results) -> Iterator[Any]:
    """Sample the 1-minute load average every 5 s while the rounds run."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5.0):
            results.load.append(load_average())

    results.load.append(load_average())
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join()


if __name__ == "__main__":
    main()
