"""The `larder-sidecar` command as a real process: env settings, admin port, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from .conftest import Client
from .user_function import UserFunction

SIDECAR = Path(sys.executable).parent / "larder-sidecar"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
async def process_sidecar(
    user_function: UserFunction, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, int]]:
    port, admin = _free_port(), _free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_PORT": str(user_function.port),
        "LARDER_PORT": str(port),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(_free_port()),
        "LARDER_JOURNAL_TYPE": "sqlite",
        "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "j.sqlite3"),
        "LARDER_LOG_FORMAT": "json",
        "LARDER_UVLOOP": os.environ.get("LARDER_TEST_UVLOOP", "true"),
    }
    proc = await asyncio.create_subprocess_exec(
        str(SIDECAR), env=env, stderr=asyncio.subprocess.PIPE
    )
    yield proc, port, admin
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def _wait_ready(proc: asyncio.subprocess.Process, admin: int) -> None:
    # Polling is the only way to observe another process's readiness probe.
    for _ in range(200):
        assert proc.returncode is None, "the sidecar exited during start-up"
        try:
            status, _ = await _http_get(admin, "/readyz")
        except OSError:
            status = 0
        if status == 200:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the sidecar did not become ready in 10 s")


async def test_process_serves_reports_metrics_and_stops_on_sigterm(
    process_sidecar: tuple[asyncio.subprocess.Process, int, int],
    user_function: UserFunction,
    pb: ModuleType,
) -> None:
    proc, port, admin = process_sidecar
    await _wait_ready(proc, admin)
    assert (await _http_get(admin, "/healthz"))[0] == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = Client(channel, pb)
        assert await client.add("proc", 4) == 4
    status, metrics = await _http_get(admin, "/metrics")
    assert status == 200
    assert (
        'larder_commands_total{component="larder.test.Counter",method="Add",outcome="ok"} 1.0'
        in metrics
    )
    assert "larder_entity_activations_total" in metrics
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert user_function.record.proxy_terminated == 1
    assert proc.stderr is not None
    logs = (await proc.stderr.read()).decode()
    assert '"entity_type": "counter"' in logs  # JSON log lines carry the entity
    assert '"entity_id": "proc"' in logs


async def test_bad_setting_names_the_variable() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(SIDECAR),
        env={**os.environ, "LARDER_PORT": "http"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"LARDER_PORT='http' is not an integer" in err
