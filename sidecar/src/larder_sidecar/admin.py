"""The admin HTTP server: /healthz, /readyz, Prometheus /metrics, and JSON routes given
by the app (`/cluster`, `/cluster/owner`: `cluster/status.py`; `/inspect/...`:
`inspection.py`, guarded: loopback clients only, or a bearer token when one is set).

A few GET endpoints do not justify a framework; this reads the request line and
headers with asyncio streams and answers with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
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


GuardedRoute = Callable[[Mapping[str, str]], Awaitable[tuple[int, object]]]
"""Like JsonRoute, for routes that show user data: loopback or token only."""

_MAX_HEADERS = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _is_loopback(peer: object) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return False  # a Unix socket or unknown: not a network peer we can place
    try:
        address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _address(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def _clip_query(params: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v[:64]!r}" for k, v in list(params.items())[:8])


class AdminServer:
    def __init__(
        self,
        metrics: Metrics,
        ready: ReadyCheck,
        routes: Mapping[str, JsonRoute] | None = None,
        guarded: Mapping[str, GuardedRoute] | None = None,
        token: str | None = None,
    ) -> None:
        """`guarded` routes answer loopback clients only, or with `token` set, only
        requests carrying it as a bearer token (from anywhere)."""
        self._metrics = metrics
        self._ready = ready
        self._routes = dict(routes or {})
        self._guarded = dict(guarded or {})
        self._token = token
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
            authorization = ""
            for _ in range(_MAX_HEADERS + 1):
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "authorization":
                    authorization = value.strip()
            else:
                await self._respond(writer, 400, b"too many header lines\n")
                return
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2:
                await self._respond(writer, 400, b"bad request\n")
                return
            method, (path, _, query) = parts[0], parts[1].partition("?")
            if method not in ("GET", "HEAD"):
                await self._respond(writer, 405, b"method not allowed\n")
            elif path in self._guarded:
                peer = writer.get_extra_info("peername")
                await self._guarded_route(writer, path, query, authorization, peer)
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
        except ValueError:  # a line over the reader's 64 KiB limit
            with contextlib.suppress(ConnectionError):
                await self._respond(writer, 400, b"request line or header too long\n")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _refusal(self, authorization: str, peer: object) -> tuple[int, str] | None:
        """Why a request for a guarded route is refused (status, message), or None."""
        if self._token is not None:
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token.encode()
            ):
                what = "a wrong token" if authorization else "no token"
                return 401, (
                    f"this route shows user data and the request carried {what}: send "
                    "`Authorization: Bearer <LARDER_ADMIN_TOKEN>` (larder inspect reads it "
                    "from LARDER_ADMIN_TOKEN or --token-file)"
                )
            return None
        if not _is_loopback(peer):
            return 403, (
                "this route shows user data and answers only clients on this host (e.g. "
                "`kubectl port-forward POD 9603`) unless the sidecar has LARDER_ADMIN_TOKEN "
                "set"
            )
        return None

    async def _guarded_route(
        self,
        writer: asyncio.StreamWriter,
        path: str,
        query: str,
        authorization: str,
        peer: object,
    ) -> None:
        refusal = self._refusal(authorization, peer)
        if refusal is not None:
            status, message = refusal
            log.warning("admin: refused %s from %s: %s", path, _address(peer), message)
            extra = {"WWW-Authenticate": 'Bearer realm="larder-admin"'} if status == 401 else {}
            body = json.dumps({"error": message, "kind": "access"}) + "\n"
            await self._respond(writer, status, body.encode(), "application/json", extra)
            return
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        # Who read what, once per request: these routes expose user data.
        log.info("admin: %s %s from %s", path, _clip_query(params), _address(peer))
        try:
            status, answer = await self._guarded[path](params)
        except Exception:
            log.exception("the admin route %s failed", path)
            status, answer = 500, {"error": "internal error; see the sidecar's log"}
        text = json.dumps(answer, ensure_ascii=False) + "\n"
        await self._respond(writer, status, text.encode(), "application/json")

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        reason = _REASONS[status]
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
