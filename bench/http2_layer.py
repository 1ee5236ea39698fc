"""A/B of the HTTP/2 layer for the public port's unary gRPC calls, in process.

Measures only the framing + HPACK part of one unary call on the server side: the bytes a
gRPC client sends for one call (HEADERS, DATA with END_STREAM, as grpc-core's HPACK
encoder produces them: incremental indexing, so after the first call the headers are
mostly one-byte indexed references) are fed to the server side, which reads the request
and writes the response (HEADERS, DATA, trailers). No sockets, no dispatcher: CPU per
call of the layer alone, side by side in one run:

- `h2`, default configuration (header validation and normalisation on);
- `h2`, configured as the sidecar uses it (inbound/outbound validation and
  normalisation off: the front checks the few headers it reads itself);
- `lean`: the floor of a framing + HPACK path of our own for the unary subset — frames
  cut with `struct`, the header block decoded by `hpack` (h2's own HPACK; a decoder of
  our own would need the same Huffman table and dynamic-table logic), the response
  headers and trailers encoded once (literal, not indexed, so the peer's table never
  changes). It does no flow-control, SETTINGS or stream-state bookkeeping, so it is a
  lower bound of what such a path would cost;
- `the front as built` (`larder_sidecar.http.grpc_h2`, once it existed): its connection
  on a fake transport, 32 calls per read as a busy connection brings them, each through
  the unary call object and its task to a dispatcher that answers at once — the framing,
  HPACK, flow control, message cutting and the asyncio task per call.

    .venv/bin/python bench/http2_layer.py [--calls 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import hpack
from google.protobuf import wrappers_pb2
from larder_sidecar.http.connections import ConnectionSet
from larder_sidecar.http.grpc_h2 import GrpcFront, UnaryServices
from larder_sidecar.invoke import InvokeResult, MethodModel
from larder_sidecar.model import Component, Kind, Method

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PAYLOAD = b"\x0a\x0bcounter-123\x10\x01"
REPLY = b"\x08\x2a"


def client_calls(calls: int) -> tuple[bytes, list[bytes]]:
    """The client's connection preface + SETTINGS, then the bytes of each call."""
    encoder = hpack.Encoder()
    settings = struct.pack(">I", 0)[1:] + bytes([0x4, 0]) + struct.pack(">I", 0)
    # A connection window as large as allowed, as grpc-core opens with (BDP probing).
    window = struct.pack(">I", 4)[1:] + bytes([0x8, 0]) + struct.pack(">II", 0, 2**31 - 65536)
    head = PREFACE + settings + window
    out = []
    for i in range(calls):
        stream_id = 2 * i + 1
        block = encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", "/larder.bench.Counter/Increase"),
            (":authority", "127.0.0.1:9000"), ("content-type", "application/grpc"),
            ("user-agent", "grpc-python/1.85.0 grpc-c/48.0.0 (linux; chttp2)"),
            ("te", "trailers"), ("grpc-accept-encoding", "identity, deflate, gzip"),
        ], huffman=True)
        headers = struct.pack(">I", len(block))[1:] + bytes([0x1, 0x4]) + struct.pack(
            ">I", stream_id) + block
        message = b"\x00" + struct.pack(">I", len(PAYLOAD)) + PAYLOAD
        data = struct.pack(">I", len(message))[1:] + bytes([0x0, 0x1]) + struct.pack(
            ">I", stream_id) + message
        out.append(headers + data)
    return head, out


def h2_server(validate: bool) -> Callable[[bytes], bytes]:
    config = h2.config.H2Configuration(
        client_side=False, header_encoding=None,
        validate_inbound_headers=validate, normalize_inbound_headers=validate,
        validate_outbound_headers=validate, normalize_outbound_headers=validate,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    conn.data_to_send()
    reply = b"\x00" + struct.pack(">I", len(REPLY)) + REPLY
    response_headers = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    trailers = [(b"grpc-status", b"0")]

    def feed(data: bytes) -> bytes:
        body = bytearray()
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers)[b":path"]
                assert path
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                conn.send_headers(sid, response_headers)
                conn.send_data(sid, reply)
                conn.send_headers(sid, trailers, end_stream=True)
        return conn.data_to_send()

    return feed


def lean_server() -> Callable[[bytes], bytes]:
    decoder = hpack.Decoder()
    literal = hpack.Encoder()
    # Encoded once; a real path would use "literal without indexing" so the block stays
    # valid whatever the peer's table holds (here the encoder's table is thrown away).
    headers_block = literal.encode([(":status", "200"), ("content-type", "application/grpc")])
    trailers_block = literal.encode([("grpc-status", "0")])
    reply = b"\x00" + struct.pack(">I", len(REPLY)) + REPLY
    unpack = struct.Struct(">I").unpack_from
    buffer = bytearray()
    started = False

    def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
            ">I", sid) + payload

    def feed(data: bytes) -> bytes:
        nonlocal buffer, started
        buffer += data
        pos = 0
        if not started:
            pos = len(PREFACE)
            started = True
        out = []
        paths: dict[int, bytes] = {}
        bodies: dict[int, bytearray] = {}
        while len(buffer) - pos >= 9:
            length = unpack(buffer, pos)[0] >> 8
            kind, flags = buffer[pos + 3], buffer[pos + 4]
            sid = unpack(buffer, pos + 5)[0] & 0x7FFFFFFF
            payload = bytes(buffer[pos + 9 : pos + 9 + length])
            pos += 9 + length
            if kind == 0x1:
                for name, value in decoder.decode(payload, raw=True):
                    if name == b":path":
                        paths[sid] = value
                bodies[sid] = bytearray()
            elif kind == 0x0:
                bodies[sid] += payload
                if flags & 0x1:
                    out.append(frame(0x1, 0x4, sid, headers_block))
                    out.append(frame(0x0, 0x0, sid, reply))
                    out.append(frame(0x1, 0x5, sid, trailers_block))
        del buffer[:pos]
        return b"".join(out)

    return feed


class _Transport:
    """Enough of an asyncio transport for the front: counts what it is given."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def front_as_built(calls: int) -> float:
    """CPU µs per call through `larder_sidecar.http.grpc_h2` (see the module docstring)."""
    class Fake:
        model = MethodModel("larder.bench.Counter", "Increase", "", cast(Any, None),
                            wrappers_pb2.BytesValue.DESCRIPTOR,
                            wrappers_pb2.BytesValue.DESCRIPTOR, False, False)
        component = Component("larder.bench.Counter", Kind.ACTION, "c", None, frozenset())

        @staticmethod
        def parse(payload: bytes) -> Any:
            return wrappers_pb2.BytesValue.FromString(payload)

    class Dispatcher:
        async def call(self, method: Any, payload: bytes, metadata: Any,
                       parsed: Any = None) -> InvokeResult:
            return InvokeResult(REPLY)

        async def streamed_out(self, method: Any, payload: bytes,
                               metadata: Any) -> AsyncIterator[InvokeResult]:
            yield InvokeResult(REPLY)  # the bench's method is unary: never called

    async def run() -> float:
        head, per_call = client_calls(calls)
        services = UnaryServices(Dispatcher(), {"/larder.bench.Counter/Increase":
                                                cast(Method, Fake())}, 12 << 20)
        front = GrpcFront(lambda: cast(Any, None), 12 << 20, services,
                          max_header_list_size=32 << 10, idle_timeout=300)
        connection = front.connection(ConnectionSet())
        transport = _Transport()
        connection.connection_made(cast(Any, transport))
        connection.data_received(head)
        await asyncio.sleep(0)
        started = time.process_time()
        for i in range(0, calls, 32):
            connection.data_received(b"".join(per_call[i : i + 32]))
            while connection.streams:  # noqa: ASYNC110  # one loop pass each: what is measured
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        spent = time.process_time() - started
        assert transport.written > calls * 20
        return spent / calls * 1e6

    return asyncio.run(run())


def measure(name: str, make: Callable[[], Callable[[bytes], bytes]], calls: int) -> float:
    head, per_call = client_calls(calls)
    feed = make()
    feed(head)
    started = time.process_time()
    for data in per_call:
        assert feed(data)
    spent = time.process_time() - started
    return spent / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    candidates: dict[str, Callable[[], Callable[[bytes], bytes]]] = {
        "h2, default config": lambda: h2_server(True),
        "h2, validation off (as used)": lambda: h2_server(False),
        "lean framing + hpack (floor)": lean_server,
    }
    print(f"load average {os.getloadavg()[0]:.1f}; {args.calls} calls x {args.repeat} rounds")
    results: dict[str, list[float]] = {name: [] for name in candidates}
    results["the front as built"] = []
    for _ in range(args.repeat):
        for name, make in candidates.items():  # interleaved, so noise hits all alike
            results[name].append(measure(name, make, args.calls))
        results["the front as built"].append(front_as_built(args.calls))
    for name, values in results.items():
        values.sort()
        print(f"{name:32} best {values[0]:6.1f} µs/call  median {values[len(values) // 2]:6.1f}")


if __name__ == "__main__":
    main()
