"""gRPC reflection on the public port, as a client that has none of our protos sees it:
the real grpcurl, and the v1 protocol asked directly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.infra.servers import ghz_binary

from .conftest import SidecarFactory
from .user_function import UserFunction

LISTED = {
    "larder.test.Counter",
    "larder.test.Register",
    "larder.test.Echo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def grpcurl(binary: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "-plaintext",
        "-max-time",
        "20",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, f"grpcurl {' '.join(args)}: {err.decode()}"
    return out.decode()


def reflection_v1(
    channel: grpc.aio.Channel,
) -> grpc.aio.StreamStreamMultiCallable[
    reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
]:
    """`grpc.reflection.v1`, asked by its own name (grpcurl falls back to v1alpha)."""
    return channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )


async def test_grpcurl_lists_describes_and_calls(
    grpcurl_binary: Path, user_function: UserFunction, start_sidecar: SidecarFactory
) -> None:
    sidecar = await start_sidecar(user_function)
    address = f"127.0.0.1:{sidecar.public_port}"
    listed = await grpcurl(grpcurl_binary, address, "list")
    assert set(listed.split()) == LISTED
    for service in sorted(LISTED):
        described = await grpcurl(grpcurl_binary, address, "describe", service)
        assert described.startswith(f"{service} is a service:"), described
    described = await grpcurl(grpcurl_binary, address, "describe", "larder.test.AddRequest")
    assert "int64 amount = 2;" in described
    added = await grpcurl(
        grpcurl_binary, "-d", '{"id": "curled", "amount": 5}', address, "larder.test.Counter/Add"
    )
    assert json.loads(added) == {"value": "5"}
    health = await grpcurl(grpcurl_binary, address, "grpc.health.v1.Health/Check")
    assert json.loads(health) == {"status": "SERVING"}


async def test_reflection_v1_answers_with_the_v1_file(
    user_function: UserFunction, start_sidecar: SidecarFactory
) -> None:
    # grpcurl falls back to v1alpha when v1 is missing; ask v1 by its own name.
    sidecar = await start_sidecar(user_function)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.public_port}") as channel:
        info = reflection_v1(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
        ]
        listed, found = [r async for r in info(iter(requests), timeout=10)]
    assert {s.name for s in listed.list_services_response.service} == LISTED
    (file_bytes,) = found.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(file_bytes)
    assert file.name == "grpc/reflection/v1/reflection.proto"
    assert file.package == "grpc.reflection.v1"
    (method,) = file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"


async def test_a_method_is_a_symbol_reflection_finds(
    user_function: UserFunction, start_sidecar: SidecarFactory
) -> None:
    # The protocol lists `package.Service.Method` among the symbols a client may ask for;
    # protobuf's own pool does not find methods by name.
    sidecar = await start_sidecar(user_function)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.public_port}") as channel:
        info = reflection_v1(channel)
        asked = ["larder.test.Counter.Add", "larder.test.Counter.Nope", "larder.test.Nope.Add"]
        requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in asked]
        method, unknown_method, unknown_service = [
            r async for r in info(iter(requests), timeout=10)
        ]
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in method.file_descriptor_response.file_descriptor_proto
    ]
    counter = [
        s for f in files for s in f.service if f.package == "larder.test" and s.name == "Counter"
    ]
    assert counter and "Add" in {m.name for m in counter[0].method}
    for missing in (unknown_method, unknown_service):
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_ghz_calls_a_method_it_finds_by_reflection(
    grpcurl_binary: Path, user_function: UserFunction, start_sidecar: SidecarFactory
) -> None:
    # ghz without protos asks reflection for the file of the method it is told to call.
    sidecar = await start_sidecar(user_function)
    process = await asyncio.create_subprocess_exec(
        str(ghz_binary()),
        "--insecure",
        "--call",
        "larder.test.Counter/Add",
        "--data",
        '{"id": "ghz-reflected", "amount": 2}',
        "-n",
        "20",
        "-c",
        "2",
        "--timeout",
        "20s",
        "--format",
        "json",
        f"127.0.0.1:{sidecar.public_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"ghz: {err.decode()[-2000:]}"
    report = json.loads(out)
    assert report["statusCodeDistribution"] == {"OK": 20}, report.get("errorDistribution")
    # Every call added 2 to one counter, once: adding 0 reads it.
    read = await grpcurl(
        grpcurl_binary,
        "-d",
        '{"id": "ghz-reflected", "amount": 0}',
        f"127.0.0.1:{sidecar.public_port}",
        "larder.test.Counter/Add",
    )
    assert json.loads(read) == {"value": "40"}
