"""The public port with real clients: curl for HTTP/1.1, grpc.aio through the relay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from larder_sidecar.http import PublicServer
from larder_sidecar.invoke import InvokeResult, MetadataPairs, MethodModel

from tests.unit.sidecar.http.fakes import FakeInvoker, echo

from .conftest import MAX_GRPC_MESSAGE, MAX_HTTP_BODY, StartPublic, curl, start_echo_server


def grpc_channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
        ],
    )


async def grpc_echo(channel: grpc.aio.Channel, payload: bytes) -> bytes:
    call = channel.unary_unary("/com.example.TurkeyService/GetTurkey", None, None)
    reply: bytes = await call(payload, timeout=30)
    return reply


async def test_tutorial_curl_commands(public: PublicServer) -> None:
    started = await curl(
        "-X", "POST", "-H", "Content-Type: application/json",
        f"localhost:{public.port}/com.example.TurkeyService/StartCooking",
        "-d", '{"turkey_id": "t1"}',
    )
    assert started.status == 200
    assert json.loads(started.body) == {
        "turkeyId": "t1", "inOven": True, "temperature": 0, "tags": []
    }
    fetched = await curl(f"localhost:{public.port}/turkeys/t1")
    assert fetched.status == 200
    assert json.loads(fetched.body)["turkeyId"] == "t1"


async def test_grpc_through_the_same_port(public: PublicServer) -> None:
    async with grpc_channel(public.port) as channel:
        call = channel.unary_unary("/com.example.TurkeyService/GetTurkey", None, None)
        call_state = call(b"\x0a\x02t1", metadata=(("x-echo", "yes"),), timeout=30)
        reply = await call_state
        assert reply == b"\x0a\x02t1"
        assert ("x-echo", "yes") in tuple(await call_state.initial_metadata() or ())


async def test_grpc_and_http_at_the_same_time(public: PublicServer) -> None:
    async with grpc_channel(public.port) as channel:
        grpc_calls = [grpc_echo(channel, f"payload-{i}".encode()) for i in range(40)]
        http_calls = [curl(f"127.0.0.1:{public.port}/turkeys/t{i}") for i in range(8)]
        grpc_replies, http_replies = await asyncio.gather(
            asyncio.gather(*grpc_calls), asyncio.gather(*http_calls)
        )
    assert grpc_replies == [f"payload-{i}".encode() for i in range(40)]
    assert [json.loads(r.body)["turkeyId"] for r in http_replies] == [f"t{i}" for i in range(8)]


async def test_keep_alive_reuses_one_connection(public: PublicServer) -> None:
    base = f"http://127.0.0.1:{public.port}"
    urls = [f"{base}/turkeys/a", f"{base}/turkeys/b", f"{base}/nowhere", f"{base}/turkeys/c"]
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-w", "%{http_code} %{num_connects}\n",
        *(arg for url in urls for arg in ("-o", "/dev/null", url)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr
    # One TCP connect for the first request; the rest (even after a 404) reuse it.
    assert stdout.decode().split("\n")[:-1] == ["200 1", "200 0", "404 0", "200 0"]


async def test_pipelined_requests_on_a_raw_socket(public: PublicServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
    body = b'{"turkeyId": "p3"}'
    writer.write(
        b"GET /turkeys/p1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /turkeys/p2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /com.example.TurkeyService/StartCooking HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    await writer.drain()
    data = await reader.read(-1)  # the server closes after the `Connection: close` request
    writer.close()
    await writer.wait_closed()
    ids = [
        json.loads(chunk.split(b"\r\n\r\n", 1)[1][: chunk.index(b"}") + 1])["turkeyId"]
        for chunk in data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    ]
    assert ids == ["p1", "p2", "p3"]


async def test_large_bodies_both_ways(public: PublicServer, tmp_path: Path) -> None:
    # ≈ 2.3 MB of JSON: large, yet quick, since protobuf's JSON mapping is pure Python.
    tags = [f"tag-{i:07d}" for i in range(150_000)]
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps({"id": "big", "tags": tags}))
    assert body_file.stat().st_size < MAX_HTTP_BODY
    result = await curl(
        "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", f"@{body_file}",
        f"127.0.0.1:{public.port}/com.example.Library/PutBook",
    )
    assert result.status == 200
    assert json.loads(result.body)["tags"] == tags
    async with grpc_channel(public.port) as channel:
        # Far over every flow-control window, just under the port's message limit.
        payload = bytes(range(256)) * ((MAX_HTTP_BODY - 1024) // 256)
        assert await grpc_echo(channel, payload) == payload
        # The port enforces the limit on gRPC messages too (LARDER_MAX_MESSAGE_BYTES).
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await grpc_echo(channel, payload * 2)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await grpc_echo(channel, b"still serving") == b"still serving"


async def test_http_errors_are_precise_and_the_server_keeps_serving(
    public: PublicServer, tmp_path: Path
) -> None:
    base = f"127.0.0.1:{public.port}"
    start = f"{base}/com.example.TurkeyService/StartCooking"
    json_type = ("-H", "Content-Type: application/json")
    not_found = await curl(f"{base}/ducks/d1")
    assert not_found.status == 404
    assert "/ducks/d1" in json.loads(not_found.body)["message"]

    wrong_method = await curl("-i", "-X", "DELETE", f"{base}/turkeys/t1")
    assert wrong_method.status == 405
    assert b"\r\nallow: GET\r\n" in wrong_method.body

    unknown_field = await curl("-X", "POST", *json_type, start, "-d", '{"turkey_idd": "t1"}')
    assert unknown_field.status == 400
    assert "turkey_idd" in json.loads(unknown_field.body)["message"]

    wrong_type = await curl("-X", "POST", *json_type, start, "-d", '{"temperature": "hot"}')
    assert wrong_type.status == 400
    assert "temperature" in json.loads(wrong_type.body)["message"]

    invalid_json = await curl("-X", "POST", *json_type, start, "-d", '{"turkey_id": ')
    assert invalid_json.status == 400

    not_found_entity = await curl(f"{base}/turkeys/missing")
    assert not_found_entity.status == 404
    assert json.loads(not_found_entity.body) == {
        "code": 5, "message": "no turkey with id missing", "details": []
    }

    failure = await curl(f"{base}/turkeys/fail")
    assert failure.status == 500
    assert json.loads(failure.body)["message"] == "the oven caught fire"

    streaming = await curl(f"{base}/turkeys/t1:watch")
    assert streaming.status == 501

    too_big = tmp_path / "too-big.json"
    too_big.write_bytes(b'{"turkey_id": "' + b"x" * MAX_HTTP_BODY + b'"}')
    refused = await curl("-X", "POST", *json_type, "--data-binary", f"@{too_big}", start)
    assert refused.status == 413

    still_serving = await curl(f"{base}/turkeys/t1")
    assert still_serving.status == 200


async def test_request_metadata_and_reply_headers(
    echo_server: object, start_public: StartPublic
) -> None:
    seen: list[MetadataPairs] = []

    async def recording(method: MethodModel, req: Message, md: MetadataPairs) -> InvokeResult:
        seen.append(md)
        return await echo(method, req, md)

    target = getattr(echo_server, "target")  # noqa: B009
    public = await start_public(target, FakeInvoker(recording))
    result = await curl("-i", "-H", "X-Tenant: acme", f"127.0.0.1:{public.port}/turkeys/t1")
    assert result.status == 200
    assert b"\r\nx-served-by: fake\r\n" in result.body
    assert ("x-tenant", "acme") in seen[0]
    assert all(name != "host" for name, _ in seen[0])


async def test_unix_socket_target(start_public: StartPublic, tmp_path: Path) -> None:
    echo_server = await start_echo_server(f"unix:{tmp_path}/internal.sock")
    try:
        public = await start_public(echo_server.target)
        async with grpc_channel(public.port) as channel:
            assert await grpc_echo(channel, b"over unix") == b"over unix"
    finally:
        await echo_server.server.stop(None)


async def test_unreachable_target_fails_grpc_but_http_still_works(
    start_public: StartPublic, tmp_path: Path
) -> None:
    public = await start_public(f"unix:{tmp_path}/nobody-listens.sock")
    async with grpc_channel(public.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await grpc_echo(channel, b"x")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await curl(f"127.0.0.1:{public.port}/turkeys/t1")).status == 200


async def test_close_finishes_in_flight_requests_and_stops_accepting(
    echo_server: object, start_public: StartPublic
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def held(method: MethodModel, req: Message, md: MetadataPairs) -> InvokeResult:
        entered.set()
        await release.wait()
        return await echo(method, req, md)

    public = await start_public(getattr(echo_server, "target"), FakeInvoker(held))  # noqa: B009
    port = public.port
    in_flight = asyncio.create_task(curl(f"127.0.0.1:{port}/turkeys/t1"))
    await entered.wait()
    closing = asyncio.create_task(public.close(grace=30))
    # Once closing has begun, new connections are refused.
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # refused, or reset when the listener closed mid-handshake
            break
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    result = await in_flight
    assert result.status == 200
    await closing
