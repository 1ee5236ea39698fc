"""The `larder-sidecar` process while its user function stops and comes back, and when a
port it needs is taken."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from .conftest import Client
from .test_process import SIDECAR, _free_port, _http_get, _wait_ready
from .user_function import UserFunction

StartProcess = Callable[..., Awaitable[tuple[asyncio.subprocess.Process, int, int]]]


@pytest.fixture
async def start_process(
    user_function: UserFunction, tmp_path: Path
) -> AsyncIterator[StartProcess]:
    started: list[asyncio.subprocess.Process] = []

    async def start(**env: str) -> tuple[asyncio.subprocess.Process, int, int]:
        port, admin = _free_port(), _free_port()
        full = {
            **os.environ,
            "USER_FUNCTION_PORT": str(user_function.port),
            "LARDER_HOST": "127.0.0.1",
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(_free_port()),
            "LARDER_JOURNAL_TYPE": "sqlite",
            "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "j.sqlite3"),
            "LARDER_UVLOOP": os.environ.get("LARDER_TEST_UVLOOP", "true"),
            **env,
        }
        proc = await asyncio.create_subprocess_exec(
            str(SIDECAR), env=full, stderr=asyncio.subprocess.PIPE
        )
        started.append(proc)
        return proc, int(full["LARDER_PORT"]), int(full["LARDER_ADMIN_PORT"])

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until_readyz(admin: int, status: int, within: float = 10.0) -> str:
    # Polling is the only way to observe another process's readiness probe.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen = 0, ""
    while loop.time() < deadline:
        seen = await _http_get(admin, "/readyz")
        if seen[0] == status:
            return seen[1]
        await asyncio.sleep(0.05)
    pytest.fail(f"/readyz did not answer {status} within {within:g}s; last {seen}")


async def test_readiness_follows_the_user_function(
    start_process: StartProcess, user_function: UserFunction
) -> None:
    proc, _, admin = await start_process(LARDER_USER_FUNCTION_UNAVAILABLE_GRACE="300ms")
    await _wait_ready(proc, admin)
    function_port = user_function.port
    await user_function.stop()
    why = await _until_readyz(admin, 503)
    assert "the user function has not answered" in why
    assert "LARDER_USER_FUNCTION_UNAVAILABLE_GRACE=0.3s" in why
    # Alive all along: Kubernetes must not restart the pod, only stop routing to it.
    assert (await _http_get(admin, "/healthz"))[0] == 200
    await user_function.start(function_port)
    assert await _until_readyz(admin, 200) == "ready\n"


async def test_an_entity_active_before_the_function_restarted_answers_its_next_command(
    start_process: StartProcess, user_function: UserFunction, pb: ModuleType
) -> None:
    proc, port, admin = await start_process()
    await _wait_ready(proc, admin)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = Client(channel, pb)
        assert await client.add("survivor", 1) == 1
        function_port = user_function.port
        await user_function.stop()
        await user_function.start(function_port)
        # Recovered from the journal on a new stream: no 503 for the client.
        assert await client.add("survivor", 2) == 3
    inits = [i.entity_id for i in user_function.record.inits]
    assert inits == ["survivor", "survivor"]


@pytest.mark.parametrize("setting", ["LARDER_PORT", "LARDER_ADMIN_PORT", "LARDER_INTERNAL_PORT"])
async def test_a_port_in_use_is_one_line_that_names_the_setting(
    start_process: StartProcess, setting: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        env = {setting: str(busy)}
        if setting == "LARDER_INTERNAL_PORT":  # the internal port serves only in a cluster
            env |= {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": f"a=127.0.0.1:{busy}"}
        proc, _, _ = await start_process(**env)
        assert proc.stderr is not None
        err = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(proc.wait(), 10) == 1
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "start-up failed" in line]
    assert (
        f"cannot listen on 127.0.0.1:{busy} ({setting}={busy}): the port is already in use; "
        f"stop the process using it or set {setting} to a free port"
    ) in line
