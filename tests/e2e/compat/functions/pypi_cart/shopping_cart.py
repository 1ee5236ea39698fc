# The SDK ships no type information and the generated modules exist only at run
# time (in the SDK's virtualenv), so our type checker cannot see either.
# mypy: disable-error-code="import-untyped,import-not-found,untyped-decorator"
"""A shopping cart written with the published PyPI SDK ``akkaserverless`` 0.1.13.

Runs in the SDK's own virtualenv, with the modules generated from
``../proto/compatcart/*.proto`` on ``PYTHONPATH``. ``SNAPSHOT_EVERY`` (default 0:
no snapshots) sets the entity's snapshot interval.

No ``from __future__ import annotations`` here: the SDK injects handler arguments
by parameter *name* (``state``, ``command``, ``event``, ``context``) and checks
them with ``isinstance`` against the annotations, which must be real classes.
"""

import logging
import os
from dataclasses import dataclass, field

from akkaserverless.akkaserverless_service import AkkaServerlessService
from akkaserverless.event_sourced_context import EventSourcedCommandContext
from akkaserverless.event_sourced_entity import EventSourcedEntity
from compatcart import cart_api_pb2 as api
from compatcart import cart_domain_pb2 as domain
from google.protobuf.empty_pb2 import Empty

log = logging.getLogger("shopping_cart")


@dataclass
class CartState:
    entity_id: str
    # product id -> item, in the order products were first added
    items: dict[str, api.LineItem] = field(default_factory=dict)


def init(entity_id: str) -> CartState:
    return CartState(entity_id)


entity = EventSourcedEntity(
    api.DESCRIPTOR.services_by_name["ShoppingCartService"],
    [api.DESCRIPTOR, domain.DESCRIPTOR],
    "shopping-cart",
    init,
    snapshot_every=int(os.environ.get("SNAPSHOT_EVERY", "0")),
)


def to_domain(item: api.LineItem) -> domain.LineItem:
    return domain.LineItem(product_id=item.product_id, name=item.name, quantity=item.quantity)


def to_api(item: domain.LineItem) -> api.LineItem:
    return api.LineItem(product_id=item.product_id, name=item.name, quantity=item.quantity)


# The SDK ignores what an event handler returns after a command (only replayed
# events may replace the state), so the handlers change the state in place.
@entity.event_handler(domain.ItemAdded)
def item_added(state: CartState, event: domain.ItemAdded) -> None:
    existing = state.items.get(event.item.product_id)
    if existing is None:
        state.items[event.item.product_id] = to_api(event.item)
    else:
        existing.quantity += event.item.quantity


@entity.event_handler(domain.ItemRemoved)
def item_removed(state: CartState, event: domain.ItemRemoved) -> None:
    state.items.pop(event.product_id, None)


@entity.command_handler("AddItem")
def add_item(
    state: CartState, command: api.AddLineItem, context: EventSourcedCommandContext
) -> Empty:
    if command.quantity <= 0:
        context.fail(f"Cannot add quantity {command.quantity} of item {command.product_id}")
        return Empty()
    context.emit(domain.ItemAdded(item=to_domain(command)))
    return Empty()


@entity.command_handler("RemoveItem")
def remove_item(
    state: CartState, command: api.RemoveLineItem, context: EventSourcedCommandContext
) -> Empty:
    if command.product_id not in state.items:
        context.fail(f"Cannot remove item {command.product_id} because it is not in the cart")
        return Empty()
    context.emit(domain.ItemRemoved(product_id=command.product_id))
    return Empty()


@entity.command_handler("GetCart")
def get_cart(state: CartState, command: api.GetShoppingCart) -> api.Cart:
    return api.Cart(items=list(state.items.values()))


@entity.snapshot()
def snapshot(state: CartState) -> domain.Cart:
    return domain.Cart(items=[to_domain(item) for item in state.items.values()])


# The SDK hands the snapshot to the parameter named `event` (or `command`).
@entity.snapshot_handler()
def restore(state: CartState, event: domain.Cart) -> CartState:
    log.info("restored cart %s from a snapshot of %d items", state.entity_id, len(event.items))
    return CartState(state.entity_id, {item.product_id: to_api(item) for item in event.items})


if __name__ == "__main__":
    AkkaServerlessService().add_component(entity).start()
