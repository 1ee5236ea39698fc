"""The admin HTTP server: /healthz, /readyz, Prometheus /metrics, and JSON routes given
by the app (`/cluster`, `/cluster/owner`: `cluster/status.py`).

A few GET endpoints do not justify a framework; this reads the request line and
headers with asyncio streams and answers with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics
from .ports import PortUnavailable

log = logging.getLogger("larder_sidecar.admin")

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]
JsonRoute = Callable[[Mapping[str, str]], tuple[int, object]]
"""Query parameters in, an HTTP status and a JSON-serialisable body out."""


class AdminServer:
    def __init__(
        self, metrics: Metrics, ready: ReadyCheck, routes: Mapping[str, JsonRoute] | None = None
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._routes = dict(routes or {})
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port; 0 before `start`."""
        if self._server is None:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on `host:port`; raises PortUnavailable naming LARDER_ADMIN_PORT."""
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as e:
            raise PortUnavailable.from_os_error("LARDER_ADMIN_PORT", host, port, e) from e

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2:
                await self._respond(writer, 400, b"bad request\n")
                return
            method, (path, _, query) = parts[0], parts[1].partition("?")
            if method not in ("GET", "HEAD"):
                await self._respond(writer, 405, b"method not allowed\n")
            elif path == "/healthz":
                await self._respond(writer, 200, b"ok\n")
            elif path == "/readyz":
                ok, why = await self._ready()
                await self._respond(writer, 200 if ok else 503, (why + "\n").encode())
            elif path == "/metrics":
                await self._respond(
                    writer, 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST
                )
            elif path in self._routes:
                try:
                    status, body = self._routes[path](dict(urllib.parse.parse_qsl(query)))
                except Exception:
                    log.exception("the admin route %s failed", path)
                    status, body = 500, {"error": "internal error; see the sidecar's log"}
                text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
                await self._respond(writer, status, text.encode(), "application/json")
            else:
                await self._respond(writer, 404, b"not found\n")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
