"""The shopping-cart sample's carts-by-product view through `larder dev` on the SQLite
journal: the cart's events reach the view through the sample's update handlers, and the
sidecar answers the query over HTTP and gRPC; the README's view commands answer what the
README says."""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import shoppingcart.shopping_cart_view_pb2 as pb

from tests.e2e.devcli.dev_process import eventually, http
from tests.e2e.samples.sample_run import SAMPLES, curl, running_sample, unary

README = SAMPLES / "shopping-cart" / "README.md"
GET_CARTS = "/com.example.shoppingcart.view.CartsByProduct/GetCarts"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    data = tmp_path_factory.mktemp("cart-view")
    with running_sample("shopping-cart", data, journal="sqlite") as public_port:
        yield public_port, data


def row(user_id: str, product_id: str, name: str) -> dict[str, str]:
    return {"productId": product_id, "userId": user_id, "name": name}


def add(base: str, user_id: str, product_id: str, name: str, quantity: int = 1) -> None:
    assert http("POST", f"{base}/cart/{user_id}/items/add",
                {"product_id": product_id, "name": name, "quantity": quantity}) == (200, {})


def test_the_readme_view_commands_answer_what_the_readme_says(run: tuple[int, Path]) -> None:
    port, _ = run
    text = README.read_text()
    section = text[text.index("## The view: carts by product"):]
    commands = [line for line in section.split("```")[1].splitlines()[1:] if line.strip()]
    answers = [line for line in section.split("```")[3].splitlines()[1:] if line.strip()]
    assert len(commands) == len(answers) == 5
    for written, answer in zip(commands, answers, strict=True):
        command = written.replace("localhost:9000", f"localhost:{port}")
        if "/product-carts/" in command:
            assert eventually(functools.partial(curl, command), answer) == answer, command
        else:
            assert curl(command) == answer, command


def test_carts_by_product_over_http_and_grpc(run: tuple[int, Path]) -> None:
    port, data = run
    base = f"http://127.0.0.1:{port}"
    add(base, "fay", "lamp", "Lamp")
    add(base, "gus", "lamp", "Lamp", 2)
    add(base, "gus", "rug", "Rug")
    add(base, "fay", "lamp", "Lamp", 3)  # more of a product the cart holds: one row still
    both = {"carts": [row("fay", "lamp", "Lamp"), row("gus", "lamp", "Lamp")]}

    def over_http(product_id: str) -> tuple[int, Any]:
        return http("GET", f"{base}/product-carts/{product_id}")

    assert eventually(lambda: over_http("lamp"), (200, both)) == (200, both)
    assert eventually(lambda: over_http("rug"), (200, {"carts": [row("gus", "rug", "Rug")]})
                      ) == (200, {"carts": [row("gus", "rug", "Rug")]})
    assert over_http("nothing") == (200, {"carts": []})
    # The generic route answers the same.
    assert http("POST", f"{base}{GET_CARTS}",
                {"product_id": "lamp"}) == (200, both)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        def over_grpc() -> pb.ProductCarts:
            return unary(channel, GET_CARTS, pb.ByProduct(product_id="lamp"), pb.ProductCarts)

        assert over_grpc() == pb.ProductCarts(carts=[
            pb.ProductCart(product_id="lamp", user_id="fay", name="Lamp"),
            pb.ProductCart(product_id="lamp", user_id="gus", name="Lamp"),
        ])
        # Removing the item takes the cart out of the product's rows, and only that one.
        assert http("POST", f"{base}/cart/fay/items/lamp/remove") == (200, {})
        only_gus = pb.ProductCarts(carts=[
            pb.ProductCart(product_id="lamp", user_id="gus", name="Lamp")])
        assert eventually(over_grpc, only_gus) == only_gus
    assert over_http("lamp") == (200, {"carts": [row("gus", "lamp", "Lamp")]})
    assert over_http("rug") == (200, {"carts": [row("gus", "rug", "Rug")]})
    # The rows live in the view store next to the SQLite journal.
    assert (data / "shopping-cart" / "journal-views.db").is_file()


def test_the_readme_grpcurl_for_the_view(run: tuple[int, Path], grpcurl_binary: Path) -> None:
    port, _ = run
    base = f"http://127.0.0.1:{port}"
    text = README.read_text()
    section = text[text.index("## The view: carts by product"):]
    (command,) = [line for line in section.splitlines() if line.startswith("grpcurl ")]
    add(base, "hal", "akka-cap", "Akka Cap")
    argv = shlex.split(command.replace("akka-mug", "akka-cap")
                       .replace("localhost:9000", f"localhost:{port}"))
    # grpcurl prints the proto field names.
    expected: object = {
        "carts": [{"product_id": "akka-cap", "user_id": "hal", "name": "Akka Cap"}]}

    def call() -> object:
        # grpcurl learns the method's types through the sidecar's reflection.
        done = subprocess.run([str(grpcurl_binary), *argv[1:]], capture_output=True,
                              text=True, timeout=60, check=True)
        return json.loads(done.stdout)

    assert eventually(call, expected) == expected

