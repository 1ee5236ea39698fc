"""The public port's own gRPC path against a real sidecar and user function: what a call
that is cancelled, out of time or malformed does to entity state, and that the sidecar
keeps serving. (The front's protocol details: tests/unit/sidecar/grpc_h2.)"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import grpc
import grpc.aio
import h2.config
import h2.connection
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from larder_sidecar.app import Sidecar
from larder_sidecar.tracing import TracingConfig

from tests.infra.otlp import OtlpReceiver

from .conftest import Client, SidecarFactory
from .user_function import PKG, UserFunction

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def _hung(client: Client, fn: UserFunction, entity: str) -> asyncio.Future[object]:
    """A Hang command that holds the entity busy until `fn.record.hang` is set."""
    hang = asyncio.ensure_future(
        client.call("Counter", "Hang", client.pb.GetRequest(id=entity), client.pb.Value)
    )
    await fn.record.hanging.wait()
    return hang


async def test_a_call_cancelled_before_its_command_starts_is_never_executed(
    user_function: UserFunction, start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    client = connect(await start_sidecar(user_function))
    await client.add("c", 1)
    hang = await _hung(client, user_function, "c")
    queued = client._method("Counter", "Add", client.pb.Value)(
        client.pb.AddRequest(id="c", amount=100), timeout=10
    )
    await asyncio.sleep(0.2)  # the Add is queued behind the Hang
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    user_function.record.hang.set()
    await hang
    assert await client.get("c") == 1


async def test_a_deadline_that_passes_in_the_queue_is_deadline_exceeded_and_not_executed(
    user_function: UserFunction, start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    client = connect(await start_sidecar(user_function))
    await client.add("d", 1)
    hang = await _hung(client, user_function, "d")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client._method("Counter", "Add", client.pb.Value)(
            client.pb.AddRequest(id="d", amount=100), timeout=0.3
        )
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    user_function.record.hang.set()
    await hang
    assert await client.get("d") == 1


async def _raw(port: int, data: bytes, until: bytes | None = None) -> bytes:
    """Send `data` on a new connection; what comes back until EOF or `until`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
                if until is not None and until in received:
                    break
        return received
    finally:
        writer.close()


def _goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame among the frames in `data`."""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        if data[pos + 3] == 0x7:
            return int.from_bytes(data[pos + 13 : pos + 17], "big")
        pos += 9 + length
    return None


async def test_bad_input_changes_no_entity_and_the_sidecar_keeps_serving(
    user_function: UserFunction, start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    sidecar = await start_sidecar(user_function, max_message_bytes=64 * 1024)
    client = connect(sidecar)
    await client.add("b", 5)
    port = sidecar.public_port
    # Garbage after the preface (a SETTINGS frame of 2 bytes): GOAWAY FRAME_SIZE_ERROR.
    answer = await _raw(port, PREFACE + b"\x00\x00\x02\x04\x00\x00\x00\x00\x00zz")
    assert _goaway_code(answer) == 0x6
    # 1,000 connections opened mid-preface or mid-frame and dropped.
    for _ in range(10):
        batch = [asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
        for i, (_, writer) in enumerate(await asyncio.gather(*batch)):
            writer.write(PREFACE[:9] if i % 2 else PREFACE + b"\x00\x00")
            writer.transport.abort()
    channel = client.channel
    add = channel.unary_unary(f"/{PKG}.Counter/Add", None, None)
    request = client.pb.AddRequest(id="b", amount=100).SerializeToString()
    for bad, code in [
        (b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),  # not an AddRequest
        (request + b"\x00" * (64 * 1024), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await add(bad, timeout=5)
        assert raised.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{PKG}.Counter/NoSuch", None, None)(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # A lying length prefix, by hand on a fresh connection: announced 100, sent 3.
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                          (":path", f"/{PKG}.Counter/Add"), ("content-type", "application/grpc"),
                          ("te", "trailers")])
    conn.send_data(1, struct.pack(">BI", 0, 100) + b"abc", end_stream=True)
    # Our trailers are literals without Huffman coding: the message is readable as is.
    assert b"ended inside a message" in await _raw(port, conn.data_to_send(),
                                                   until=b"ended inside a message")
    assert await client.get("b") == 5
    assert await client.add("b", 1) == 6


async def test_a_grpc_call_continues_the_clients_trace(
    user_function: UserFunction, start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    trace, parent = "6bf92f3577b34da6a3ce929d0e0e4736", "20f067aa0ba902b7"
    async with OtlpReceiver() as receiver:
        sidecar = await start_sidecar(user_function, tracing=TracingConfig(
            endpoint=receiver.endpoint, export_delay=0.05, service_name="grpc"))
        client = connect(sidecar)
        await client.call("Counter", "Add", client.pb.AddRequest(id="t", amount=1),
                          client.pb.Value, metadata=(("traceparent", f"00-{trace}-{parent}-01"),))
        spans = await receiver.wait_for(lambda s: any(x.kind == "SERVER" for x in s))
    server = next(s for s in spans if s.kind == "SERVER")
    assert (server.name, server.trace_id, server.parent_id) == (
        f"/{PKG}.Counter/Add", trace, parent)


async def test_health_is_served_on_the_public_port_unary_and_streamed(
    user_function: UserFunction, start_sidecar: SidecarFactory,
    connect: Callable[[Sidecar], Client],
) -> None:
    client = connect(await start_sidecar(user_function))
    health = health_pb2_grpc.HealthStub(client.channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    # The same connection goes on serving unary calls of the user's services.
    assert await client.add("h", 2) == 2
