"""The carts-by-product view: one row per cart and product, kept from the cart's events.

The rows are keyed by the handlers (`ctx.row_key`), not by the cart's id, because a cart
holds many products and a view query cannot filter on a repeated field: a cart's
`ItemAdded` stores the row of (cart, product), its `ItemRemoved` deletes that row.
"""

from __future__ import annotations

import json

from larder_sdk import DELETE_ROW, DeleteRow, View, ViewContext

import shoppingcart.shopping_cart_domain_pb2 as domain
import shoppingcart.shopping_cart_view_pb2 as pb

view = View(pb.DESCRIPTOR.services_by_name["CartsByProduct"])


def row_key(user_id: str, product_id: str) -> str:
    """The key of a cart's row for a product: JSON, so no ids can run into each other
    (`"a,b" + "c"` and `"a" + "b,c"` stay apart); rows are read in key order, by user."""
    return json.dumps([user_id, product_id])


def _cart_of(ctx: ViewContext) -> str:
    user_id = ctx.event_subject
    if not user_id:
        # The sidecar names the event's entity in ce-subject; without it the row's cart
        # is unknown, and a row under a made-up cart would be wrong for good.
        raise ValueError(f"{ctx.command_name}: the event carries no ce-subject (its cart)")
    return user_id


@view.update_handler
def on_item_added(
    row: pb.ProductCart | None, event: domain.ItemAdded, ctx: ViewContext
) -> pb.ProductCart:
    user_id = _cart_of(ctx)
    ctx.row_key = row_key(user_id, event.item.product_id)
    # Adding more of a product the cart holds writes the same row again.
    return pb.ProductCart(
        product_id=event.item.product_id, user_id=user_id, name=event.item.name
    )


@view.update_handler
def on_item_removed(
    row: pb.ProductCart | None, event: domain.ItemRemoved, ctx: ViewContext
) -> DeleteRow:
    ctx.row_key = row_key(_cart_of(ctx), event.product_id)
    return DELETE_ROW
