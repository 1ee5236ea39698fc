"""Views fed from Kafka topics, end to end: the real Kafka, a `larder-sidecar` process on
the SQLite journal, a user function written with our SDK (quotes stored as they come,
volumes summed by an update handler). Records become rows and queries return them; bad
records are dead-lettered and counted while the view goes on; records the view store
already has, delivered again because Kafka never got their commit (the group's offsets
rewound while the sidecar was down, as after a crash between the store write and the
commit), are skipped: the update handler is not called for them again."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from larder_protocol import compile_protos
from larder_sdk import LarderService, ServerSettings, View, ViewContext

from tests.infra.kafka import KafkaServer

from ..eventing.conftest import (
    SidecarProcess,
    ce_headers,
    create_topics,
    free_port,
    http_get,
    produce,
)

QUOTES_PROTO = (
    Path(__file__).parents[2]
    / "unit/sidecar/views/view_protos/larder/viewtopic/quotes.proto"
)

RUN = uuid.uuid4().hex[:8]
QUOTES_TOPIC = f"view-quotes-{RUN}"
TRADES_TOPIC = f"view-trades-{RUN}"
GROUP = f"volumes-{RUN}"
DLQ = f"view-dlq-{RUN}"
PKG = "larder.viewtopicit"


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """quotes.proto in a package of its own (the unit tests import theirs), on this
    run's topics and group."""
    out = tmp_path_factory.mktemp("view-topics")
    text = (
        QUOTES_PROTO.read_text()
        .replace("package larder.viewtopic;", f"package {PKG};")
        .replace('"view-quotes"', f'"{QUOTES_TOPIC}"')
        .replace('"view-trades"', f'"{TRADES_TOPIC}"')
        .replace('consumer_group: "volumes"', f'consumer_group: "{GROUP}"')
    )
    proto = out / "protos" / "larder" / "viewtopicit" / "quotes.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(text)
    compile_protos([proto], out, include=[out / "protos"])
    sys.path.insert(0, str(out))
    return importlib.import_module(f"{PKG}.quotes_pb2")


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []


def volumes_service(pb: ModuleType, calls: Calls) -> LarderService:
    services = pb.DESCRIPTOR.services_by_name
    quotes = View(services["QuotesView"])  # no transform_updates: the message is the row
    volumes = View(services["VolumesView"])

    def add(row: Any, quantity: int, context: ViewContext) -> Any:
        subject = context.event_subject or ""
        volume = pb.Volume(symbol=subject, total=quantity, trades=1)
        if row is not None:
            volume.total += row.total
            volume.trades += row.trades
        return volume

    @volumes.update_handler("OnTraded")
    def on_traded(row: Any, event: Any, context: ViewContext) -> Any:
        calls.seen.append((context.event_subject or "", "traded", event.quantity))
        return add(row, event.quantity, context)

    @volumes.update_handler("OnCancelled")
    def on_cancelled(row: Any, event: Any, context: ViewContext) -> Any:
        calls.seen.append((context.event_subject or "", "cancelled", event.quantity))
        return add(row, -event.quantity, context)

    return LarderService([quotes, volumes], service_name="view-topics",
                         settings=ServerSettings("127.0.0.1", 0))


@pytest.fixture
async def calls() -> Calls:
    return Calls()


@pytest.fixture
async def function(pb: ModuleType, calls: Calls) -> AsyncIterator[LarderService]:
    service = volumes_service(pb, calls)
    await service.start()
    yield service
    await service.stop(0)


def _headers(pb: ModuleType, name: str, subject: str | None, content_type: str = (
    "application/protobuf"
)) -> list[Any]:
    headers: list[Any] = ce_headers(f"{PKG}.{name}", content_type)
    if subject is not None:
        headers.append(("ce-subject", subject.encode()))
    return headers


async def _eventually(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    """Poll another process's state until `check` returns a truthy value."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"{what}: not within {seconds} s (last: {last!r})")


def _metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            got = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(got.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    return None


def _rewind(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Commit offset 0 for every partition of `topic` in `group` (the group is empty)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in range(partitions)],
                        asynchronous=False)
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < count:
            records.extend(r for r in consumer.consume(100, 0.5) if r.error() is None)
    finally:
        consumer.close()
    return records


async def test_records_become_rows_bad_ones_are_dead_lettered_and_redelivery_applies_once(
    kafka: KafkaServer, pb: ModuleType, calls: Calls, function: LarderService, tmp_path: Path
) -> None:
    bootstrap = kafka.bootstrap_servers
    create_topics(bootstrap, QUOTES_TOPIC, TRADES_TOPIC, DLQ)
    port, admin = free_port(), free_port()
    sidecar = SidecarProcess(
        {
            **os.environ,
            "USER_FUNCTION_PORT": str(function.port),
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(free_port()),
            "LARDER_JOURNAL_TYPE": "sqlite",
            "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "journal.db"),
            "LARDER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LARDER_KAFKA_DEAD_LETTER_TOPIC": DLQ,
            "LARDER_DISCOVERY_TIMEOUT": "10s",
        },
        port, admin, tmp_path / "sidecar.log",
    )
    await sidecar.start()

    traded = [("ACME", 5), ("ACME", 3), ("INIT", 7)]
    await asyncio.to_thread(produce, bootstrap, TRADES_TOPIC, [
        *((s.encode(), pb.Traded(quantity=q).SerializeToString(), _headers(pb, "Traded", s))
          for s, q in traded),
        (b"ACME", pb.Traded(quantity=100).SerializeToString(), _headers(pb, "Traded", None)),
        (b"ACME", b"\xff\xff", _headers(pb, "Traded", "ACME")),
        (b"ACME", pb.Cancelled(quantity=1).SerializeToString(),
         _headers(pb, "Cancelled", "ACME")),
    ])
    await asyncio.to_thread(produce, bootstrap, QUOTES_TOPIC, [
        (b"ACME", pb.Quote(symbol="ACME", price=12).SerializeToString(),
         _headers(pb, "Quote", "ACME")),
        (b"INIT", b'{"symbol": "INIT", "price": 99}',
         _headers(pb, "Quote", "INIT", "application/json")),
        (b"LOW", pb.Quote(symbol="LOW", price=3).SerializeToString(),
         _headers(pb, "Quote", "LOW")),
    ])

    async def volume(symbol: str) -> dict[str, Any] | None:
        status, body = await http_get(sidecar.port, f"/volumes/{symbol}")
        return json.loads(body) if status == 200 else None

    async def acme_is(total: str, trades: int) -> bool:
        v = await volume("ACME")
        return v is not None and v.get("total") == total and v.get("trades") == trades

    await _eventually(lambda: acme_is("7", 3), "ACME's volume from 5 + 3 - 1")
    assert await volume("INIT") == {"symbol": "INIT", "total": "7", "trades": 1}

    async def above_ten() -> list[Any] | None:
        status, body = await http_get(sidecar.port, "/quotes/above/10")
        rows = json.loads(body) if status == 200 else []
        return rows if len(rows) == 2 else None

    rows = await _eventually(above_ten, "the quotes above 10 (one of them sent as JSON)")
    assert sorted((r["symbol"], r["price"]) for r in rows) == [("ACME", "12"), ("INIT", "99")]

    # The record without ce-subject and the one that does not decode: dead-lettered with
    # the reason, counted; the records after them were applied (above).
    letters = await asyncio.to_thread(_read_all, bootstrap, DLQ, 2)
    assert sorted(dict(r.headers())["larder-error-method"] for r in letters) == [
        f"/{PKG}.VolumesView/OnTraded".encode()
    ] * 2
    status, metrics = await http_get(sidecar.admin, "/metrics")
    assert status == 200
    view = f"{PKG}.VolumesView"
    assert _metric(metrics, "larder_view_topic_records_dead_lettered_total",
                   view=view, topic=TRADES_TOPIC) == 2
    assert _metric(metrics, "larder_view_changes_applied_total", view=view) == 4
    seen_before = len(calls.seen)
    assert seen_before == 4

    # Kafka loses the commits (rewound while the sidecar is down); the store has them.
    assert await sidecar.terminate() == 0
    await asyncio.to_thread(_rewind, bootstrap, GROUP, TRADES_TOPIC, 3)
    await sidecar.start()
    await asyncio.to_thread(produce, bootstrap, TRADES_TOPIC, [
        (b"ACME", pb.Traded(quantity=1).SerializeToString(), _headers(pb, "Traded", "ACME")),
    ])
    await _eventually(lambda: acme_is("8", 4), "ACME's volume after one more trade")

    async def consumed_again() -> float | None:
        _, text = await http_get(sidecar.admin, "/metrics")
        n = _metric(text, "larder_view_topic_records_consumed_total", view=view,
                    topic=TRADES_TOPIC)
        return n if n is not None and n >= 7 else None

    # Every record was delivered again (6 old, 1 new) and only the new one applied.
    await _eventually(consumed_again, "the redelivered records consumed")
    assert calls.seen[seen_before:] == [("ACME", "traded", 1)]
    assert await volume("INIT") == {"symbol": "INIT", "total": "7", "trades": 1}
    assert await sidecar.terminate() == 0

