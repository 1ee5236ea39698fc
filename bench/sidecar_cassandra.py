"""Commands/s and latency through a real sidecar process, per journal, side by side:
Cassandra fenced (one LWT per command), Cassandra unfenced, and in-memory.

    .venv/bin/python -m bench.sidecar_cassandra                    # starts a test Cassandra
    .venv/bin/python -m bench.sidecar_cassandra --port 9042        # uses a running one

Per mode: a user-function process on the Python SDK (the counter of
`tests/integration/sidecar_cassandra`, one event per command, no snapshots) and a
`larder-sidecar` process in front of it; this process is the load client: `--workers`
closed-loop gRPC callers spread over `--entities` entities (each worker owns its
entities, so no command waits behind another of the same entity). Every entity is
activated first (one command each), a warm-up of `--warmup` seconds is discarded,
then `--seconds` are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
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


@dataclass(frozen=True)
class Result:
    mode: str
    commands: int
    errors: int
    seconds: float
    latencies: list[float]

    def row(self) -> str:
        q = statistics.quantiles(self.latencies, n=100)
        return (
            f"| {self.mode} | {self.commands:,} | {self.errors} "
            f"| **{self.commands / self.seconds:,.0f}** | {q[49] * 1000:.1f} "
            f"| {q[98] * 1000:.1f} |"
        )


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
    protos: Path, workdir: Path, mode_env: dict[str, str], cassandra: tuple[str, int], keyspace: str
) -> AsyncIterator[int]:
    """A user function and a sidecar in front of it; yields the sidecar's public port."""
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
        yield port
    finally:
        for proc in (sidecar, function):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def load(
    pb: ModuleType, port: int, mode: str, args: argparse.Namespace
) -> Result:
    run = uuid.uuid4().hex[:8]
    entities = [f"{run}-{i}" for i in range(args.entities)]
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    measuring = False
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
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
            measuring, started = True, time.perf_counter()
            await asyncio.sleep(args.seconds)
            measuring, seconds = False, time.perf_counter() - started
            stop.set()
    return Result(mode, counts["ok"], counts["errors"], seconds, latencies)


async def main_async(args: argparse.Namespace, cassandra: tuple[str, int]) -> None:
    with tempfile.TemporaryDirectory(prefix="larder-bench-sc-") as scratch:
        workdir = Path(scratch)
        protos = workdir / "protos"
        compile_protos([PROTOS / "larder_sctest" / "ledger.proto"], protos, include=[PROTOS])
        sys.path.insert(0, str(protos))
        pb = importlib.import_module("larder_sctest.ledger_pb2")
        keyspace = f"larder_bench_sc_{uuid.uuid4().hex[:6]}"
        results = []
        for mode, env in MODES.items():
            async with pod(protos, workdir, env, cassandra, keyspace) as port:
                results.append(await load(pb, port, mode, args))
    print(
        f"{args.workers} workers, {args.entities} entities, {args.seconds:g} s measured "
        f"after {args.warmup:g} s warm-up; load average {os.getloadavg()[0]:.1f}"
    )
    print("| journal | commands | errors | commands/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for result in results:
        print(result.row())


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
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args(argv)
    with cassandra_endpoint(args.host, args.port) as endpoint:
        asyncio.run(main_async(args, endpoint))


if __name__ == "__main__":
    main()
