"""Rebalances, broker outages and stopping, with a fake client as strict as the real one
about threads: the event loop never waits for the Kafka client, a revoke waits for the
records in flight (bounded), a lost assignment is dropped without committing, and
`stop()` is bounded whatever the broker does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from confluent_kafka import KafkaError
from larder_sidecar.eventing import consumer as consumer_module
from larder_sidecar.eventing.spec import EventingSpec
from larder_sidecar.model import UserFunctionModel

from .fakes import FakeProgress, FakePublisher, Signal
from .test_eventing_consumer import TOPIC, GatedRunner, records, start, wait_commit

TP0 = (TOPIC, 0)


class Stalls:
    """The longest the event loop went without running a 10 ms ticker."""

    longest = 0.0


@asynccontextmanager
async def loop_watch() -> AsyncIterator[Stalls]:
    stalls = Stalls()
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            stalls.longest = max(stalls.longest, loop.time() - before)

    ticker = asyncio.create_task(tick())
    try:
        yield stalls
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


async def test_a_revoke_waits_for_records_in_flight_while_the_loop_keeps_running(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    # The frozen sidecar of issue 19: the revoke callback (inside consume()) waits for
    # the loop, while the loop reads watermarks from the same client.
    progress = FakeProgress(Signal())
    runner = GatedRunner(closed=["a"])
    consumer, client = await start(spec, runner, FakePublisher(), progress=progress)
    client.highs[TP0] = 10
    async with loop_watch() as stalls:
        client.feed(records(model, ["b", "a", "b", "c"]))
        await wait_commit(client, 1)  # "a" (offset 1) is in flight
        client.revoke([TP0])
        await client.signal.until(lambda: client.in_callback == "revoke")
        # The loop goes on (lag reports, commit rounds) while the callback waits.
        reported = len(progress.lags)
        await progress.signal.until(lambda: len(progress.lags) >= reported + 3)
        assert client.in_callback == "revoke"
        assert runner.ran["a"] == []
        runner.gates["a"].set()
        await client.signal.until(lambda: any(k == "revoke" for k, _, _ in client.rebalances))
    # The callback committed everything, "a" included, before returning.
    assert client.sync_commits == [{TP0: 4}]
    assert runner.ran == {"b": [1, 2], "a": [1], "c": [1]}
    assert client.blocked == []
    assert stalls.longest < 1.0
    # Every call on the client came from one thread (the consumer thread).
    assert client.threads == {"kafka-consumer-carts"}
    await consumer.stop()
    assert client.blocked == []


async def test_a_revoke_gives_up_on_a_stuck_record_after_the_grace_period(
    model: UserFunctionModel, spec: EventingSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "_REVOKE_GRACE_S", 0.3)
    runner = GatedRunner(closed=["stuck"])
    consumer, client = await start(spec, runner, FakePublisher())
    client.feed(records(model, ["b", "stuck", "b"]))
    await runner.until(lambda: runner.ran["b"] == [1, 2])
    client.revoke([TP0])
    await client.signal.until(lambda: len(client.rebalances) == 2)
    kind, _, took = client.rebalances[1]
    assert kind == "revoke"
    assert took < 0.3 + 1.0
    # Committed up to the stuck record, which was cut off: the next owner runs it.
    assert client.sync_commits == [{TP0: 1}]
    assert runner.cancelled == ["stuck"]
    await consumer.stop()


async def test_a_lost_assignment_drops_the_records_in_flight_without_committing(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner = GatedRunner(closed=["a"])
    consumer, client = await start(spec, runner, FakePublisher())
    client.feed(records(model, ["b", "a", "b"]))
    await runner.until(lambda: runner.ran["b"] == [1, 2])
    await wait_commit(client, 1)
    commits = len(client.commits)
    client.lose([TP0])
    await client.signal.until(lambda: len(client.rebalances) == 2)
    kind, _, took = client.rebalances[1]
    assert kind == "lose"
    # No waiting for "a" (another member may already have the partition)...
    assert took < 0.5
    await runner.until(lambda: runner.cancelled == ["a"])
    # ...and nothing committed for it, then or later.
    assert client.sync_commits == []
    assert all(TP0 not in c for c in client.commits[commits:])
    # The partition comes back (a new assignment): its records flow again.
    client.feed(records(model, ["a", "b", "c"]))
    runner.gates["a"].set()
    await runner.until(lambda: runner.ran["c"] == [1])
    await wait_commit(client, 3)
    await consumer.stop()
    assert client.blocked == []


async def test_stop_is_bounded_when_the_broker_never_answers(
    model: UserFunctionModel, spec: EventingSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "_REVOKE_GRACE_S", 0.2)
    monkeypatch.setattr(consumer_module, "_CLOSE_TIMEOUT_S", 0.5)
    runner = GatedRunner(closed=["a"])
    consumer, client = await start(spec, runner, FakePublisher())
    client.feed(records(model, ["b", "a"]))
    await wait_commit(client, 1)
    client.hang.set()  # the final commit and close() never return
    try:
        async with asyncio.timeout(3):
            await consumer.stop()
    finally:
        client.release.set()
    assert runner.cancelled == ["a"]


async def test_a_broker_outage_is_logged_once_each_way_and_the_lag_turns_unknown(
    model: UserFunctionModel, spec: EventingSpec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "larder_sidecar.eventing")
    progress = FakeProgress(Signal())
    consumer, client = await start(spec, GatedRunner(), FakePublisher(), progress=progress)
    client.highs[TP0] = 5
    client.feed(records(model, ["a", "b"]))
    await wait_commit(client, 2)
    await progress.signal.until(lambda: progress.last_lag(*TP0) == 3)
    before = len(caplog.records)

    # What librdkafka reports while its only broker is down: many times the same.
    for _ in range(20):
        client.error(KafkaError._TRANSPORT)
        client.error(KafkaError._ALL_BROKERS_DOWN)
        client.stats("DOWN")
    await progress.signal.until(lambda: progress.reachable_now == {"carts": False})
    await progress.signal.until(lambda: progress.last_lag(*TP0) is None)  # unknown
    client.stats("UP")
    await progress.signal.until(lambda: progress.reachable_now == {"carts": True})
    await progress.signal.until(lambda: progress.last_lag(*TP0) == 3)
    warnings = [
        r.getMessage() for r in caplog.records[before:] if r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 2, warnings
    assert "no Kafka broker is reachable" in warnings[0]
    assert "Kafka is reachable again after" in warnings[1]
    await consumer.stop()
