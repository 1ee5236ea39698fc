"""Shopping carts written with the published SDKs, unmodified, behind a real larder-sidecar.

Each test runs once per SDK (PyPI ``akkaserverless`` 0.1.13 in its own virtualenv,
npm ``@lightbend/akkaserverless-javascript-sdk`` 0.32.0 on node), against one
function process and one sidecar with a SQLite journal per SDK.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest

from tests.e2e.compat.carts import ENTITY_TYPE, SERVICE
from tests.e2e.compat.client import CartGrpc, http
from tests.e2e.compat.conftest import RunningCart
from tests.e2e.compat.stack import LogMark


@pytest.fixture
def client(cart: RunningCart) -> Iterator[CartGrpc]:
    client = CartGrpc(cart.descriptor_set, cart.stack.grpc_target)
    yield client
    client.close()


def items(*entries: tuple[str, str, int]) -> list[dict[str, object]]:
    """A cart's items as the HTTP/JSON mapping writes them."""
    return [{"productId": p, "name": n, "quantity": q} for p, n, q in entries]


def get_cart(cart: RunningCart, user_id: str) -> object:
    status, body = http("GET", f"{cart.stack.base_url}/carts/{user_id}")
    assert status == 200, body
    return body


def add(cart: RunningCart, user_id: str, product_id: str, name: str, quantity: int) -> None:
    body = {"product_id": product_id, "name": name, "quantity": quantity}
    assert http("POST", f"{cart.stack.base_url}/cart/{user_id}/items/add", body) == (200, {})


def test_add_remove_and_get_over_grpc(cart: RunningCart, client: CartGrpc) -> None:
    client.call("AddItem", user_id="grpc", product_id="mug", name="Mug", quantity=2)
    client.call("AddItem", user_id="grpc", product_id="hat", name="Hat", quantity=1)
    client.call("AddItem", user_id="grpc", product_id="mug", name="Mug", quantity=3)
    assert client.call("GetCart", user_id="grpc") == client.message(
        "Cart",
        items=[
            client.message("LineItem", product_id="mug", name="Mug", quantity=5),
            client.message("LineItem", product_id="hat", name="Hat", quantity=1),
        ],
    )
    assert client.call("RemoveItem", user_id="grpc", product_id="mug").ByteSize() == 0
    assert client.call("GetCart", user_id="grpc") == client.message(
        "Cart", items=[client.message("LineItem", product_id="hat", name="Hat", quantity=1)]
    )
    # Another cart is another entity.
    assert client.call("GetCart", user_id="grpc-other") == client.message("Cart")


def test_add_remove_and_get_over_http(cart: RunningCart) -> None:
    base = cart.stack.base_url
    add(cart, "http", "mug", "Mug", 2)
    add(cart, "http", "hat", "Hat", 1)
    add(cart, "http", "mug", "Mug", 1)
    assert get_cart(cart, "http") == {"items": items(("mug", "Mug", 3), ("hat", "Hat", 1))}
    assert http("POST", f"{base}/cart/http/items/mug/remove") == (200, {})
    assert get_cart(cart, "http") == {"items": items(("hat", "Hat", 1))}
    # The generic route reaches the same entity.
    assert http(
        "POST", f"{base}/com.example.compat.cart.ShoppingCartService/GetCart", {"user_id": "http"}
    ) == (200, {"items": items(("hat", "Hat", 1))})


@pytest.mark.parametrize("quantity", [0, -1])
def test_a_non_positive_quantity_fails_with_the_users_message(
    cart: RunningCart, client: CartGrpc, quantity: int
) -> None:
    user = f"refused{quantity}"
    add(cart, user, "mug", "Mug", 1)
    description = cart.function.failure_description(f"Cannot add quantity {quantity} of item mug")

    with pytest.raises(grpc.RpcError) as refused:
        client.call("AddItem", user_id=user, product_id="mug", name="Mug", quantity=quantity)
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert refused.value.details() == description

    body = {"product_id": "mug", "name": "Mug", "quantity": quantity}
    assert http("POST", f"{cart.stack.base_url}/cart/{user}/items/add", body) == (
        500,
        {"code": grpc.StatusCode.UNKNOWN.value[0], "message": description, "details": []},
    )
    # Nothing was emitted by the failed commands.
    assert get_cart(cart, user) == {"items": items(("mug", "Mug", 1))}


def test_removing_an_item_not_in_the_cart_fails(cart: RunningCart) -> None:
    description = cart.function.failure_description(
        "Cannot remove item scarf because it is not in the cart"
    )
    assert http("POST", f"{cart.stack.base_url}/cart/nothing/items/scarf/remove") == (
        500,
        {"code": grpc.StatusCode.UNKNOWN.value[0], "message": description, "details": []},
    )


def test_state_survives_passivation(cart: RunningCart) -> None:
    stack = cart.stack
    passivations = stack.metric("larder_entity_passivations_total", f'entity_type="{ENTITY_TYPE}"')
    mark = LogMark(stack.sidecar)
    add(cart, "idle", "mug", "Mug", 2)
    add(cart, "idle", "hat", "Hat", 1)

    mark.wait_for(rf"passivated {ENTITY_TYPE}/idle \(idle\)")
    assert (
        stack.metric("larder_entity_passivations_total", f'entity_type="{ENTITY_TYPE}"')
        > passivations
    )

    mark = LogMark(stack.sidecar)
    assert get_cart(cart, "idle") == {"items": items(("mug", "Mug", 2), ("hat", "Hat", 1))}
    mark.wait_for(rf"activated {ENTITY_TYPE}/idle\b")


def test_state_survives_a_sidecar_restart(cart: RunningCart) -> None:
    add(cart, "durable", "mug", "Mug", 2)
    add(cart, "durable", "hat", "Hat", 1)
    assert http("POST", f"{cart.stack.base_url}/cart/durable/items/hat/remove") == (200, {})

    cart.stack.stop_sidecar()
    cart.stack.start_sidecar()

    assert get_cart(cart, "durable") == {"items": items(("mug", "Mug", 2))}
    add(cart, "durable", "mug", "Mug", 1)
    assert get_cart(cart, "durable") == {"items": items(("mug", "Mug", 3))}


def test_discovery_names_the_sdk_and_protocol_0_7(cart: RunningCart) -> None:
    log = cart.stack.sidecar.log_path.read_text(errors="replace")
    discovered = re.search(r"discovered .*\(([^)]*), protocol (\d+\.\d+)\): (\S+)", log)
    assert discovered is not None
    assert discovered.groups() == (cart.function.support_library, "0.7", SERVICE)
