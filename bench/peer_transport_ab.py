"""The internal port's transport alone, A/B in one run, four arms: the same forwarded-command
messages between two processes over loopback, answered at once by a server that decodes
the request and sends a fixed reply.

- unary: one grpc.aio unary call per command (the transport before this bench);
- bidi: one grpc.aio bidirectional stream per peer, each message a 4-byte call id and
  the serialized request (replies matched to callers by the id);
- streams: the same framing over asyncio streams (a reader task per connection, a
  `StreamWriter.write` per frame, no coalescing), client and server written for the bench;
- framed: Larder's own framing over asyncio Protocols (`cluster/frames.py`), the real
  `PeerClients` against a server built on the real `FramedConnection`.

Open loop at `--rate` calls/s for `--seconds`, `--repeat` rounds in rotating order; per
arm: p50/p99 latency, CPU µs per call of the client process and of the server process
(`/proc/<pid>/stat` deltas), and the load average (the machine is shared).

    .venv/bin/python bench/peer_transport_ab.py [--rate 2000] [--seconds 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import tools
from larder_sidecar.cluster import frames, wire
from larder_sidecar.cluster.connection import FramedConnection, pong
from larder_sidecar.cluster.frames import Kind
from larder_sidecar.cluster.peers import PeerClients

METHOD = "/larder.bench.Peer/Forward"
STREAM = "/larder.bench.Peer/Stream"
ID = struct.Struct(">I")
ARMS = ("unary", "bidi", "streams", "framed")


def request() -> Any:
    return wire.ForwardRequest(
        entity_type="counter",
        entity_id="fw123",
        method="/larder.bench.Counter/Increase",
        payload=b'\n\x05fw123\x10\x01',
        map_version=1,
    )


def reply() -> Any:
    message = wire.ForwardReply()
    message.outcome.reply.payload.type_url = "type.googleapis.com/larder.bench.Value"
    message.outcome.reply.payload.value = b"\x08\x2a"
    return message


# --- servers (this script with --serve ARM, its own process) -----------------------------


class _EchoConnection(FramedConnection):
    def __init__(self, body: bytes) -> None:
        super().__init__("bench client", 1 << 24, 10.0)
        self._body = body

    def on_preface(self, version: int, max_frame: int) -> None:
        self.send_now(frames.preface(1 << 24))

    def on_frame(self, kind: int, call: int, body: bytes) -> None:
        if kind == Kind.FORWARD:
            wire.ForwardRequest.FromString(body)
            self.send(frames.frame(Kind.FORWARD_REPLY, call, self._body))
        elif kind == Kind.PING:
            self.send(pong())


async def serve(arm: str) -> None:
    body: bytes = reply().SerializeToString()
    if arm == "framed":
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _EchoConnection(body), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    elif arm == "streams":
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(frames.PREFACE.size)
            writer.write(frames.preface(1 << 24))
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    length, kind, call = frames.HEADER.unpack(
                        await reader.readexactly(frames.HEADER.size))
                    data = await reader.readexactly(length - frames.HEADER_AFTER_LENGTH)
                    if kind == Kind.FORWARD:
                        wire.ForwardRequest.FromString(data)
                        writer.write(frames.frame(Kind.FORWARD_REPLY, call, body))

        stream_server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = stream_server.sockets[0].getsockname()[1]
    else:
        async def unary(data: bytes, context: Any) -> bytes:
            wire.ForwardRequest.FromString(data)
            return body

        async def stream(requests: Any, context: Any) -> Any:
            async for data in requests:
                wire.ForwardRequest.FromString(data[4:])
                yield data[:4] + body

        grpc_server = grpc.aio.server()
        grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "larder.bench.Peer", {
                "Forward": grpc.unary_unary_rpc_method_handler(unary),
                "Stream": grpc.stream_stream_rpc_method_handler(stream),
            }),))
        port = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


# --- clients -----------------------------------------------------------------------------


class BidiClient:
    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._call: Any = None
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next = 1
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._out: asyncio.Queue[bytes] = asyncio.Queue()

    async def start(self) -> None:
        self._call = self._channel.stream_stream(STREAM, None, None)(None)
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._writer = loop.create_task(self._write())

    async def _write(self) -> None:
        # One writer: a grpc.aio stream takes one write at a time.
        while True:
            await self._call.write(await self._out.get())

    async def _read(self) -> None:
        async for data in self._call:
            future = self._waiting.pop(ID.unpack_from(data)[0], None)
            if future is not None:
                future.set_result(data[4:])

    async def forward(self, message: Any) -> Any:
        call_id = self._next
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        self._out.put_nowait(ID.pack(call_id) + message.SerializeToString())
        data: bytes = await future
        return wire.ForwardReply.FromString(data)

    async def close(self) -> None:
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
        await self._channel.close(None)


class StreamsClient:
    """The same framing over asyncio streams: a reader task, a `StreamWriter` write per
    call (no coalescing)."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next = 1
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self, port: int) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._writer.write(frames.preface(1 << 24))
        await reader.readexactly(frames.PREFACE.size)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            length, _, call = frames.HEADER.unpack(await reader.readexactly(frames.HEADER.size))
            data = await reader.readexactly(length - frames.HEADER_AFTER_LENGTH)
            future = self._waiting.pop(call, None)
            if future is not None:
                future.set_result(data)

    async def forward(self, message: Any) -> Any:
        assert self._writer is not None
        call = self._next
        self._next += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[call] = future
        self._writer.write(frames.frame(Kind.FORWARD, call, message.SerializeToString()))
        return wire.ForwardReply.FromString(await future)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()


async def client(arm: str, port: int, rate: float, seconds: float) -> dict[str, Any]:
    address = f"127.0.0.1:{port}"
    message = request()
    view = wire.MapView(sender="s1", version=1, fingerprint="f", shard_count=16384)
    closers = []
    if arm == "framed":
        peers = PeerClients(1 << 20)
        closers.append(peers.close)

        async def call() -> Any:
            return await peers.forward(address, view, message)
    elif arm == "streams":
        streams = StreamsClient()
        await streams.start(port)
        closers.append(streams.close)

        async def call() -> Any:
            return await streams.forward(message)
    elif arm == "bidi":
        bidi = BidiClient(address)
        await bidi.start()
        closers.append(bidi.close)

        async def call() -> Any:
            return await bidi.forward(message)
    else:
        channel = grpc.aio.insecure_channel(address)
        unary = channel.unary_unary(
            METHOD, request_serializer=wire.ForwardRequest.SerializeToString,
            response_deserializer=wire.ForwardReply.FromString)

        async def close_channel() -> None:
            await channel.close(None)

        closers.append(close_channel)

        async def call() -> Any:
            return await unary(message, timeout=30)

    latencies: list[float] = []

    async def one(due: float, record: bool) -> None:
        result = await call()
        assert result.WhichOneof("result") == "outcome"
        if record:
            latencies.append(time.perf_counter() - due)

    async def paced(span: float, record: bool) -> float:
        tasks = set()
        start = time.perf_counter()
        n = 0
        while (due := start + n / rate) < start + span:
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            task = asyncio.get_running_loop().create_task(one(due, record))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    await paced(1.0, record=False)
    cpu = time.process_time()
    elapsed = await paced(seconds, record=True)
    cpu = time.process_time() - cpu
    for close in closers:
        await close()
    latencies.sort()
    return {"count": len(latencies), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
            "client_us": round(cpu / len(latencies) * 1e6, 1)}


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", arm],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        before = tools.cpu_seconds(server.pid)
        out = subprocess.run([sys.executable, __file__, "--client", arm, "--port", str(port),
                              "--rate", str(args.rate), "--seconds", str(args.seconds)],
                             capture_output=True, text=True, check=True).stdout
        result: dict[str, Any] = json.loads(out)
        # The server's CPU over the whole client run (its warm-up second included).
        calls = result["count"] * (args.seconds + 1) / args.seconds
        result["server_us"] = round((tools.cpu_seconds(server.pid) - before) / calls * 1e6, 1)
        result["load"] = float(Path("/proc/loadavg").read_text().split()[0])
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if args.client:
        print(json.dumps(asyncio.run(client(args.client, args.port, args.rate, args.seconds))))
        return
    arms = list(ARMS)
    rows: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    print(f"{os.cpu_count()} CPUs; load average {Path('/proc/loadavg').read_text().split()[0]}; "
          f"{args.rate:g} calls/s for {args.seconds:g}s, {args.repeat} rounds", flush=True)
    for n in range(args.repeat):
        order = arms[n % len(arms):] + arms[:n % len(arms)]
        for arm in order:
            row = run_arm(arm, args)
            rows[arm].append(row)
            print(f"  round {n + 1} {arm:<7} {row}", flush=True)
    print("\nmedians over the rounds:")
    for arm, results in rows.items():
        def med(key: str, results: list[dict[str, Any]] = results) -> float:
            return float(statistics.median(r[key] for r in results))
        print(f"| {arm:<7} | {med('rps'):g} calls/s | p50 {med('p50_ms'):g} ms | "
              f"p99 {med('p99_ms'):g} ms | client {med('client_us'):g} µs/call | "
              f"server {med('server_us'):g} µs/call |")


if __name__ == "__main__":
    main()
