"""The kubelet log endpoint: current and previous runs, tails, and what is missing."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

from tests.infra.cluster.containers import Container
from tests.infra.cluster.logserver import LogServer, self_signed
from tests.infra.process import free_port


async def _no_event(_kind: str, _reason: str, _message: str) -> None:
    return None


async def test_logs_of_the_current_and_previous_runs(tmp_path: Path) -> None:
    container = Container(
        {"name": "app"}, "main", "lrd-x-app", tmp_path / "logs", lambda: None, _no_event
    )
    container.log_dir.mkdir(parents=True)
    container.log_path(0).write_text("first run\nfailed\n")
    container.log_path(1).write_text("second run\nline two\nline three\n")

    def find(namespace: str, pod: str, name: str) -> Container | None:
        return container if (namespace, pod, name) == ("ns", "p", "app") else None

    port = free_port()
    server = LogServer(find, "127.0.0.1", port, self_signed(tmp_path / "pki", "127.0.0.1"))
    await server.start()
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # like the API server without a kubelet CA
    base = f"https://127.0.0.1:{port}/containerLogs"
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, str]:
                async with session.get(base + path, ssl=insecure) as response:
                    return response.status, await response.text()

            assert await get("/ns/p/app") == (200, "second run\nline two\nline three\n")
            assert await get("/ns/p/app?tailLines=1") == (200, "line three\n")
            assert await get("/ns/p/app?previous=true") == (200, "first run\nfailed\n")
            assert await get("/ns/p/app?limitBytes=6") == (200, "second")
            status, text = await get("/ns/p/other")
            assert status == 404 and "not on this node" in text
    finally:
        await server.close()


async def test_a_container_that_never_ran_says_why(tmp_path: Path) -> None:
    container = Container(
        {"name": "app"}, "main", "lrd-x-app", tmp_path / "logs", lambda: None, _no_event
    )
    container.wait_with("ErrImageNeverPull", "no image")
    port = free_port()
    server = LogServer(
        lambda *_: container, "127.0.0.1", port, self_signed(tmp_path / "pki", "127.0.0.1")
    )
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{port}/containerLogs/ns/p/app", ssl=False) as response,
        ):
            assert response.status == 400
            assert "waiting to start: ErrImageNeverPull" in await response.text()
    finally:
        await server.close()
