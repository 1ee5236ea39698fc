"""What the public port refuses, on raw sockets: oversized heads, bodies and chunks,
slow bodies, undecodable paths, bodies that are not JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from larder_sidecar.http import PublicServer
from larder_sidecar.settings import PublicPortLimits

from .conftest import MAX_HTTP_BODY, EchoServer, StartPublic

MIB = 1024 * 1024


async def exchange(port: int, request: bytes, within: float = 10) -> tuple[int, bytes, bytes]:
    """Send `request`, read until the server closes; (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    # Refused while still sending: the answer is in the read buffer all the same.
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    data = await asyncio.wait_for(reader.read(), within)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


async def served(port: int) -> bool:
    status, _, _ = await exchange(port, b"GET /turkeys/t1 HTTP/1.1\r\nConnection: close\r\n\r\n")
    return status == 200


async def test_a_1_mib_url_is_414(public: PublicServer) -> None:
    status, head, body = await exchange(
        public.port, b"GET /turkeys/" + b"x" * MIB + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 414
    assert b"connection: close" in head
    assert "longer than 8192 bytes" in json.loads(body)["message"]
    assert public.metrics.limit_refusals.labels("url_bytes")._value.get() == 1
    assert await served(public.port)


async def test_100_000_headers_are_431(public: PublicServer) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000))
    request = b"GET /turkeys/t1 HTTP/1.1\r\n" + headers + b"\r\n"
    status, _, body = await exchange(public.port, request)
    assert status == 431
    assert "more than 100 header fields" in json.loads(body)["message"]
    assert await served(public.port)


async def test_header_bytes_over_the_limit_are_431(public: PublicServer) -> None:
    big = b"X-Big: " + b"v" * (40 * 1024) + b"\r\n"
    status, _, body = await exchange(public.port, b"GET /turkeys/t1 HTTP/1.1\r\n" + big + b"\r\n")
    assert status == 431
    assert "larger than 32768 bytes" in json.loads(body)["message"]


async def test_a_chunk_larger_than_the_body_limit_is_413_before_its_data(
    public: PublicServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
    writer.write(
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{MAX_HTTP_BODY + 1:x}\r\n".encode() + b'{"turkeyId": '
    )
    # No more data comes: only the chunk's announced size can trigger the answer.
    answer = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    "path", ["/turkeys/%zz%", "/turkeys/t%2", "/turkeys/%ff", "/turkeys/t1?unused=%zz"]
)
async def test_percent_encoding_that_does_not_decode_is_400(
    public: PublicServer, path: str
) -> None:
    status, _, body = await exchange(
        public.port, f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 400
    assert "%" in json.loads(body)["message"]


async def test_a_body_needs_a_json_content_type(public: PublicServer) -> None:
    body = b'{"turkeyId": "t1"}'

    async def post(content_type: str | None) -> int:
        header = f"Content-Type: {content_type}\r\n" if content_type else ""
        request = (
            f"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\n{header}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        return (await exchange(public.port, request))[0]

    # What a form or a cross-site "simple request" can send is refused.
    for refused in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                    None, "application/jsonp"):
        assert await post(refused) == 415, refused
    for accepted in ("application/json", "Application/JSON; charset=utf-8",
                     "application/merge-patch+json"):
        assert await post(accepted) == 200, accepted
    # Without a body, no Content-Type is needed.
    status, _, _ = await exchange(
        public.port,
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\nConnection: close\r\n"
        b"Content-Length: 0\r\n\r\n",
    )
    assert status == 200


async def test_a_body_slower_than_the_minimum_rate_is_408(
    echo_server: EchoServer, start_public: StartPublic
) -> None:
    limits = PublicPortLimits(body_timeout=0.5, min_body_rate=100)
    server = await start_public(echo_server.target, limits=limits)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    started = loop.time()

    async def drip() -> None:
        for _ in range(100):  # 1 byte per 0.1 s: 10 bytes/s, a tenth of the minimum
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    answer = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    elapsed = loop.time() - started
    dripping.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.5 <= elapsed < 2.5
    assert server.metrics.public_timeouts.labels("body")._value.get() == 1
