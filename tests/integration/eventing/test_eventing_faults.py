"""Broker faults and rebalances under load, with the real Kafka and `larder-sidecar`
processes: the sidecar stays responsive and every record is applied, once (records are
delivered at least once; the redelivered ones are answered from idempotency records)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tests.infra.kafka import KafkaServer

from .conftest import SidecarProcess, ce_headers, http_get, produce
from .counter_function import CounterProtos
from .test_eventing_flow import ADD

log = logging.getLogger(__name__)

RATE = 100
"""Records per second the load generator produces."""
ENTITIES = 8
SESSION_TIMEOUT_S = 10  # the sidecar's default session.timeout.ms
ANSWER_WITHIN_S = 2.0
OUTAGE_S = SESSION_TIMEOUT_S + 5.0
"""How long each broker fault lasts: past the session timeout, so partitions are lost."""
TERMINATE_WITHIN_S = 20.0
"""SIGTERM's bound: 10 s grace for records in flight, 5 s for the final commit."""
BACKLOG = 5000
BACKLOG_ENTITIES = 300


def produce_steadily(
    bootstrap: str, topic: str, counter: CounterProtos, prefix: str, total: int,
    produced: Callable[[int], None],
) -> None:
    """`total` records at RATE per second over ENTITIES entities, tagged `<entity>/<n>`.
    Runs on a thread; records the broker cannot take yet wait in the client."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True,
         "message.timeout.ms": 180000, "log_level": 0}
    )
    started = time.monotonic()
    for n in range(total):
        entity = f"{prefix}-{n % ENTITIES}"
        value = counter.pb.AddRequest(id=entity, amount=1, tag=f"{entity}/{n}")
        producer.produce(
            topic, value.SerializeToString(), key=entity.encode(), headers=ce_headers(ADD)
        )
        producer.poll(0)
        produced(n + 1)
        # Pacing a load generator, not waiting for a condition.
        time.sleep(max(0.0, started + (n + 1) / RATE - time.monotonic()))
    assert producer.flush(120) == 0, "the load generator's records were not all delivered"


def applied(journal: Path, counter: CounterProtos, prefix: str) -> Counter[str]:
    """How many times each tag was applied: read from the journal itself, which all the
    test's sidecars share."""
    if not journal.exists():
        return Counter()
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT value FROM events WHERE pid LIKE ?", (f"counter|{prefix}-%",)
        ).fetchall()
    return Counter(counter.pb.Added.FromString(value).tag for (value,) in rows)


def tags_of(prefix: str, total: int) -> set[str]:
    """The tags `produce_steadily` produces."""
    return {f"{prefix}-{n % ENTITIES}/{n}" for n in range(total)}


async def until_applied(
    journal: Path, counter: CounterProtos, prefix: str, expected: set[str], seconds: float
) -> Counter[str]:
    tags: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    # Another process's state can only be observed by asking.
    while time.monotonic() < deadline:
        tags = await asyncio.to_thread(applied, journal, counter, prefix)
        if set(tags) >= expected:
            break
        await asyncio.sleep(0.25)
    missing = expected - set(tags)
    assert not missing, (
        f"{len(missing)} of {len(expected)} records never applied, e.g. {sorted(missing)[:5]}"
    )
    assert set(tags) == expected
    return tags


def backlog(
    bootstrap: str, topic: str, counter: CounterProtos, prefix: str, name: str
) -> set[str]:
    """BACKLOG records at once over BACKLOG_ENTITIES entities (so hundreds are in flight
    at the same time); returns their tags."""
    records = []
    for n in range(BACKLOG):
        entity = f"{prefix}-{name}{n % BACKLOG_ENTITIES}"
        value = counter.pb.AddRequest(id=entity, amount=1, tag=f"{entity}/{n}")
        records.append((entity.encode(), value.SerializeToString(), ce_headers(ADD)))
    produce(bootstrap, topic, records)
    return {f"{prefix}-{name}{n % BACKLOG_ENTITIES}/{n}" for n in range(BACKLOG)}


class Prober:
    """Asks the sidecar's admin /healthz and public port every half second; every answer
    must come within ANSWER_WITHIN_S."""

    def __init__(self, sidecar: SidecarProcess, entity: str, *, fenced_ok: bool = False) -> None:
        self.sidecar = sidecar
        self.entity = entity
        self.fenced_ok = fenced_ok
        """Whether a 409 because another writer changed the entity is an answer, not a
        failure: it is when two sidecars that do not shard serve the same entities."""
        self.fenced = 0
        self.answers = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    async def run(self) -> None:
        while True:
            for port, path in (
                (self.sidecar.admin, "/healthz"),
                (self.sidecar.port, f"/counters/{self.entity}"),
            ):
                started = time.monotonic()
                try:
                    status, body = await asyncio.wait_for(
                        http_get(port, path), ANSWER_WITHIN_S
                    )
                except (TimeoutError, OSError) as e:
                    self.failures.append(f"{path}: {e!r}")
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                if status == 409 and self.fenced_ok and "another writer" in body:
                    self.fenced += 1
                elif status != 200:
                    self.failures.append(f"{path}: {status} {body}")
                self.answers += 1
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def probing(sidecar: SidecarProcess, entity: str, *, fenced_ok: bool = False) -> Any:
    prober = Prober(sidecar, entity, fenced_ok=fenced_ok)
    task = asyncio.create_task(prober.run())
    try:
        yield prober
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class Outage:
    """What `outage_under_load` saw."""

    sidecar: SidecarProcess
    prober: Prober
    total: int
    tags: Counter[str]
    text: str = ""
    """The sidecar's log, read once every record was applied."""

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.tags.values())

    def lines(self, text: str) -> list[str]:
        return [line for line in self.text.splitlines() if text in line]


async def outage_under_load(
    kafka: KafkaServer, counter: CounterProtos, sidecar: SidecarProcess, journal: Path,
    name: str, down: Callable[[], None], up: Callable[[], None],
) -> Outage:
    """One sidecar consuming RATE records/s for 20 s; `down()` the broker once some are
    applied, `up()` it again after longer than the session timeout, then wait until every
    record is applied, asking the sidecar throughout. Whatever happens, the broker is
    running and not paused afterwards: it is session-wide."""
    await sidecar.start()
    prefix = f"{name}-{uuid.uuid4().hex[:6]}"
    total = 20 * RATE
    load = asyncio.create_task(asyncio.to_thread(
        produce_steadily, kafka.bootstrap_servers, counter.topic_in, counter, prefix, total,
        lambda n: None,
    ))
    try:
        async with probing(sidecar, f"{prefix}-0") as prober:
            # Under load: some records applied before the broker goes away.
            await until_some_applied(journal, counter, prefix)
            began = time.monotonic()
            await asyncio.to_thread(down)
            log.info("broker %s in %.1f s", name, time.monotonic() - began)
            # Down for longer than the session timeout, asking the sidecar meanwhile.
            await asyncio.sleep(OUTAGE_S)
            began = time.monotonic()
            await asyncio.to_thread(up)
            log.info("broker back in %.1f s", time.monotonic() - began)
            await load
            tags = await until_applied(
                journal, counter, prefix, tags_of(prefix, total), seconds=60
            )
    finally:
        if kafka.paused:
            kafka.resume()
        if not kafka.running:
            await asyncio.to_thread(kafka.start)
        load.cancel()
    outage = Outage(sidecar, prober, total, tags, sidecar.log())
    log.info(
        "%s: %d records, %d applied twice or more; %d probe answers, slowest %.2f s",
        name, total, outage.duplicates, prober.answers, prober.slowest,
    )
    assert prober.failures == [], prober.failures[:5]
    assert prober.answers >= OUTAGE_S  # two per second during the outage alone
    # Redelivered records are answered from the entities' idempotency records
    # (eventing/dedup.py): at-least-once delivery, each applied once.
    assert outage.duplicates == 0, sorted(t for t, n in tags.items() if n > 1)[:10]
    return outage


async def terminates_promptly(sidecar: SidecarProcess) -> None:
    """SIGTERM after the outage: exit 0, within the in-flight grace plus the final
    commit's bound."""
    began = time.monotonic()
    assert await sidecar.terminate() == 0
    took = time.monotonic() - began
    log.info("SIGTERM took %.1f s", took)
    assert took < TERMINATE_WITHIN_S


def warned_down_then_up(outage: Outage) -> None:
    """One warning per transition, not a flood. A restarting broker may accept a
    connection and drop it again before it serves (seen on a loaded machine), which is
    a second outage, honestly reported as one; the last word must be "reachable"."""
    down = outage.lines("no Kafka broker is reachable")
    up = outage.lines("Kafka is reachable again")
    assert 1 <= len(down) <= 3, "\n".join(down) or outage.text[-4000:]
    assert len(up) == len(down), "\n".join(down + up)
    text = outage.text
    assert text.rindex("Kafka is reachable again") > text.rindex("no Kafka broker is reachable")
    # librdkafka's own line for each reconnect attempt goes to DEBUG, not stderr.
    assert "|FAIL|rdkafka#consumer" not in text


async def test_broker_stopped_longer_than_the_session_timeout_under_load(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, tmp_path: Path
) -> None:
    outage = await outage_under_load(
        kafka, counter, sidecar_factory(), tmp_path / "journal.sqlite3", "stopped",
        kafka.stop, kafka.start,
    )
    warned_down_then_up(outage)
    await terminates_promptly(outage.sidecar)


async def test_broker_killed_longer_than_the_session_timeout_under_load(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, tmp_path: Path
) -> None:
    """kill -9: the broker's sockets are reset by the kernel, as with a clean stop, but
    nothing is said to the clients first (no leaving the group, no final fetch)."""
    outage = await outage_under_load(
        kafka, counter, sidecar_factory(), tmp_path / "journal.sqlite3", "killed",
        kafka.kill, kafka.start,
    )
    warned_down_then_up(outage)
    await terminates_promptly(outage.sidecar)


async def until_some_applied(journal: Path, counter: CounterProtos, prefix: str) -> None:
    # Another process's state can only be observed by asking.
    for _ in range(200):
        if await asyncio.to_thread(applied, journal, counter, prefix):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no record applied within 20 s of starting the load")


async def test_a_second_sidecar_joins_and_leaves_the_group_under_load(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, tmp_path: Path
) -> None:
    first = sidecar_factory()
    await first.start()
    second = sidecar_factory()
    prefix = f"join-{uuid.uuid4().hex[:6]}"
    total = 10 * RATE
    expected = tags_of(prefix, total)
    bootstrap, topic = kafka.bootstrap_servers, counter.topic_in
    load = asyncio.create_task(asyncio.to_thread(
        produce_steadily, bootstrap, topic, counter, prefix, total, lambda n: None,
    ))
    journal = tmp_path / "journal.sqlite3"
    try:
        # The two sidecars share the journal but do not shard (no member list): while
        # the second one holds the probed entity's partition, the first one's copy of
        # the entity falls behind, and its next write after the partition comes back
        # is refused by the journal's fencing; a probe queued behind that write is
        # answered 409 (retry), promptly. That is the answer this setup must give.
        async with probing(first, f"{prefix}-0", fenced_ok=True) as prober:
            await until_some_applied(journal, counter, prefix)
            # Joins (the rebalance starts within a heartbeat, 3 s) while the first
            # sidecar has hundreds of records in flight: every member's partitions are
            # revoked (eager rebalancing) and reassigned.
            await second.start()
            expected |= await asyncio.to_thread(backlog, bootstrap, topic, counter, prefix, "a")
            await until_log(second, ": assigned counter-add")
            await until_log(first, "revoked")
            # Leaves (SIGTERM) while both have hundreds in flight.
            expected |= await asyncio.to_thread(backlog, bootstrap, topic, counter, prefix, "b")
            terminated = time.monotonic()
            assert await second.terminate() == 0
            log.info("the second sidecar stopped in %.1f s", time.monotonic() - terminated)
            await load
            tags = await until_applied(journal, counter, prefix, expected, seconds=60)
    finally:
        load.cancel()
    duplicates = sum(n - 1 for n in tags.values())
    log.info(
        "%d records, %d applied twice or more; %d probe answers (%d refused by fencing), "
        "slowest %.2f s",
        len(expected), duplicates, prober.answers, prober.fenced, prober.slowest,
    )
    assert prober.failures == [], prober.failures[:5]
    assert duplicates == 0, sorted(t for t, n in tags.items() if n > 1)[:10]
    assert await first.terminate() == 0


async def until_log(sidecar: SidecarProcess, text: str, seconds: float = 30.0) -> None:
    # Another process's log can only be observed by reading it.
    deadline = time.monotonic() + seconds
    while text not in sidecar.log():
        assert time.monotonic() < deadline, f"{text!r} not logged in {seconds} s"
        await asyncio.sleep(0.1)


async def test_broker_paused_longer_than_the_session_timeout_under_load(
    kafka: KafkaServer, counter: CounterProtos, sidecar_factory: Any, tmp_path: Path
) -> None:
    """SIGSTOP: the broker's sockets stay open and its connections up, so the client only
    notices through its own timeouts: no "no Kafka broker is reachable" (no broker is
    reported down), but the group session times out and the partitions are lost. After
    SIGCONT the single node fences and unfences itself (its own broker session timed out
    at its controller) and reloads its group coordinator. The client may meanwhile drop
    the broker, which the fenced node's metadata no longer lists, and know none: it goes
    back to `bootstrap.servers` after 10 s (`REBOOTSTRAP`; librdkafka's default is 5
    minutes, which this test caught as a sidecar consuming nothing) and rejoins."""
    outage = await outage_under_load(
        kafka, counter, sidecar_factory(), tmp_path / "journal.sqlite3", "paused",
        kafka.pause, kafka.resume,
    )
    lost = outage.lines(": lost counter-add")
    assert lost, outage.text[-4000:]
    assert outage.lines("Consumer group session timed out"), outage.text[-4000:]
    # Partitions assigned again after they were lost, and no flood of warnings.
    assert outage.text.rindex(": assigned counter-add") > outage.text.index(": lost ")
    assert len(lost) <= 3, "\n".join(lost)
    assert "|FAIL|rdkafka#consumer" not in outage.text
    await terminates_promptly(outage.sidecar)
