"""A node agent that stops removes everything it made: pods' namespaces, veths and
containers, its bridge, and its Node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.cluster.conftest import Images
from tests.e2e.cluster.kubectl import Kubectl, ready_pods
from tests.infra.cluster.cluster import LocalCluster
from tests.infra.cluster.netns import NetworkConfig
from tests.infra.cluster.pods import pod_key
from tests.infra.kube import KubeControlPlane

NODE = "larder-stop-0"
# Its own bridge, subnet and name prefix, so it never touches the session's agent.
NETWORK = NetworkConfig(bridge="larder9", subnet="10.244.9.0/24", prefix="lrs")


def host_state() -> str:
    out = [
        subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for argv in (
            ["ip", "netns", "list"],
            ["ip", "-o", "link"],
            ["buildah", "containers", "--format", "{{.ContainerName}}"],
        )
    ]
    return "\n".join(out)


def test_stopping_the_agent_removes_everything_it_made(
    kube: KubeControlPlane, cluster_images: Images, tmp_path: Path
) -> None:
    cluster = LocalCluster(kube, tmp_path, nodes=(NODE,), network=NETWORK)
    cluster.start()
    keys: list[str] = []
    try:
        ctl = Kubectl(cluster, "default")
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"stop-{i}", "labels": {"app": "stop"}},
                # Bound directly: the scheduler could pick the session's node instead.
                "spec": {
                    "nodeName": NODE,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "main",
                            "image": cluster_images.larder,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-m", "http.server", "8080"],
                        }
                    ],
                },
            }
            for i in range(2)
        ]
        for pod in pods:
            ctl.apply(json.dumps(pod))
        ctl.wait_for("2 Ready", lambda: len(ready_pods(ctl.pods("app=stop"))) == 2, 90, "app=stop")
        keys = [pod_key(p["metadata"]["uid"]) for p in ctl.pods("app=stop")]
        during = host_state()
        assert all(f"lrs-{key}" in during for key in keys) and "larder9" in during
    finally:
        cluster.stop_agent()
    after = host_state()
    # Namespaces (lrs-<key>), veths (lrs<key>) and containers (lrs-<key>-main) are gone.
    assert not [key for key in keys if key in after], after
    assert "larder9" not in after, after
    nodes = Kubectl(cluster, "default").run("get", "nodes", "-o", "name")
    assert f"node/{NODE}" not in nodes
    Kubectl(cluster, "default").run(
        "delete", "pods", "-l", "app=stop", "--force", "--grace-period=0"
    )
