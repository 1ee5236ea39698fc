"""A minimal HTTP/1.1 client over asyncio streams (one request per connection).

Enough for the sidecar's JSON API and its admin endpoints; kept here so the TCK
needs no HTTP library.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TIMEOUT = 10.0


@dataclass(frozen=True)
class HttpClient:
    host: str
    port: int

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, dict[str, str], bytes]:
        return await asyncio.wait_for(self._request(method, path, body, content_type), TIMEOUT)

    async def _request(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            status_line = (await reader.readline()).decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise OSError(f"not an HTTP response: {status_line!r}")
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode("latin-1").strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            if "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                data = await _chunked(reader)
            else:
                data = await reader.read()
            return int(parts[1]), headers, data
        finally:
            writer.close()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readline()
