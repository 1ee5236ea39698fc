"""The shopping cart's carts-by-product view through the SDK's test kits: the entity's own
events, fed to the view's update handlers as the sidecar feeds them."""

from __future__ import annotations

import shoppingcart.shopping_cart_api_pb2 as api
import shoppingcart.shopping_cart_domain_pb2 as domain
import shoppingcart.shopping_cart_view_pb2 as pb
from google.protobuf.message import Message
from larder_sdk.testkit import EventSourcedTestKit, ViewTestKit
from shoppingcart.cart import entity
from shoppingcart.carts_by_product import row_key, view

UPDATES = {domain.ItemAdded: "OnItemAdded", domain.ItemRemoved: "OnItemRemoved"}


class Carts:
    """Carts (entity test kits) whose every event goes on to the view, keyed by its cart."""

    def __init__(self) -> None:
        self.view = ViewTestKit(view)
        self._carts: dict[str, EventSourcedTestKit[domain.Cart]] = {}

    def run(self, user_id: str, command_name: str, command: Message) -> None:
        cart = self._carts.setdefault(user_id, EventSourcedTestKit(entity, user_id))
        result = cart.run(command_name, command)
        assert result.failure is None, result.failure
        for event in result.events:
            update = self.view.update(UPDATES[type(event)], event, key=user_id)
            assert not update.failed, update.failure

    def add(self, user_id: str, product_id: str, quantity: int = 1) -> None:
        self.run(user_id, "AddItem", api.AddLineItem(
            user_id=user_id, product_id=product_id, name=product_id.title(), quantity=quantity))

    def remove(self, user_id: str, product_id: str) -> None:
        self.run(user_id, "RemoveItem",
                 api.RemoveLineItem(user_id=user_id, product_id=product_id))

    def holding(self, product_id: str) -> list[str]:
        """The users whose carts hold the product, as the query selects them (key order)."""
        rows = self.view.rows("product_carts")
        return [row.user_id for _, row in sorted(rows.items())  # type: ignore[attr-defined]
                if row.product_id == product_id]  # type: ignore[attr-defined]


def test_a_cart_has_a_row_per_product_it_holds() -> None:
    carts = Carts()
    carts.add("alice", "sock")
    carts.add("alice", "hat")
    carts.add("bob", "sock", 2)
    assert carts.holding("sock") == ["alice", "bob"]
    assert carts.holding("hat") == ["alice"]
    assert carts.view.row("product_carts", row_key("bob", "sock")) == pb.ProductCart(
        product_id="sock", user_id="bob", name="Sock")


def test_adding_more_of_a_product_keeps_one_row() -> None:
    carts = Carts()
    carts.add("alice", "sock")
    carts.add("alice", "sock", 4)
    assert list(carts.view.rows("product_carts")) == [row_key("alice", "sock")]


def test_removing_an_item_removes_only_that_carts_row() -> None:
    carts = Carts()
    carts.add("alice", "sock")
    carts.add("alice", "hat")
    carts.add("bob", "sock")
    carts.remove("alice", "sock")
    assert carts.holding("sock") == ["bob"]
    assert carts.holding("hat") == ["alice"]
    carts.add("alice", "sock")  # back in the cart, back in the view
    assert carts.holding("sock") == ["alice", "bob"]


def test_ids_with_the_separator_do_not_run_into_each_other() -> None:
    carts = Carts()
    carts.add("a,b", "c")
    carts.add("a", "b,c")
    assert len(carts.view.rows("product_carts")) == 2
    assert row_key("a,b", "c") != row_key("a", "b,c")


def test_an_event_without_its_cart_fails_the_update_and_stores_nothing() -> None:
    kit = ViewTestKit(view)
    # The test kit sets ce-subject from the key; an empty one is what a missing one means.
    result = kit.update("OnItemRemoved", domain.ItemRemoved(product_id="sock"), key="",
                        metadata={"ce-subject": ""})
    assert result.status == "UNKNOWN"
    assert result.failure is not None and "carries no ce-subject (its cart)" in result.failure
    assert kit.rows("product_carts") == {}
