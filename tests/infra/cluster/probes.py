"""Readiness, liveness and startup probes, run from the host against the pod's IP."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay_s: float
    period_s: float
    timeout_s: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Mapping[str, Any]) -> ProbeTiming:
        return cls(
            initial_delay_s=float(probe.get("initialDelaySeconds", 0)),
            period_s=float(probe.get("periodSeconds", 10)),
            timeout_s=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or ():
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"probe port {port!r} is not a named port of container {container['name']}")


async def run_probe(probe: Mapping[str, Any], container: Mapping[str, Any], ip: str) -> ProbeResult:
    timeout = ProbeTiming.of(probe).timeout_s
    try:
        if "httpGet" in probe:
            return await asyncio.wait_for(_http(probe["httpGet"], container, ip), timeout)
        if "tcpSocket" in probe:
            return await asyncio.wait_for(_tcp(probe["tcpSocket"], container, ip), timeout)
        if "grpc" in probe:
            return await _grpc(probe["grpc"], ip, timeout)
    except TimeoutError:
        return ProbeResult(False, f"timeout after {timeout:g}s")
    except ValueError as e:
        return ProbeResult(False, str(e))
    return ProbeResult(False, f"unsupported probe handler {sorted(probe)}")


async def _http(action: Mapping[str, Any], container: Mapping[str, Any], ip: str) -> ProbeResult:
    port = resolve_port(action["port"], container)
    scheme = str(action.get("scheme", "HTTP")).lower()
    host = str(action.get("host") or ip)
    path = str(action.get("path", "/"))
    headers = {str(h["name"]): str(h["value"]) for h in action.get("httpHeaders") or ()}
    # Like the kubelet: HTTPS probes do not verify the certificate.
    verify: ssl.SSLContext | bool = scheme != "https"
    url = f"{scheme}://{host}:{port}{path}"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers, ssl=verify, allow_redirects=False) as response,
        ):
            if 200 <= response.status < 400:
                return ProbeResult(True)
            body = (await response.text())[:200]
            return ProbeResult(
                False, f"HTTP probe failed with statuscode: {response.status} {body}"
            )
    except (aiohttp.ClientError, OSError) as e:
        return ProbeResult(False, f'Get "{url}": {e}')


async def _tcp(action: Mapping[str, Any], container: Mapping[str, Any], ip: str) -> ProbeResult:
    port = resolve_port(action["port"], container)
    host = str(action.get("host") or ip)
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        return ProbeResult(False, f"dial tcp {host}:{port}: {e}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True)


async def _grpc(action: Mapping[str, Any], ip: str, deadline_s: float) -> ProbeResult:
    port = int(action["port"])
    service = str(action.get("service", ""))
    async with grpc.aio.insecure_channel(f"{ip}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=deadline_s
            )
        except grpc.aio.AioRpcError as e:
            return ProbeResult(False, f"gRPC health check failed: {e.code().name} {e.details()}")
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return ProbeResult(True)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return ProbeResult(False, f"service unhealthy (responded with {status!r})")
