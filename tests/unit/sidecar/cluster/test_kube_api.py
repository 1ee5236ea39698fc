"""`ApiEndpointSlices` over HTTP: the answers a real API server gives only now and then
(410 Gone, ERROR events, lines split across chunks, refusals), from an in-process server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration
from larder_sidecar.cluster.kube_membership import (
    ApiEndpointSlices,
    MembershipUnavailableError,
    SliceEvent,
    WatchExpiredError,
)

PATH = "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
Handler = Callable[[web.Request], Any]


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


SLICE = {"metadata": {"name": "s1", "resourceVersion": "12"}, "endpoints": []}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []
    clients: list[ApiClient] = []

    async def start(handler: Handler) -> ApiEndpointSlices:
        app = web.Application()
        app.router.add_get(PATH, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        client = ApiClient(Configuration(host=f"http://127.0.0.1:{port}"))
        clients.append(client)
        return ApiEndpointSlices(client, "shop", "cart-internal")

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


async def events(api: ApiEndpointSlices, version: str = "10") -> list[SliceEvent]:
    return [event async for event in api.watch(version)]


async def test_list_and_watch_send_the_selector_and_read_every_event(
    serve: Callable[[Handler], Any],
) -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.query))
        if "watch" not in request.query:
            return web.json_response({"metadata": {"resourceVersion": "10"}, "items": [SLICE]})
        response = web.StreamResponse()
        await response.prepare(request)
        data = line("ADDED", SLICE) + line("BOOKMARK", {"metadata": {"resourceVersion": "13"}})
        # Events split across chunks anywhere, even inside a line.
        for cut in range(0, len(data), 7):
            await response.write(data[cut : cut + 7])
        await response.write_eof()
        return response

    api = await serve(handler)
    assert await api.list() == ([SLICE], "10")
    received = await events(api)
    assert [(e.type, e.resource_version) for e in received] == [("ADDED", "12"), ("BOOKMARK", "13")]
    assert seen[0] == {"labelSelector": "kubernetes.io/service-name=cart-internal"}
    assert seen[1] == {
        "labelSelector": "kubernetes.io/service-name=cart-internal",
        "watch": "true",
        "resourceVersion": "10",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "290",
    }


async def test_gone_as_a_status_or_as_an_error_event_means_list_again(
    serve: Callable[[Handler], Any],
) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "code": 410}, status=410)

    with pytest.raises(WatchExpiredError):
        await events(await serve(gone))

    async def expired_event(request: web.Request) -> web.Response:
        status = {"kind": "Status", "code": 410, "message": "too old resource version: 10 (50)"}
        return web.Response(body=line("ADDED", SLICE) + line("ERROR", status))

    with pytest.raises(WatchExpiredError, match="too old resource version"):
        await events(await serve(expired_event))


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (403, "forbidden", "HTTP 403: the pod's ServiceAccount needs get, list and watch"),
        (500, "etcd is away", "HTTP 500; etcd is away"),
    ],
)
async def test_refusals_are_unavailable_and_say_why(
    serve: Callable[[Handler], Any], status: int, body: str, message: str
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    api = await serve(refuse)
    with pytest.raises(MembershipUnavailableError, match=message):
        await api.list()
    with pytest.raises(MembershipUnavailableError, match=message):
        await events(api)


async def test_an_error_event_or_a_line_that_is_not_json_is_unavailable(
    serve: Callable[[Handler], Any],
) -> None:
    async def error_event(request: web.Request) -> web.Response:
        return web.Response(body=line("ERROR", {"code": 500, "message": "internal"}))

    with pytest.raises(MembershipUnavailableError, match="HTTP 500"):
        await events(await serve(error_event))

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>proxy error</html>\n")

    with pytest.raises(MembershipUnavailableError, match="not JSON"):
        await events(await serve(garbage))


async def test_no_server_is_unavailable() -> None:
    async with ApiClient(Configuration(host="http://127.0.0.1:9")) as client:
        api = ApiEndpointSlices(client, "shop", "cart-internal")
        with pytest.raises(MembershipUnavailableError, match="listing"):
            await api.list()
        with pytest.raises(MembershipUnavailableError, match="watching"):
            await events(api)
