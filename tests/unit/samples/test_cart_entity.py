"""The shopping cart entity through the SDK's test kit."""

from __future__ import annotations

import shoppingcart.shopping_cart_api_pb2 as api
import shoppingcart.shopping_cart_domain_pb2 as domain
from google.protobuf.empty_pb2 import Empty
from larder_sdk.testkit import EventSourcedTestKit
from shoppingcart.cart import entity


def add(product_id: str, name: str, quantity: int) -> api.AddLineItem:
    return api.AddLineItem(user_id="u1", product_id=product_id, name=name, quantity=quantity)


def item(product_id: str, name: str, quantity: int) -> domain.LineItem:
    return domain.LineItem(product_id=product_id, name=name, quantity=quantity)


def get(kit: EventSourcedTestKit[domain.Cart]) -> api.Cart:
    reply = kit.run("GetCart", api.GetShoppingCart(user_id="u1")).reply
    assert isinstance(reply, api.Cart)
    return reply


def test_a_new_cart_is_empty() -> None:
    assert get(EventSourcedTestKit(entity, "u1")) == api.Cart()


def test_adding_emits_item_added_and_the_cart_shows_it() -> None:
    kit = EventSourcedTestKit(entity, "u1")
    result = kit.run("AddItem", add("akka-tshirt", "Akka T-Shirt", 3))
    assert result.reply == Empty()
    assert result.events == (domain.ItemAdded(item=item("akka-tshirt", "Akka T-Shirt", 3)),)
    assert get(kit) == api.Cart(items=[
        api.LineItem(product_id="akka-tshirt", name="Akka T-Shirt", quantity=3)])


def test_adding_the_same_product_again_raises_its_quantity_in_place() -> None:
    kit = EventSourcedTestKit(entity, "u1")
    kit.run("AddItem", add("a", "A", 1))
    kit.run("AddItem", add("b", "B", 2))
    kit.run("AddItem", add("a", "A", 4))
    assert [(i.product_id, i.quantity) for i in get(kit).items] == [("a", 5), ("b", 2)]


def test_negative_and_zero_quantities_fail_without_events() -> None:
    kit = EventSourcedTestKit(entity, "u1")
    negative = kit.run("AddItem", add("akka-tshirt", "Akka T-Shirt", -1))
    assert negative.failure == "Cannot add negative quantity of item akka-tshirt"
    assert negative.events == ()
    zero = kit.run("AddItem", add("akka-tshirt", "Akka T-Shirt", 0))
    assert zero.failure == "Cannot add zero quantity of item akka-tshirt"
    assert get(kit) == api.Cart()


def test_removing_takes_the_item_out() -> None:
    kit = EventSourcedTestKit(entity, "u1")
    kit.run("AddItem", add("a", "A", 1))
    kit.run("AddItem", add("b", "B", 2))
    result = kit.run("RemoveItem", api.RemoveLineItem(user_id="u1", product_id="a"))
    assert result.events == (domain.ItemRemoved(product_id="a"),)
    assert [i.product_id for i in get(kit).items] == ["b"]


def test_removing_an_item_not_in_the_cart_fails() -> None:
    kit = EventSourcedTestKit(entity, "u1")
    result = kit.run("RemoveItem", api.RemoveLineItem(user_id="u1", product_id="nope"))
    assert result.failure == "Cannot remove item nope because it is not in the cart"
    assert result.events == ()


def test_every_fifth_event_carries_a_snapshot_of_the_cart() -> None:
    kit = EventSourcedTestKit(entity, "u1")
    snapshots = [kit.run("AddItem", add(f"p{n}", f"P{n}", 1)).snapshot for n in range(1, 11)]
    assert [s is not None for s in snapshots] == [False, False, False, False, True] * 2
    fifth = snapshots[4]
    assert isinstance(fifth, domain.Cart)
    assert [i.product_id for i in fifth.items] == ["p1", "p2", "p3", "p4", "p5"]


def test_a_cart_restored_from_a_snapshot_and_later_events_is_the_same_cart() -> None:
    live = EventSourcedTestKit(entity, "u1")
    for n in range(1, 8):
        live.run("AddItem", add(f"p{n}", f"P{n}", n))
    live.run("RemoveItem", api.RemoveLineItem(user_id="u1", product_id="p2"))
    snapshot = live.all_events[:5]
    at_five = EventSourcedTestKit(entity, "u1", events=snapshot).state
    restored = EventSourcedTestKit(entity, "u1", snapshot=(5, at_five),
                                   events=live.all_events[5:])
    assert restored.state == live.state
    assert restored.sequence == live.sequence == 8
