"""The cart entity: commands decide which events happen, events change the cart."""

from __future__ import annotations

from google.protobuf.empty_pb2 import Empty
from larder_sdk import EventSourcedContext, EventSourcedEntity

import shoppingcart.shopping_cart_api_pb2 as api
import shoppingcart.shopping_cart_domain_pb2 as domain

ENTITY_TYPE = "shopping-cart"

entity: EventSourcedEntity[domain.Cart] = EventSourcedEntity(
    api.DESCRIPTOR.services_by_name["ShoppingCartService"],
    entity_type=ENTITY_TYPE,
    state_type=domain.Cart,
    snapshot_every=5,
    events=[domain.ItemAdded, domain.ItemRemoved],
)


@entity.command_handler
def add_item(state: domain.Cart, command: api.AddLineItem, context: EventSourcedContext) -> Empty:
    if command.quantity < 0:
        context.fail(f"Cannot add negative quantity of item {command.product_id}")
    if command.quantity == 0:
        context.fail(f"Cannot add zero quantity of item {command.product_id}")
    context.emit(domain.ItemAdded(item=domain.LineItem(
        product_id=command.product_id, name=command.name, quantity=command.quantity)))
    return Empty()


@entity.command_handler
def remove_item(
    state: domain.Cart, command: api.RemoveLineItem, context: EventSourcedContext
) -> Empty:
    if not any(item.product_id == command.product_id for item in state.items):
        context.fail(f"Cannot remove item {command.product_id} because it is not in the cart")
    context.emit(domain.ItemRemoved(product_id=command.product_id))
    return Empty()


@entity.command_handler
def get_cart(state: domain.Cart, command: api.GetShoppingCart,
             context: EventSourcedContext) -> api.Cart:
    return api.Cart(items=[
        api.LineItem(product_id=item.product_id, name=item.name, quantity=item.quantity)
        for item in state.items
    ])


@entity.event_handler
def item_added(state: domain.Cart, event: domain.ItemAdded) -> domain.Cart:
    cart = _copy(state)
    for item in cart.items:
        if item.product_id == event.item.product_id:
            item.quantity += event.item.quantity
            return cart
    cart.items.append(event.item)
    return cart


@entity.event_handler
def item_removed(state: domain.Cart, event: domain.ItemRemoved) -> domain.Cart:
    return domain.Cart(items=[i for i in state.items if i.product_id != event.product_id])


def _copy(state: domain.Cart) -> domain.Cart:
    # Event handlers return a new state rather than changing the one they were given.
    cart = domain.Cart()
    cart.CopyFrom(state)
    return cart
