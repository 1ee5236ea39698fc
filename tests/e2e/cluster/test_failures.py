"""Bad input and failures: the pod's status says what a kubelet would say, the failure
message of a test shows events and logs, and the agent leaves nothing behind."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.cluster.conftest import Images
from tests.e2e.cluster.kubectl import Kubectl
from tests.e2e.cluster.test_pods import assert_nothing_left


def single_pod(name: str, container: dict[str, Any], **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [container], **spec},
        }
    )


def container_status(kubectl: Kubectl, pod: str) -> dict[str, Any]:
    found = kubectl.json("get", "pod", pod)
    statuses = found["status"].get("containerStatuses") or [{}]
    status: dict[str, Any] = statuses[0]
    return status


def waiting_reason(kubectl: Kubectl, pod: str) -> str:
    return str(container_status(kubectl, pod).get("state", {}).get("waiting", {}).get("reason"))


def delete_and_check_clean(kubectl: Kubectl, name: str) -> None:
    pod = kubectl.json("get", "pod", name)
    kubectl.run("delete", "pod", name, "--wait=true", "--timeout=60s")
    assert_nothing_left(pod)


def test_a_missing_image_with_pull_policy_never(kubectl: Kubectl) -> None:
    kubectl.apply(
        single_pod(
            "ghost",
            {"name": "ghost", "image": "localhost/no-such-image:1", "imagePullPolicy": "Never"},
        )
    )
    kubectl.wait_for(
        "waiting with ErrImageNeverPull",
        lambda: waiting_reason(kubectl, "ghost") == "ErrImageNeverPull",
        60,
        "app=ghost",
    )
    status = container_status(kubectl, "ghost")
    assert "is not present with pull policy of Never" in status["state"]["waiting"]["message"]
    assert kubectl.json("get", "pod", "ghost")["status"]["phase"] == "Pending"
    events = kubectl.run("get", "events", "--field-selector", "involvedObject.name=ghost")
    assert "ErrImageNeverPull" in events
    delete_and_check_clean(kubectl, "ghost")


def test_a_container_that_exits_at_start_loops_with_back_off(
    kubectl: Kubectl, cluster_images: Images
) -> None:
    kubectl.apply(
        single_pod(
            "crash",
            {
                "name": "crash",
                "image": cluster_images.larder,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo about to fail; exit 3"],
            },
        )
    )
    kubectl.wait_for(
        "restarted and backing off",
        lambda: (
            container_status(kubectl, "crash").get("restartCount", 0) >= 2
            and waiting_reason(kubectl, "crash") == "CrashLoopBackOff"
        ),
        90,
        "app=crash",
    )
    status = container_status(kubectl, "crash")
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert "about to fail" in kubectl.run("logs", "crash", "-c", "crash", "--previous")
    events = kubectl.run("get", "events", "--field-selector", "involvedObject.name=crash")
    assert "Back-off restarting failed container" in events
    # A test that waits for Ready fails with the events and the container's output.
    with pytest.raises(AssertionError) as failed:
        kubectl.wait_for("Ready", lambda: False, 0.1, "app=crash")
    message = str(failed.value)
    assert "BackOff" in message and "about to fail" in message and "restarts=" in message, message
    delete_and_check_clean(kubectl, "crash")


def test_a_probe_that_never_passes_keeps_the_pod_unready(
    kubectl: Kubectl, cluster_images: Images
) -> None:
    kubectl.apply(
        single_pod(
            "sulky",
            {
                "name": "sulky",
                "image": cluster_images.larder,
                "imagePullPolicy": "Never",
                "command": ["python3", "-m", "http.server", "8080"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8081}, "periodSeconds": 1},
            },
        )
    )
    kubectl.wait_for(
        "Running",
        lambda: "running" in container_status(kubectl, "sulky").get("state", {}),
        60,
        "app=sulky",
    )
    # Several probe periods pass without the pod ever turning Ready.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = kubectl.json("get", "pod", "sulky")
        ready = {c["type"]: c for c in found["status"]["conditions"]}["Ready"]
        assert ready["status"] == "False"
        assert ready.get("reason") == "ContainersNotReady"
        assert found["status"]["containerStatuses"][0]["ready"] is False
    delete_and_check_clean(kubectl, "sulky")


def test_a_pod_deleted_mid_start_is_cleaned_up(kubectl: Kubectl, cluster_images: Images) -> None:
    kubectl.apply(
        single_pod(
            "doomed",
            {
                "name": "doomed",
                "image": cluster_images.larder,
                "imagePullPolicy": "Never",
                "command": ["sleep", "600"],
            },
            initContainers=[
                {
                    "name": "slow-init",
                    "image": cluster_images.larder,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                }
            ],
        )
    )
    kubectl.wait_for(
        "running its init container",
        lambda: (
            "running"
            in (
                kubectl.json("get", "pod", "doomed")["status"].get("initContainerStatuses") or [{}]
            )[0].get("state", {})
        ),
        60,
        "app=doomed",
    )
    started = time.monotonic()
    delete_and_check_clean(kubectl, "doomed")
    # The 2 s grace period bounds the deletion: SIGTERM, then SIGKILL.
    assert time.monotonic() - started < 30


def test_a_failing_liveness_probe_restarts_the_container(
    kubectl: Kubectl, cluster_images: Images
) -> None:
    kubectl.apply(
        single_pod(
            "numb",
            {
                "name": "numb",
                "image": cluster_images.larder,
                "imagePullPolicy": "Never",
                "command": ["python3", "-m", "http.server", "8080"],
                "livenessProbe": {
                    "tcpSocket": {"port": 8081},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            },
        )
    )
    kubectl.wait_for(
        "restarted by its liveness probe",
        lambda: container_status(kubectl, "numb").get("restartCount", 0) >= 1,
        60,
        "app=numb",
    )
    last = container_status(kubectl, "numb")["lastState"]["terminated"]
    assert "Liveness probe failed: dial tcp" in last["message"]
    delete_and_check_clean(kubectl, "numb")
