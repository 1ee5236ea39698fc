"""The kubelet's container log endpoint, so `kubectl logs` works through the API server.

The API server proxies `pods/log` to `https://<node InternalIP>:<kubeletEndpoint
port>/containerLogs/<namespace>/<pod>/<container>`; without
`--kubelet-certificate-authority` it does not verify this server's certificate,
which is therefore self-signed.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from tests.infra.cluster.containers import Container

FOLLOW_POLL_S = 0.2

# (namespace, pod, container) -> the container, or None
Find = Callable[[str, str, str], Container | None]


def self_signed(directory: Path, host_ip: str) -> ssl.SSLContext:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "7",
                "-subj",
                "/CN=larder-node-agent",
                "-addext",
                f"subjectAltName=IP:{host_ip}",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


def _runs(container: Container) -> list[Path]:
    files = [p for p in container.log_dir.glob("*.log") if p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _waiting_reason(container: Container) -> str:
    waiting = container.state.get("waiting") or {}
    return str(waiting.get("reason", "unknown"))


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b""


class LogServer:
    def __init__(self, find: Find, host: str, port: int, tls: ssl.SSLContext) -> None:
        self._find = find
        self._host = host
        self._port = port
        self._tls = tls
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        container = self._find(m["namespace"], m["pod"], m["container"])
        if container is None:
            raise web.HTTPNotFound(
                text=f"container {m['container']} of pod {m['namespace']}/{m['pod']} is not on "
                "this node"
            )
        runs = _runs(container)
        previous = request.query.get("previous") == "true"
        if previous:
            if len(runs) < 2:
                raise web.HTTPBadRequest(
                    text=f'previous terminated container "{container.name}" not found'
                )
            path = runs[-2]
        elif runs:
            path = runs[-1]
        else:
            raise web.HTTPBadRequest(
                text=f'container "{container.name}" is waiting to start: '
                f"{_waiting_reason(container)}"
            )
        data = await asyncio.to_thread(path.read_bytes)
        data = _tail(data, int(request.query.get("tailLines", "-1")))
        limit = request.query.get("limitBytes")
        if limit:
            data = data[: int(limit)]
        if request.query.get("follow") != "true" or previous:
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        await response.write(data)
        offset = (await asyncio.to_thread(path.stat)).st_size
        # Follow until this run ends (the process exits) and nothing more was written.
        while True:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size > offset:
                chunk = await asyncio.to_thread(_read_range, path, offset, size - offset)
                offset = size
                await response.write(chunk)
                continue
            process = container.process
            if process is None or process.returncode is not None or _runs(container)[-1] != path:
                break
            await asyncio.sleep(FOLLOW_POLL_S)
        await response.write_eof()
        return response
