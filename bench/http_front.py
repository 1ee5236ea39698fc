"""Throughput of the sidecar's public port: HTTP/1.1 JSON transcoding and gRPC forwarding.

Starts a server process (uvloop) with a grpc.aio echo server on an internal port and
the public port in front of it; the invoker answers at once, so what is measured is
the front end itself. Then, side by side in one run:

- HTTP: `wrk` against `GET /turkeys/{id}` (templated route) and
  `POST /com.example.TurkeyService/GetTurkey` (generic route, JSON body);
- gRPC: a grpc.aio client making unary calls directly to the internal server, then
  through the public port, which (given no dispatcher of its own here) forwards each
  call to that server, so the forwarding's overhead is the difference.

    .venv/bin/python bench/http_front.py [--seconds 10] [--connections 32]

Needs `wrk` (Debian: `apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import grpc.aio
import uvloop
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import Message
from larder_sidecar.http import start_public_server
from larder_sidecar.invoke import InvokeResult, MetadataPairs, MethodModel

SERVICE = "com.example.TurkeyService"


def turkey_methods() -> list[MethodModel]:
    """The tutorial's GetTurkey, with its HTTP rule, from a private pool like the sidecar's."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, http_pb2, annotations_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="bench_turkey.proto", package="com.example", syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    for name, fields in (("GetTurkeyRequest", ["turkey_id"]), ("Turkey", ["turkey_id"])):
        message = file.message_type.add(name=name)
        for number, field_name in enumerate(fields, start=1):
            message.field.add(name=field_name, number=number, json_name="turkeyId",
                              type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                              label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    turkey = file.message_type[1]
    turkey.field.add(name="in_oven", number=2, json_name="inOven",
                     type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                     label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    method = file.service.add(name="TurkeyService").method.add(
        name="GetTurkey", input_type=".com.example.GetTurkeyRequest",
        output_type=".com.example.Turkey",
    )
    method.options.Extensions[annotations_pb2.http].get = "/turkeys/{turkey_id}"
    pool.Add(file)
    descriptor = pool.FindMethodByName(f"{SERVICE}.GetTurkey")
    return [MethodModel(service=SERVICE, name="GetTurkey", component_type="bench",
                        descriptor=descriptor, input=descriptor.input_type,
                        output=descriptor.output_type, client_streaming=False,
                        server_streaming=False)]


class ImmediateInvoker:
    """Replies at once: GetTurkeyRequest and Turkey share field 1, so the bytes are a Turkey."""

    async def invoke(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> InvokeResult:
        return InvokeResult(payload=request.SerializeToString() + b"\x10\x01")


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve() -> None:
    internal = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"GetTurkey": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    internal.add_generic_rpc_handlers((handler,))
    internal_port = internal.add_insecure_port("127.0.0.1:0")
    await internal.start()
    public = await start_public_server("127.0.0.1", 0, f"127.0.0.1:{internal_port}",
                                       ImmediateInvoker(), turkey_methods())
    print(json.dumps({"internal": internal_port, "public": public.port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(public.close(grace=1), internal.stop(1))


def run_wrk(url: str, seconds: int, connections: int, script: Path | None) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found, output
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    assert non2xx is None, output
    return float(found.group(1))


async def grpc_rate(port: int, seconds: float, concurrency: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/GetTurkey", None, None)
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call(b"\x0a\x02t1")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve())
        return
    if shutil.which("wrk") is None:
        sys.exit("http_front: wrk not found; install it (Debian: apt-get install -y wrk)")
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        public = f"http://127.0.0.1:{ports['public']}"
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                'wrk.body = \'{"turkeyId": "t1"}\'\n'
            )
            results = {
                "HTTP GET /turkeys/t1 (templated route)": run_wrk(
                    f"{public}/turkeys/t1", args.seconds, args.connections, None),
                f"HTTP POST /{SERVICE}/GetTurkey (generic route)": run_wrk(
                    f"{public}/{SERVICE}/GetTurkey", args.seconds, args.connections, script),
            }
        results["gRPC direct to the internal server"] = asyncio.run(
            grpc_rate(ports["internal"], args.seconds, args.connections))
        results["gRPC through the public port (forwarded)"] = asyncio.run(
            grpc_rate(ports["public"], args.seconds, args.connections))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    width = max(map(len, results))
    for name, rate in results.items():
        print(f"{name:<{width}}  {rate:>9,.0f} req/s")


if __name__ == "__main__":
    main()
