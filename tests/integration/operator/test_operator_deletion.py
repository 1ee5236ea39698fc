"""Deleting functions and Journals: no operator needed, except to protect a Journal in use."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.integration.operator.conftest import Kubectl, OperatorProcess, wait_for
from tests.integration.operator.test_operator_on_apiserver import (
    JOURNAL,
    _getter,
    _gone,
    apply_ok,
    condition,
    function,
)

IN_USE = "larder.dev/journal-in-use"


def _finalizers(obj: dict[str, Any] | None) -> list[str]:
    return list(((obj or {}).get("metadata") or {}).get("finalizers") or [])


def test_deleting_needs_no_running_operator(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    # A Journal no function uses, and a function with its state in memory.
    apply_ok(kubectl, JOURNAL + "---" + function("cart", journal=None), namespace)
    wait_for("the Deployment", lambda: kubectl.get("deployment", "cart", namespace))
    wait_for(
        "the Journal checked",
        lambda: condition(kubectl.get("journal", "main", namespace), "Ready"),
    )
    with operator_process.stopped():
        kubectl.run("delete", "statefulfunction", "cart", "-n", namespace, "--wait=false")
        kubectl.run("delete", "journal", "main", "-n", namespace, "--wait=false")
        for kind, name in [("statefulfunction", "cart"), ("journal", "main")]:
            wait_for(
                f"{kind}/{name} to be deleted while the operator is down",
                _gone(_getter(kubectl, kind, name, namespace)),
                timeout=20,
            )


def test_a_journal_in_use_is_deleted_only_once_its_functions_are_gone(
    kubectl: Kubectl, namespace: str
) -> None:
    apply_ok(
        kubectl, JOURNAL + "---" + function("cart") + "---" + function("basket"), namespace
    )
    wait_for(
        "the in-use finalizer on the Journal",
        lambda: IN_USE in _finalizers(kubectl.get("journal", "main", namespace)),
    )
    kubectl.run("delete", "journal", "main", "-n", namespace, "--wait=false")

    def in_use_warning(users: str) -> dict[str, Any] | None:
        for event in kubectl.events("Journal", "main", namespace):
            if (event["type"], event["reason"]) == ("Warning", "JournalInUse") and (
                f"used by {users};" in event["message"]
            ):
                return event
        return None

    warning = wait_for("a Warning naming both functions", lambda: in_use_warning("basket, cart"))
    assert "spec.journal" in warning["message"]
    journal = kubectl.get("journal", "main", namespace)
    assert journal is not None and journal["metadata"].get("deletionTimestamp")

    kubectl.run("delete", "statefulfunction", "cart", "-n", namespace, "--wait=false")
    wait_for("a Warning naming the one left", lambda: in_use_warning("basket"))
    assert kubectl.get("journal", "main", namespace) is not None

    # The last one moves to another Journal: that frees this one too.
    kubectl.run(
        "patch", "statefulfunction", "basket", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"journal": "elsewhere"}}',
    )
    wait_for(
        "the Journal deleted once no function uses it",
        lambda: kubectl.get("journal", "main", namespace) is None,
        timeout=30,
    )


def test_the_finalizer_of_earlier_versions_is_taken_off(
    kubectl: Kubectl, namespace: str
) -> None:
    old = "larder.dev/operator"
    with_finalizer = {"metadata": {"finalizers": [old]}}
    apply_ok(kubectl, JOURNAL + "---" + function("cart", journal=None), namespace)
    for kind, name in [("statefulfunction", "cart"), ("journal", "main")]:
        kubectl.run(
            "patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(with_finalizer)
        )
    for kind, name in [("statefulfunction", "cart"), ("journal", "main")]:
        wait_for(f"{old} taken off {kind}/{name}", _without(kubectl, kind, name, namespace, old))


def _without(
    kubectl: Kubectl, kind: str, name: str, namespace: str, finalizer: str
) -> Callable[[], bool]:
    return lambda: finalizer not in _finalizers(kubectl.get(kind, name, namespace))
