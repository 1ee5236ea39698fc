"""Probes against real local servers: HTTP, TCP, gRPC health."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.infra.cluster.probes import ProbeTiming, resolve_port, run_probe

CONTAINER = {"name": "c", "ports": [{"name": "web", "containerPort": 0}]}


@pytest.fixture()
async def http_port() -> AsyncIterator[int]:
    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(_r: web.Request) -> web.Response:
        return web.Response(status=503, text="not yet")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_http_probe_passes_on_2xx_and_names_the_status_otherwise(http_port: int) -> None:
    container = {"name": "c", "ports": [{"name": "web", "containerPort": http_port}]}
    ok = await run_probe({"httpGet": {"path": "/ok", "port": "web"}}, container, "127.0.0.1")
    assert ok.ok
    bad = await run_probe(
        {"httpGet": {"path": "/broken", "port": http_port}}, container, "127.0.0.1"
    )
    assert not bad.ok and "statuscode: 503" in bad.detail


async def test_tcp_probe(http_port: int) -> None:
    assert (await run_probe({"tcpSocket": {"port": http_port}}, CONTAINER, "127.0.0.1")).ok
    refused = await run_probe({"tcpSocket": {"port": 1}}, CONTAINER, "127.0.0.1")
    assert not refused.ok and "dial tcp 127.0.0.1:1" in refused.detail


async def test_grpc_probe_reads_the_health_service() -> None:
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert (await run_probe({"grpc": {"port": port}}, CONTAINER, "127.0.0.1")).ok
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        failed = await run_probe({"grpc": {"port": port}}, CONTAINER, "127.0.0.1")
        assert not failed.ok and "NOT_SERVING" in failed.detail
    finally:
        await server.stop(None)


def test_named_ports_and_defaults() -> None:
    assert resolve_port("web", {"name": "c", "ports": [{"name": "web", "containerPort": 80}]}) == 80
    assert resolve_port("8080", CONTAINER) == 8080
    with pytest.raises(ValueError, match="not a named port"):
        resolve_port("admin", CONTAINER)
    assert ProbeTiming.of({}) == ProbeTiming(0.0, 10.0, 1.0, 1, 3)
