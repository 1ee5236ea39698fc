"""The HTTP front's relay (`http/relay.py`): which requests are relayed and with what
entity key, what is sent, and that a relayed answer is the owner's local answer byte for
byte (a forwarding front whose router hands the request to an owning front in process)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from larder_sidecar.cluster import wire
from larder_sidecar.http.dispatch import Dispatcher, HttpRequest, HttpResponse
from larder_sidecar.http.relay import HttpRelay
from larder_sidecar.http.routes import RouteTable
from larder_sidecar.invoke import InvokeError, MethodModel
from larder_sidecar.model import Component, EntityKey, Kind, Method

from .fakes import FakeInvoker

COOK = "/turkeys/{}/cook"
GENERIC = "/com.example.TurkeyService/StartCooking"


def _entity_methods(methods: list[MethodModel]) -> dict[str, Method]:
    """The turkey service as a value entity keyed by `turkey_id`."""
    component = Component(
        service="com.example.TurkeyService",
        kind=Kind.VALUE,
        entity_type="turkeys",
        passivation_timeout=None,
        forward_headers=frozenset(),
    )
    out = {}
    for m in methods:
        if m.service != component.service:
            continue
        field = m.input.fields_by_name["turkey_id"]
        out[m.path] = Method(
            model=m,
            component=component,
            input_class=cast(Any, GetMessageClass(m.input)),
            output_class=cast(Any, GetMessageClass(m.output)),
            key=EntityKey((field,)),
            input_type_url=f"type.googleapis.com/{m.input.full_name}",
        )
    return out


class Router:
    """A router that names a peer for every entity and answers with `reply` (or hands the
    request to `owner`, a front in process)."""

    def __init__(self, reply: Any = None, owner: Dispatcher | None = None) -> None:
        self.sent: list[tuple[str, str, Any]] = []
        self.reply = reply
        self.owner = owner
        self.error: InvokeError | None = None

    async def relay(self, entity_type: str, entity_id: str, http: Any) -> Any | None:
        self.sent.append((entity_type, entity_id, http))
        if self.error is not None:
            raise self.error
        if self.owner is not None:
            answer = await self.owner.serve_relayed(wire.http_request(*http))
            # As it crosses the wire.
            return wire.ForwardReply.FromString(
                wire.ForwardReply(http=answer).SerializeToString()
            )
        return self.reply


def _front(
    table: RouteTable, methods: Mapping[str, Method], router: Router
) -> tuple[Dispatcher, FakeInvoker]:
    invoker = FakeInvoker()
    dispatcher = Dispatcher(table, invoker)
    dispatcher.relay = HttpRelay(router, methods)
    return dispatcher, invoker


def _post(path: str, body: bytes, *extra: tuple[str, str], query: str | None = None) -> HttpRequest:
    headers = [("host", "s1"), ("content-type", "application/json"),
               ("content-length", str(len(body))), *extra]
    return HttpRequest(method="POST", path=path, query=query, headers=headers, body=body)


ANSWER = wire.ForwardReply(
    http=wire.http_answer(200, "application/json", [("x-owner", "s0")], b'{"turkeyId":"t"}')
)


@pytest.fixture
def entity_methods(methods: list[MethodModel]) -> dict[str, Method]:
    return _entity_methods(methods)


async def test_the_key_of_a_path_variable_routes_and_the_owners_answer_is_written_as_is(
    table: RouteTable, entity_methods: dict[str, Method]
) -> None:
    router = Router(ANSWER)
    front, invoker = _front(table, entity_methods, router)
    body = b'{"turkeyId": "in-body", "temperature": 180}'
    response = await front.handle(
        _post(COOK.format("t%2F1"), body, ("idempotency-key", "k1"), ("traceparent", "00-x"))
    )
    assert response == HttpResponse(200, b'{"turkeyId":"t"}', "application/json",
                                    [("x-owner", "s0")])
    # The path wins over the body (as the transcoder has it), decoded.
    ((entity_type, entity_id, http),) = router.sent
    assert (entity_type, entity_id) == ("turkeys", "t/1")
    method, path, query, headers, sent_body = http
    assert (method, path, query, sent_body) == ("POST", COOK.format("t%2F1"), None, body)
    # Hop headers stay here; what the command carries and the content type travel.
    assert headers == [("content-type", "application/json"), ("idempotency-key", "k1"),
                       ("traceparent", "00-x")]
    assert invoker.calls == []


@pytest.mark.parametrize("body", [b'{"turkey_id": "t2"}', b' {"turkeyId":"t2","temperature":1}'])
async def test_the_key_field_of_a_whole_json_body_routes(
    table: RouteTable, entity_methods: dict[str, Method], body: bytes
) -> None:
    router = Router(ANSWER)
    front, invoker = _front(table, entity_methods, router)
    response = await front.handle(_post(GENERIC, body))
    assert response.status == 200 and invoker.calls == []
    assert [(t, e) for t, e, _ in router.sent] == [("turkeys", "t2")]


@pytest.mark.parametrize(
    ("body", "query"),
    [
        (b'{"turkey_id": "a", "turkeyId": "b"}', None),  # both spellings: ambiguous
        (b'{"turkey_id": 7}', None),  # not a string: the transcoder's to judge
        (b'{"turkey_id": ""}', None),
        (b'["t"]', None),
        (b'{"turkey_id": "t"', None),  # not JSON
        (b"", None),
        (b'{"turkey_id": "t"}', "temperature=3"),
        (b'{"turkey_id": "' + b"x" * 2000 + b'"}', None),  # longer than an entity id may be
    ],
)
async def test_a_key_not_read_surely_leaves_the_request_to_the_ordinary_path(
    table: RouteTable, entity_methods: dict[str, Method], body: bytes, query: str | None
) -> None:
    router = Router(ANSWER)
    front, _ = _front(table, entity_methods, router)
    local = Dispatcher(table, FakeInvoker())
    request = _post(GENERIC, body, query=query)
    assert await front.handle(request) == await local.handle(request)
    assert router.sent == []


async def test_an_entity_served_here_or_an_owner_without_relays_is_served_here(
    table: RouteTable, entity_methods: dict[str, Method]
) -> None:
    for reply in (
        None,
        wire.ForwardReply(error=wire.Status(code=grpc.StatusCode.UNIMPLEMENTED.value[0])),
    ):
        router = Router(reply)
        front, invoker = _front(table, entity_methods, router)
        response = await front.handle(_post(GENERIC, b'{"turkey_id": "t"}'))
        assert response.status == 200 and len(router.sent) == 1 and len(invoker.calls) == 1


async def test_a_peer_that_does_not_answer_is_a_503_as_for_a_forward(
    table: RouteTable, entity_methods: dict[str, Method]
) -> None:
    router = Router()
    router.error = InvokeError(grpc.StatusCode.UNAVAILABLE, "s0 did not answer; retry")
    front, invoker = _front(table, entity_methods, router)
    response = await front.handle(_post(GENERIC, b'{"turkey_id": "t"}'))
    assert response.status == 503 and invoker.calls == []
    assert json.loads(response.body)["message"] == "s0 did not answer; retry"
    router.error = None
    router.reply = wire.ForwardReply(
        error=wire.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="hops")
    )
    assert (await front.handle(_post(GENERIC, b'{"turkey_id": "t"}'))).status == 503


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (GENERIC, b'{"turkey_id": "t1", "temperature": 200}'),  # a reply
        (COOK.format("t1"), b'{"temperature": 200}'),
        (GENERIC, b'{"turkey_id": "fail"}'),  # the user function's failure
        (GENERIC, b'{"turkey_id": "missing"}'),  # NOT_FOUND
        (GENERIC, b'{"turkey_id": "t1", "temperature": "hot"}'),  # a bad value
        (GENERIC, b'{"turkey_id": "t1", "oven": 1}'),  # an unknown field
        (COOK.format("t1"), b'{"temperature": }'),  # bad JSON, key in the path
    ],
)
async def test_a_relayed_answer_is_the_owners_local_answer_byte_for_byte(
    table: RouteTable, entity_methods: dict[str, Method], path: str, body: bytes
) -> None:
    owner = Dispatcher(table, FakeInvoker())
    router = Router(owner=owner)
    front, invoker = _front(table, entity_methods, router)
    request = _post(path, body, ("idempotency-key", "k"))
    relayed = await front.handle(request)
    assert len(router.sent) == 1 and invoker.calls == []
    local = await owner.handle(request, relay=False)
    assert (relayed.status, relayed.content_type, list(relayed.headers), relayed.body) == (
        local.status, local.content_type, list(local.headers), local.body
    )
