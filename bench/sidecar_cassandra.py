"""Commands/s and latency through a real sidecar process, per journal, side by side:
Cassandra fenced (one LWT per command), Cassandra unfenced, and in-memory.

    .venv/bin/python -m bench.sidecar_cassandra                    # starts a test Cassandra
    .venv/bin/python -m bench.sidecar_cassandra --port 9042        # uses a running one

Per mode: a user-function process on the Python SDK (the counter of
`tests/integration/sidecar_cassandra`, one event per command, no snapshots) and a
`larder-sidecar` process in front of it. Two load clients, each against every mode:
- `http`: `wrk` (C) with `--workers` connections posting JSON to
  `/larder_sctest.Counter/Add`, each request to a random one of `--entities` entities;
- `grpc`: this process, `--workers` closed-loop grpc.aio callers, each owning its
  entities (every entity activated first).
A warm-up of `--warmup` seconds per run is discarded, then `--seconds` are measured.
Before anything, `--jvm-warmup` seconds of fenced HTTP load (discarded) let Cassandra's
JIT compile its Paxos path (a fresh node is several times slower; a production node
is warm).
CPU per command is charged to the sidecar, the user function and the Cassandra process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
from larder_protocol import compile_protos

from tests.infra.process import free_port
from tests.infra.servers import start_cassandra

# The script-style benchmarks import their shared helpers as `tools`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "tests" / "integration" / "sidecar_cassandra" / "protos"
SIDECAR = Path(sys.executable).parent / "larder-sidecar"

MODES: dict[str, dict[str, str]] = {
    "Cassandra, fenced (LWT)": {
        "LARDER_JOURNAL_TYPE": "cassandra",
        "LARDER_JOURNAL_CASSANDRA_FENCING": "fenced",
    },
    "Cassandra, unfenced": {
        "LARDER_JOURNAL_TYPE": "cassandra",
        "LARDER_JOURNAL_CASSANDRA_FENCING": "unfenced",
    },
    "in-memory": {"LARDER_JOURNAL_TYPE": "memory"},
}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local id = "%(prefix)s-" .. math.random(0, %(entities)d - 1)
  return wrk.format(nil, "/larder_sctest.Counter/Add", nil,
                    '{"counterId":"' .. id .. '","tag":"t","amount":"1"}')
end
"""


@dataclass(frozen=True)
class Result:
    client: str
    mode: str
    commands: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    # CPU seconds used during the measured window, per process.
    cpu: dict[str, float | None]

    def row(self) -> str:
        per = " | ".join(
            "n/a" if used is None else f"{used / max(self.commands, 1) * 1e6:,.0f}"
            for used in self.cpu.values()
        )
        return (
            f"| {self.client} | {self.mode} | {self.commands:,} | {self.errors} "
            f"| **{self.commands / self.seconds:,.0f}** | {self.p50_ms:.1f} "
            f"| {self.p99_ms:.1f} | {per} |"
        )


@dataclass(frozen=True)
class Pod:
    port: int
    pids: dict[str, int | None]

    def cpu(self) -> dict[str, float | None]:
        used: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            used[name] = None
            if pid is not None:
                with contextlib.suppress(OSError):
                    used[name] = tools.cpu_seconds(pid)
        return used


def _spent(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, float | None]:
    spent: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        spent[name] = None if start is None or end is None else end - start
    return spent


async def _wait_ready(admin: int, sidecar: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sidecar.returncode is not None:
            raise RuntimeError(f"the sidecar exited; see {log}")
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", admin)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                return
        # Another process's readiness can only be polled.
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the sidecar did not become ready in 60 s; see {log}")


@contextlib.asynccontextmanager
async def pod(
    protos: Path,
    workdir: Path,
    mode_env: dict[str, str],
    cassandra: tuple[str, int],
    keyspace: str,
    cassandra_pid: int | None,
) -> AsyncIterator[Pod]:
    """A user function and a sidecar in front of it."""
    tag = uuid.uuid4().hex[:6]
    function = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.sidecar_cassandra.function",
        cwd=ROOT,
        env={**os.environ, "LEDGER_PROTOS": str(protos), "SNAPSHOT_EVERY": "0", "PORT": "0"},
        stdout=asyncio.subprocess.PIPE,
        stderr=(workdir / f"function-{tag}.log").open("ab"),
    )
    assert function.stdout is not None
    line = await asyncio.wait_for(function.stdout.readline(), 60)
    if not line.startswith(b"listening on "):
        raise RuntimeError(f"the user function did not start: {line!r}")
    port, admin = free_port(), free_port()
    log = workdir / f"sidecar-{tag}.log"
    sidecar = await asyncio.create_subprocess_exec(
        str(SIDECAR),
        env={
            **os.environ,
            "USER_FUNCTION_PORT": line.split()[-1].decode(),
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(free_port()),
            "LARDER_LOG_LEVEL": "WARNING",
            "LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS": cassandra[0],
            "LARDER_JOURNAL_CASSANDRA_PORT": str(cassandra[1]),
            "LARDER_JOURNAL_CASSANDRA_KEYSPACE": keyspace,
            "LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY": "LOCAL_ONE",
            "LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY": "LOCAL_ONE",
            **mode_env,
        },
        stderr=log.open("ab"),
    )
    try:
        await _wait_ready(admin, sidecar, log)
        yield Pod(
            port, {"sidecar": sidecar.pid, "function": function.pid, "Cassandra": cassandra_pid}
        )
    finally:
        for proc in (sidecar, function):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def load_grpc(pb: ModuleType, pod: Pod, mode: str, args: argparse.Namespace) -> Result:
    run = uuid.uuid4().hex[:8]
    entities = [f"{run}-{i}" for i in range(args.entities)]
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    measuring = False
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pod.port}") as channel:
        add = channel.unary_unary(
            "/larder_sctest.Counter/Add",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.CounterValue.FromString,
        )

        async def worker(owned: list[str]) -> None:
            # First one command per entity: activation (a journal load and a new
            # entity stream) is not what the steady state measures.
            for entity in owned:
                await add(pb.AddRequest(counter_id=entity, tag="activate", amount=1), timeout=60)
            activated.release()
            n = 0
            while not stop.is_set():
                request = pb.AddRequest(counter_id=owned[n % len(owned)], tag=str(n), amount=1)
                n += 1
                started = time.perf_counter()
                try:
                    await add(request, timeout=30)
                except grpc.aio.AioRpcError:
                    if measuring:
                        counts["errors"] += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - started)
                    counts["ok"] += 1

        activated = asyncio.Semaphore(0)
        async with asyncio.TaskGroup() as group:
            for w in range(args.workers):
                group.create_task(worker(entities[w :: args.workers]))
            for _ in range(args.workers):
                await activated.acquire()
            await asyncio.sleep(args.warmup)
            measuring, started, before = True, time.perf_counter(), pod.cpu()
            await asyncio.sleep(args.seconds)
            measuring, seconds, after = False, time.perf_counter() - started, pod.cpu()
            stop.set()
    q = statistics.quantiles(latencies, n=100)
    return Result(
        "gRPC",
        mode,
        counts["ok"],
        counts["errors"],
        seconds,
        q[49] * 1000,
        q[98] * 1000,
        _spent(before, after),
    )


async def load_http(pod: Pod, mode: str, args: argparse.Namespace, workdir: Path) -> Result:
    script = workdir / "add.lua"
    script.write_text(WRK_SCRIPT % {"prefix": uuid.uuid4().hex[:8], "entities": args.entities})

    async def wrk(seconds: float) -> str:
        process = await asyncio.create_subprocess_exec(
            tools.wrk(),
            "-t1",
            f"-c{args.workers}",
            f"-d{seconds:.0f}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{pod.port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()[-500:]}")
        return out.decode()

    await wrk(max(args.warmup, 1))
    before, started = pod.cpu(), time.perf_counter()
    out = await wrk(args.seconds)
    seconds, after = time.perf_counter() - started, pod.cpu()
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    latency = {int(pct): _wrk_ms(v) for pct, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    if total is None or 50 not in latency or 99 not in latency:
        raise RuntimeError(f"cannot read wrk's report:\n{out}")
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    # wrk counts requests over its own run; its duration is `seconds` give or take
    # start-up, which the wall clock here includes.
    return Result(
        "HTTP",
        mode,
        int(total.group(1)) - errors,
        errors,
        seconds,
        latency[50],
        latency[99],
        _spent(before, after),
    )


def _wrk_ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if match is None:
        raise RuntimeError(f"unexpected wrk latency {value!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


async def main_async(args: argparse.Namespace, cassandra: tuple[str, int]) -> None:
    cassandra_pid = tools.listener_pid(cassandra[1])
    keyspace = f"larder_bench_sc_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="larder-bench-sc-") as scratch:
        workdir = Path(scratch)
        protos = workdir / "protos"
        compile_protos([PROTOS / "larder_sctest" / "ledger.proto"], protos, include=[PROTOS])
        if args.jvm_warmup > 0:
            await warm_cassandra(args, protos, workdir, cassandra, keyspace, cassandra_pid)
        sys.path.insert(0, str(protos))
        pb = importlib.import_module("larder_sctest.ledger_pb2")
        results = []
        for client in args.clients.split(","):
            for mode, env in MODES.items():
                async with pod(protos, workdir, env, cassandra, keyspace, cassandra_pid) as p:
                    if client == "http":
                        results.append(await load_http(p, mode, args, workdir))
                    else:
                        results.append(await load_grpc(pb, p, mode, args))
    print(
        f"{args.workers} workers, {args.entities} entities, {args.seconds:g} s measured "
        f"after {args.warmup:g} s warm-up; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| client | journal | commands | errors | commands/s | p50 ms | p99 ms "
        "| CPU µs/command: sidecar | function | Cassandra |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())


async def warm_cassandra(
    args: argparse.Namespace, protos: Path, workdir: Path, cassandra: tuple[str, int],
    keyspace: str, cassandra_pid: int | None,
) -> None:
    """Fenced HTTP load through a sidecar for `--jvm-warmup` seconds, discarded: the same
    server code paths the measured runs take, so the JIT has compiled those."""
    warm = argparse.Namespace(**{**vars(args), "seconds": args.jvm_warmup, "warmup": 1.0})
    fenced = MODES["Cassandra, fenced (LWT)"]
    async with pod(protos, workdir, fenced, cassandra, keyspace, cassandra_pid) as p:
        result = await load_http(p, "warm-up", warm, workdir)
    print(
        f"JVM warm-up: {result.commands:,} fenced commands in {result.seconds:.0f} s "
        f"({result.commands / result.seconds:,.0f}/s)",
        flush=True,
    )


@contextlib.contextmanager
def cassandra_endpoint(host: str | None, port: int | None) -> Iterator[tuple[str, int]]:
    if port is not None:
        yield host or "127.0.0.1", port
        return
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as workdir:
        server = start_cassandra(Path(workdir))
        try:
            yield server.host, server.port
        finally:
            server.close()


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--jvm-warmup",
        type=float,
        default=120.0,
        help="seconds of fenced load before measuring (0: none)",
    )
    parser.add_argument(
        "--clients", default="http,grpc", help="load clients, comma-separated: http, grpc"
    )
    args = parser.parse_args(argv)
    with cassandra_endpoint(args.host, args.port) as endpoint:
        asyncio.run(main_async(args, endpoint))


if __name__ == "__main__":
    main()
