"""Session fixtures for the real test servers (a pytest plugin, loaded by tests/conftest.py).

Each server starts only when a test first asks for it, on free 127.0.0.1 ports,
and stops when the session ends. When any test of the session failed (or a
server did not become ready), every started server's logs are copied to
`test-logs/<server>/` at the repository root.

- ``cassandra`` -> CassandraServer: ``.host``, ``.port``, ``.contact_points``,
  ``.stop()`` / ``.start()`` (same data and port; ``.kill()`` for a crash),
  ``.pause()`` / ``.resume()`` or ``with .suspended():`` (SIGSTOP / SIGCONT).
- ``kafka`` -> KafkaServer: ``.bootstrap_servers`` ("127.0.0.1:PORT"),
  ``.stop()`` / ``.start()`` / ``.kill()``.
- ``kube`` -> KubeControlPlane: ``.kubeconfig`` (Path), ``.server`` (URL),
  ``.env`` (environment with KUBECONFIG set and the provisioned kubectl first
  on PATH, for subprocesses).
- ``helm_binary`` -> Path of a helm 3 executable.
- ``grpcurl_binary`` -> Path of a grpcurl executable (a gRPC client using reflection).
- ``h2spec_binary`` -> Path of an h2spec executable (HTTP/2 conformance cases).
- ``grpc_interop_client_binary`` -> Path of grpc-go's interop test client
  (``-server_port``, ``-test_case``).

The servers are session-wide: a test that stops one must start it again
(in a ``finally``). ``start()`` blocks until ready; from async code call it
through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.infra.cassandra import CassandraServer
from tests.infra.errors import InfraError
from tests.infra.kafka import KafkaServer
from tests.infra.kube import KubeControlPlane
from tests.infra.logs import keep_logs
from tests.infra.servers import Server, start_cassandra, start_kafka, start_kube
from tests.infra.servers import grpc_interop_client_binary as _grpc_interop_client_binary
from tests.infra.servers import grpcurl_binary as _grpcurl_binary
from tests.infra.servers import h2spec_binary as _h2spec_binary
from tests.infra.servers import helm_binary as _helm_binary

S = TypeVar("S", bound=Server)


@dataclass
class _StartedServers:
    root: Path
    workdirs: dict[str, Path] = field(default_factory=dict)

    def workdir(self, name: str) -> Path:
        path = self.root / name
        self.workdirs[name] = path
        return path

    def keep_all(self) -> None:
        for name, workdir in self.workdirs.items():
            keep_logs(name, workdir)


@pytest.fixture(scope="session")
def _infra_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_StartedServers]:
    started = _StartedServers(tmp_path_factory.mktemp("infra"))
    yield started
    # Torn down after every server fixture (they depend on this one), so the
    # logs are complete when they are copied.
    if request.session.testsfailed:
        started.keep_all()


def _serve(started: _StartedServers, name: str, start: Callable[[Path], S]) -> Iterator[S]:
    workdir = started.workdir(name)
    try:
        server = start(workdir)
    except InfraError:
        keep_logs(name, workdir)
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def cassandra(_infra_servers: _StartedServers) -> Iterator[CassandraServer]:
    yield from _serve(_infra_servers, "cassandra", start_cassandra)


@pytest.fixture(scope="session")
def kafka(_infra_servers: _StartedServers) -> Iterator[KafkaServer]:
    yield from _serve(_infra_servers, "kafka", start_kafka)


@pytest.fixture(scope="session")
def kube(_infra_servers: _StartedServers) -> Iterator[KubeControlPlane]:
    yield from _serve(_infra_servers, "kube", start_kube)


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    return _helm_binary()


@pytest.fixture(scope="session")
def grpcurl_binary() -> Path:
    return _grpcurl_binary()


@pytest.fixture(scope="session")
def h2spec_binary() -> Path:
    return _h2spec_binary()


@pytest.fixture(scope="session")
def grpc_interop_client_binary() -> Path:
    return _grpc_interop_client_binary()
