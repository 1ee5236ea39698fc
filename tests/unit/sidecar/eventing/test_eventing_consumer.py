"""The consumer's ordering and commit guarantees: records of different entities run
concurrently, one entity's records one at a time in offset order, and an offset is
committed only when nothing before it is unfinished."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
from larder_sidecar.eventing import KafkaSettings
from larder_sidecar.eventing import consumer as consumer_module
from larder_sidecar.eventing.consumer import GroupConsumer
from larder_sidecar.eventing.processing import Backoff, Prepared, RecordProcessor
from larder_sidecar.eventing.spec import EventingSpec, Subscription
from larder_sidecar.invoke import InvokeResult, MetadataPairs
from larder_sidecar.model import Method, UserFunctionModel

from .fakes import FakeConsumer, FakeProgress, FakePublisher, FakeRecord, Signal

CE = [("ce-specversion", b"1.0"), ("ce-type", b"evunit.Add")]
TOPIC = "adds"


class GatedRunner:
    """Runs commands, yielding to the loop inside each; an entity's commands wait while
    its gate is closed. Records what ran, and how many ran at once."""

    def __init__(self, closed: Sequence[str] = ()) -> None:
        self.gates = {entity: asyncio.Event() for entity in closed}
        self.ran: dict[str, list[int]] = defaultdict(list)
        self.cancelled: list[str] = []
        self.active: Counter[str] = Counter()
        self.most_per_entity = 0
        self.most_at_once = 0
        self.progress = asyncio.Event()

    async def call(
        self, method: Method, payload: bytes, metadata: MetadataPairs, parsed: Any = None
    ) -> InvokeResult:
        entity, n = parsed.id, parsed.amount
        self.active[entity] += 1
        self.most_per_entity = max(self.most_per_entity, self.active[entity])
        self.most_at_once = max(self.most_at_once, sum(self.active.values()))
        try:
            gate = self.gates.get(entity)
            if gate is not None:
                try:
                    await gate.wait()
                except asyncio.CancelledError:
                    self.cancelled.append(entity)
                    self.progress.set()
                    raise
            await asyncio.sleep(0)  # let other lanes interleave
            self.ran[entity].append(n)
        finally:
            self.active[entity] -= 1
        self.progress.set()
        return InvokeResult(b"")

    async def until(self, condition: Any) -> None:
        async with asyncio.timeout(5):
            while not condition():
                self.progress.clear()
                await self.progress.wait()


class HeldPublisher(FakePublisher):
    """Replies for `held` entities are never acknowledged by the 'broker'."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held.encode()

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[None]:
        if key == self.held:
            return asyncio.get_running_loop().create_future()
        return await super().send(topic, value, key, headers)


def records(model: UserFunctionModel, layout: Sequence[str]) -> list[FakeRecord]:
    """One record per entry (an entity id), at offsets 0.., amounts counting per entity."""
    add = model.methods["/evunit.Cart/AddItem"].input_class
    seen: Counter[str] = Counter()
    out = []
    for offset, entity in enumerate(layout):
        seen[entity] += 1
        value = add(id=entity, amount=seen[entity]).SerializeToString()
        out.append(FakeRecord(value, CE, entity.encode(), TOPIC, 0, offset))
    return out


async def start(
    spec: EventingSpec,
    runner: Any,
    publisher: FakePublisher,
    max_in_flight: int = 100,
    progress: FakeProgress | None = None,
) -> tuple[GroupConsumer[Subscription, Prepared], FakeConsumer]:
    client = FakeConsumer(progress.signal if progress is not None else Signal())
    subscription: Subscription = next(s for s in spec.subscriptions if s.topic == TOPIC)
    processor = RecordProcessor(spec, runner, publisher, backoff=Backoff(0.0, 0.0))
    consumer = GroupConsumer(
        "carts", {TOPIC: subscription},
        KafkaSettings(bootstrap_servers="unused:1", max_in_flight=max_in_flight),
        processor, progress, make_client=client,
    )
    await consumer.start()
    return consumer, client


async def wait_commit(client: FakeConsumer, offset: int) -> None:
    await client.signal.until(lambda: (client.last_commit(TOPIC, 0) or 0) >= offset)


async def test_entities_run_concurrently_and_each_entity_in_offset_order(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    # "a" is stuck at first; "b" and "c" must not wait for it (a sequential partition
    # would never get past offset 0, and `until` would time out).
    runner = GatedRunner(closed=["a"])
    consumer, client = await start(spec, runner, FakePublisher())
    client.feed(records(model, ["a", "b", "c"] * 20))
    await runner.until(lambda: len(runner.ran["b"]) == len(runner.ran["c"]) == 20)
    assert runner.ran["a"] == []
    # Offset 0 ("a") is unfinished, so nothing may be committed yet.
    assert client.last_commit(TOPIC, 0) in (None, 0)

    runner.gates["a"].set()
    await wait_commit(client, 60)
    await consumer.stop()
    assert {e: runner.ran[e] for e in "abc"} == {e: list(range(1, 21)) for e in "abc"}
    assert runner.most_per_entity == 1
    assert runner.most_at_once > 1
    assert client.last_commit(TOPIC, 0) == 60


async def test_a_stop_never_commits_past_an_unfinished_record(
    model: UserFunctionModel, spec: EventingSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "_REVOKE_GRACE_S", 0.05)
    # Offset 2 ("stuck") never finishes its command; offset 4 ("unacked") ran, but the
    # broker never acknowledged its reply. Everything else finishes.
    runner = GatedRunner(closed=["stuck"])
    publisher = HeldPublisher("unacked")
    consumer, client = await start(spec, runner, publisher)
    client.feed(records(model, ["x", "y", "stuck", "y", "unacked", "x", "z"]))
    await runner.until(lambda: sum(len(v) for v in runner.ran.values()) == 6)
    await wait_commit(client, 2)
    await consumer.stop()  # like a crash: the stuck record is abandoned
    assert runner.ran["unacked"] == [1]
    assert runner.ran["stuck"] == []
    assert all(max(c.values()) <= 2 for c in client.commits)
    assert client.last_commit(TOPIC, 0) == 2
    assert client.closed


async def test_max_in_flight_bounds_concurrency_and_one_means_sequential(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    layout = [f"e{n % 10}" for n in range(50)]
    for limit, expected in ((1, 1), (4, 4)):
        runner = GatedRunner()
        consumer, client = await start(spec, runner, FakePublisher(), max_in_flight=limit)
        client.feed(records(model, layout))
        await wait_commit(client, 50)
        await consumer.stop()
        assert runner.most_at_once == expected
        assert all(runner.ran[e] == [1, 2, 3, 4, 5] for e in set(layout))
