"""Value entities and actions through the in-process test kits."""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty
from larder_sdk import Action, Metadata, ValueEntity
from larder_sdk.testkit import ActionTestKit, ValueEntityTestKit
from larder_sdktest import cart_pb2, counter_pb2, echo_pb2  # type: ignore[import-not-found]


def test_value_entity_update_get_delete(cart: ValueEntity[Any]) -> None:
    kit = ValueEntityTestKit(cart, "cart-1")
    added = kit.run("AddItem", cart_pb2.AddLineItem(cart_id="cart-1", product_id="p", quantity=2))
    assert added.reply == Empty()
    assert added.state_action == "update"
    expected = cart_pb2.Cart(items=[cart_pb2.LineItem(product_id="p", quantity=2)])
    assert added.updated_state == expected
    assert kit.run("GetCart", cart_pb2.GetShoppingCart()).reply == expected
    removed = kit.run("RemoveCart", cart_pb2.RemoveShoppingCart())
    assert removed.state_action == "delete"
    assert kit.state == cart_pb2.Cart()


def test_value_entity_starts_from_stored_state(cart: ValueEntity[Any]) -> None:
    stored = cart_pb2.Cart(items=[cart_pb2.LineItem(product_id="q", quantity=1)])
    kit = ValueEntityTestKit(cart, "cart-2", state=stored)
    assert kit.run("GetCart", cart_pb2.GetShoppingCart()).reply == stored


def test_value_entity_fail_and_exception_change_nothing(cart: ValueEntity[Any]) -> None:
    stored = cart_pb2.Cart(items=[cart_pb2.LineItem(product_id="q", quantity=1)])
    kit = ValueEntityTestKit(cart, "cart-3", state=stored)
    failed = kit.run("AddItem", cart_pb2.AddLineItem(product_id="z", quantity=0))
    assert failed.failure == "cannot add 0 of z"
    assert failed.state_action is None
    broke = kit.run("CheckoutCart", cart_pb2.Checkout(fail=True))
    assert broke.failure is not None
    assert "value entity 'cart' (larder.sdktest.CartService), entity 'cart-3'" in broke.failure
    assert "RuntimeError: checkout broke after clearing the cart" in broke.failure
    assert kit.state == stored


def test_value_entity_forward_and_side_effect(cart: ValueEntity[Any]) -> None:
    kit = ValueEntityTestKit(cart, "cart-4")
    result = kit.run("CheckoutCart", cart_pb2.Checkout(cart_id="cart-4"))
    assert result.forward is not None
    assert result.forward.message == counter_pb2.IncreaseValue(counter_id="checkouts", value=1)
    (effect,) = result.side_effects
    assert (effect.service_name, effect.command_name, effect.synchronous) == (
        "larder.sdktest.EchoAction",
        "Echo",
        True,
    )
    assert result.state_action == "delete"


def test_action_unary_reply_forward_fail_none_and_metadata(echo: Action) -> None:
    kit = ActionTestKit(echo)
    assert kit.run("Echo", echo_pb2.Ping(text="a")).reply == echo_pb2.Pong(text="a")
    forwarded = kit.run("Echo", echo_pb2.Ping(text="c-1", mode="forward")).forward
    assert forwarded is not None and forwarded.command_name == "Increase"
    assert kit.run("Echo", echo_pb2.Ping(text="x", mode="fail")).failure == "echo refused 'x'"
    raised = kit.run("Echo", echo_pb2.Ping(text="k", mode="raise")).failure
    assert raised == "action larder.sdktest.EchoAction: command 'Echo' failed: KeyError: 'k'"
    nothing = kit.run("Echo", echo_pb2.Ping(text="n", mode="none"))
    assert (nothing.reply, nothing.forward, nothing.failure) == (None, None, None)
    assert len(nothing.side_effects) == 1
    wrong = kit.run("Echo", echo_pb2.Ping(mode="wrong_type")).failure
    assert wrong is not None and "returned larder.sdktest.Ping" in wrong
    with_metadata = kit.run("Echo", echo_pb2.Ping(mode="metadata"), metadata={"x-in": "v"})
    assert with_metadata.reply == echo_pb2.Pong(text="v")
    assert with_metadata.reply_metadata == Metadata((("x-out", "yes"), ("x-bin", b"\x00\x01")))


async def test_action_streamed_in(echo: Action) -> None:
    kit = ActionTestKit(echo)
    pings = [echo_pb2.Ping(text=t) for t in ("a", "b", "c")]
    assert (await kit.stream_in("Collect", pings)).reply == echo_pb2.Pong(text="a,b,c")
    refused = await kit.stream_in("Collect", [echo_pb2.Ping(text="fail")])
    assert refused.failure == "collect refused after 1 pings"


async def test_action_streamed_out(echo: Action) -> None:
    kit = ActionTestKit(echo)
    results = await kit.stream_out("Repeat", echo_pb2.Ping(text="r", count=3, mode="forward"))
    assert [r.reply for r in results[:3]] == [echo_pb2.Pong(text=f"r-{i}") for i in range(3)]
    assert results[3].forward is not None
    stopped = await kit.stream_out("Repeat", echo_pb2.Ping(text="r", count=3, mode="fail"))
    assert [r.failure for r in stopped] == [None, "repeat stopped at 1"]
    effects = await kit.stream_out("Repeat", echo_pb2.Ping(text="s", count=2, mode="side_effect"))
    # Side effects ride on the next reply only.
    assert [len(r.side_effects) for r in effects] == [1, 0]


async def test_action_streamed_out_side_effects_after_the_last_reply_are_sent(
    echo: Action,
) -> None:
    kit = ActionTestKit(echo)
    # Repeat with count=0 requests its side effect and yields nothing.
    (last,) = await kit.stream_out("Repeat", echo_pb2.Ping(text="s", count=0, mode="side_effect"))
    assert last.reply is None and last.forward is None and last.failure is None
    assert [e.message for e in last.side_effects] == [
        counter_pb2.IncreaseValue(counter_id="s", value=1)
    ]


async def test_action_streamed_both_ways(echo: Action) -> None:
    kit = ActionTestKit(echo)
    pings = [echo_pb2.Ping(text="a"), echo_pb2.Ping(mode="none"), echo_pb2.Ping(text="b")]
    results = await kit.streamed("Chat", pings)
    assert [r.reply for r in results] == [echo_pb2.Pong(text="A"), None, echo_pb2.Pong(text="B")]
    broken = await kit.streamed("Chat", [echo_pb2.Ping(text="a"), echo_pb2.Ping(mode="raise")])
    assert broken[0].reply == echo_pb2.Pong(text="A")
    assert broken[1].failure == (
        "action larder.sdktest.EchoAction: command 'Chat' failed: RuntimeError: chat broke"
    )


async def test_sync_generator_handlers_stream_too() -> None:
    echo = Action(echo_pb2.DESCRIPTOR.services_by_name["EchoAction"])
    echo.command_handler("Echo")(lambda ping, ctx: ping)
    echo.command_handler("Collect")(lambda pings, ctx: None)

    def repeat(ping: Any, ctx: Any) -> Any:
        yield echo_pb2.Pong(text=ping.text)

    echo.command_handler("Repeat")(repeat)
    echo.command_handler("Chat")(repeat)
    kit = ActionTestKit(echo)
    results = await kit.stream_out("Repeat", echo_pb2.Ping(text="g"))
    assert [r.reply for r in results] == [echo_pb2.Pong(text="g")]


def test_value_entity_unknown_command_and_wrong_return(cart: ValueEntity[Any]) -> None:
    kit = ValueEntityTestKit(cart, "cart-5")
    unknown = kit.run("AddItems", cart_pb2.AddLineItem())
    assert unknown.failure is not None
    assert "entity 'cart-5': unknown command 'AddItems' (did you mean 'AddItem'?)" in (
        unknown.failure
    )

    def wrong(state: Any, command: Any, ctx: Any) -> Any:
        ctx.update_state(cart_pb2.Cart(items=[cart_pb2.LineItem(product_id="x")]))
        return cart_pb2.Cart()

    cart.handlers.pop("RemoveCart")
    cart.command_handler("RemoveCart")(wrong)
    result = kit.run("RemoveCart", cart_pb2.RemoveShoppingCart())
    assert result.failure is not None and "returned larder.sdktest.Cart" in result.failure
    assert kit.state == cart_pb2.Cart()
