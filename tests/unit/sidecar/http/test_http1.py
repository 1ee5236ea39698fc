"""The HTTP/1.1 connection protocol, fed bytes through an in-memory transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest
from google.protobuf.message import Message
from larder_sidecar.http.connections import ConnectionSet
from larder_sidecar.http.dispatch import Dispatcher
from larder_sidecar.http.http1 import Http1Connection
from larder_sidecar.http.routes import RouteTable
from larder_sidecar.invoke import InvokeResult, MetadataPairs, MethodModel
from larder_sidecar.settings import PublicPortLimits

from .fakes import FakeInvoker, echo


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False
        self.eof_sent = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.sent += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_sent = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)

    def json(self) -> Any:
        return json.loads(self.body)


def parse_responses(data: bytes) -> list[Response]:
    """The complete responses in `data`."""
    responses: list[Response] = []
    complete = 0

    class Collector:
        def on_message_begin(self) -> None:
            responses.append(Response())

        def on_header(self, name: bytes, value: bytes) -> None:
            responses[-1].headers[name.decode().lower()] = value.decode()

        def on_headers_complete(self) -> None:
            responses[-1].status = parser.get_status_code()

        def on_body(self, body: bytes) -> None:
            responses[-1].body += body

        def on_message_complete(self) -> None:
            nonlocal complete
            complete += 1

    parser = httptools.HttpResponseParser(Collector())
    parser.feed_data(data)
    return responses[:complete]


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (bounded, no wall-clock sleeps)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def connect(table: RouteTable, invoker: FakeInvoker | None = None,
            max_body: int = 1024, limits: PublicPortLimits | None = None,
            ) -> tuple[Http1Connection, MemoryTransport, ConnectionSet]:
    connections = ConnectionSet()
    protocol = Http1Connection(Dispatcher(table, invoker or FakeInvoker()), max_body, connections,
                               limits=limits)
    transport = MemoryTransport()
    protocol.connection_made(transport)
    return protocol, transport, connections


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def test_pipelined_requests_are_answered_in_order(table: RouteTable) -> None:
    release_first = asyncio.Event()

    async def slow_first(method: MethodModel, req: Message, md: MetadataPairs) -> InvokeResult:
        if getattr(req, "turkey_id", "") == "slow":
            await release_first.wait()
        return await echo(method, req, md)

    protocol, transport, _ = connect(table, FakeInvoker(slow_first))
    protocol.data_received(
        b"GET /turkeys/slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /turkeys/fast HTTP/1.1\r\nHost: x\r\n\r\n"
        + post("/turkeys/t3/cook", b"{}")
    )
    await until(lambda: not release_first.is_set() and protocol._task is not None)
    assert transport.sent == b""  # the fast one waits behind the slow one
    release_first.set()
    await until(lambda: len(parse_responses(bytes(transport.sent))) == 3)
    ids = [r.json()["turkeyId"] for r in parse_responses(bytes(transport.sent))]
    assert ids == ["slow", "fast", "t3"]
    assert not transport.closed


async def test_keep_alive_by_version_and_connection_header(table: RouteTable) -> None:
    protocol, transport, connections = connect(table)
    protocol.data_received(b"GET /turkeys/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    await until(lambda: len(parse_responses(bytes(transport.sent))) == 1)
    assert parse_responses(bytes(transport.sent))[0].headers["connection"] == "keep-alive"
    assert not transport.closed
    protocol.data_received(b"GET /turkeys/b HTTP/1.1\r\nConnection: close\r\n\r\n")
    await until(lambda: transport.closed)
    last = parse_responses(bytes(transport.sent))[-1]
    assert last.headers["connection"] == "close"
    assert last.json()["turkeyId"] == "b"
    protocol.connection_lost(None)
    assert len(connections) == 0


async def test_declared_body_over_the_limit_is_413_before_reading_it(table: RouteTable) -> None:
    protocol, transport, _ = connect(table, max_body=10)
    protocol.data_received(
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\nContent-Length: 11\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    await until(lambda: transport.eof_sent)
    (response,) = parse_responses(bytes(transport.sent))
    assert response.status == 413
    assert "limit of 10 bytes" in response.json()["message"]
    assert b"100 Continue" not in transport.sent
    protocol.data_received(b"more body bytes are dropped")
    protocol.connection_lost(None)


async def test_chunked_body_over_the_limit_is_413(table: RouteTable) -> None:
    protocol, transport, _ = connect(table, max_body=10)
    protocol.data_received(
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n8\r\n{\"turkey\r\n8\r\n_id\": 1}\r\n0\r\n\r\n"
    )
    await until(lambda: transport.eof_sent)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [413]


async def test_expect_continue_is_answered_when_nothing_is_owed(table: RouteTable) -> None:
    protocol, transport, _ = connect(table)
    body = b'{"turkeyId": "t1"}'
    head, _, rest = post("/com.example.TurkeyService/StartCooking", body,
                         b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")
    protocol.data_received(head + b"\r\n\r\n")
    assert transport.sent == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.data_received(rest)
    await until(lambda: transport.sent.count(b"HTTP/1.1 200") == 1)


async def test_malformed_request_is_400_and_the_connection_ends(table: RouteTable) -> None:
    protocol, transport, _ = connect(table)
    protocol.data_received(b"GET /turkeys/a HTTP/1.1\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    await until(lambda: transport.eof_sent)
    statuses = [r.status for r in parse_responses(bytes(transport.sent))]
    assert statuses == [200, 400]


async def test_upgrade_without_body_is_served_as_http1(table: RouteTable) -> None:
    protocol, transport, _ = connect(table)
    protocol.data_received(
        b"GET /turkeys/a HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\nGET /turkeys/b HTTP/1.1\r\n\r\n"
    )
    await until(lambda: len(parse_responses(bytes(transport.sent))) == 2)
    assert [r.json()["turkeyId"] for r in parse_responses(bytes(transport.sent))] == ["a", "b"]


async def test_upgrade_with_body_is_refused(table: RouteTable) -> None:
    protocol, transport, _ = connect(table)
    protocol.data_received(
        post("/turkeys/a/cook", b"{}", b"Connection: Upgrade\r\nUpgrade: h2c\r\n")
    )
    await until(lambda: transport.eof_sent)
    (response,) = parse_responses(bytes(transport.sent))
    assert response.status == 400
    assert "Upgrade" in response.json()["message"]


async def test_head_response_has_no_body(table: RouteTable) -> None:
    protocol, transport, _ = connect(table)
    protocol.data_received(b"HEAD /turkeys/a HTTP/1.1\r\n\r\n")
    await until(lambda: transport.sent.endswith(b"\r\n\r\n"))
    assert transport.sent.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"content-length: " in transport.sent
    assert b'"code"' not in transport.sent


async def test_begin_close_finishes_in_flight_then_closes(table: RouteTable) -> None:
    release = asyncio.Event()

    async def held(method: MethodModel, req: Message, md: MetadataPairs) -> InvokeResult:
        await release.wait()
        return await echo(method, req, md)

    protocol, transport, _ = connect(table, FakeInvoker(held))
    protocol.data_received(b"GET /turkeys/a HTTP/1.1\r\n\r\n")
    await until(lambda: protocol._task is not None)
    protocol.begin_close()
    assert not transport.closed
    release.set()
    await until(lambda: transport.closed)
    (response,) = parse_responses(bytes(transport.sent))
    assert response.status == 200
    assert response.headers["connection"] == "close"


async def test_idle_connection_closes_at_once_on_begin_close(table: RouteTable) -> None:
    protocol, transport, _ = connect(table)
    protocol.begin_close()
    assert transport.closed


async def test_lost_connection_cancels_the_request_in_flight(table: RouteTable) -> None:
    never = asyncio.Event()

    async def hang(method: MethodModel, req: Message, md: MetadataPairs) -> InvokeResult:
        await never.wait()
        raise AssertionError("unreachable")

    protocol, _, connections = connect(table, FakeInvoker(hang))
    protocol.data_received(b"GET /turkeys/a HTTP/1.1\r\n\r\n")
    await until(lambda: protocol._task is not None)
    task = protocol._task
    assert task is not None
    protocol.connection_lost(ConnectionResetError())
    await until(task.done)
    assert task.cancelled()
    assert len(connections) == 0


CHUNKED = (
    b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\n{\"tur\r\n"
    b"0D\r\nkeyId\": \"c1\"}\r\n"
    b"0\r\nX-Trailer: t\r\n\r\n"
)
GET = b"GET /turkeys/g1 HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 100_000])
async def test_pipelined_requests_parse_the_same_however_the_input_is_cut(
    table: RouteTable, piece: int
) -> None:
    # The connection cuts what it feeds the parser (heads, bodies, chunk lines); however
    # the input arrives, every request is read whole and in order.
    invoker = FakeInvoker()
    protocol, transport, _ = connect(table, invoker)
    data = CHUNKED + GET + post("/com.example.TurkeyService/StartCooking", b'{"turkeyId":"p"}')
    data += CHUNKED + b"\r\n" + GET
    for start in range(0, len(data), piece):
        protocol.data_received(data[start : start + piece])
    await until(lambda: len(parse_responses(bytes(transport.sent))) == 5)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [200] * 5
    assert [getattr(call.request, "turkey_id", "") for call in invoker.calls] == [
        "c1", "g1", "p", "c1", "g1"
    ]


async def test_a_chunk_over_the_body_limit_is_refused_when_announced(table: RouteTable) -> None:
    protocol, transport, _ = connect(table, max_body=100)
    protocol.data_received(
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n55\r\n"
    )
    # 16 + 85 bytes announced: over 100 before the second chunk's first byte.
    await until(lambda: transport.eof_sent)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [413]


async def test_an_endless_header_is_refused_at_the_head_limit(table: RouteTable) -> None:
    limits = PublicPortLimits(max_url_bytes=256, max_header_bytes=1024)
    protocol, transport, _ = connect(table, limits=limits)
    protocol.data_received(b"GET /turkeys/t1 HTTP/1.1\r\nX-Endless: ")
    fed = 0
    while not transport.eof_sent and fed < 100_000:
        protocol.data_received(b"a" * 100)
        fed += 100
    # The head limit (target, header bytes, 64 for the request line's own), plus the one
    # piece offered when it was reached.
    assert fed <= 256 + 1024 + 64 + 100
    await until(lambda: transport.eof_sent)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [431]


async def test_a_long_target_is_414_and_many_headers_431(table: RouteTable) -> None:
    limits = PublicPortLimits(max_url_bytes=256, max_header_count=8)
    protocol, transport, _ = connect(table, limits=limits)
    protocol.data_received(b"GET /" + b"x" * 256 + b" HTTP/1.1\r\n\r\n")
    await until(lambda: transport.eof_sent)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [414]

    protocol, transport, _ = connect(table, limits=limits)
    protocol.data_received(b"GET /turkeys/t1 HTTP/1.1\r\n" + b"X-A: b\r\n" * 8 + b"\r\n")
    await until(lambda: len(parse_responses(bytes(transport.sent))) == 1)
    protocol.data_received(b"GET /turkeys/t1 HTTP/1.1\r\n" + b"X-A: b\r\n" * 9 + b"\r\n")
    await until(lambda: transport.eof_sent)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [200, 431]


async def test_keep_alive_waits_for_the_next_request_only_the_idle_timeout(
    table: RouteTable,
) -> None:
    protocol, transport, _ = connect(table, limits=PublicPortLimits(idle_timeout=0.05))
    protocol.data_received(GET)
    await until(lambda: len(parse_responses(bytes(transport.sent))) == 1)
    assert not transport.closed
    closed = asyncio.get_running_loop().create_future()
    transport.close = lambda: closed.set_result(None)  # type: ignore[method-assign]
    await asyncio.wait_for(closed, 5)
    protocol.connection_lost(None)


async def test_a_head_not_complete_in_time_is_408(table: RouteTable) -> None:
    protocol, transport, _ = connect(table, limits=PublicPortLimits(head_timeout=0.05))
    protocol.data_received(b"GET /turkeys/t1 HTTP/1.1\r\nX-Slow: ")
    for _ in range(1000):  # bounded: the timer fires within a few loop turns of 50 ms
        if transport.eof_sent:
            break
        await asyncio.sleep(0.01)
    assert [r.status for r in parse_responses(bytes(transport.sent))] == [408]
    protocol.connection_lost(None)
