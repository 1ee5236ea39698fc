"""`PeerOwner`'s turns: commands to one entity are forwarded one at a time in the order
they were submitted; a command given up on while it waits (or just as its turn comes)
neither runs nor holds up the ones behind it; other entities never wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from larder_sidecar.cluster.sharded import PeerOwner, ShardedRouter
from larder_sidecar.invoke import MetadataPairs
from larder_sidecar.model import Method
from larder_sidecar.outcome import Outcome

from ..entities.fakes import es_method


class _Router:
    """Records each forward and holds it until the test releases it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.on_return: dict[str, Callable[[], object]] = {}

    async def forward(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        name = payload.decode()
        self.started.append(name)
        gate = self.gates.setdefault(name, asyncio.Event())
        await gate.wait()
        if name in self.on_return:
            self.on_return[name]()
        return Outcome("reply", name)

    def release(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


@pytest.fixture
def method() -> Method:
    return es_method()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _submit(owner: PeerOwner, method: Method, entity: str, name: str) -> asyncio.Task[Any]:
    return asyncio.create_task(owner.submit(method, entity, name.encode(), []))


async def test_one_entity_one_at_a_time_in_order_others_at_once(method: Method) -> None:
    router = _Router()
    owner = PeerOwner(cast(ShardedRouter, router))
    first = _submit(owner, method, "e1", "first")
    second = _submit(owner, method, "e1", "second")
    third = _submit(owner, method, "e1", "third")
    other = _submit(owner, method, "e2", "other")
    await _settle()
    assert router.started == ["first", "other"]
    router.release("first")
    assert (await first).message == "first"
    await _settle()
    assert router.started == ["first", "other", "second"]
    router.release("second")
    router.release("third")
    router.release("other")
    assert [(await t).message for t in (second, third, other)] == ["second", "third", "other"]
    assert router.started == ["first", "other", "second", "third"]
    assert owner._turns == {}


async def test_a_command_given_up_while_waiting_does_not_run_nor_block(method: Method) -> None:
    router = _Router()
    owner = PeerOwner(cast(ShardedRouter, router))
    first = _submit(owner, method, "e1", "first")
    second = _submit(owner, method, "e1", "second")
    third = _submit(owner, method, "e1", "third")
    await _settle()
    second.cancel()
    await _settle()
    router.release("first")
    router.release("third")
    await first
    # A turn not handed on would leave `third` waiting for ever.
    assert (await asyncio.wait_for(third, 2)).message == "third"
    assert second.cancelled()
    assert router.started == ["first", "third"]
    assert owner._turns == {}


async def test_a_command_given_up_as_its_turn_comes_hands_the_turn_on(method: Method) -> None:
    router = _Router()
    owner = PeerOwner(cast(ShardedRouter, router))
    first = _submit(owner, method, "e1", "first")
    second = _submit(owner, method, "e1", "second")
    third = _submit(owner, method, "e1", "third")
    await _settle()
    # Queued before `first` hands its turn to `second`, so it runs after the hand-over
    # and before `second` resumes: `second` holds the turn when it is cancelled.
    router.on_return["first"] = lambda: asyncio.get_running_loop().call_soon(second.cancel)
    router.release("first")
    router.release("third")
    await first
    # A turn not handed on would leave `third` waiting for ever.
    assert (await asyncio.wait_for(third, 2)).message == "third"
    assert second.cancelled()
    assert router.started == ["first", "third"]
    assert owner._turns == {}


async def test_a_forward_that_fails_passes_the_turn(method: Method) -> None:
    router = _Router()
    owner = PeerOwner(cast(ShardedRouter, router))
    first = _submit(owner, method, "e1", "first")
    second = _submit(owner, method, "e1", "second")
    await _settle()
    first.cancel()  # cancelled while forwarding: as a failure of the forward
    await _settle()
    router.release("second")
    assert (await asyncio.wait_for(second, 2)).message == "second"
    assert owner._turns == {}
