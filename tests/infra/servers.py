"""Starting a provisioned server by name: shared by the fixtures and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tests.infra.cassandra import CassandraServer
from tests.infra.kafka import KafkaServer
from tests.infra.kube import KubeControlPlane
from tests.infra.provision import installed


class Server(Protocol):
    """What every started server offers, whatever it is."""

    def details(self) -> dict[str, str]: ...

    def close(self) -> None: ...


def start_cassandra(workdir: Path) -> CassandraServer:
    server = CassandraServer(installed("cassandra") / "lib", workdir)
    _start_or_close(server, server.start)
    return server


def start_kafka(workdir: Path) -> KafkaServer:
    server = KafkaServer(installed("kafka") / "lib", workdir)
    _start_or_close(server, server.start)
    return server


def start_kube(workdir: Path) -> KubeControlPlane:
    plane = KubeControlPlane(
        installed("kube") / "bin",
        installed("etcd") / "bin",
        workdir,
        kubectl_bin=installed("kubectl") / "bin",
    )
    _start_or_close(plane, plane.start)
    return plane


def helm_binary() -> Path:
    return installed("helm") / "bin" / "helm"


def grpcurl_binary() -> Path:
    return installed("grpcurl") / "bin" / "grpcurl"


def h2spec_binary() -> Path:
    return installed("h2spec") / "bin" / "h2spec"


def grpc_interop_client_binary() -> Path:
    # grpc-go's interop client package is named `client`, and so is its binary.
    return installed("grpc-interop-client") / "bin" / "client"


def ghz_binary() -> Path:
    return installed("ghz") / "bin" / "ghz"


def grpc_js_node_modules() -> Path:
    """The `node_modules` of the @grpc/grpc-js client (tests/e2e/samples/grpc_js_client)."""
    return installed("grpc-js-client") / "node_modules"


def launch(name: str, workdir: Path) -> Server:
    starters: dict[str, Callable[[Path], Server]] = {
        "cassandra": start_cassandra,
        "kafka": start_kafka,
        "kube": start_kube,
    }
    return starters[name](workdir)


def _start_or_close(server: Server, start: Callable[[], None]) -> None:
    # A server that fails to become ready must not outlive the error: its
    # processes are stopped before the error reaches the caller.
    try:
        start()
    except BaseException:
        server.close()
        raise
