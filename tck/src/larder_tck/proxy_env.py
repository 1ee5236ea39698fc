"""The proxy setup: our sidecar in front of the frontend, with the interceptor between them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
from larder_tck import model as model_module
from larder_tck.expect import FrontendUnreachable
from larder_tck.frontend import free_port, log_tail, spawn, stop_process
from larder_tck.http import HttpClient
from larder_tck.interceptor import Interceptor

SIDECAR_PASSIVATION = "2s"
"""The sidecar's default passivation: short, so proxy cases can see rehydration."""


@dataclass(frozen=True)
class Sidecar:
    """One running sidecar: its public gRPC channel and its HTTP client."""

    channel: grpc.aio.Channel
    http: HttpClient
    process: asyncio.subprocess.Process

    async def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown, no ProxyTerminated to the frontend.

        (A graceful stop says ProxyTerminated, on which a frontend may exit, as Larder's
        Python SDK does; the TCK's frontend must outlive the sidecars a case starts.)
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()


@dataclass(frozen=True)
class SidecarLauncher:
    """Starts sidecars in front of the interceptor (so their traffic is recorded too)."""

    command: str
    logs: Path
    startup: float
    user_function_port: int

    def launch(
        self, name: str, env: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[Sidecar]:
        """A sidecar logging to `sidecar-<name>.log`; `env` overrides the memory journal etc."""
        return _sidecar(self, f"sidecar-{name}.log", env or {})


@dataclass
class ProxyContext:
    """What a proxy case gets."""

    sidecar: grpc.aio.Channel
    http: HttpClient
    interceptor: Interceptor
    model: model_module.Model
    launcher: SidecarLauncher

    async def call(self, service: str, method: str, request: Any, response: str) -> Any:
        return await call_on(
            self.sidecar,
            self.model,
            service=service,
            method=method,
            request=request,
            response=response,
        )

    def close(self) -> None:
        pass


async def call_on(
    channel: grpc.aio.Channel,
    model: model_module.Model,
    *,
    service: str,
    method: str,
    request: Any,
    response: str,
) -> Any:
    """A unary call of the user's `service`/`method` through a sidecar."""
    response_type = model.message(response)
    stub = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    return await stub(request, timeout=10)


@dataclass
class ProxyEnvironment:
    interceptor: Interceptor
    sidecar: Sidecar
    launcher: SidecarLauncher

    def case_context(self) -> ProxyContext:
        return ProxyContext(
            self.sidecar.channel,
            self.sidecar.http,
            self.interceptor,
            model_module.load(),
            self.launcher,
        )


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
async def _sidecar(
    launcher: SidecarLauncher, log_name: str, overrides: Mapping[str, str]
) -> AsyncIterator[Sidecar]:
    public, admin = free_port(), free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_HOST": "127.0.0.1",
        "USER_FUNCTION_PORT": str(launcher.user_function_port),
        "LARDER_HOST": "127.0.0.1",
        "LARDER_PORT": str(public),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(free_port()),
        "LARDER_JOURNAL_TYPE": "memory",
        "LARDER_PASSIVATION_TIMEOUT": SIDECAR_PASSIVATION,
        **overrides,
    }
    log = launcher.logs / log_name
    process = await spawn(launcher.command, log, env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{public}")
    try:
        await _wait_ready(HttpClient("127.0.0.1", admin), process, log, launcher.startup)
        yield Sidecar(channel, HttpClient("127.0.0.1", public), process)
    finally:
        await channel.close(None)
        await stop_process(process)


@contextlib.asynccontextmanager
async def start(
    frontend: str, sidecar_command: str, logs: Path, startup: float
) -> AsyncIterator[ProxyEnvironment]:
    interceptor = Interceptor(frontend)
    intercept_port = await interceptor.start()
    launcher = SidecarLauncher(sidecar_command, logs, startup, intercept_port)
    try:
        async with _sidecar(launcher, "sidecar.log", {}) as sidecar:
            yield ProxyEnvironment(interceptor, sidecar, launcher)
    finally:
        await interceptor.stop()


def proxy_starter(
    sidecar_command: str, logs: Path, timeout: float
) -> Callable[[str], AbstractAsyncContextManager[ProxyEnvironment]]:
    def starter(frontend: str) -> AbstractAsyncContextManager[ProxyEnvironment]:
        return start(frontend, sidecar_command, logs, timeout)

    return starter
