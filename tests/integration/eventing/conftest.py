"""Fixtures: the real Kafka, the counter user function (our SDK, in-process) and the
`larder-sidecar` command as a real process pointed at both."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from larder_sdk import LarderService

from tests.infra.kafka import KafkaServer

from .counter_function import CounterProtos, compile_counter, counter_service

SIDECAR = Path(sys.executable).parent / "larder-sidecar"
PARTITIONS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_topics(bootstrap: str, *names: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result(30)


@pytest.fixture(scope="session")
def counter(kafka: KafkaServer, tmp_path_factory: pytest.TempPathFactory) -> CounterProtos:
    protos = compile_counter(tmp_path_factory.mktemp("eventing-protos"))
    create_topics(kafka.bootstrap_servers, protos.topic_in, protos.topic_out, protos.topic_more)
    return protos


@pytest.fixture
async def user_function(counter: CounterProtos) -> AsyncIterator[LarderService]:
    service = counter_service(counter.pb)
    await service.start()
    yield service
    await service.stop(0)


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@dataclass
class SidecarProcess:
    """One `larder-sidecar` process; `start()` again after `kill()` keeps ports and journal."""

    env: dict[str, str]
    port: int
    admin: int
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    logs: list[str] = field(default_factory=list)

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            str(SIDECAR), env=self.env, stderr=log, stdout=log
        )
        log.close()
        await self.wait_ready()

    async def wait_ready(self) -> None:
        # Another process's readiness can only be observed by asking for it.
        for _ in range(400):
            assert self.proc is not None and self.proc.returncode is None, (
                f"the sidecar exited during start-up:\n{self.log()}"
            )
            try:
                status, _ = await http_get(self.admin, "/readyz")
            except OSError:
                status = 0
            if status == 200:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"the sidecar did not become ready in 20 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 30)

    async def get(self, entity: str) -> tuple[int, str]:
        return await http_get(self.port, f"/counters/{entity}")

    async def get_path(self, path: str) -> tuple[int, str]:
        return await http_get(self.port, path)


@pytest.fixture
async def sidecar_factory(
    kafka: KafkaServer, user_function: LarderService, tmp_path: Path
) -> AsyncIterator[Any]:
    started: list[SidecarProcess] = []

    def make(**extra_env: str) -> SidecarProcess:
        port, admin = free_port(), free_port()
        env = {
            **os.environ,
            "USER_FUNCTION_PORT": str(user_function.port),
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(free_port()),
            "LARDER_JOURNAL_TYPE": "sqlite",
            "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "journal.sqlite3"),
            "LARDER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LARDER_DISCOVERY_TIMEOUT": "10s",
            **extra_env,
        }
        sidecar = SidecarProcess(env, port, admin, tmp_path / f"sidecar-{len(started)}.log")
        started.append(sidecar)
        return sidecar

    yield make
    for sidecar in started:
        if sidecar.proc is not None and sidecar.proc.returncode is None:
            sidecar.proc.kill()
            await sidecar.proc.wait()


Header = tuple[str, str | bytes | None]


def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes, list[Header]]]
) -> None:
    """(key, value, headers) records, flushed before returning."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value, headers in records:
        producer.produce(topic, value, key=key, headers=headers)
    assert producer.flush(30) == 0


def ce_headers(type_name: str, content_type: str = "application/protobuf") -> list[Header]:
    return [
        ("ce-specversion", b"1.0"),
        ("ce-id", uuid.uuid4().hex.encode()),
        ("ce-source", b"/tests"),
        ("ce-type", type_name.encode()),
        ("ce-datacontenttype", content_type.encode()),
    ]


@pytest.fixture
def topic_reader(kafka: KafkaServer) -> Iterator[Any]:
    """read(topic, until, timeout): records of `topic` from the start, until `until(records)`.

    Blocking (confluent-kafka); call it through asyncio.to_thread from async tests."""
    consumers: list[Consumer] = []

    def read(topic: str, until: Any, timeout: float = 30.0) -> list[Any]:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumers.append(consumer)
        consumer.subscribe([topic])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            records.extend(r for r in consumer.consume(100, 0.5) if r.error() is None)
        return records

    yield read
    for consumer in consumers:
        consumer.close()
