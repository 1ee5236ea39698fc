"""The shopping-cart sample through the real sidecar, called by gRPC clients of three
languages: grpcio (Python, the generated stubs), @grpc/grpc-js (Node, proto-loader on the
sample's .proto files) and grpc-go (ghz). Each changes a cart and reads it back, so every
client's calls go through the sidecar's own HTTP/2 layer to the entity and its journal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
import larder_protocol
import pytest
import shoppingcart.shopping_cart_api_pb2 as api
import shoppingcart.shopping_cart_api_pb2_grpc as api_grpc
from google.protobuf.empty_pb2 import Empty

from tests.e2e.samples.sample_run import SAMPLES, running_sample
from tests.infra.servers import ghz_binary, grpc_js_node_modules

PROTO_ROOT = SAMPLES / "shopping-cart" / "proto"
API_PROTO = "shoppingcart/shopping_cart_api.proto"
# The sample's protos import Larder's annotations, google/api and the well-known types.
INCLUDE_DIRS = (PROTO_ROOT, larder_protocol.include_dir(),
                Path(grpc_tools.__file__).parent / "_proto")
NODE_CLIENT = Path(__file__).resolve().parent / "grpc_js_client" / "client.js"
SERVICE = "com.example.shoppingcart.ShoppingCartService"
CLIENT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_sample("shopping-cart", tmp_path_factory.mktemp("cart-clients"),
                        journal="sqlite") as public_port:
        yield public_port


@pytest.fixture(scope="module")
def stub(port: int) -> Iterator[api_grpc.ShoppingCartServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # The generated stubs, as a grpcio user calls the service. grpcio-tools' plugin
        # writes them without annotations, and they exist only once the sample's code is
        # generated: typed as Any here, so mypy reads this the same either way.
        stub_class: Any = api_grpc.ShoppingCartServiceStub
        yield stub_class(channel)


def cart(stub: api_grpc.ShoppingCartServiceStub, user_id: str) -> list[tuple[str, str, int]]:
    reply = stub.GetCart(api.GetShoppingCart(user_id=user_id), timeout=30)
    return [(item.product_id, item.name, item.quantity) for item in reply.items]


def test_grpcio(stub: api_grpc.ShoppingCartServiceStub) -> None:
    add = stub.AddItem.with_call(
        api.AddLineItem(user_id="py-ann", product_id="tshirt", name="T-Shirt", quantity=2),
        timeout=30)
    assert add[0] == Empty()
    assert add[1].code() == grpc.StatusCode.OK
    stub.AddItem(api.AddLineItem(user_id="py-ann", product_id="mug", name="Mug", quantity=1),
                 timeout=30)
    assert cart(stub, "py-ann") == [("tshirt", "T-Shirt", 2), ("mug", "Mug", 1)]

    assert stub.RemoveItem(api.RemoveLineItem(user_id="py-ann", product_id="tshirt"),
                           timeout=30) == Empty()
    assert cart(stub, "py-ann") == [("mug", "Mug", 1)]

    with pytest.raises(grpc.RpcError) as refused:
        stub.RemoveItem(api.RemoveLineItem(user_id="py-ann", product_id="scarf"), timeout=30)
    # A user function's failure carries no status code in protocol 0.7: UNKNOWN with its
    # message (docs/compatibility.md).
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert refused.value.details() == "Cannot remove item scarf because it is not in the cart"

    # No entity key: the sidecar refuses before any entity is involved.
    with pytest.raises(grpc.RpcError) as keyless:
        stub.AddItem(api.AddLineItem(product_id="mug", name="Mug", quantity=1), timeout=30)
    assert keyless.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty entity key field" in (keyless.value.details() or "")
    assert cart(stub, "py-ann") == [("mug", "Mug", 1)]


def node_env() -> dict[str, str]:
    # The client's dependencies are installed into the test cache from its lock, not
    # next to client.js; NODE_PATH is where require() finds them.
    return {**os.environ, "NODE_PATH": str(grpc_js_node_modules())}


def run_node_client(port: int, user_id: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "the @grpc/grpc-js client needs node on PATH"
    return subprocess.run(
        [node, str(NODE_CLIENT), f"127.0.0.1:{port}", user_id, API_PROTO,
         *map(str, INCLUDE_DIRS)],
        env=node_env(), capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)


def test_grpc_js(port: int, stub: api_grpc.ShoppingCartServiceStub) -> None:
    done = run_node_client(port, "node-bob")
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    assert results["add_tshirt"] == results["add_mug"] == {"reply": {}}
    assert results["after_add"] == {"reply": {"items": [
        {"product_id": "tshirt", "name": "T-Shirt", "quantity": 2},
        {"product_id": "mug", "name": "Mug", "quantity": 1}]}}
    assert results["remove_tshirt"] == {"reply": {}}
    assert results["after_remove"] == {"reply": {"items": [
        {"product_id": "mug", "name": "Mug", "quantity": 1}]}}
    assert results["remove_missing"] == {
        "code": grpc.StatusCode.UNKNOWN.value[0], "status": "UNKNOWN",
        "details": "Cannot remove item scarf because it is not in the cart"}
    assert results["empty_key"]["status"] == "INVALID_ARGUMENT"
    assert "empty entity key field" in results["empty_key"]["details"]
    # What the Node client left is what a Python client reads.
    assert cart(stub, "node-bob") == [("mug", "Mug", 1)]


def ghz(port: int, method: str, data: dict[str, Any], calls: int) -> dict[str, Any]:
    args = [str(ghz_binary()), "--insecure", "--proto", str(PROTO_ROOT / API_PROTO)]
    args += [f"--import-paths={','.join(map(str, INCLUDE_DIRS))}"]
    args += ["--call", f"{SERVICE}/{method}", "--data", json.dumps(data),
             "-n", str(calls), "-c", "10", "--connections", "2", "--timeout", "30s",
             "--format", "json", f"127.0.0.1:{port}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"ghz exited with {done.returncode}: {done.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_ghz(port: int, stub: api_grpc.ShoppingCartServiceStub) -> None:
    added = ghz(port, "AddItem",
                {"user_id": "go-cyd", "product_id": "bolt", "name": "Bolt", "quantity": 1}, 200)
    assert added["count"] == 200
    assert added["statusCodeDistribution"] == {"OK": 200}, added.get("errorDistribution")
    # Ten callers at once on one cart: every add counted once, none lost or doubled.
    assert cart(stub, "go-cyd") == [("bolt", "Bolt", 200)]

    read = ghz(port, "GetCart", {"user_id": "go-cyd"}, 50)
    assert read["count"] == 50
    assert read["statusCodeDistribution"] == {"OK": 50}, read.get("errorDistribution")
