"""Events from the journal into a view, in one process (no gRPC): a view built from scratch
by catch-up, A/B between this tree's delivery and an older commit's.

    .venv/bin/python bench/views_events.py [--entities 500] [--events 12] [--rounds 4]
    .venv/bin/python -m tests.infra start cassandra     # another terminal: prints the port
    .venv/bin/python bench/views_events.py --port PORT [--entities 500] [--events 12]

Uses the view test shop (`tests/unit/sidecar/views/view_protos/larder/viewshop/shop.proto`):
accounts are event-sourced entities whose `Deposited` events feed `BalancesView` through an
update handler (`transform_updates`) into one table, `balances`, filtering on one column
(`total`). The update handler is the unit tests' `SummingHandler`, in this process: it adds
each deposit to the row it is given, with no gRPC hop to a user function, so what is
measured is delivery, the journal read back and the store.

Per round and arm, on a fresh SQLite file (without `--port`) or Cassandra keyspace (with
it, consistency ONE): `--entities` accounts get `--events` deposits each, one event per
append (as one command each), 16 writers side by side; the view's table is created; then,
timed, `ViewDelivery.start()` (catch-up queues every event the journal holds) until the
view is idle. The arms: this tree's `views/delivery.py` ("new") and the one of
`--old-commit` ("old", read with `git show` and loaded as a module of this package, its
relative imports resolving against this tree), alternating which goes first. After each
arm: every account's offset in the view is its last event, and every row is the sum the
handler computes.

events/s is row updates/s (each event updates its account's row). CPU: this process's
(all threads) and, on Cassandra, its JVM's (from /proc), per event; the 1-minute load
average before and after each arm, since the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    PersistenceId,
    StoredPayload,
    WriteOutcomeUnknown,
)
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.model import UserFunctionModel, build_model
from larder_sidecar.views.cassandra_store import CassandraViewStore
from larder_sidecar.views.catchup import CassandraChangeSource, SqliteChangeSource
from larder_sidecar.views.delivery import ViewDelivery
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.sqlite_store import SqliteViewStore
from prometheus_client import CollectorRegistry
from views_cassandra import WRITERS, Clock, _listening_pid, _per

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.sidecar.views.shop import PACKAGE, compile_shop, shop_spec
from tests.unit.sidecar.views.test_view_delivery import SummingHandler

ROOT = Path(__file__).resolve().parents[1]
VIEW = f"{PACKAGE}.BalancesView"
DEPOSITED_URL = f"type.googleapis.com/{PACKAGE}.Deposited"
DELIVERY = "sidecar/src/larder_sidecar/views/delivery.py"


def _amount(e: int, seq: int) -> int:
    return 1 + (e * 31 + seq * 7) % 97


def _old_delivery(commit: str) -> type[Any]:
    """`ViewDelivery` of `commit`'s delivery module, executed as a module of this tree's
    `larder_sidecar.views` (registered first: its dataclasses look their module up)."""
    text = subprocess.run(
        ["git", "show", f"{commit}:{DELIVERY}"], cwd=ROOT, check=True, capture_output=True,
        text=True,
    ).stdout
    module = ModuleType(f"larder_sidecar.views._delivery_{commit}")
    module.__package__ = "larder_sidecar.views"
    sys.modules[module.__name__] = module
    exec(compile(text, f"{commit}:{DELIVERY}", "exec"), module.__dict__)
    delivery: type[Any] = module.ViewDelivery
    return delivery


async def _append(journal: Any, pb: ModuleType, entities: int, events: int) -> int:
    """`events` deposits per account, one append each; WRITERS writers, each owning its
    accounts. An append whose outcome is unknown (a timeout) is read back and made again
    if it did not land. Returns how many were unknown."""

    async def writer(w: int) -> int:
        unknown = 0
        for e in range(w, entities, WRITERS):
            pid = PersistenceId(f"accounts|a{e}")
            for seq in range(1, events + 1):
                deposit = pb.Deposited(amount=_amount(e, seq)).SerializeToString()
                while True:
                    try:
                        await journal.append(pid, seq - 1, [StoredPayload(DEPOSITED_URL, deposit)])
                        break
                    except (WriteOutcomeUnknown, ConcurrentWriteError) as error:
                        if isinstance(error, ConcurrentWriteError) and not unknown:
                            raise
                        unknown += isinstance(error, WriteOutcomeUnknown)
                        if (await journal.load(pid)).last_sequence_nr == seq:
                            break
        return unknown

    return sum(await asyncio.gather(*(writer(w) for w in range(WRITERS))))


async def _check(delivery: Any, pb: ModuleType, entities: int, events: int) -> list[str]:
    """What the view holds that it should not: offsets and rows against the handler's."""
    store = delivery._store  # the bench reads the view's store directly
    schema = delivery.tables[(VIEW, "balances")]
    wrong: list[str] = []
    offsets = dict(await store.offsets(VIEW))
    expected = {f"accounts|a{e}": events for e in range(entities)}
    if offsets != expected:
        off = sorted(p for p in expected.keys() | offsets.keys()
                     if offsets.get(p) != expected.get(p))
        wrong.append(f"{len(off)} offsets wrong, e.g. {[(p, offsets.get(p)) for p in off[:3]]}")
    for e in range(entities):
        row = await store.row(schema, f"a{e}")
        want = pb.Balance(account_id=f"a{e}", deposits=events,
                          total=sum(_amount(e, s) for s in range(1, events + 1)))
        got = None if row is None else pb.Balance.FromString(row)
        if got != want:
            wrong.append(f"row a{e}: {got} instead of {want}".replace("\n", " "))
    return wrong


async def _arm(
    args: argparse.Namespace, pb: ModuleType, model: UserFunctionModel, clock: Clock,
    delivery_class: type[Any], where: Path,
) -> str:
    """One arm on a fresh journal and view: events appended, then the view built, timed."""
    if args.port is None:
        journal: Any = SqliteJournal(where / "journal.db")
        make_store: Any = lambda: SqliteViewStore(where / "views.db")  # noqa: E731
        make_source: Any = lambda: SqliteChangeSource(where / "journal.db")  # noqa: E731
    else:
        settings = CassandraSettings(
            contact_points=(args.host,), port=args.port,
            keyspace=f"bve_{uuid.uuid4().hex[:12]}",
            read_consistency="ONE", write_consistency="ONE",
        )
        journal = CassandraJournal(settings)
        make_store = lambda: CassandraViewStore(settings)  # noqa: E731
        make_source = lambda: CassandraChangeSource(settings)  # noqa: E731
    await journal.start()
    unknown = await _append(journal, pb, args.entities, args.events)
    handler = SummingHandler(pb)
    registry = CollectorRegistry()
    delivery = delivery_class(
        model.views, make_store(), handler, ViewMetrics(registry),
        load_value=journal.load_value, source=make_source(),
    )
    # The table exists before the clock starts (DDL is not delivery's cost): start() finds
    # it empty, as a new view's.
    tables = make_store()
    await tables.open(list(delivery.tables.values()))
    await tables.close()
    n = args.entities * args.events
    load = os.getloadavg()[0]
    clock.start()
    await delivery.start()
    queued = clock.read()[0]
    if not await delivery.idle(1800):
        raise SystemExit("the view did not catch up within 30 minutes")
    wall, cpu, db = clock.read()
    wrong = await _check(delivery, pb, args.entities, args.events)
    failures = registry.get_sample_value(
        "larder_view_update_failures_total", {"view": VIEW}
    ) or 0.0  # no sample until the first failure
    await delivery.close()
    await journal.close()
    per = _per(n, cpu, db, "event") if args.port is not None else (
        f"{cpu / n * 1e6:.0f} µs CPU/event")
    verdict = "check ok" if not wrong else f"CHECK FAILED: {'; '.join(wrong[:5])}"
    return (f"{n} events in {wall:.2f}s ({queued:.2f}s to start and queue them): "
            f"{n / wall:.0f} events/s, {per}; {len(handler.seen)} handler calls, "
            f"{failures:.0f} update failures, {unknown} append timeouts; "
            f"load {load:.1f} -> {os.getloadavg()[0]:.1f}; {verdict}")


async def main(args: argparse.Namespace) -> None:
    # Failures are retried by delivery; counted in each arm's line instead of logged.
    logging.getLogger("larder_sidecar.views").setLevel(logging.CRITICAL)
    pid = None if args.port is None else _listening_pid(args.port)
    clock = Clock(pid)
    arms: list[tuple[str, type[Any]]] = [
        ("old", _old_delivery(args.old_commit)), ("new", ViewDelivery)
    ]
    with tempfile.TemporaryDirectory(prefix="larder-bench-views-events-") as tmp:
        pb, descriptor_set = compile_shop(Path(tmp) / "protos")
        model = build_model(shop_spec(descriptor_set), {(0, 7)})
        journal = "SQLite" if args.port is None else f"Cassandra (pid {pid})"
        print(f"{journal}: {args.entities} accounts x {args.events} events, old = "
              f"{args.old_commit}; load average {os.getloadavg()[0]:.2f} "
              f"{os.getloadavg()[1]:.2f}")
        for round_ in range(1, args.rounds + 1):
            # Which arm goes first alternates: a round's first arm runs on a cooler machine.
            for name, delivery_class in arms if round_ % 2 else arms[::-1]:
                where = Path(tmp) / f"{name}{round_}"
                where.mkdir()
                line = await _arm(args, pb, model, clock, delivery_class, where)
                print(f"{name} round {round_}: {line}", flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="Cassandra's; without it, SQLite")
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--events", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--old-commit", default="6d835d9",
                        help="the commit whose views/delivery.py is the old arm")
    asyncio.run(main(parser.parse_args()))
