"""What `kubectl describe sf` tells a user: rejected children, Normal Events, calm logs."""

from __future__ import annotations

from typing import Any

from tests.integration.operator.conftest import Kubectl, OperatorProcess, wait_for
from tests.integration.operator.test_operator_on_apiserver import (
    apply_ok,
    condition,
)

SOURCE = "larder-operator"


def _function(name: str, extra: str = "", spec: str = "") -> str:
    return f"""
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {{name: {name}}}
spec:
{spec}  containers:
    - name: fn
      image: example/cart:1
{extra}"""


def _ready_reason(kubectl: Kubectl, name: str, namespace: str, reason: str) -> Any:
    def probe() -> dict[str, Any] | None:
        cond = condition(kubectl.get("statefulfunction", name, namespace), "Ready")
        return cond if cond and cond["reason"] == reason else None

    return wait_for(f"{name}: Ready reason {reason}", probe)


def _event(
    kubectl: Kubectl, kind: str, name: str, namespace: str, type_: str, reason: str
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        for event in kubectl.events(kind, name, namespace):
            if event["type"] == type_ and event["reason"] == reason:
                return event
        return None

    return wait_for(f"a {type_} Event {reason} on {kind} {name}", probe)


def test_a_child_the_api_server_rejects_is_reported_as_invalid_spec(
    kubectl: Kubectl, namespace: str
) -> None:
    # Both pass the CRD's schema; the API server refuses the Deployment built from them.
    apply_ok(
        kubectl,
        _function("mounts", "      volumeMounts: [{name: data, mountPath: /data}]\n")
        + "---"
        + _function("cpu", "      resources: {requests: {cpu: lots}}\n"),
        namespace,
    )
    mounts = _ready_reason(kubectl, "mounts", namespace, "InvalidSpec")
    assert mounts["status"] == "False"
    # The API server's own words, naming the child and the field.
    assert "Deployment" in mounts["message"], mounts
    assert 'volumeMounts[0].name: Not found: "data"' in mounts["message"], mounts
    cpu = _ready_reason(kubectl, "cpu", namespace, "InvalidSpec")
    assert "quantities must match the regular expression" in cpu["message"], cpu
    warning = _event(kubectl, "StatefulFunction", "mounts", namespace, "Warning", "InvalidSpec")
    assert 'Not found: "data"' in warning["message"]
    assert kubectl.get("deployment", "mounts", namespace) is None

    # Fixed: built, and the recovery is a Normal Event.
    apply_ok(kubectl, _function("mounts"), namespace)
    wait_for("the Deployment", lambda: kubectl.get("deployment", "mounts", namespace))
    _ready_reason(kubectl, "mounts", namespace, "PodsNotReady")


def test_recoveries_are_normal_events_from_larder_operator(
    kubectl: Kubectl, namespace: str
) -> None:
    apply_ok(kubectl, _function("cart", spec="  replicas: 0\n  journal: later\n"), namespace)
    missing = _event(kubectl, "StatefulFunction", "cart", namespace, "Warning", "JournalMissing")
    apply_ok(
        kubectl,
        "apiVersion: larder.dev/v1alpha1\nkind: Journal\nmetadata: {name: later}\n"
        "spec: {type: InMemory}\n",
        namespace,
    )
    journal_ready = _event(
        kubectl, "StatefulFunction", "cart", namespace, "Normal", "JournalReady"
    )
    ready = _event(kubectl, "StatefulFunction", "cart", namespace, "Normal", "ScaledToZero")
    assert ready["message"].startswith("Ready=True")
    in_memory = _event(kubectl, "Journal", "later", namespace, "Normal", "InMemory")
    for event in (missing, journal_ready, ready, in_memory):
        assert event["source"].get("component") == SOURCE, event
        assert event["reportingComponent"] == SOURCE, event


def test_expected_waits_are_not_logged_as_errors(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    start = operator_process.log.stat().st_size
    apply_ok(kubectl, _function("cart", spec="  journal: absent\n"), namespace)
    _ready_reason(kubectl, "cart", namespace, "JournalMissing")

    def waits() -> list[str]:
        with operator_process.log.open("rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
        return [line for line in text.splitlines() if "waiting for: JournalMissing" in line]

    # Said in status and Events already; the log says it too, but as what it is.
    lines = wait_for("the operator logging its wait for the Journal", waits)
    assert [line for line in lines if " ERROR " in line] == [], lines
    assert any(f"{namespace}/cart" in line for line in lines), lines
