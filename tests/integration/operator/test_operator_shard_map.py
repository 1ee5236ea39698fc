"""The StatefulFunction's shard-map status on the real API server, from real sidecars.

There is no kubelet here, so the pods are three `larder-sidecar` processes on this host
with a static member list (tests/integration/sidecar_sharding) and the function's
EndpointSlices are written by the test, as the EndpointSlice controller would write them
for ready pods: one slice per pod, each with that pod's admin port (the controller, too,
splits endpoints whose named ports resolve to different numbers). The API server refuses
loopback addresses in EndpointSlices, so the sidecars listen on every interface and the
slices name the host's own address. The operator finds them
by the `-internal` Service's label, asks each sidecar's `GET /cluster`, and writes
`status.shardMap`, the Map column and the ShardMapAgreed condition with its Events."""

from __future__ import annotations

import socket
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port
from tests.integration.sidecar_cassandra.conftest import (  # noqa: F401  (fixtures)
    Pod,
    keyspace,
    ledger_protos,
    pb,
)
from tests.integration.sidecar_sharding.conftest import (  # noqa: F401  (fixtures)
    SHARD_COUNT,
    Launch,
    _start,
    internal_port,
    launch,
)

from .conftest import Kubectl, wait_for

FUNCTION = "cart"
# The operator of this tier asks every second and reports after 3 s (conftest.py).
REPORTED_WITHIN = 30.0


def host_address() -> str:
    """This host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), (
        f"this host has no address besides loopback ({address}); EndpointSlices need one"
    )
    return address


def function_manifest() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "larder.dev/v1alpha1",
            "kind": "StatefulFunction",
            "metadata": {"name": FUNCTION},
            "spec": {"replicas": 3, "containers": [{"name": "fn", "image": "cart:test"}]},
        }
    )


def endpoint_slice(namespace: str, pod: str, address: str, admin_port: int) -> str:
    """One ready pod of the function, at `address` with its own admin port."""
    return yaml.safe_dump(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{FUNCTION}-internal-{pod}",
                "labels": {
                    "kubernetes.io/service-name": f"{FUNCTION}-internal",
                    # Not the controller's: it leaves this slice alone.
                    "endpointslice.kubernetes.io/managed-by": "tests.larder.dev",
                },
            },
            "addressType": "IPv4",
            "ports": [
                {"name": "internal", "port": 9604, "protocol": "TCP"},
                {"name": "admin", "port": admin_port, "protocol": "TCP"},
            ],
            "endpoints": [
                {
                    "addresses": [address],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
                }
            ],
        }
    )


def shard_map(kubectl: Kubectl, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = kubectl.get("statefulfunction", FUNCTION, namespace) or {}
    status = body.get("status") or {}
    condition: dict[str, Any] = next(
        (c for c in status.get("conditions") or () if c["type"] == "ShardMapAgreed"), {}
    )
    return status.get("shardMap") or {}, condition


def until(
    kubectl: Kubectl, namespace: str, what: str, agreement: str, status: str, reason: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
        found, condition = shard_map(kubectl, namespace)
        wanted = (found.get("agreement"), condition.get("status"), condition.get("reason"))
        return (found, condition) if wanted == (agreement, status, reason) else None

    return wait_for(what, probe, REPORTED_WITHIN)


def shard_map_events(kubectl: Kubectl, namespace: str) -> list[tuple[str, str]]:
    return [
        (e.get("type", ""), e.get("reason", ""))
        for e in kubectl.events("StatefulFunction", FUNCTION, namespace)
        if "shard map" in (e.get("message") or e.get("note") or "")
    ]


async def test_the_status_counts_the_pods_that_agree_and_names_the_others(
    kubectl: Kubectl,
    namespace: str,
    launch: Launch,  # noqa: F811
    cassandra: CassandraServer,
    keyspace: str,  # noqa: F811
    ledger_protos: Path,  # noqa: F811
    pb: ModuleType,  # noqa: F811
    tmp_path: Path,
) -> None:
    host = host_address()
    names = ("s0", "s1", "s2")
    internal = {name: internal_port() for name in names}
    listed = ",".join(f"{name}=127.0.0.1:{internal[name]}" for name in names)
    pods: dict[str, Pod] = {}
    for name in names:
        pods[name] = await launch(
            name, internal[name], {"LARDER_CLUSTER_MEMBERS": listed, "LARDER_HOST": "0.0.0.0"}
        )
    out = kubectl.apply(function_manifest(), namespace)
    assert out.returncode == 0, out.stderr
    for name, pod in pods.items():
        applied = kubectl.apply(endpoint_slice(namespace, name, host, pod.admin), namespace)
        assert applied.returncode == 0, applied.stderr

    agreed, condition = until(
        kubectl, namespace, "3/3 agreeing", "3/3", "True", "MapsAgree"
    )
    assert agreed["members"] == ["s0", "s1", "s2"]
    assert agreed["shardCount"] == SHARD_COUNT
    assert agreed["journal"].startswith(f"cassandra:{keyspace}@")
    assert (agreed["unreachable"], agreed["disagreeing"], agreed["drift"]) == ([], [], [])
    assert "3/3 ready pods have the same shard map" in condition["message"]
    # The Map column of `kubectl get sf`.
    table = kubectl.run("get", "statefulfunction", FUNCTION, "-n", namespace)
    header, row = table.splitlines()[:2]
    assert row.split()[header.split().index("MAP")] == "3/3", table

    # A ready pod that does not answer: not agreeing, named, and after the grace period
    # the condition turns False with a Warning Event.
    silent = free_port()
    kubectl.apply(endpoint_slice(namespace, "s3", host, silent), namespace)
    found, condition = until(
        kubectl, namespace, "a silent pod reported", "3/4", "False", "PodsUnreachable"
    )
    [unreachable] = found["unreachable"]
    assert unreachable.startswith(f"s3: http://{host}:{silent}/cluster"), unreachable
    assert "no answer from s3" in condition["message"]
    assert found["since"]

    # A pod with a member list of its own and another journal: a different map, and
    # config drift, which comes first because it never heals by waiting.
    port = internal_port()
    other: Pod = await _start(
        "s3", cassandra, f"{keyspace}_other", ledger_protos, pb, tmp_path, port,
        {"LARDER_CLUSTER_MEMBERS": f"s3=127.0.0.1:{port}", "LARDER_HOST": "0.0.0.0"},
    )
    try:
        await other.wait_ready()
        kubectl.apply(endpoint_slice(namespace, "s3", host, other.admin), namespace)
        found, condition = until(
            kubectl, namespace, "config drift reported", "3/4", "False", "ConfigDrift"
        )
        [drift] = found["drift"]
        assert drift.startswith(f"journal: cassandra:{keyspace}@"), drift
        assert f"cassandra:{keyspace}_other@" in drift and "(s3)" in drift, drift
        [disagreeing] = found["disagreeing"]
        assert disagreeing.startswith("s3: map "), disagreeing
    finally:
        await other.stop()

    # The pod gone from the slices: all agree again, and an Event says so.
    kubectl.run("delete", "endpointslice", f"{FUNCTION}-internal-s3", "-n", namespace)
    found, _ = until(kubectl, namespace, "3/3 again", "3/3", "True", "MapsAgree")
    assert "since" not in found and found["drift"] == []
    events = shard_map_events(kubectl, namespace)
    assert ("Warning", "PodsUnreachable") in events, events
    assert ("Warning", "ConfigDrift") in events, events
    assert events[-1] == ("Normal", "MapsAgree"), events
