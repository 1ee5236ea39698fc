"""A view declared with the published PyPI SDK 0.1.13 (`View`, no update handler: the SDK
serves no `Views/Handle`, so the value entity's state is the row) behind a real
larder-sidecar on the SQLite journal, queried over HTTP and gRPC."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.e2e.compat.carts import FUNCTIONS, PROTO_DIR
from tests.e2e.compat.client import http
from tests.e2e.compat.stack import CompatStack, FunctionSpec
from tests.infra import published_sdks
from tests.infra.published_sdks import PublishedSdks

SOURCES = ("compatitems/items.proto",)
PACKAGE = "com.example.compat.items"


@pytest.fixture(scope="module")
def stack(sdks: PublishedSdks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatStack]:
    workdir = tmp_path_factory.mktemp("compat-pypi-view")
    generated = workdir / "generated"
    published_sdks.compile_for_pypi_sdk(sdks, [PROTO_DIR], SOURCES, generated)
    spec = FunctionSpec(
        name="pypi-items-view",
        argv=[str(sdks.python), str(FUNCTIONS / "pypi_items_view" / "items.py")],
        cwd=workdir,
        env={**published_sdks.PYPI_SDK_ENV, "PYTHONPATH": str(generated)},
    )
    running = CompatStack(spec, workdir, {})
    try:
        running.start()
        yield running
    finally:
        running.close()


def _eventually(read: Callable[[], Any], want: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    got = None
    while time.monotonic() < deadline:
        got = read()
        if got == want:
            return
        time.sleep(0.1)
    pytest.fail(f"the view showed {got!r}, not {want!r}, within {within:g}s")


def test_a_view_declared_with_the_published_pypi_sdk_runs_through_the_sidecar(
    stack: CompatStack, sdks: PublishedSdks
) -> None:
    for item_id, name, price in [("a", "apple", 3), ("b", "bean", 1), ("c", "cherry", 9)]:
        body = {"name": name, "price": price}
        assert http("POST", f"{stack.base_url}/items/{item_id}", body) == (200, {})

    def cheaper(price: int) -> list[str]:
        status, reply = http("GET", f"{stack.base_url}/items/cheaper/{price}")
        assert status == 200, reply
        return [item["itemId"] for item in reply["items"]]

    _eventually(lambda: cheaper(5), ["a", "b"])
    assert http("POST", f"{stack.base_url}/items/b", {"name": "bean", "price": 7}) == (200, {})
    _eventually(lambda: cheaper(5), ["a"])
    # Over gRPC too, with the messages of the function's own descriptor set.
    files = descriptor_pb2.FileDescriptorSet.FromString(
        published_sdks.compile_descriptor_set([PROTO_DIR, sdks.npm_proto_dir], SOURCES)
    )
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    method = pool.FindServiceByName(f"{PACKAGE}.ItemsByPrice").FindMethodByName("Cheaper")
    request: Any = message_factory.GetMessageClass(method.input_type)
    reply = message_factory.GetMessageClass(method.output_type)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        call = channel.unary_unary(
            f"/{PACKAGE}.ItemsByPrice/Cheaper",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        answer: Any = call(request(max_price=10), timeout=30)
    assert [(i.item_id, i.price) for i in answer.items] == [("a", 3), ("b", 7), ("c", 9)]
