"""Real `larder-sidecar` processes on the session's Cassandra, each next to its own
user-function process on the Python SDK (a "pod"), and a reader of the journal's
tables that does not go through the sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import grpc
import grpc.aio
import pytest
from cassandra.cluster import Cluster, Session
from larder_protocol import compile_protos

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port

from .function import COUNTER_TYPE, REGISTER_TYPE

ROOT = Path(__file__).resolve().parents[3]
PROTOS = Path(__file__).parent / "protos"
SIDECAR = Path(sys.executable).parent / "larder-sidecar"
START_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def ledger_protos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ledger-protos")
    compile_protos([PROTOS / "larder_sctest" / "ledger.proto"], out, include=[PROTOS])
    return out


@pytest.fixture(scope="session")
def pb(ledger_protos: Path) -> ModuleType:
    if str(ledger_protos) not in sys.path:
        sys.path.insert(0, str(ledger_protos))
    return importlib.import_module("larder_sctest.ledger_pb2")


@pytest.fixture(scope="module")
def keyspace() -> str:
    """A keyspace of its own per test module (the sidecar creates it)."""
    return f"sc_{uuid.uuid4().hex[:12]}"


def counter_pid(counter_id: str) -> str:
    return f"{COUNTER_TYPE}|{counter_id}"


def register_pid(register_id: str) -> str:
    return f"{REGISTER_TYPE}|{register_id}"


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@dataclass
class Pod:
    """One user-function process and the sidecar process in front of it."""

    name: str
    pb: ModuleType
    function: asyncio.subprocess.Process
    sidecar: asyncio.subprocess.Process
    port: int
    admin: int
    sidecar_log: Path
    channel: grpc.aio.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")

    def _call(self, service: str, method: str, response: Any) -> Any:
        return self.channel.unary_unary(
            f"/larder_sctest.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )

    async def add(self, counter_id: str, tag: str, amount: int = 1, deadline: float = 30) -> Any:
        request = self.pb.AddRequest(counter_id=counter_id, tag=tag, amount=amount)
        return await self._call("Counter", "Add", self.pb.CounterValue)(request, timeout=deadline)

    async def get(self, counter_id: str) -> Any:
        request = self.pb.GetRequest(counter_id=counter_id)
        return await self._call("Counter", "Get", self.pb.CounterValue)(request, timeout=30)

    async def set_text(self, register_id: str, text: str) -> Any:
        request = self.pb.SetRequest(register_id=register_id, text=text)
        return await self._call("Register", "Set", self.pb.RegisterState)(request, timeout=30)

    async def get_text(self, register_id: str) -> Any:
        request = self.pb.GetRegister(register_id=register_id)
        return await self._call("Register", "Get", self.pb.RegisterState)(request, timeout=30)

    async def clear(self, register_id: str) -> Any:
        request = self.pb.GetRegister(register_id=register_id)
        return await self._call("Register", "Clear", self.pb.RegisterState)(request, timeout=30)

    async def readyz(self) -> tuple[int, str]:
        try:
            return await http_get(self.admin, "/readyz")
        except OSError as e:
            return 0, str(e)

    async def wait_ready(self, ready: bool = True, within: float = START_TIMEOUT) -> float:
        """Wait until /readyz says `ready`; return how long that took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: tuple[int, str] = (0, "")
        while loop.time() - started < within:
            assert self.sidecar.returncode is None, f"{self.name}: the sidecar exited\n{self.log()}"
            last = await self.readyz()
            if (last[0] == 200) == ready:
                return loop.time() - started
            # Polling is the only way to watch another process's readiness probe.
            await asyncio.sleep(0.1)
        pytest.fail(
            f"{self.name}: /readyz did not turn {'ready' if ready else 'unready'} in "
            f"{within:.0f}s (last: {last})\n{self.log()}"
        )

    def log(self, lines: int = 40) -> str:
        text = self.sidecar_log.read_text(errors="replace") if self.sidecar_log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM the sidecar (graceful), then the user function (it stops on
        ProxyTerminated by itself)."""
        await self.channel.close(None)
        for proc in (self.sidecar, self.function):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class PodFactory(Protocol):
    async def __call__(self, name: str, **options: Any) -> Pod: ...


@pytest.fixture
async def start_pod(
    cassandra: CassandraServer,
    keyspace: str,
    ledger_protos: Path,
    pb: ModuleType,
    tmp_path: Path,
) -> AsyncIterator[PodFactory]:
    """`await start_pod("a", snapshot_every=5, FENCING="unfenced", ...)`: a ready pod.

    Upper-case options are `LARDER_JOURNAL_CASSANDRA_<option>`; `grace` is
    LARDER_JOURNAL_UNAVAILABLE_GRACE; `journal` picks LARDER_JOURNAL_TYPE.
    """
    pods: list[Pod] = []

    async def start(name: str, **options: Any) -> Pod:
        snapshot_every = int(options.pop("snapshot_every", 0))
        grace = str(options.pop("grace", "10s"))
        journal = str(options.pop("journal", "cassandra"))
        function_log = tmp_path / f"{name}-function.log"
        sidecar_log = tmp_path / f"{name}-sidecar.log"
        function = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.sidecar_cassandra.function",
            cwd=ROOT,
            env={
                **os.environ,
                "LEDGER_PROTOS": str(ledger_protos),
                "SNAPSHOT_EVERY": str(snapshot_every),
                "PORT": "0",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=function_log.open("ab"),
        )
        assert function.stdout is not None
        line = await asyncio.wait_for(function.stdout.readline(), START_TIMEOUT)
        assert line.startswith(b"listening on "), (
            f"the user function did not start: {line!r}\n{function_log.read_text()}"
        )
        function_port = int(line.split()[-1])
        port, admin = free_port(), free_port()
        env = {
            **os.environ,
            "USER_FUNCTION_PORT": str(function_port),
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(free_port()),
            "LARDER_JOURNAL_TYPE": journal,
            "LARDER_JOURNAL_UNAVAILABLE_GRACE": grace,
            "LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS": ",".join(cassandra.contact_points),
            "LARDER_JOURNAL_CASSANDRA_PORT": str(cassandra.port),
            "LARDER_JOURNAL_CASSANDRA_KEYSPACE": keyspace,
            "LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY": "ONE",
            "LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY": "ONE",
        }
        env.update({f"LARDER_JOURNAL_CASSANDRA_{k}": str(v) for k, v in options.items()})
        sidecar = await asyncio.create_subprocess_exec(
            str(SIDECAR), env=env, stderr=sidecar_log.open("ab")
        )
        pod = Pod(name, pb, function, sidecar, port, admin, sidecar_log)
        pods.append(pod)
        await pod.wait_ready()
        return pod

    yield start
    for pod in reversed(pods):
        await pod.stop()


class JournalTables:
    """Reads the journal's tables directly (not through any journal code)."""

    def __init__(self, cassandra: CassandraServer, keyspace: str) -> None:
        self._cassandra = cassandra
        self._keyspace = keyspace
        self._cluster: Cluster | None = None
        self._session: Session | None = None

    def _connect(self) -> Session:
        if self._session is None:
            self._cluster = Cluster(self._cassandra.contact_points, port=self._cassandra.port)
            self._session = self._cluster.connect(self._keyspace)
        return self._session

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()

    def _events(self, pid: str) -> list[tuple[int, bytes]]:
        session = self._connect()
        rows: list[tuple[int, bytes]] = []
        partition = 0
        while True:
            found = list(
                session.execute(
                    "SELECT sequence_nr, payload FROM events "
                    "WHERE persistence_id = %s AND partition_nr = %s",
                    (pid, partition),
                )
            )
            # Partition 0 holds sequence number 1 unless partitions hold one event.
            if not found and partition > 0:
                return rows
            rows.extend((r.sequence_nr, r.payload) for r in found)
            partition += 1

    async def events(self, pid: str) -> list[tuple[int, bytes]]:
        """Every stored event of `pid` as (sequence number, payload), in order."""
        return await asyncio.to_thread(self._events, pid)

    def _row(self, table: str, pid: str) -> Any:
        return self._connect().execute(
            f"SELECT * FROM {table} WHERE persistence_id = %s", (pid,)
        ).one()

    async def execute(self, cql: str, values: tuple[Any, ...]) -> None:
        await asyncio.to_thread(self._connect().execute, cql, values)

    async def snapshot(self, pid: str) -> Any:
        return await asyncio.to_thread(self._row, "snapshots", pid)

    async def value_state(self, pid: str) -> Any:
        return await asyncio.to_thread(self._row, "value_states", pid)


@pytest.fixture
def tables(cassandra: CassandraServer, keyspace: str) -> Iterator[JournalTables]:
    reader = JournalTables(cassandra, keyspace)
    yield reader
    reader.close()


def status_of(error: BaseException) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.aio.AioRpcError) else None


@contextlib.asynccontextmanager
async def cassandra_restarted_finally(cassandra: CassandraServer) -> AsyncIterator[None]:
    """Whatever happens in the block, the session's Cassandra runs again afterwards."""
    try:
        yield
    finally:
        if not cassandra.running:
            await asyncio.to_thread(cassandra.start)
