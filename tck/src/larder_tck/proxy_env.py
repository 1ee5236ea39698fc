"""The proxy setup: our sidecar in front of the frontend, with the interceptor between them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
from larder_tck import model as model_module
from larder_tck.expect import FrontendUnreachable
from larder_tck.frontend import free_port, log_tail, stop_process
from larder_tck.http import HttpClient
from larder_tck.interceptor import Interceptor

SIDECAR_PASSIVATION = "2s"
"""The sidecar's default passivation: short, so proxy cases can see rehydration."""


@dataclass
class ProxyContext:
    """What a proxy case gets."""

    sidecar: grpc.aio.Channel
    http: HttpClient
    interceptor: Interceptor
    model: model_module.Model

    async def call(self, service: str, method: str, request: Any, response: str) -> Any:
        response_type = self.model.message(response)
        stub = self.sidecar.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return await stub(request, timeout=10)

    def close(self) -> None:
        pass


@dataclass
class ProxyEnvironment:
    interceptor: Interceptor
    channel: grpc.aio.Channel
    http: HttpClient

    def case_context(self) -> ProxyContext:
        return ProxyContext(self.channel, self.http, self.interceptor, model_module.load())


async def _wait_ready(
    http: HttpClient, process: asyncio.subprocess.Process, log: Path, within: float
) -> None:
    deadline = time.monotonic() + within
    last = ""
    while True:
        if process.returncode is not None:
            raise FrontendUnreachable(
                f"the sidecar exited with {process.returncode} before it was ready; its log "
                f"ends with:\n{log_tail(log)}"
            )
        try:
            status, _, body = await http.request("GET", "/readyz")
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise FrontendUnreachable(
                f"the sidecar was not ready within {within:.0f}s (last /readyz: {last}); its "
                f"log ends with:\n{log_tail(log)}"
            )
        await asyncio.sleep(0.1)  # polling another process's readiness endpoint


@contextlib.asynccontextmanager
async def start(
    frontend: str, sidecar_command: str, logs: Path, startup: float
) -> AsyncIterator[ProxyEnvironment]:
    interceptor = Interceptor(frontend)
    intercept_port = await interceptor.start()
    public, admin = free_port(), free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_HOST": "127.0.0.1",
        "USER_FUNCTION_PORT": str(intercept_port),
        "LARDER_HOST": "127.0.0.1",
        "LARDER_PORT": str(public),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(free_port()),
        "LARDER_JOURNAL_TYPE": "memory",
        "LARDER_PASSIVATION_TIMEOUT": SIDECAR_PASSIVATION,
    }
    log = logs / "sidecar.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_shell(
            sidecar_command,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{public}")
    try:
        await _wait_ready(HttpClient("127.0.0.1", admin), process, log, startup)
        yield ProxyEnvironment(interceptor, channel, HttpClient("127.0.0.1", public))
    finally:
        await channel.close(None)
        await stop_process(process)
        await interceptor.stop()


def proxy_starter(
    sidecar_command: str, logs: Path, timeout: float
) -> Callable[[str], AbstractAsyncContextManager[ProxyEnvironment]]:
    def starter(frontend: str) -> AbstractAsyncContextManager[ProxyEnvironment]:
        return start(frontend, sidecar_command, logs, timeout)

    return starter
