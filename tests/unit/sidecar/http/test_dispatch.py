from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.message import Message
from larder_sidecar.http.dispatch import Dispatcher, HttpRequest
from larder_sidecar.http.routes import RouteTable
from larder_sidecar.invoke import InvokeError, InvokeResult, MetadataPairs, MethodModel

from .fakes import FakeInvoker


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    query: str | None = None,
) -> HttpRequest:
    """A request as the HTTP/1.1 layer makes it; a body is sent as JSON unless `headers`
    say otherwise."""
    if headers is None:
        headers = [("content-type", "application/json")] if body else []
    return HttpRequest(method=method, path=path, query=query, headers=headers, body=body)


async def test_tutorial_call_is_transcoded_and_invoked(table: RouteTable) -> None:
    invoker = FakeInvoker()
    dispatcher = Dispatcher(table, invoker)
    response = await dispatcher.handle(
        request(
            "POST",
            "/com.example.TurkeyService/StartCooking",
            b'{"turkey_id": "t1"}',
            [("content-type", "application/json"), ("x-user", "ann"), ("connection", "close"),
             ("host", "localhost")],
        )
    )
    assert response.status == 200
    assert json.loads(response.body) == {
        "turkeyId": "t1", "inOven": True, "temperature": 0, "tags": []
    }
    assert response.headers == [("x-served-by", "fake")]
    (call,) = invoker.calls
    assert call.method.path == "/com.example.TurkeyService/StartCooking"
    assert call.metadata == (("x-user", "ann"),)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    ],
)
async def test_invoke_errors_map_to_http_statuses(
    table: RouteTable, code: grpc.StatusCode, status: int
) -> None:
    async def fail(method: MethodModel, req: Message, metadata: MetadataPairs) -> InvokeResult:
        raise InvokeError(code, f"failed with {code.name}")

    response = await Dispatcher(table, FakeInvoker(fail)).handle(request("GET", "/turkeys/t1"))
    assert response.status == status
    assert json.loads(response.body) == {
        "code": code.value[0],
        "message": f"failed with {code.name}",
        "details": [],
    }


async def test_user_function_failure_is_500_with_its_description(table: RouteTable) -> None:
    response = await Dispatcher(table, FakeInvoker()).handle(request("GET", "/turkeys/fail"))
    assert response.status == 500
    assert json.loads(response.body)["message"] == "the oven caught fire"


async def test_unknown_path_is_404_naming_it(table: RouteTable) -> None:
    response = await Dispatcher(table, FakeInvoker()).handle(request("GET", "/ducks/d1"))
    assert response.status == 404
    assert "/ducks/d1" in json.loads(response.body)["message"]


async def test_wrong_method_is_405_with_allow(table: RouteTable) -> None:
    response = await Dispatcher(table, FakeInvoker()).handle(request("DELETE", "/turkeys/t1"))
    assert response.status == 405
    assert ("allow", "GET") in response.headers


async def test_bad_input_is_400_and_never_reaches_the_invoker(table: RouteTable) -> None:
    invoker = FakeInvoker()
    response = await Dispatcher(table, invoker).handle(
        request("POST", "/com.example.TurkeyService/StartCooking", b'{"turkeyIdd": "t1"}')
    )
    assert response.status == 400
    body = json.loads(response.body)
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "turkeyIdd" in body["message"]
    assert invoker.calls == []


@pytest.mark.parametrize(
    ("http_method", "path", "kind"),
    [
        ("GET", "/turkeys/t1:watch", "server-streaming"),
        ("POST", "/com.example.TurkeyService/Baste", "client-streaming"),
    ],
)
async def test_streaming_methods_are_501(
    table: RouteTable, http_method: str, path: str, kind: str
) -> None:
    response = await Dispatcher(table, FakeInvoker()).handle(request(http_method, path))
    assert response.status == 501
    assert kind in json.loads(response.body)["message"]


async def test_invoker_bug_is_500_without_details(table: RouteTable) -> None:
    async def broken(method: MethodModel, req: Message, metadata: MetadataPairs) -> InvokeResult:
        raise RuntimeError("boom")

    response = await Dispatcher(table, FakeInvoker(broken)).handle(request("GET", "/turkeys/t1"))
    assert response.status == 500
    assert "boom" not in json.loads(response.body)["message"]


async def test_undecodable_reply_is_500(table: RouteTable) -> None:
    async def garbage(method: MethodModel, req: Message, metadata: MetadataPairs) -> InvokeResult:
        return InvokeResult(payload=b"\xff\xff\xff")

    response = await Dispatcher(table, FakeInvoker(garbage)).handle(request("GET", "/turkeys/t1"))
    assert response.status == 500
    assert "com.example.Turkey" in json.loads(response.body)["message"]


async def test_reply_metadata_that_is_not_a_valid_header_is_dropped(table: RouteTable) -> None:
    async def odd(method: MethodModel, req: Message, metadata: MetadataPairs) -> InvokeResult:
        return InvokeResult(
            payload=b"",
            metadata=(("X-Ok", "1"), ("bad name", "2"), ("x-split", "a\r\nb"),
                      ("content-length", "9")),
        )

    response = await Dispatcher(table, FakeInvoker(odd)).handle(request("GET", "/turkeys/t1"))
    assert response.status == 200
    assert response.headers == [("x-ok", "1")]
