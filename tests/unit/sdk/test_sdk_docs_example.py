"""docs/sdk-python.md's example is real: its files are written out, its compile command
run, its test run, and its entity served over gRPC."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from akkaserverless.component.entity import entity_pb2
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es_pb2
from akkaserverless.protocol import discovery_pb2
from larder_sdk import LarderService, ServerSettings

DOC = Path(__file__).resolve().parents[3] / "docs" / "sdk-python.md"
FILE_BLOCK = re.compile(r'```\w+ title="([^"]+)"\n(.*?)```', re.DOTALL)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Path]:
    text = DOC.read_text()
    for name, body in FILE_BLOCK.findall(text):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    (compile_line,) = [line for line in text.splitlines() if line.startswith("python -c")]
    argv = shlex.split(compile_line)
    done = subprocess.run(
        [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == "counter" or m.startswith("counter.")]:
            del sys.modules[module]


def test_the_documented_test_passes(example: Path) -> None:
    test_module = importlib.import_module("counter.test_counter")
    test_module.test_increase()


async def test_the_documented_entity_serves_over_the_protocol(example: Path) -> None:
    main: Any = importlib.import_module("counter.main")
    api: Any = importlib.import_module("counter.counter_api_pb2")
    service = LarderService([main.counter], settings=ServerSettings("127.0.0.1", 0))
    port = await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            discover: Any = channel.unary_unary(
                "/akkaserverless.protocol.Discovery/Discover",
                request_serializer=discovery_pb2.ProxyInfo.SerializeToString,
                response_deserializer=discovery_pb2.Spec.FromString,
            )
            spec = await discover(
                discovery_pb2.ProxyInfo(protocol_major_version=0, protocol_minor_version=7)
            )
            assert [c.service_name for c in spec.components] == [
                "com.example.counter.CounterService"
            ]
            handle: Any = channel.stream_stream(
                "/akkaserverless.component.eventsourcedentity.EventSourcedEntities/Handle",
                request_serializer=es_pb2.EventSourcedStreamIn.SerializeToString,
                response_deserializer=es_pb2.EventSourcedStreamOut.FromString,
            )
            stream = handle(timeout=10)
            await stream.write(
                es_pb2.EventSourcedStreamIn(
                    init=es_pb2.EventSourcedInit(
                        service_name="com.example.counter.CounterService", entity_id="c-1"
                    )
                )
            )
            command = entity_pb2.Command(entity_id="c-1", id=1, name="Increase")
            command.payload.Pack(api.IncreaseValue(counter_id="c-1", value=2))
            await stream.write(es_pb2.EventSourcedStreamIn(command=command))
            reply = (await stream.read()).reply
            assert reply.command_id == 1
            assert reply.events[0].type_url.endswith("com.example.counter.ValueIncreased")
            await stream.done_writing()
    finally:
        await service.stop(0)
