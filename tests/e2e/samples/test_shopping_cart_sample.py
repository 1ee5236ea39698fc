"""The shopping-cart sample through the real sidecar: its README's curls, HTTP, gRPC."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import shoppingcart.shopping_cart_api_pb2 as api
from google.protobuf.empty_pb2 import Empty

from tests.e2e.devcli.dev_process import http
from tests.e2e.samples.sample_run import SAMPLES, curl, running_sample, unary

README = SAMPLES / "shopping-cart" / "README.md"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_sample("shopping-cart", tmp_path_factory.mktemp("cart")) as public_port:
        yield public_port


def readme_block_after(marker: str) -> list[str]:
    text = README.read_text()
    block = text[text.index(marker):].split("```")[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_the_readme_curls_answer_what_the_readme_says(port: int) -> None:
    commands = [c for c in readme_block_after("Then:") if c.startswith("curl")]
    answers = readme_block_after("The answers, in order:")
    assert len(commands) == len(answers) == 4
    for command, answer in zip(commands, answers, strict=True):
        assert curl(command.replace("localhost:9000", f"localhost:{port}")) == answer


def test_refusals_carry_the_reason(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    status, body = http("POST", f"{base}/cart/carol/items/add",
                        {"product_id": "akka-tshirt", "name": "Akka T-Shirt", "quantity": -1})
    assert status >= 400
    assert body["message"] == "Cannot add negative quantity of item akka-tshirt"
    status, body = http("POST", f"{base}/cart/carol/items/akka-tshirt/remove")
    assert status >= 400
    assert body["message"] == "Cannot remove item akka-tshirt because it is not in the cart"


def test_the_generic_route_and_gets(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    for quantity in (1, 2):
        assert http("POST", f"{base}/com.example.shoppingcart.ShoppingCartService/AddItem",
                    {"user_id": "dave", "product_id": "mug", "name": "Mug",
                     "quantity": quantity}) == (200, {})
    expected = [{"productId": "mug", "name": "Mug", "quantity": 3}]
    assert http("GET", f"{base}/carts/dave") == (200, {"items": expected})
    assert http("GET", f"{base}/carts/dave/items") == (200, expected)
    assert http("POST", f"{base}/com.example.shoppingcart.ShoppingCartService/GetCart",
                {"user_id": "dave"}) == (200, {"items": expected})


def test_grpc(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        service = "/com.example.shoppingcart.ShoppingCartService"
        assert unary(channel, f"{service}/AddItem", api.AddLineItem(
            user_id="erin", product_id="hat", name="Hat", quantity=1), Empty) == Empty()
        assert unary(channel, f"{service}/GetCart", api.GetShoppingCart(user_id="erin"),
                     api.Cart) == api.Cart(
            items=[api.LineItem(product_id="hat", name="Hat", quantity=1)])
        with pytest.raises(grpc.RpcError) as refused:
            unary(channel, f"{service}/RemoveItem",
                  api.RemoveLineItem(user_id="erin", product_id="scarf"), Empty)
    assert refused.value.details() == "Cannot remove item scarf because it is not in the cart"


def test_the_readme_says_where_the_build_context_is() -> None:
    assert re.search(r"build context is the \*\*repository root\*\*", README.read_text())
    assert Path(SAMPLES / "shopping-cart" / "Dockerfile").is_file()
