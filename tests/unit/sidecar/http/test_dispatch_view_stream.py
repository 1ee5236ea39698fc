"""A server-streamed view query over HTTP: its replies as one JSON array; an error before
the end is the error's status; other streamed methods stay 501."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from larder_protocol import VIEW
from larder_sidecar.http.dispatch import Dispatcher, HttpRequest
from larder_sidecar.http.routes import build_route_table
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs, MethodModel

from .fakes import FakeInvoker


@dataclasses.dataclass
class FakeViews(FakeInvoker):
    """Streams one reply per name in `names`, or fails with NOT_FOUND after the first."""

    fail: bool = False

    async def invoke_stream(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]:
        for n, name in enumerate(["one", "two"]):
            if self.fail and n == 1:
                raise InvokeError(grpc.StatusCode.NOT_FOUND, "gone")
            reply: Any = GetMessageClass(method.output)()
            reply.turkey_id = name
            yield InvokeResult(reply.SerializeToString())


def _views_table(methods: list[MethodModel]) -> tuple[Dispatcher, Dispatcher]:
    as_views = [
        dataclasses.replace(m, component_type=VIEW) if m.name == "WatchTurkey" else m
        for m in methods
    ]
    table = build_route_table(as_views)
    return Dispatcher(table, FakeViews()), Dispatcher(table, FakeViews(fail=True))


def _get(path: str) -> HttpRequest:
    return HttpRequest(method="GET", path=path, query=None, headers=[], body=b"")


async def test_a_streamed_view_query_is_a_json_array(methods: list[MethodModel]) -> None:
    ok, failing = _views_table(methods)
    response = await ok.handle(_get("/turkeys/t1:watch"))
    assert response.status == 200, response.body
    assert [t["turkeyId"] for t in json.loads(response.body)] == ["one", "two"]
    response = await failing.handle(_get("/turkeys/t1:watch"))
    assert response.status == 404
    assert json.loads(response.body)["message"] == "gone"


async def test_other_streamed_methods_stay_refused(methods: list[MethodModel]) -> None:
    table = build_route_table(methods)
    response = await Dispatcher(table, FakeViews()).handle(_get("/turkeys/t1:watch"))
    assert response.status == 501
