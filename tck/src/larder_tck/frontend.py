"""Starting the frontend under test (`--service`) and waiting until it answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from larder_tck import protocol as p
from larder_tck.expect import FrontendUnreachable

STOP_GRACE = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def wait_until_serving(
    address: str, within: float, process: asyncio.subprocess.Process | None, log: Path | None
) -> None:
    """Poll Discovery/HealthCheck until it answers (or the process dies, or time runs out)."""
    deadline = time.monotonic() + within
    last = "no attempt yet"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = p.discovery_grpc.DiscoveryStub(channel)
        while True:
            if process is not None and process.returncode is not None:
                tail = log_tail(log) if log else ""
                raise FrontendUnreachable(
                    f"the frontend exited with {process.returncode} before serving on {address}"
                    + (f"; its output ends with:\n{tail}" if tail else "")
                )
            try:
                await stub.HealthCheck(empty_pb2.Empty(), timeout=1.0, wait_for_ready=True)
            except grpc.aio.AioRpcError as e:
                last = f"{e.code().name}: {e.details()}"
            else:
                return
            if time.monotonic() > deadline:
                raise FrontendUnreachable(
                    f"the frontend did not answer Discovery/HealthCheck on {address} within "
                    f"{within:.0f}s (last: {last})"
                )
            await asyncio.sleep(0.1)  # polling a process we do not control; nothing to await


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL after a grace period."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def spawn(command: str, log: Path, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start a shell command in its own process group (so `stop_process` reaches its
    children too), its output going to `log`."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_shell(
            command,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )


@contextlib.asynccontextmanager
async def run_service(
    command: str, log: Path, startup: float, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """Start `command` (a shell command) with HOST/PORT set; yield its address once serving."""
    port = free_port()
    child_env = {**os.environ, **(env or {}), "HOST": "127.0.0.1", "PORT": str(port)}
    process = await spawn(command, log, child_env)
    address = f"127.0.0.1:{port}"
    try:
        await wait_until_serving(address, startup, process, log)
        yield address
    finally:
        await stop_process(process)
