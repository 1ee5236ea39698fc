"""The sidecar must accept every environment the operator renders for it.

The operator and the sidecar are separate packages that never import each other, so
this test is the one place their env-variable contract is checked end to end: render a
pod template, resolve its env the way the kubelet would, and parse it with the
sidecar's own settings loader.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from google.protobuf.message import Message
from larder_operator.children import FunctionRef, render_children
from larder_operator.journals import parse_journal
from larder_operator.settings import OperatorSettings
from larder_sidecar.app import Sidecar
from larder_sidecar.http import start_public_server
from larder_sidecar.invoke import InvokeResult, MetadataPairs, MethodModel
from larder_sidecar.journal.cassandra_settings import Replication
from larder_sidecar.settings import load_settings

REF = FunctionRef(name="cart", namespace="shop", uid="uid-1")
SETTINGS = OperatorSettings(sidecar_image="larder:test")

# What the kubelet would put in for valueFrom references.
_SECRETS = {("cass-login", "username"): "larder", ("cass-login", "password"): "s3cret"}
_FIELDS = {"metadata.name": "cart-abc", "metadata.namespace": "shop", "status.podIP": "10.1.2.3"}


def _resolve(env: list[dict[str, Any]]) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for entry in env:
        if "value" in entry:
            resolved[entry["name"]] = entry["value"]
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            resolved[entry["name"]] = _SECRETS[(ref["name"], ref["key"])]
        elif "fieldRef" in source:
            resolved[entry["name"]] = _FIELDS[source["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"unexpected env source {source} for {entry['name']}")
    return resolved


def _sidecar_env(spec: dict[str, Any], journal_spec: dict[str, Any] | None) -> dict[str, str]:
    journal = parse_journal("shop", journal_spec) if journal_spec else None
    children = render_children(REF, spec, journal, journal_spec, SETTINGS)
    pod = children.deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c.get("restartPolicy") == "Always"]
    return _resolve(sidecar.get("env", []))


FUNCTION = {
    "containers": [{"name": "fn", "image": "example/cart:1"}],
    "passivationTimeout": "45s",
    "sidecar": {"logLevel": "debug"},
}


@pytest.mark.parametrize(
    ("replication", "expected"),
    [
        ({"strategy": "SimpleStrategy", "replicationFactor": 3}, Replication("SimpleStrategy", 3)),
        (
            {"strategy": "NetworkTopologyStrategy", "datacenters": {"dc1": 3, "dc2": 2}},
            Replication("NetworkTopologyStrategy", per_datacenter=(("dc1", 3), ("dc2", 2))),
        ),
    ],
)
def test_cassandra_journal_env_parses_in_the_sidecar(
    replication: dict[str, Any], expected: Replication
) -> None:
    journal_spec = {
        "type": "Cassandra",
        "cassandra": {
            "contactPoints": ["cass-0", "cass-1"],
            "port": 9142,
            "keyspace": "carts",
            "localDatacenter": "dc1",
            "replication": replication,
            "consistency": {"read": "ONE", "write": "QUORUM"},
            "credentialsSecret": {"name": "cass-login"},
        },
    }
    settings = load_settings(_sidecar_env(FUNCTION, journal_spec))

    assert settings.journal_type == "cassandra"
    assert settings.passivation_timeout == 45.0
    assert settings.log_level == "DEBUG"
    cassandra = settings.journal_cassandra
    assert cassandra is not None
    assert list(cassandra.contact_points) == ["cass-0", "cass-1"]
    assert cassandra.port == 9142
    assert cassandra.keyspace == "carts"
    assert cassandra.local_datacenter == "dc1"
    assert cassandra.replication == expected
    assert cassandra.username == "larder"
    assert cassandra.password == "s3cret"


def test_in_memory_function_env_parses_in_the_sidecar() -> None:
    settings = load_settings(_sidecar_env(FUNCTION, None))
    assert settings.journal_type == "memory"
    assert settings.pod.name == "cart-abc"
    # Membership: the headless Service's EndpointSlices, in the pod's namespace.
    assert settings.cluster.service == "cart-internal"
    assert settings.pod.namespace == "shop"
    assert settings.cluster.members == ()


async def test_the_sidecars_admin_and_public_ports_take_connections_off_loopback() -> None:
    # The kubelet probes the admin port at the pod IP, and clients reach the public
    # port there. 127.0.0.2 stands in for the pod IP: a socket bound to 127.0.0.1
    # refuses it, one bound to every interface accepts it.
    settings = load_settings(_sidecar_env(FUNCTION, None))
    assert settings.host == "0.0.0.0"
    sidecar = Sidecar(dataclasses.replace(settings, admin_port=0))
    await sidecar.start_admin()
    public = await start_public_server(settings.host, 0, "127.0.0.1:1", _NoCommands(), [])
    try:
        assert await _get("127.0.0.2", sidecar.admin.port, "/healthz") == b"HTTP/1.1 200"
        # No routes: the public port's own answer, not the admin's.
        assert await _get("127.0.0.2", public.port, "/nothing") == b"HTTP/1.1 404"
    finally:
        await public.close()
        await sidecar.admin.close()


class _NoCommands:
    async def invoke(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> InvokeResult:
        raise AssertionError("no command is sent in this test")


async def _get(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        return (await reader.readline())[:12]
    finally:
        writer.close()
        await writer.wait_closed()


def test_kafka_env_from_the_function_spec_parses_in_the_sidecar() -> None:
    spec = {**FUNCTION, "kafka": {"deadLetterTopic": "carts-dead"}}
    env = _sidecar_env(spec, None)
    # What a `configMapRef` would bring in through envFrom.
    env["LARDER_KAFKA_BOOTSTRAP_SERVERS"] = "kafka-0:9092,kafka-1:9092"
    settings = load_settings(env)
    assert settings.kafka.dead_letter_topic == "carts-dead"
    assert settings.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
