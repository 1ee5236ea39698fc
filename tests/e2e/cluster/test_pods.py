"""The node agent runs pods the way a kubelet would: order, env, probes, status, logs,
deletion, and failures reported with the kubelet's reasons."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

from tests.e2e.cluster.conftest import Images
from tests.e2e.cluster.kubectl import Kubectl, ready_pods
from tests.infra.cluster.pods import CONTAINER_PREFIX, pod_key

# A main container that serves, as JSON, its environment and what the init
# container and the native sidecar wrote into the shared emptyDir before it started.
SERVE_ENV = """
import http.server, json, os, pathlib
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        shared = pathlib.Path('/shared')
        body = json.dumps({
            'env': dict(os.environ),
            'files': sorted(p.name for p in shared.iterdir()),
            'order': (shared / 'order').read_text().split(),
            'token': pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount/token').exists(),
            'cwd': os.getcwd(), 'uid': os.getuid(),
        }).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
print('serving', flush=True)
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
"""

SIDECAR = """
import pathlib, signal, sys, time
with open('/shared/order', 'a') as f: f.write('sidecar\\n')
def bye(*_):
    print('sidecar stopping', flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print('sidecar up', flush=True)
while True: time.sleep(1)
"""


def pod_manifest(name: str, image: str, **overrides: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": []},
    }
    pod["spec"].update(overrides)
    return pod


def test_a_pod_runs_init_then_sidecar_then_main_with_env_probes_and_logs(
    kubectl: Kubectl, cluster_images: Images
) -> None:
    image = cluster_images.larder
    kubectl.run("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    kubectl.run("create", "configmap", "settings", "--from-literal=greeting=hello")
    pod = pod_manifest(
        "web",
        image,
        volumes=[{"name": "shared", "emptyDir": {}}],
        initContainers=[
            {
                "name": "prepare",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo init > /shared/order; echo prepared"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            },
            {
                "name": "helper",
                "image": image,
                "imagePullPolicy": "Never",
                "restartPolicy": "Always",
                "command": ["python3", "-c", SIDECAR],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            },
        ],
        containers=[
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c"],
                "args": [SERVE_ENV],
                "workingDir": "/tmp",
                "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
                "ports": [{"name": "web", "containerPort": 8080}],
                "env": [
                    {
                        "name": "PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                    },
                    {
                        "name": "GREETING",
                        "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
                    },
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MESSAGE", "value": "$(GREETING) from $(POD_NAME)"},
                ],
                "readinessProbe": {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            }
        ],
    )
    kubectl.apply(json.dumps(pod))
    kubectl.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web"}]},
            }
        )
    )
    kubectl.wait_for("Ready", lambda: bool(ready_pods(kubectl.pods("app=web"))), 90, "app=web")
    [running] = kubectl.pods("app=web")
    ip = running["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=10) as response:
        seen = json.loads(response.read())
    env = seen["env"]
    assert (env["PASSWORD"], env["GREETING"], env["POD_NAME"], env["POD_IP"]) == (
        "s3cret",
        "hello",
        "web",
        ip,
    )
    assert env["MESSAGE"] == "hello from web"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert seen["order"] == ["init", "sidecar"]
    assert seen["token"] is True
    assert (seen["cwd"], seen["uid"]) == ("/tmp", 10001)
    statuses = {s["name"]: s for s in running["status"]["initContainerStatuses"]}
    assert statuses["prepare"]["state"]["terminated"]["exitCode"] == 0
    assert "running" in statuses["helper"]["state"]
    # The endpoint controller lists the pod once it is Ready.
    kubectl.wait_for(
        "listed in the Service's EndpointSlice",
        lambda: (
            ip
            in kubectl.run(
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            )
        ),
        30,
    )
    # Logs through the API server's proxy to the agent's kubelet endpoint.
    assert "prepared" in kubectl.run("logs", "web", "-c", "prepare")
    assert "serving" in kubectl.run("logs", "web", "-c", "main")
    assert "sidecar up" in kubectl.run("logs", "web", "-c", "helper")
    kubectl.run("delete", "pod", "web", "--wait=true", "--timeout=60s")
    assert_nothing_left(running)


def assert_nothing_left(pod: dict[str, Any]) -> None:
    key = pod_key(pod["metadata"]["uid"])
    namespaces = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    containers = subprocess.run(
        ["buildah", "containers", "--format", "{{.ContainerName}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert key not in namespaces, namespaces
    assert key not in links, links
    assert f"{CONTAINER_PREFIX}{key}" not in containers, containers
