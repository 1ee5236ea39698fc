"""Three (or more) real `larder-sidecar` processes on loopback, each next to its own
user-function process, sharing the session's Cassandra and a static member list
(`LARDER_CLUSTER_MEMBERS`); the user function and journal reader are those of
tests/integration/sidecar_cassandra."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest
from larder_sidecar.cluster.membership import Member, MemberId, Membership
from larder_sidecar.cluster.shards import ShardMap

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port

from ..sidecar_cassandra.conftest import (  # noqa: F401  (fixtures)
    ROOT,
    SIDECAR,
    START_TIMEOUT,
    JournalTables,
    Pod,
    http_get,
    keyspace,
    ledger_protos,
    pb,
    tables,
)

SHARD_COUNT = 256
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def internal_port() -> int:
    """A free port for a member's internal server, below the ephemeral range.

    The member list names every internal port before the sidecars start; a port from
    the ephemeral range (what binding port 0 gives) may meanwhile become the local end
    of some other process's outgoing connection, and the sidecar could not bind it."""
    for _ in range(100):
        port = random.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000-32000")


async def metrics(pod: Pod) -> dict[str, float]:
    """The pod's Prometheus samples, `name{labels}` -> value."""
    status, body = await http_get(pod.admin, "/metrics")
    assert status == 200, body
    samples: dict[str, float] = {}
    for line in body.splitlines():
        found = _SAMPLE.match(line)
        if found:
            samples[found.group(1) + (found.group(2) or "")] = float(found.group(3))
    return samples


@dataclass
class ShardedCluster:
    """The pods of one static cluster, by member id, and the map they all compute."""

    pods: dict[str, Pod]
    members: tuple[tuple[str, str], ...]

    @property
    def map(self) -> ShardMap:
        return ShardMap(
            Membership(tuple(Member(MemberId(i), a) for i, a in self.members), 1), SHARD_COUNT
        )

    def owner(self, entity_type: str, entity_id: str) -> str:
        owner = self.map.owner_of(entity_type, entity_id)
        assert owner is not None
        return owner

    def entity_of(self, member: str, entity_type: str, prefix: str) -> str:
        """An entity id (starting with `prefix`) that `member` owns."""
        for n in range(100_000):
            entity_id = f"{prefix}{n}"
            if self.owner(entity_type, entity_id) == member:
                return entity_id
        raise AssertionError(f"no entity of {member}")


class Launch(Protocol):
    async def __call__(self, name: str, internal_port: int, cluster: dict[str, str]) -> Pod:
        """Start a user function and a sidecar with these cluster variables; ready."""
        ...


@pytest.fixture
async def launch(
    cassandra: CassandraServer,
    keyspace: str,  # noqa: F811
    ledger_protos: Path,  # noqa: F811
    pb: ModuleType,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Launch]:
    pods: list[Pod] = []

    async def start(name: str, internal_port: int, cluster: dict[str, str]) -> Pod:
        pod = await _start(
            name, cassandra, keyspace, ledger_protos, pb, tmp_path, internal_port, cluster
        )
        pods.append(pod)
        await pod.wait_ready()
        return pod

    yield start
    for pod in pods:
        await pod.stop()


@pytest.fixture
async def sharded(launch: Launch) -> ShardedCluster:
    names = ("s0", "s1", "s2")
    internal = {name: internal_port() for name in names}
    members = tuple((name, f"127.0.0.1:{internal[name]}") for name in names)
    listed = ",".join(f"{name}={address}" for name, address in members)
    pods: dict[str, Pod] = {}
    # One after the other (the first creates the keyspace). A member serves its shards
    # once the others confirm they do not hold them, or after a bounded wait.
    for name in names:
        pods[name] = await launch(name, internal[name], {"LARDER_CLUSTER_MEMBERS": listed})
    return ShardedCluster(pods, members)


async def _start(
    name: str,
    cassandra: CassandraServer,
    space: str,
    protos: Path,
    ledger: ModuleType,
    tmp_path: Path,
    internal_port: int,
    cluster: dict[str, str],
) -> Pod:
    function_log = tmp_path / f"{name}-function.log"
    sidecar_log = tmp_path / f"{name}-sidecar.log"
    function = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.sidecar_cassandra.function",
        cwd=ROOT,
        env={**os.environ, "LEDGER_PROTOS": str(protos), "SNAPSHOT_EVERY": "0", "PORT": "0"},
        stdout=asyncio.subprocess.PIPE,
        stderr=function_log.open("ab"),
    )
    assert function.stdout is not None
    line = await asyncio.wait_for(function.stdout.readline(), START_TIMEOUT)
    assert line.startswith(b"listening on "), function_log.read_text()
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_PORT": line.split()[-1].decode(),
        "LARDER_PORT": str(port),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(internal_port),
        **cluster,
        "LARDER_SHARD_COUNT": str(SHARD_COUNT),
        "POD_NAME": name,
        "LARDER_JOURNAL_TYPE": "cassandra",
        "LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS": ",".join(cassandra.contact_points),
        "LARDER_JOURNAL_CASSANDRA_PORT": str(cassandra.port),
        "LARDER_JOURNAL_CASSANDRA_KEYSPACE": space,
        "LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY": "ONE",
        "LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY": "ONE",
    }
    sidecar = await asyncio.create_subprocess_exec(
        str(SIDECAR), env=env, stderr=sidecar_log.open("ab")
    )
    return Pod(name, ledger, function, sidecar, port, admin, sidecar_log)
