"""Limits and timeouts of the public port, against the `larder-sidecar` process.

Raw sockets play the slow or greedy client; the user function is the protocol-level test
function (a real grpc.aio server). Timeouts are set to a second so each test is quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc
import grpc.aio
import pytest

from tests.integration.sidecar.user_function import PKG, UserFunction, compile_test_protos

SIDECAR = Path(sys.executable).parent / "larder-sidecar"
MIB = 1024 * 1024
FAST = {
    "LARDER_HTTP_HEAD_TIMEOUT": "1s",
    "LARDER_HTTP_IDLE_TIMEOUT": "1s",
    "LARDER_HTTP_BODY_TIMEOUT": "1s",
    "LARDER_GRPC_IDLE_TIMEOUT": "1s",
}
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_GOAWAY = 0x7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@dataclass
class RunningSidecar:
    proc: asyncio.subprocess.Process
    port: int
    admin: int
    log_path: Path

    async def metric(self, sample: str) -> float:
        """The value of one sample line of /metrics (0 when absent)."""
        _, text = await _get(self.admin, "/metrics")
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text()

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) / 1024


StartSidecar = Callable[..., Awaitable[RunningSidecar]]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_test_protos(tmp_path_factory.mktemp("limits-protos"))


@pytest.fixture
def pb(compiled: tuple[ModuleType, bytes]) -> ModuleType:
    return compiled[0]


@pytest.fixture
async def user_function(compiled: tuple[ModuleType, bytes]) -> AsyncIterator[UserFunction]:
    fn = UserFunction(*compiled)
    await fn.start()
    yield fn
    await fn.stop()


@pytest.fixture
async def start_sidecar(tmp_path: Path) -> AsyncIterator[StartSidecar]:
    started: list[RunningSidecar] = []

    async def start(fn: UserFunction, **env: str) -> RunningSidecar:
        port, admin = _free_port(), _free_port()
        log_path = tmp_path / f"sidecar-{len(started)}.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                str(SIDECAR),
                env={
                    **os.environ,
                    "USER_FUNCTION_PORT": str(fn.port),
                    "LARDER_PORT": str(port),
                    "LARDER_ADMIN_PORT": str(admin),
                    "LARDER_INTERNAL_PORT": str(_free_port()),
                    "LARDER_LOG_FORMAT": "json",
                    **FAST,
                    **env,
                },
                stderr=log_file,
            )
        sidecar = RunningSidecar(proc, port, admin, log_path)
        started.append(sidecar)
        # Another process's readiness can only be polled.
        for _ in range(300):
            assert proc.returncode is None, f"the sidecar exited: {sidecar.log()}"
            try:
                if (await _get(admin, "/readyz"))[0] == 200:
                    return sidecar
            except OSError:
                pass
            await asyncio.sleep(0.05)
        pytest.fail("the sidecar did not become ready in 15 s")

    yield start
    for sidecar in started:
        if sidecar.proc.returncode is None:
            sidecar.proc.kill()
            await sidecar.proc.wait()


async def _read_to_eof(reader: asyncio.StreamReader, within: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), within)
    except ConnectionResetError:
        return b""


async def _drip(writer: asyncio.StreamWriter, pieces: list[bytes], every: float) -> None:
    """Send `pieces` one at a time, `every` seconds apart, until they run out or the peer
    closes: the slow client."""
    for piece in pieces:
        writer.write(piece)
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


def _json_post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    start_sidecar: StartSidecar, user_function: UserFunction
) -> None:
    sidecar = await start_sidecar(user_function)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    started = loop.time()
    assert await _read_to_eof(reader, 5) == b""  # never sent a byte
    assert loop.time() - started >= 0.9
    writer.close()

    # After a served request, keep-alive waits for the next one as long, not forever.
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(_json_post(f"/{PKG}.Counter/Get", b'{"id": "idle"}'))
    answered = await asyncio.wait_for(reader.readuntil(b'"value":"0"}'), 5)
    assert answered.startswith(b"HTTP/1.1 200 OK")
    answered_at = loop.time()
    assert await _read_to_eof(reader, 5) == b""
    assert loop.time() - answered_at >= 0.9
    writer.close()
    assert await sidecar.metric('larder_public_timeouts_total{timeout="idle"}') == 2


@pytest.mark.parametrize(
    "drip",
    [
        pytest.param([b"G", b"E", b"T", b" ", b"/", b"x"] * 10, id="request-line"),
        pytest.param([b"GET / HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 30, id="headers"),
    ],
)
async def test_a_dripped_request_head_is_cut_after_the_head_timeout(
    start_sidecar: StartSidecar, user_function: UserFunction, drip: list[bytes]
) -> None:
    sidecar = await start_sidecar(user_function)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    started = loop.time()
    dripping = asyncio.create_task(_drip(writer, drip, every=0.2))
    answer = await _read_to_eof(reader, 5)
    elapsed = loop.time() - started
    dripping.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer
    assert 0.9 <= elapsed < 4.5, elapsed
    assert await sidecar.metric('larder_public_timeouts_total{timeout="head"}') == 1


async def test_a_partial_http2_preface_is_closed_after_the_head_timeout(
    start_sidecar: StartSidecar, user_function: UserFunction
) -> None:
    sidecar = await start_sidecar(user_function)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(H2_PREFACE[:14])
    started = loop.time()
    assert await _read_to_eof(reader, 5) == b""
    assert loop.time() - started >= 0.9
    writer.close()


def _frame_types(data: bytes) -> list[int]:
    types = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        types.append(data[3])
        data = data[9 + length :]
    return types


async def test_an_idle_http2_connection_gets_goaway_and_is_closed(
    start_sidecar: StartSidecar, user_function: UserFunction, pb: ModuleType
) -> None:
    sidecar = await start_sidecar(user_function)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(H2_PREFACE + H2_EMPTY_SETTINGS)
    started = loop.time()
    frames = await _read_to_eof(reader, 8)
    assert loop.time() - started >= 0.9
    assert H2_GOAWAY in _frame_types(frames), frames
    writer.close()

    # A gRPC client does not notice: it connects again for its next call.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        add = channel.unary_unary(
            f"/{PKG}.Counter/Add",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Value.FromString,
        )
        assert (await add(pb.AddRequest(id="h2", amount=1), timeout=10)).value == 1
        state = channel.get_state()
        for _ in range(100):  # bounded: the idle timeout is 1 s
            state = channel.get_state()
            if state is not grpc.ChannelConnectivity.READY:
                break
            await channel.wait_for_state_change(state)
        assert state is not grpc.ChannelConnectivity.READY
        assert (await add(pb.AddRequest(id="h2", amount=1), timeout=10)).value == 2


async def test_an_endless_header_is_refused_without_growing_memory(
    start_sidecar: StartSidecar, user_function: UserFunction
) -> None:
    sidecar = await start_sidecar(user_function, LARDER_HTTP_HEAD_TIMEOUT="30s")
    before = sidecar.rss_mib()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    piece = b"a" * (256 * 1024)
    sent = 0
    try:
        while sent < 32 * MIB:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
    except ConnectionError:
        pass
    answer = await _read_to_eof(reader, 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert sidecar.rss_mib() - before < 16
    assert sidecar.proc.returncode is None
    assert await sidecar.metric('larder_limit_refusals_total{limit="header_bytes"}') == 1


async def test_connections_over_the_cap_get_503_and_one_log_line(
    start_sidecar: StartSidecar, user_function: UserFunction
) -> None:
    sidecar = await start_sidecar(
        user_function, LARDER_MAX_CONNECTIONS="3", LARDER_HTTP_IDLE_TIMEOUT="60s"
    )
    held = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        # An answer on a connection proves the sidecar counts it.
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(
            b"HTTP/1.1 404"
        )
        held.append((reader, writer))
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = await _read_to_eof(reader, 5)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"connection: close" in refused
    assert await sidecar.metric('larder_limit_refusals_total{limit="connections"}') == 4
    assert await sidecar.metric("larder_public_connections") == 3

    held.pop()[1].close()
    for _ in range(100):  # until the sidecar has seen the close: bounded retries
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await _read_to_eof(reader, 5)
        writer.close()
        if not answer.startswith(b"HTTP/1.1 503 "):
            break
    assert answer.startswith(b"HTTP/1.1 404 ")
    log = sidecar.log()
    assert log.count("refusing new connections") == 1
    assert "accepting connections again" in log
    for _, writer in held:
        writer.close()


async def test_a_request_too_large_for_the_user_function_is_413_and_the_entity_stays(
    start_sidecar: StartSidecar, user_function: UserFunction, pb: ModuleType
) -> None:
    # gRPC's default receive limit (4 MiB) on the function; 12 MiB on the sidecar.
    sidecar = await start_sidecar(user_function)
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(_json_post(f"/{PKG}.Register/Set", b'{"id": "big", "text": "small"}'))
    assert (await asyncio.wait_for(reader.readuntil(b"}"), 5)).startswith(b"HTTP/1.1 200")
    inits = len(user_function.record.inits)

    body = json.dumps({"id": "big", "text": "x" * (11 * MIB)}).encode()
    writer.write(_json_post(f"/{PKG}.Register/Set", body))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 413 "), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    error = json.loads(await reader.readexactly(length))
    assert error["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "too large for the user function" in error["message"]
    writer.close()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        set_text = channel.unary_unary(
            f"/{PKG}.Register/Set",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Text.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await set_text(pb.SetRequest(id="big", text="y" * (11 * MIB)), timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The entity kept its state and its stream: no restart, no new Init.
        assert (await set_text(pb.SetRequest(id="big", text="after"), timeout=10)).text == "after"
    assert len(user_function.record.inits) == inits
    assert await sidecar.metric('larder_entity_restarts_total{entity_type="register"}') == 0
    refusals = 'larder_limit_refusals_total{limit="user_function_message_bytes"}'
    assert await sidecar.metric(refusals) == 2


async def test_a_function_with_a_larger_limit_gets_an_11_mib_request(
    start_sidecar: StartSidecar, compiled: tuple[ModuleType, bytes]
) -> None:
    fn = UserFunction(*compiled, server_options=(("grpc.max_receive_message_length", 16 * MIB),))
    await fn.start()
    try:
        sidecar = await start_sidecar(fn, LARDER_USER_FUNCTION_MAX_MESSAGE_BYTES=str(16 * MIB))
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        text = "x" * (11 * MIB)
        # An action: its reply is the request's text (an entity's reply would carry the
        # new state too, twice the size).
        writer.write(_json_post(f"/{PKG}.Echo/Say", json.dumps({"text": text}).encode()))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        reply = await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200 "), head + reply
        assert json.loads(reply) == {"text": text}
        writer.close()
    finally:
        await fn.stop()


async def test_an_entity_id_over_the_limit_is_refused_over_http_and_grpc(
    start_sidecar: StartSidecar, user_function: UserFunction, pb: ModuleType
) -> None:
    sidecar = await start_sidecar(user_function, LARDER_MAX_ENTITY_ID_BYTES="64")
    long_id = "é" * 40  # 40 characters, 80 bytes
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(_json_post(f"/{PKG}.Counter/Get", json.dumps({"id": long_id}).encode()))
    answer = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"longer than 64 bytes" in answer
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        get = channel.unary_unary(
            f"/{PKG}.Counter/Get",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Value.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get(pb.GetRequest(id=long_id), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (await get(pb.GetRequest(id="é" * 32), timeout=10)).value == 0
    assert not [i for i in user_function.record.inits if i.entity_id == long_id]
    assert await sidecar.metric('larder_limit_refusals_total{limit="entity_id_bytes"}') == 2
