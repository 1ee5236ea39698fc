"""A view written with the published npm SDK 0.32.0 (`View`, update handlers with
`transform_updates`), fed by the compatibility cart's events, behind a real larder-sidecar
on the SQLite journal: queried over gRPC and HTTP, and kept across a sidecar restart.

The PyPI SDK 0.1.13 declares views but serves no `Views/Handle`; its views without
`transform_updates` are what our own SDK's tests cover (tests/integration/views)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from tests.e2e.compat.carts import FUNCTIONS, PROTO_DIR
from tests.e2e.compat.client import CartGrpc, http
from tests.e2e.compat.stack import CompatStack, FunctionSpec
from tests.infra import published_sdks
from tests.infra.published_sdks import PublishedSdks

SOURCES = (
    "compatcart/cart_api.proto",
    "compatcart/cart_domain.proto",
    "compatview/cart_view.proto",
)
VIEW = "com.example.compat.view.CartQuantities"


class ViewGrpc:
    """The view's query methods, with messages built from the descriptor set."""

    def __init__(self, descriptor_set: bytes, target: str) -> None:
        pool = descriptor_pool.DescriptorPool()
        for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file:
            pool.Add(file)
        self._service = pool.FindServiceByName(VIEW)
        self._channel = grpc.insecure_channel(target)

    def _stub(self, method: str, streamed: bool) -> tuple[Any, Any]:
        descriptor = self._service.FindMethodByName(method)
        make = self._channel.unary_stream if streamed else self._channel.unary_unary
        stub = make(
            f"/{VIEW}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_factory.GetMessageClass(descriptor.output_type).FromString,
        )
        return stub, message_factory.GetMessageClass(descriptor.input_type)

    def stream(self, method: str, /, **fields: Any) -> list[Message]:
        stub, request = self._stub(method, True)
        return list(stub(request(**fields), timeout=30))

    def unary(self, method: str, /, **fields: Any) -> Message:
        stub, request = self._stub(method, False)
        reply: Message = stub(request(**fields), timeout=30)
        return reply

    def close(self) -> None:
        self._channel.close()


@pytest.fixture(scope="module")
def descriptor_set(sdks: PublishedSdks) -> bytes:
    return published_sdks.compile_descriptor_set([PROTO_DIR, sdks.npm_proto_dir], SOURCES)


@pytest.fixture(scope="module")
def stack(
    sdks: PublishedSdks, descriptor_set: bytes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CompatStack]:
    workdir = tmp_path_factory.mktemp("compat-npm-view")
    project = workdir / "project"
    project.mkdir()
    for name in ("index.js", "package.json"):
        shutil.copy(FUNCTIONS / "npm_cart_view" / name, project / name)
    shutil.copytree(PROTO_DIR, project / "proto")
    (project / "user-function.desc").write_bytes(descriptor_set)
    scope = project / "node_modules" / "@lightbend"
    scope.mkdir(parents=True)
    (scope / "akkaserverless-javascript-sdk").symlink_to(sdks.npm_package, target_is_directory=True)
    spec = FunctionSpec(name="npm-cart-view", argv=["node", "index.js"], cwd=project, env={})
    running = CompatStack(spec, workdir, {})
    try:
        running.start()
        yield running
    finally:
        running.close()


def _eventually(read: Callable[[], Any], want: Any, within: float = 20.0) -> None:
    """A view follows its entities after their writes are acknowledged: poll."""
    deadline = time.monotonic() + within
    got = None
    while time.monotonic() < deadline:
        got = read()
        if got == want:
            return
        time.sleep(0.1)
    pytest.fail(f"the view showed {got!r}, not {want!r}, within {within:g}s")


def test_a_view_of_the_published_npm_sdk_runs_through_the_sidecar(
    stack: CompatStack, descriptor_set: bytes
) -> None:
    carts = CartGrpc(descriptor_set, stack.grpc_target)
    view = ViewGrpc(descriptor_set, stack.grpc_target)
    try:
        carts.call("AddItem", user_id="ann", product_id="mug", name="Mug", quantity=2)
        carts.call("AddItem", user_id="ann", product_id="hat", name="Hat", quantity=3)
        carts.call("AddItem", user_id="bob", product_id="pen", name="Pen", quantity=1)

        def at_least(n: int) -> list[tuple[int, str]]:
            rows = view.stream("WithAtLeast", min_quantity=n)
            return sorted((r.quantity, r.last_product_id) for r in rows)  # type: ignore[attr-defined]

        _eventually(lambda: at_least(1), [(1, "pen"), (5, "hat")])
        status, body = http("GET", f"{stack.base_url}/cart-quantities/at-least/2")
        assert status == 200, body
        assert body == [{"quantity": 5, "lastProductId": "hat"}]
        one = view.unary("ByLast", product_id="pen")
        assert one.quantity == 1  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as info:
            view.unary("ByLast", product_id="kiwi")
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        carts.call("RemoveItem", user_id="bob", product_id="pen")
        _eventually(lambda: at_least(0), [(0, "pen"), (5, "hat")])
        # The view is kept across a restart of the sidecar (SQLite store next to the journal).
        stack.stop_sidecar()
        stack.start_sidecar()
        assert at_least(1) == [(5, "hat")]
    finally:
        carts.close()
        view.close()


def test_the_view_file_sits_next_to_the_journal(stack: CompatStack) -> None:
    views_db = stack.journal_path.with_name(f"{stack.journal_path.stem}-views.sqlite3")
    assert Path(views_db).is_file()
