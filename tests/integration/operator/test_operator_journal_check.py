"""Journal reachability against the real Cassandra of the test infrastructure."""

from __future__ import annotations

from typing import Any

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port
from tests.integration.operator.conftest import Kubectl, wait_for


def journal(name: str, port: int, host: str = "127.0.0.1") -> str:
    return f"""
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {{name: {name}}}
spec:
  type: Cassandra
  cassandra:
    contactPoints: [{host}]
    port: {port}
    keyspace: larder_test
"""


def ready(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    obj = kubectl.get("journal", name, namespace) or {}
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond["type"] == "Ready":
            return {**cond, "lastCheckTime": obj["status"].get("lastCheckTime")}
    return None


def test_reachable_cassandra_is_ready_and_a_closed_port_is_not(
    kubectl: Kubectl, namespace: str, cassandra: CassandraServer
) -> None:
    closed = free_port()
    manifest = journal("real", cassandra.port, cassandra.host) + "---" + journal("closed", closed)
    result = kubectl.apply(manifest, namespace)
    assert result.returncode == 0, result.stderr

    good = wait_for("Journal real Ready", lambda: ready(kubectl, "real", namespace), 60)
    assert (good["status"], good["reason"]) == ("True", "Reachable"), good
    assert "connected to Cassandra 5." in good["message"]
    assert good["lastCheckTime"]

    bad = wait_for("Journal closed checked", lambda: ready(kubectl, "closed", namespace), 60)
    assert (bad["status"], bad["reason"]) == ("False", "Unreachable"), bad
    assert f"127.0.0.1:{closed}" in bad["message"]

    # Re-checked periodically: lastCheckTime moves on.
    first = bad["lastCheckTime"]
    wait_for(
        "a later check of Journal closed",
        lambda: (ready(kubectl, "closed", namespace) or {}).get("lastCheckTime") != first,
        timeout=30,
    )

    table = kubectl.run("get", "journals", "-n", namespace)
    assert table.splitlines()[0].split()[:4] == ["NAME", "TYPE", "READY", "REASON"]
