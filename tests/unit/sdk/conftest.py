"""SDK test setup: the test protos are compiled once, into a temporary directory on
`sys.path`, before any test module imports them; fixtures build the test components."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from larder_protocol import compile_protos

_PROTOS = Path(__file__).parent / "protos"


def _compile_test_protos() -> None:
    out = tempfile.mkdtemp(prefix="larder-sdk-test-protos-")
    atexit.register(shutil.rmtree, out, True)
    compile_protos(sorted(_PROTOS.glob("larder_sdktest/*.proto")), out, include=[_PROTOS])
    sys.path.insert(0, out)


_compile_test_protos()

from google.protobuf.empty_pb2 import Empty  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from larder_sdk import (  # noqa: E402
    Action,
    ActionContext,
    CommandFailed,
    EventSourcedContext,
    EventSourcedEntity,
    Metadata,
    Reply,
    ValueEntity,
    ValueEntityContext,
    forward,
)
from larder_sdktest import cart_pb2, counter_pb2, echo_pb2  # type: ignore[import-not-found]  # noqa: E402

COUNTER_SERVICE = counter_pb2.DESCRIPTOR.services_by_name["CounterService"]
INCREASE = COUNTER_SERVICE.methods_by_name["Increase"]


def make_counter(snapshot_every: int = 3) -> EventSourcedEntity[Any]:
    counter: EventSourcedEntity[Any] = EventSourcedEntity(
        COUNTER_SERVICE,
        entity_type="counter",
        state_type=counter_pb2.CounterState,
        snapshot_every=snapshot_every,
        events=[counter_pb2.ValueIncreased, counter_pb2.ValueDecreased],
    )

    @counter.command_handler
    def increase(
        state: counter_pb2.CounterState,
        command: counter_pb2.IncreaseValue,
        ctx: EventSourcedContext,
    ) -> Empty | Reply[Empty]:
        if command.value < 0:
            ctx.fail(f"increase by {command.value}: the value must not be negative")
        ctx.emit(counter_pb2.ValueIncreased(value=command.value))
        echo = ctx.metadata.get("x-echo")
        if echo is not None:
            return Reply(Empty(), metadata=Metadata.of({"x-echo": echo}))
        return Empty()

    @counter.command_handler("Decrease")
    async def decrease(
        state: counter_pb2.CounterState,
        command: counter_pb2.DecreaseValue,
        ctx: EventSourcedContext,
    ) -> Empty:
        ctx.emit(counter_pb2.ValueDecreased(value=command.value))
        return Empty()

    @counter.command_handler
    def get_current_counter(
        state: counter_pb2.CounterState, command: counter_pb2.GetCounter, ctx: EventSourcedContext
    ) -> counter_pb2.CurrentCounter:
        return counter_pb2.CurrentCounter(value=state.value)

    @counter.command_handler
    def increase_elsewhere(
        state: counter_pb2.CounterState,
        command: counter_pb2.IncreaseValue,
        ctx: EventSourcedContext,
    ) -> Any:
        other = counter_pb2.IncreaseValue(counter_id="audit", value=command.value)
        ctx.side_effect(
            "larder.sdktest.CounterService/Increase",
            other,
            synchronous=True,
            metadata={"x-why": "audit"},
        )
        ctx.side_effect(INCREASE, other)
        return forward(
            INCREASE,
            counter_pb2.IncreaseValue(counter_id=command.counter_id + "-b", value=command.value),
            metadata={"x-forwarded": "yes"},
        )

    @counter.command_handler
    def misbehave(
        state: counter_pb2.CounterState,
        command: counter_pb2.MisbehaveCommand,
        ctx: EventSourcedContext,
    ) -> Any:
        ctx.emit(counter_pb2.ValueIncreased(value=1))
        how = command.how
        if how == "raise":
            raise ValueError("the handler broke")
        if how == "fail_caught":
            with contextlib.suppress(CommandFailed):
                ctx.fail("failed, then caught")
            return Empty()
        if how == "wrong_type":
            return counter_pb2.CurrentCounter(value=1)
        if how == "none":
            return None
        if how == "unhandled_event":
            ctx.emit(counter_pb2.Unhandled(note="nobody handles me"))
        elif how == "bad_event":
            ctx.emit(counter_pb2.ValueIncreased(value=-999))
        elif how == "mutate_state":
            state.value = 1000
            ctx.fail("mutated the state, then failed")
        elif how == "bad_side_effect":
            ctx.side_effect(INCREASE, counter_pb2.GetCounter())
        return Empty()

    @counter.event_handler
    def increased(
        state: counter_pb2.CounterState, event: counter_pb2.ValueIncreased
    ) -> counter_pb2.CounterState:
        if event.value == -999:
            raise RuntimeError("this event handler rejects -999")
        state.value += event.value
        state.changes += 1
        return state

    value_decreased: type[Message] = counter_pb2.ValueDecreased

    @counter.event_handler(value_decreased)
    def decreased(state: Any, event: Any) -> Any:
        state.value -= event.value
        state.changes += 1
        return state

    @counter.snapshot_handler
    def from_legacy(snapshot: counter_pb2.LegacySnapshot) -> counter_pb2.CounterState:
        return counter_pb2.CounterState(value=snapshot.total)

    return counter


def make_cart() -> ValueEntity[Any]:
    cart: ValueEntity[Any] = ValueEntity(
        "larder.sdktest.CartService", entity_type="cart", state_type=cart_pb2.Cart
    )

    @cart.command_handler
    def add_item(
        state: cart_pb2.Cart, command: cart_pb2.AddLineItem, ctx: ValueEntityContext[Any]
    ) -> Empty:
        if command.quantity <= 0:
            ctx.fail(f"cannot add {command.quantity} of {command.product_id}")
        state.items.add(product_id=command.product_id, quantity=command.quantity)
        ctx.update_state(state)
        return Empty()

    @cart.command_handler
    async def get_cart(
        state: cart_pb2.Cart, command: cart_pb2.GetShoppingCart, ctx: ValueEntityContext[Any]
    ) -> cart_pb2.Cart:
        return state

    @cart.command_handler
    def remove_cart(
        state: cart_pb2.Cart, command: cart_pb2.RemoveShoppingCart, ctx: ValueEntityContext[Any]
    ) -> Empty:
        ctx.delete_state()
        return Empty()

    @cart.command_handler("CheckoutCart")
    def checkout(
        state: cart_pb2.Cart, command: cart_pb2.Checkout, ctx: ValueEntityContext[Any]
    ) -> Any:
        if command.fail:
            ctx.update_state(cart_pb2.Cart())
            raise RuntimeError("checkout broke after clearing the cart")
        ctx.side_effect(
            "larder.sdktest.EchoAction/Echo", echo_pb2.Ping(text=command.cart_id), synchronous=True
        )
        ctx.delete_state()
        return forward(INCREASE, counter_pb2.IncreaseValue(counter_id="checkouts", value=1))

    return cart


def make_echo() -> Action:
    echo = Action(echo_pb2.DESCRIPTOR.services_by_name["EchoAction"])

    # A trailing underscore keeps the name off the module; it still maps to "Echo".
    @echo.command_handler
    def echo_(ping: echo_pb2.Ping, ctx: ActionContext) -> Any:
        mode = ping.mode
        if mode == "forward":
            return forward(INCREASE, counter_pb2.IncreaseValue(counter_id=ping.text, value=1))
        if mode == "fail":
            ctx.fail(f"echo refused {ping.text!r}")
        if mode == "raise":
            raise KeyError(ping.text)
        if mode == "none":
            ctx.side_effect(INCREASE, counter_pb2.IncreaseValue(counter_id=ping.text, value=1))
            return None
        if mode == "wrong_type":
            return ping
        if mode == "metadata":
            return Reply(
                echo_pb2.Pong(text=str(ctx.metadata.get("x-in"))),
                metadata=Metadata.of([("x-out", "yes"), ("x-bin", b"\x00\x01")]),
            )
        return echo_pb2.Pong(text=ping.text)

    @echo.command_handler
    async def collect(pings: AsyncIterator[Any], ctx: ActionContext) -> echo_pb2.Pong:
        texts = [ping.text async for ping in pings]
        if "fail" in texts:
            ctx.fail(f"collect refused after {len(texts)} pings")
        return echo_pb2.Pong(text=",".join(texts))

    @echo.command_handler
    async def repeat(ping: echo_pb2.Ping, ctx: ActionContext) -> AsyncIterator[Any]:
        if ping.mode == "side_effect":
            ctx.side_effect(INCREASE, counter_pb2.IncreaseValue(counter_id=ping.text, value=1))
        for i in range(ping.count):
            if ping.mode == "fail" and i == 1:
                ctx.fail(f"repeat stopped at {i}")
            yield echo_pb2.Pong(text=f"{ping.text}-{i}")
        if ping.mode == "forward":
            yield forward(INCREASE, counter_pb2.IncreaseValue(counter_id=ping.text, value=1))

    @echo.command_handler
    async def chat(pings: AsyncIterator[Any], ctx: ActionContext) -> AsyncIterator[Any]:
        async for ping in pings:
            if ping.mode == "none":
                yield None
            elif ping.mode == "fail":
                ctx.fail(f"chat refused {ping.text!r}")
            elif ping.mode == "raise":
                raise RuntimeError("chat broke")
            else:
                yield echo_pb2.Pong(text=ping.text.upper())

    return echo


@pytest.fixture
def counter() -> EventSourcedEntity[Any]:
    return make_counter()


@pytest.fixture
def cart() -> ValueEntity[Any]:
    return make_cart()


@pytest.fixture
def echo() -> Action:
    return make_echo()
