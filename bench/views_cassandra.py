"""Views on Cassandra, in one process (no gRPC): what a view costs the write path, how fast
delivery applies changes, how long an indexed query takes, and what catch-up's scan costs.

    .venv/bin/python -m tests.infra start cassandra     # another terminal: prints the port
    .venv/bin/python bench/views_cassandra.py --port PORT [--writes 5000] [--rows 100000]

Uses the view test shop (`tests/unit/sidecar/views/view_protos/larder/viewshop/shop.proto`:
items are value entities; `ItemsView` stores each item's state as its row in two tables,
`items` filtering on `category`, `name`, `price` and `prices` on `price`, so each change
writes two rows). A keyspace of its own per run, consistency ONE (one node). Phases:

1. baseline: `--writes` value-entity writes straight to the Cassandra journal, 16 entities
   writing side by side (each one write at a time, as one entity's commands are);
2. the same writes through the views' journal decorator, the view applied behind them as
   they come (live): writes/s, and when the view has applied them all;
3. the same writes queued first, then applied with nothing else running: the view's own
   apply rate (changes/s and rows/s);
4. `--rows` rows, 10 per category (loaded with their offsets, without transactions), then
   `--queries` `ByCategoryQuery` calls (an indexed equality returning 10 rows): latency
   percentiles, in process (no sidecar, no gRPC);
5. catch-up's scan: the value revisions of every item (`CassandraChangeSource`);
6. with `--sidecar`: the queries of 4 again through a real `larder-sidecar` process on the
   loaded keyspace, over gRPC, the shop's user function (our SDK) in this process;
7. with `--old-store FILE` (another commit's `views/cassandra_store.py`, e.g.
   `git show 2d8339e:sidecar/src/larder_sidecar/views/cassandra_store.py > /tmp/old.py`):
   the store alone, A/B: `--writes` changes (`--writes`/10 entities, 10 revisions each, in
   the order delivery queues them) through `apply_batch` in batches of delivery's size,
   the old store and this one alternating (which goes first alternates too), `--rounds`
   rounds, a keyspace per arm and round;
8. with `--old-store FILE --live-ab` (or `--live-ab-only`): the live view A/B, per round
   the journal alone, then phase 2 with the old store and with this one;
9. with `--pods N` (alone): contention between pods, the changes of 7 delivered by one
   store, then by N stores at once each owning a share of the entities.

CPU: this process's (all threads, `time.process_time`) and Cassandra's (its JVM, from
/proc, found by the port it listens on), per operation; the load average is printed
because the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc.aio
from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    PersistenceId,
    StoredPayload,
    WriteOutcomeUnknown,
)
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.model import UserFunctionModel, build_model
from larder_sidecar.views.cassandra_store import CassandraViewStore, now_micros
from larder_sidecar.views.catchup import CassandraChangeSource
from larder_sidecar.views.delivery import BATCH, ViewDelivery, table_schemas
from larder_sidecar.views.feed import FeedingJournal
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.queries import ViewQueries
from larder_sidecar.views.store import Applied, RowChange, ViewStoreError
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.infra.process import free_port
from tests.integration.views.shop_function import shop_service
from tests.unit.sidecar.views.shop import PACKAGE, compile_shop, shop_spec

ITEM_URL = f"type.googleapis.com/{PACKAGE}.Item"
WRITERS = 16


def _item(pb: ModuleType, i: int, categories: int) -> StoredPayload:
    item = pb.Item(item_id=f"i{i}", name=f"n{i}", price=i % 100, category=f"c{i % categories}")
    return StoredPayload(ITEM_URL, item.SerializeToString())


def _listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (Cassandra's JVM), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


class Clock:
    """Wall time, this process's CPU and the Cassandra JVM's CPU since `start`."""

    def __init__(self, cassandra_pid: int | None) -> None:
        self._pid = cassandra_pid
        self._tick = os.sysconf("SC_CLK_TCK")
        self.start()

    def _jvm(self) -> float:
        if self._pid is None:
            return float("nan")
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def start(self) -> None:
        self._wall, self._cpu, self._db = time.perf_counter(), time.process_time(), self._jvm()

    def read(self) -> tuple[float, float, float]:
        return (
            time.perf_counter() - self._wall,
            time.process_time() - self._cpu,
            self._jvm() - self._db,
        )


async def _put(journal: Any, pid: PersistenceId, revision: int, item: StoredPayload) -> int:
    """One write; an unknown outcome (a timeout under load) is resolved by reading back
    and retried if it did not land. Returns the writes whose outcome was unknown."""
    unknown = 0
    while True:
        try:
            await journal.put_value(pid, revision, item)
        except (WriteOutcomeUnknown, ConcurrentWriteError) as e:
            if isinstance(e, ConcurrentWriteError) and not unknown:
                raise
            # A conflict after a timeout: the timed-out write landed after all.
            unknown += isinstance(e, WriteOutcomeUnknown)
            if (await journal.load_value(pid)).revision == revision + 1:
                return unknown  # landed, not published: catch-up finds it
            continue
        return unknown


async def _writes(journal: Any, pb: ModuleType, n: int, categories: int) -> int:
    """n writes of n/10 entities (10 revisions each); WRITERS writers, each owning its
    entities (as a sidecar owns its entities): one write at a time per writer."""
    entities = max(1, n // 10)

    async def writer(w: int) -> int:
        unknown = 0
        for revision in range(n // entities):
            for e in range(w, entities, WRITERS):
                i = revision * entities + e
                pid = PersistenceId(f"items|i{e}")
                unknown += await _put(journal, pid, revision, _item(pb, i, categories))
        return unknown

    return sum(await asyncio.gather(*(writer(w) for w in range(WRITERS))))


def _delivery(
    model: UserFunctionModel, journal: CassandraJournal, settings: CassandraSettings,
    registry: CollectorRegistry, *, source: bool, store_class: type[Any] = CassandraViewStore,
) -> tuple[ViewDelivery, ViewQueries]:
    metrics = ViewMetrics(registry)
    store = store_class(settings)
    delivery = ViewDelivery(
        model.views,
        store,
        None,
        metrics,
        load_value=journal.load_value,
        source=CassandraChangeSource(settings) if source else None,
    )
    return delivery, ViewQueries(model.views, delivery.tables, store, metrics)


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _through_sidecar(
    args: argparse.Namespace, pb: ModuleType, live: CassandraSettings, categories: int,
    cassandra_pid: int | None,
) -> None:
    """The query phase again through a real `larder-sidecar` on the loaded keyspace, over
    gRPC, with the shop's user function (our SDK) in this process."""
    service = shop_service(pb)
    await service.start()
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_PORT": str(service.port), "LARDER_HOST": "127.0.0.1",
        "LARDER_PORT": str(port), "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(free_port()), "LARDER_JOURNAL_TYPE": "cassandra",
        "LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS": args.host,
        "LARDER_JOURNAL_CASSANDRA_PORT": str(args.port),
        "LARDER_JOURNAL_CASSANDRA_KEYSPACE": live.keyspace,
        "LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY": "ONE",
        "LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY": "ONE",
    }
    sidecar = Path(sys.executable).parent / "larder-sidecar"
    with tempfile.NamedTemporaryFile(prefix="larder-bench-sidecar-", suffix=".log",
                                     delete=False) as log:
        proc = await asyncio.create_subprocess_exec(str(sidecar), env=env, stderr=log)
    try:
        started = time.perf_counter()
        while True:  # polling is the only way to watch another process's readiness
            if proc.returncode is not None or time.perf_counter() - started > 600:
                raise SystemExit(f"the sidecar did not become ready; its log: {log.name}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", admin)
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                await writer.drain()
                ready = (await reader.read()).startswith(b"HTTP/1.1 200")
                writer.close()
                if ready:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        print(f"sidecar    ready after {time.perf_counter() - started:.1f}s (catch-up included)")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream(
                f"/{PACKAGE}.ItemsView/ByCategoryQuery",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.Item.FromString,
            )
            for q in range(50):  # warm-up: connections, prepared statements
                _ = [r async for r in call(pb.ByCategory(category=f"c{q}"), timeout=30)]
            latencies: list[float] = []
            cpu0, side0 = time.process_time(), _proc_cpu(proc.pid)
            db0 = _proc_cpu(cassandra_pid) if cassandra_pid else float("nan")
            for q in range(args.queries):
                request = pb.ByCategory(category=f"c{(q * 7919) % categories}")
                t = time.perf_counter()
                rows = [r async for r in call(request, timeout=30)]
                latencies.append(time.perf_counter() - t)
                assert len(rows) >= 10, len(rows)
            cpu, side = time.process_time() - cpu0, _proc_cpu(proc.pid) - side0
            db = (_proc_cpu(cassandra_pid) if cassandra_pid else float("nan")) - db0
        latencies.sort()
        n = args.queries
        print(f"sidecar    indexed equality over gRPC: p50 "
              f"{statistics.median(latencies) * 1e3:.2f} ms  p99 "
              f"{latencies[int(n * 0.99)] * 1e3:.2f} ms  {side / n * 1e6:.0f} µs CPU/query "
              f"sidecar + {db / n * 1e6:.0f} µs Cassandra + {cpu / n * 1e6:.0f} µs client")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        await service.stop(0)


def _old_store(path: Path) -> type[Any]:
    """The `CassandraViewStore` of another commit's `cassandra_store.py`, loaded as a
    module of this package (its relative imports resolve against this tree)."""
    spec = importlib.util.spec_from_file_location("larder_sidecar.views._old_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    store: type[Any] = module.CassandraViewStore
    return store


async def _store_ab(
    args: argparse.Namespace, pb: ModuleType, model: UserFunctionModel, clock: Clock,
    settings: Any,
) -> None:
    """Phase 7: the store alone, the old store and this one alternating."""
    arms: list[tuple[str, type[Any]]] = [
        ("old", _old_store(args.old_store)), ("new", CassandraViewStore)
    ]
    tables = table_schemas(model.views)
    view = f"{PACKAGE}.ItemsView"
    schemas = [tables[(view, t)] for t in ("items", "prices")]
    entities = max(1, args.writes // 10)
    for round_ in range(1, args.rounds + 1):
        # Which arm goes first alternates: a round's first arm runs on a cooler machine.
        for name, store_class in arms if round_ % 2 else arms[::-1]:
            s = settings(f"ab{name}")
            keyspace = CassandraJournal(s)  # creates the keyspace
            await keyspace.start()
            await keyspace.close()
            store = store_class(s)
            await store.open(list(tables.values()))
            items = []
            for i in range(entities * 10):
                e, revision = i % entities, i // entities
                item = _item(pb, i, 1000).value
                parsed = pb.Item.FromString(item)
                items.append(Applied(f"items|i{e}", revision, revision + 1, [
                    RowChange(t, f"i{e}", item, t.values(parsed)) for t in schemas
                ]))
            load = os.getloadavg()[0]
            clock.start()
            refused = 0
            for b in range(0, len(items), BATCH):
                refused += (await store.apply_batch(view, items[b:b + BATCH])).count(False)
            wall, cpu, db = clock.read()
            await store.close()
            n = len(items)
            print(f"store {name} round {round_}: {n / wall:.0f} changes/s, "
                  f"{2 * n / wall:.0f} rows/s, {_per(n, cpu, db, 'change')}; {refused} "
                  f"refused; load {load:.1f} -> {os.getloadavg()[0]:.1f}")


async def _live_ab(
    args: argparse.Namespace, pb: ModuleType, model: UserFunctionModel, clock: Clock,
    settings: Any,
) -> None:
    """Phase 8: the live view, A/B: per round the journal alone, then the writes with the
    view applied behind them by the old store and by this one (which store goes first
    alternates), a keyspace per arm and round."""
    arms: list[tuple[str, type[Any] | None]] = [
        ("old", _old_store(args.old_store)), ("new", CassandraViewStore)
    ]
    view = f"{PACKAGE}.ItemsView"
    for round_ in range(1, args.rounds + 1):
        alone = 0.0
        for name, store_class in [("alone", None), *(arms if round_ % 2 else arms[::-1])]:
            s = settings(f"live{name}")
            journal = CassandraJournal(s)
            await journal.start()
            load = os.getloadavg()[0]
            if store_class is None:
                clock.start()
                unknown = await _writes(journal, pb, args.writes, 1000)
                wall, cpu, db = clock.read()
                await journal.close()
                alone = args.writes / wall
                print(f"live {name} round {round_}: {alone:.0f} writes/s, "
                      f"{_per(args.writes, cpu, db, 'write')}; {unknown} write timeouts; "
                      f"load {load:.1f} -> {os.getloadavg()[0]:.1f}")
                continue
            registry = CollectorRegistry()
            delivery, _ = _delivery(
                model, journal, s, registry, source=True, store_class=store_class
            )
            await delivery.start()
            clock.start()
            unknown = await _writes(
                FeedingJournal(journal, delivery.publish), pb, args.writes, 1000
            )
            wall = clock.read()[0]
            await delivery.catch_up()  # writes that timed out but landed were not published
            if not await delivery.idle(900):
                raise SystemExit("the view did not catch up within 15 minutes")
            drained, cpu, db = clock.read()
            written = int(registry.get_sample_value(
                "larder_view_changes_applied_total", {"view": view}
            ) or 0)
            await delivery.close()
            await journal.close()
            print(f"live {name} round {round_}: {args.writes / wall:.0f} writes/s (ratio "
                  f"{args.writes / wall / alone:.2f}), all applied after {drained:.2f}s: "
                  f"{written} changes written = {2 * written / drained:.0f} rows/s; "
                  f"{_per(args.writes, cpu, db, 'write+apply')}; {unknown} write timeouts; "
                  f"load {load:.1f} -> {os.getloadavg()[0]:.1f}")


async def _pods(
    args: argparse.Namespace, pb: ModuleType, model: UserFunctionModel, clock: Clock,
    settings: Any,
) -> None:
    """Phase 9: contention between pods. The store-alone changes of phase 7 delivered by
    one store, then by `--pods` stores (each its own connection, as pods are) at once,
    each owning the entities `e % pods` (as sharded pods own theirs): their claims share
    the view's bucket partitions. A failed batch (a Paxos round that timed out under
    contention) is counted and applied again, as delivery retries it."""
    tables = table_schemas(model.views)
    view = f"{PACKAGE}.ItemsView"
    schemas = [tables[(view, t)] for t in ("items", "prices")]
    entities = max(1, args.writes // 10)
    for round_ in range(1, args.rounds + 1):
        for pods in (1, args.pods) if round_ % 2 else (args.pods, 1):
            s = settings(f"pods{pods}")
            keyspace = CassandraJournal(s)  # creates the keyspace
            await keyspace.start()
            await keyspace.close()
            stores = [CassandraViewStore(s) for _ in range(pods)]
            for store in stores:
                await store.open(list(tables.values()))
            owned: list[list[Applied]] = [[] for _ in range(pods)]
            for i in range(entities * 10):
                e, revision = i % entities, i // entities
                item = _item(pb, i, 1000).value
                parsed = pb.Item.FromString(item)
                owned[e % pods].append(Applied(f"items|i{e}", revision, revision + 1, [
                    RowChange(t, f"i{e}", item, t.values(parsed)) for t in schemas
                ]))
            failed = 0

            async def deliver(store: CassandraViewStore, items: list[Applied]) -> None:
                nonlocal failed
                for b in range(0, len(items), BATCH):
                    while True:
                        try:
                            await store.apply_batch(view, items[b:b + BATCH])
                            break
                        except ViewStoreError:
                            failed += 1

            load = os.getloadavg()[0]
            clock.start()
            await asyncio.gather(*(deliver(st, it) for st, it in zip(stores, owned, strict=True)))
            wall, cpu, db = clock.read()
            offsets = await stores[0].offsets(view)
            for store in stores:
                await store.close()
            n = entities * 10
            assert offsets == {f"items|i{e}": 10 for e in range(entities)}, "changes lost"
            print(f"pods {pods} round {round_}: {n / wall:.0f} changes/s, "
                  f"{2 * n / wall:.0f} rows/s, {_per(n, cpu, db, 'change')}; {failed} batches "
                  f"failed and retried; load {load:.1f} -> {os.getloadavg()[0]:.1f}")


def _per(n: int, cpu: float, db: float, unit: str) -> str:
    return f"{cpu / n * 1e6:.0f} µs CPU/{unit} here + {db / n * 1e6:.0f} µs Cassandra"


async def main(args: argparse.Namespace) -> None:
    # Store failures are retried by delivery; counted below instead of logged.
    logging.getLogger("larder_sidecar.views").setLevel(logging.CRITICAL)
    pid = _listening_pid(args.port)
    clock = Clock(pid)
    with tempfile.TemporaryDirectory(prefix="larder-bench-views-") as tmp:
        pb, descriptor_set = compile_shop(Path(tmp) / "protos")
        model = build_model(shop_spec(descriptor_set), {(0, 7)})
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
              f"Cassandra pid {pid}")

        def settings(name: str) -> CassandraSettings:
            return CassandraSettings(
                contact_points=(args.host,), port=args.port,
                keyspace=f"bv_{name}_{uuid.uuid4().hex[:8]}",
                read_consistency="ONE", write_consistency="ONE",
            )

        if args.pods:
            await _pods(args, pb, model, clock, settings)
            print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
            return
        if args.old_store is not None:
            if not args.live_ab_only:
                await _store_ab(args, pb, model, clock, settings)
            if args.live_ab or args.live_ab_only:
                await _live_ab(args, pb, model, clock, settings)
            if args.store_ab_only or args.live_ab_only:
                print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
                return
        base = CassandraJournal(settings("base"))
        await base.start()
        clock.start()
        unknown = await _writes(base, pb, args.writes, 1000)
        b_wall, b_cpu, b_db = clock.read()
        await base.close()
        print(f"baseline   {args.writes / b_wall:8.0f} writes/s  "
              f"{_per(args.writes, b_cpu, b_db, 'write')}; {unknown} write timeouts")

        live = settings("live")
        journal = CassandraJournal(live)
        await journal.start()
        registry = CollectorRegistry()
        delivery, queries = _delivery(model, journal, live, registry, source=True)
        await delivery.start()
        fed = FeedingJournal(journal, delivery.publish)
        clock.start()
        unknown = await _writes(fed, pb, args.writes, 1000)
        v_wall = clock.read()[0]
        await delivery.catch_up()  # writes that timed out but landed were not published
        if not await delivery.idle(900):
            raise SystemExit("the view did not catch up within 15 minutes")
        drained, cpu, db = clock.read()
        print(f"with view  {args.writes / v_wall:8.0f} writes/s  (ratio "
              f"{(args.writes / v_wall) / (args.writes / b_wall):.2f}); all applied after "
              f"{drained:.2f}s: {args.writes / drained:.0f} changes/s end to end, "
              f"{_per(args.writes, cpu, db, 'write+apply')}; {unknown} write timeouts")

        queued_settings = settings("queued")
        queued_journal = CassandraJournal(queued_settings)
        await queued_journal.start()
        # No catch-up source: the changes queued before start are the only ones.
        queued_registry = CollectorRegistry()
        queued, _ = _delivery(
            model, queued_journal, queued_settings, queued_registry, source=False
        )
        if await _writes(FeedingJournal(queued_journal, queued.publish), pb, args.writes, 1000):
            raise SystemExit("a write timed out: the queued phase would miss it, run again")
        # The workers start at the end of `start` and run from the next await: the clock
        # leaves out opening the store (its DDL).
        await queued.start()
        clock.start()
        if not await queued.idle(900):
            raise SystemExit("the view did not catch up within 15 minutes")
        applied, cpu, db = clock.read()
        # Delivery writes a value entity's queued revisions as its last one: the changes
        # written (each two rows) are fewer than the changes queued.
        written = int(queued_registry.get_sample_value(
            "larder_view_changes_applied_total", {"view": f"{PACKAGE}.ItemsView"}
        ) or 0)
        print(f"queued     {args.writes} changes in {applied:.2f}s: "
              f"{args.writes / applied:.0f} changes/s, {_per(args.writes, cpu, db, 'change')}; "
              f"as {written} changes written ({2 * written} rows, "
              f"{2 * written / applied:.0f} rows/s)")
        await queued.close()
        await queued_journal.close()

        # Loaded without transactions (through delivery, 100,000 changes take longer than
        # a run should on this machine): the journal's value states by an unfenced
        # journal, the rows by the store's own row writes, exactly the rows and columns
        # delivery writes, minus the offsets.
        categories = args.rows // 10
        clock.start()
        gate = asyncio.Semaphore(64)
        loader = CassandraJournal(replace(live, fencing="unfenced"))
        await loader.start()
        store = delivery._store  # the bench loads its tables directly
        assert isinstance(store, CassandraViewStore)
        schemas = [delivery.tables[(f"{PACKAGE}.ItemsView", t)] for t in ("items", "prices")]

        async def put(i: int) -> None:
            item = _item(pb, i, categories)
            async with gate:
                await loader.put_value(PersistenceId(f"items|r{i}"), 0, item)
                rows = [RowChange(s, f"r{i}", item.value) for s in schemas]
                await store.load(f"{PACKAGE}.ItemsView", f"items|r{i}", 1, rows, now_micros())

        await asyncio.gather(*(put(i) for i in range(args.rows)))
        await loader.close()
        loaded, cpu, db = clock.read()
        total = args.rows + args.writes // 10
        print(f"load       {args.rows} value states, {2 * args.rows} rows and their offsets, "
              "no transactions, "
              f"in {loaded:.1f}s")
        path = f"/{PACKAGE}.ItemsView/ByCategoryQuery"
        latencies: list[float] = []
        clock.start()
        for q in range(args.queries):
            request = pb.ByCategory(category=f"c{(q * 7919) % categories}")
            t = time.perf_counter()
            rows = [r async for r in queries.stream(path, request)]
            latencies.append(time.perf_counter() - t)
            assert len(rows) >= 10, len(rows)
        _, cpu, db = clock.read()
        latencies.sort()
        p50 = statistics.median(latencies) * 1e3
        p99 = latencies[int(len(latencies) * 0.99)] * 1e3
        print(f"query      indexed equality, >=10 of {total} rows: p50 {p50:.2f} ms  "
              f"p99 {p99:.2f} ms  {_per(args.queries, cpu, db, 'query')}")

        source = CassandraChangeSource(live)
        clock.start()
        revisions = await source.value_revisions("items")
        scan, cpu, db = clock.read()
        source.close()
        print(f"catch-up   scan of {len(revisions)} value entities' revisions: {scan:.2f}s, "
              f"{cpu:.2f}s CPU here, {db:.2f}s Cassandra")
        failures = registry.get_sample_value(
            "larder_view_update_failures_total", {"view": f"{PACKAGE}.ItemsView"}
        ) or 0.0  # no sample until the first failure
        print(f"view update failures retried (live view): {failures:.0f}")
        await delivery.close()
        await journal.close()
        if args.sidecar:
            await _through_sidecar(args, pb, live, categories, pid)
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--sidecar", action="store_true",
                        help="also query through a larder-sidecar process over gRPC")
    parser.add_argument("--old-store", type=Path,
                        help="another commit's views/cassandra_store.py: the store A/B phase")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the store A/B")
    parser.add_argument("--store-ab-only", action="store_true",
                        help="run the store A/B phase (needs --old-store) and stop")
    parser.add_argument("--pods", type=int, default=0,
                        help="run only the contention phase: this many stores against one")
    parser.add_argument("--live-ab", action="store_true",
                        help="with --old-store: also the live view A/B phase")
    parser.add_argument("--live-ab-only", action="store_true",
                        help="run the live view A/B phase (needs --old-store) and stop")
    asyncio.run(main(parser.parse_args()))
