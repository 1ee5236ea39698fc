"""View lag under a fixed rate of writes, through a real `larder-sidecar` process.

    flock /tmp/larder-bench.lock .venv/bin/python bench/views_lag.py [--rate 500]
        [--seconds 20] [--cassandra-port PORT] [--sidecar-env LARDER_VIEW_GATHER=0 ...]

The view test shop (`tests/integration/views/shop_function.py`, our SDK, in a process of
its own: `--function`) behind one sidecar, on the SQLite journal (a temporary directory)
or, with `--cassandra-port`, on Cassandra (a fresh keyspace, consistency ONE; start it
with `.venv/bin/python -m tests.infra start cassandra`). Writes are `Items.Put` on
`--entities` value entities in turn (a sampled write, below, to an entity of its own), each
with a name of its own (`w<n>`); `ItemsView` stores every item's state in two tables
(`items`, `prices`).

The client (this process, grpc.aio) sends `--rate` writes/s open loop for `--seconds`
(a write is due every 1/rate s whether or not earlier ones have been answered), after
`--warmup` s at the same rate. Lag is measured two ways:

- the sidecar's metric `larder_view_lag_seconds{view}`, scraped from `/metrics` on the
  admin port every `--scrape` s: the age of the oldest change not yet applied, as of
  the scrape (0 when nothing waits; before the sidecar read it at the scrape, it was
  set after each applied batch, so it missed the batch in flight);
- end to end: for every `--sample`th write, the time from the write's reply (the change
  is acknowledged) until `ItemsView/OneByName` (`SELECT * FROM items WHERE name = :name`,
  indexed) through the sidecar returns that write's row, polled every `--poll` s: this
  includes up to one poll interval and one query's latency.

The sidecar gets this process's environment plus `--sidecar-env` (repeatable `K=V`, e.g.
`LARDER_VIEW_GATHER=0`). Printed: writes/s reached, write latency, both lags'
p50/p99/max, the sidecar's (and the user function's, this client's and Cassandra's
JVM's) CPU per write, and the load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

import grpc
import grpc.aio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from views_cassandra import _listening_pid as listening_pid

from tests.infra.process import free_port
from tests.integration.views.shop_function import compile_shop, shop_service

PACKAGE = "larder.viewshop"
VIEW = f"{PACKAGE}.ItemsView"
SIDECAR = Path(sys.executable).parent / "larder-sidecar"


async def serve_function() -> None:
    """`--function`: the shop's user function until stdin closes; prints its port."""
    with tempfile.TemporaryDirectory(prefix="larder-bench-lag-fn-") as tmp:
        service = shop_service(compile_shop(Path(tmp)))
        await service.start()
        print(service.port, flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await service.stop(0)


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        reply = await reader.read()
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _wait_ready(proc: asyncio.subprocess.Process, admin: int, log: str) -> float:
    started = time.perf_counter()
    while True:  # polling is the only way to watch another process's readiness
        if proc.returncode is not None or time.perf_counter() - started > 300:
            raise SystemExit(f"the sidecar did not become ready; its log: {log}")
        try:
            if (await _http_get(admin, "/readyz"))[0] == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        await asyncio.sleep(0.2)


def _metric(body: bytes, name: str) -> float | None:
    prefix = f'{name}{{view="{VIEW}"}} '.encode()
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def _pcts(values: list[float], scale: float = 1e3) -> str:
    if not values:
        return "no samples"
    s = sorted(values)

    def at(q: float) -> float:
        return s[min(len(s) - 1, round(q * (len(s) - 1)))] * scale

    return f"p50 {at(0.5):.1f}  p99 {at(0.99):.1f}  max {s[-1] * scale:.1f} ms (n={len(s)})"


class Run:
    """The writes, the sampled end-to-end lags and the scraped metric of one phase."""

    def __init__(
        self, pb: ModuleType, channel: grpc.aio.Channel, args: argparse.Namespace, admin: int
    ) -> None:
        self.pb, self.args, self.admin = pb, args, admin
        self.put = channel.unary_unary(
            f"/{PACKAGE}.Items/Put",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        self.by_name = channel.unary_unary(
            f"/{VIEW}/OneByName",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Item.FromString,
        )
        self.seq = 0
        self.write_latency: list[float] = []
        self.e2e: list[float] = []
        self.errors: list[str] = []
        self.lags: list[float] = []
        self.pending: list[float] = []
        self.max_send_lag = 0.0

    async def _visible(self, name: str, acked: float) -> None:
        deadline = acked + self.args.patience
        while time.perf_counter() < deadline:
            try:
                item = await self.by_name(self.pb.ByName(name=name), timeout=10)
                if item.name == name:
                    self.e2e.append(time.perf_counter() - acked)
                    return
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    self.errors.append(f"query: {e.code().name} {e.details()}")
                    return
            await asyncio.sleep(self.args.poll)
        self.errors.append(f"{name} not in the view {self.args.patience:.0f} s after its write")

    async def _write(self, n: int, due: float, record: bool) -> None:
        name = f"w{n}"
        sampled = record and n % self.args.sample == 0
        # A sampled write goes to an entity of its own: a later write to the same entity
        # would replace its row (and delivery skips a value state superseded in its queue)
        # before the poll saw it.
        entity = f"s{n}" if sampled else f"i{n % self.args.entities}"
        item = self.pb.Item(item_id=entity, name=name, price=n % 100, category=f"c{n % 100}")
        try:
            await self.put(item, timeout=30)
        except grpc.aio.AioRpcError as e:
            self.errors.append(f"write: {e.code().name} {e.details()}")
            return
        acked = time.perf_counter()
        if record:
            self.write_latency.append(acked - due)
        if sampled:
            await self._visible(name, acked)

    async def _scrape(self) -> None:
        while True:
            _, body = await _http_get(self.admin, "/metrics")
            lag = _metric(body, "larder_view_lag_seconds")
            pending = _metric(body, "larder_view_pending_changes")
            if lag is not None:
                self.lags.append(lag)
            if pending is not None:
                self.pending.append(pending)
            await asyncio.sleep(self.args.scrape)

    async def paced(self, seconds: float, *, record: bool) -> float:
        """Writes due every 1/rate s for `seconds` (open loop); waits for every sampled
        write to show in the view. Returns the seconds the sending took."""
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        scraper = loop.create_task(self._scrape()) if record else None
        # perf_counter, not loop.time(): a coarse loop clock would bunch the writes.
        start = time.perf_counter() + 0.005
        sent = 0
        try:
            while (due := start + sent / self.args.rate) < start + seconds:
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                if record:
                    self.max_send_lag = max(self.max_send_lag, time.perf_counter() - due)
                task = loop.create_task(self._write(self.seq, due, record))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.seq += 1
                sent += 1
            elapsed = time.perf_counter() - start
            await asyncio.gather(*tasks)
        finally:
            if scraper is not None:
                scraper.cancel()
                await asyncio.gather(scraper, return_exceptions=True)
        return elapsed


def _sidecar_env(
    args: argparse.Namespace, tmp: Path, function_port: int, port: int, admin: int
) -> dict[str, str]:
    env = {
        **os.environ,
        "USER_FUNCTION_PORT": str(function_port),
        "LARDER_HOST": "127.0.0.1",
        "LARDER_PORT": str(port),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(free_port()),
    }
    for pair in args.sidecar_env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--sidecar-env {pair!r}: expected K=V")
        env[key] = value
    if args.cassandra_port is None:
        env.update(LARDER_JOURNAL_TYPE="sqlite", LARDER_JOURNAL_SQLITE_PATH=str(tmp / "j.db"))
    else:
        env.update(
            LARDER_JOURNAL_TYPE="cassandra",
            LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS=args.cassandra_host,
            LARDER_JOURNAL_CASSANDRA_PORT=str(args.cassandra_port),
            LARDER_JOURNAL_CASSANDRA_KEYSPACE=f"bench_lag_{uuid.uuid4().hex[:8]}",
            LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY="ONE",
            LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY="ONE",
        )
    return env


async def main(args: argparse.Namespace) -> None:
    journal = "SQLite" if args.cassandra_port is None else f"Cassandra :{args.cassandra_port}"
    print(
        f"journal {journal}; {args.rate:.0f} writes/s for {args.seconds:.0f} s on "
        f"{args.entities} value entities; load average {os.getloadavg()[0]:.2f}"
        + (f"; sidecar env {' '.join(args.sidecar_env)}" if args.sidecar_env else "")
    )
    with tempfile.TemporaryDirectory(prefix="larder-bench-lag-") as tmp_name:
        tmp = Path(tmp_name)
        pb = compile_shop(tmp / "protos")
        function = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--function",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        proc: asyncio.subprocess.Process | None = None
        try:
            assert function.stdout is not None
            function_port = int(await function.stdout.readline())
            port, admin = free_port(), free_port()
            log = tmp / "sidecar.log"
            with log.open("wb") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    str(SIDECAR),
                    env=_sidecar_env(args, tmp, function_port, port, admin),
                    stderr=log_file,
                )
            print(f"sidecar ready after {await _wait_ready(proc, admin, str(log)):.1f} s")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                run = Run(pb, channel, args, admin)
                await run.paced(args.warmup, record=False)
                load0 = os.getloadavg()
                db = listening_pid(args.cassandra_port) if args.cassandra_port else None
                cpu0 = (_proc_cpu(proc.pid), _proc_cpu(function.pid), time.process_time())
                db0 = _proc_cpu(db) if db else 0.0
                wall = time.perf_counter()
                elapsed = await run.paced(args.seconds, record=True)
                # Under overload the writes and the sampled polls end well after the sending.
                wall = time.perf_counter() - wall
                cpu = (
                    _proc_cpu(proc.pid) - cpu0[0],
                    _proc_cpu(function.pid) - cpu0[1],
                    time.process_time() - cpu0[2],
                )
                db_cpu = _proc_cpu(db) - db0 if db else 0.0
                load1 = os.getloadavg()
            n = len(run.write_latency)
            print(
                f"writes     {n} in {elapsed:.1f} s: {n / elapsed:.0f}/s; latency "
                f"{_pcts(run.write_latency)}; max send lag {run.max_send_lag * 1e3:.1f} ms"
            )
            print(
                f"lag e2e    (reply -> row visible to OneByName, poll {args.poll * 1e3:.0f} "
                f"ms) {_pcts(run.e2e)}"
            )
            print(
                f"lag metric (larder_view_lag_seconds every {args.scrape * 1e3:.0f} ms) "
                f"{_pcts(run.lags)}; nonzero in {sum(1 for v in run.lags if v)} scrapes; "
                f"pending max {max(run.pending, default=0):.0f}"
            )
            print(
                f"CPU/write  sidecar {cpu[0] / n * 1e6:.0f} µs, user function "
                f"{cpu[1] / n * 1e6:.0f} µs, client {cpu[2] / n * 1e6:.0f} µs, Cassandra "
                f"{db_cpu / n * 1e6:.0f} µs "
                f"(sidecar {cpu[0] / wall * 100:.0f}% of a core over {wall:.1f} s)"
            )
            print(f"load average {load0[0]:.2f} -> {load1[0]:.2f} (1 min)")
            if run.errors:
                print(f"{len(run.errors)} errors, first: {run.errors[0]}")
        finally:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
            assert function.stdin is not None
            function.stdin.close()
            await asyncio.wait_for(function.wait(), 30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=500.0, help="writes/s, open loop")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument(
        "--sample", type=int, default=25, help="every n-th write is followed to the view"
    )
    parser.add_argument("--poll", type=float, default=0.01)
    parser.add_argument(
        "--patience", type=float, default=60.0, help="s a sampled write may take to show"
    )
    parser.add_argument("--scrape", type=float, default=0.1)
    parser.add_argument("--cassandra-host", default="127.0.0.1")
    parser.add_argument("--cassandra-port", type=int)
    parser.add_argument(
        "--sidecar-env",
        action="append",
        default=[],
        metavar="K=V",
        help="an environment variable for the sidecar (repeatable)",
    )
    parsed = parser.parse_args()
    asyncio.run(serve_function() if parsed.function else main(parsed))
