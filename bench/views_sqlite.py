"""Views on SQLite, in one process (no gRPC): what a view costs the write path, how fast
delivery applies changes, and how long an indexed query takes.

    .venv/bin/python bench/views_sqlite.py [--writes 5000] [--rows 20000] [--queries 2000]

Uses the view test shop (`tests/unit/sidecar/views/view_protos/larder/viewshop/shop.proto`:
items are value entities, `ItemsView` stores each item's state as its row and filters on
`category`, `name` and `price`). Phases, each on fresh files in a temporary directory:

1. baseline: `--writes` value-entity writes straight to the SQLite journal, one at a time
   (as one entity's commands are);
2. the same writes through the views' journal decorator, the view applied behind them
   as they come (live): writes/s, and when the view has applied them all;
3. the same writes queued first, then applied with nothing else running: the view's own
   apply rate (changes/s);
4. `--rows` rows, 10 per category, then `--queries` `ByCategoryQuery` calls (an indexed
   equality returning 10 rows): latency percentiles.

CPU is the process's CPU time (all threads, `time.process_time`) per operation; the load
average is printed because the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from larder_sidecar.journal.base import PersistenceId, StoredPayload
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.model import UserFunctionModel, build_model
from larder_sidecar.views.catchup import SqliteChangeSource
from larder_sidecar.views.delivery import ViewDelivery
from larder_sidecar.views.feed import FeedingJournal
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.queries import ViewQueries
from larder_sidecar.views.sqlite_store import SqliteViewStore
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.sidecar.views.shop import PACKAGE, compile_shop, shop_spec

ITEM_URL = f"type.googleapis.com/{PACKAGE}.Item"


def _item(pb: ModuleType, i: int, categories: int) -> StoredPayload:
    item = pb.Item(item_id=f"i{i}", name=f"n{i}", price=i % 100, category=f"c{i % categories}")
    return StoredPayload(ITEM_URL, item.SerializeToString())


async def _writes(journal: Any, pb: ModuleType, n: int, categories: int) -> tuple[float, float]:
    """n writes of n/10 entities (10 revisions each), one at a time: (seconds, cpu)."""
    entities = max(1, n // 10)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await journal.put_value(
            PersistenceId(f"items|i{i % entities}"), i // entities, _item(pb, i, categories)
        )
    return time.perf_counter() - wall, time.process_time() - cpu


def _delivery(
    model: UserFunctionModel, journal: SqliteJournal, directory: Path, path: Path | None
) -> tuple[ViewDelivery, ViewQueries]:
    metrics = ViewMetrics(CollectorRegistry())
    store = SqliteViewStore(directory / "journal-views.db")
    delivery = ViewDelivery(
        model.views,
        store,
        None,
        metrics,
        load_value=journal.load_value,
        source=None if path is None else SqliteChangeSource(path),
    )
    return delivery, ViewQueries(model.views, delivery.tables, store, metrics)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="larder-bench-views-") as tmp:
        root = Path(tmp)
        pb, descriptor_set = compile_shop(root / "protos")
        model = build_model(shop_spec(descriptor_set), {(0, 7)})
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")

        base_dir = root / "baseline"
        base = SqliteJournal(base_dir / "journal.db")
        await base.start()
        b_wall, b_cpu = await _writes(base, pb, args.writes, 1000)
        await base.close()
        print(
            f"baseline   {args.writes / b_wall:8.0f} writes/s  "
            f"{b_cpu / args.writes * 1e6:6.0f} µs CPU/write"
        )

        view_dir = root / "views"
        journal = SqliteJournal(view_dir / "journal.db")
        await journal.start()
        delivery, queries = _delivery(model, journal, view_dir, view_dir / "journal.db")
        await delivery.start()
        fed = FeedingJournal(journal, delivery.publish)
        cpu0 = time.process_time()
        started = time.perf_counter()
        v_wall, _ = await _writes(fed, pb, args.writes, 1000)
        if not await delivery.idle(600):
            raise SystemExit("the view did not catch up within 10 minutes")
        drained = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        print(
            f"with view  {args.writes / v_wall:8.0f} writes/s  (ratio "
            f"{(args.writes / v_wall) / (args.writes / b_wall):.2f}); all applied after "
            f"{drained:.2f}s: {args.writes / drained:.0f} changes/s end to end, "
            f"{cpu / args.writes * 1e6:.0f} µs CPU per write+apply"
        )

        queued_dir = root / "queued"
        queued_journal = SqliteJournal(queued_dir / "journal.db")
        await queued_journal.start()
        # No catch-up source: the changes queued before start are the only ones.
        queued, _ = _delivery(model, queued_journal, queued_dir, None)
        await _writes(FeedingJournal(queued_journal, queued.publish), pb, args.writes, 1000)
        cpu0 = time.process_time()
        started = time.perf_counter()
        await queued.start()
        if not await queued.idle(600):
            raise SystemExit("the view did not catch up within 10 minutes")
        applied = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        print(
            f"queued     {args.writes} changes applied in {applied:.2f}s: "
            f"{args.writes / applied:.0f} changes/s, {cpu / args.writes * 1e6:.0f} µs CPU/change"
        )
        await queued.close()
        await queued_journal.close()

        # Rows: 10 per category.
        categories = args.rows // 10
        for i in range(args.rows):
            await fed.put_value(PersistenceId(f"items|r{i}"), 0, _item(pb, i, categories))
        if not await delivery.idle(600):
            raise SystemExit("the view did not catch up within 10 minutes")
        path = f"/{PACKAGE}.ItemsView/ByCategoryQuery"
        latencies: list[float] = []
        cpu0 = time.process_time()
        for q in range(args.queries):
            request = pb.ByCategory(category=f"c{q % categories}")
            t = time.perf_counter()
            rows = [r async for r in queries.stream(path, request)]
            latencies.append(time.perf_counter() - t)
            assert len(rows) >= 10, len(rows)
        cpu = time.process_time() - cpu0
        latencies.sort()
        p50 = statistics.median(latencies) * 1e3
        p99 = latencies[int(len(latencies) * 0.99)] * 1e3
        print(
            f"query      indexed equality, >=10 of {args.rows + args.writes // 10} rows: "
            f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  {cpu / args.queries * 1e6:.0f} µs CPU/query"
        )
        await delivery.close()
        await journal.close()
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
