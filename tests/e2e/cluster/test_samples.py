"""The operator installed with Helm runs the samples on the local cluster: real images,
pods in their own network namespaces, the journal on the host's Cassandra."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import shoppingcart.shopping_cart_api_pb2 as api
import yaml
from google.protobuf.empty_pb2 import Empty

from tests.e2e.cluster.conftest import Images
from tests.e2e.cluster.kubectl import Kubectl, ready_pods
from tests.e2e.cluster.test_pods import assert_nothing_left
from tests.e2e.devcli.dev_process import http
from tests.e2e.samples.sample_run import unary
from tests.infra.cassandra import CassandraServer
from tests.infra.cluster.cluster import LocalCluster
from tests.infra.cluster.images import REPO_ROOT

CHART = REPO_ROOT / "charts" / "larder"
SAMPLES = REPO_ROOT / "samples"
SIDECAR = "larder-sidecar"
READY_TIMEOUT_S = 240.0


def chart_values(cluster_images: Images) -> list[str]:
    repository, tag = cluster_images.larder.rsplit(":", 1)
    values = {
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "sidecar.pullPolicy": "Never",
        "operator.journalCheckInterval": "5",
        "operator.resyncInterval": "10",
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def operator(
    local_cluster: LocalCluster, cluster_images: Images, helm_binary: Path
) -> Iterator[Kubectl]:
    """The operator installed from the chart with helm, as docs/kubernetes.md does."""
    ctl = Kubectl(local_cluster, "larder-system", helm_binary)
    ctl.helm_run(
        "install", "larder", str(CHART), "--create-namespace", *chart_values(cluster_images)
    )
    ctl.wait_for(
        "running the operator (a Ready pod)",
        lambda: bool(ready_pods(ctl.pods("app.kubernetes.io/name=larder"))),
        READY_TIMEOUT_S,
        "app.kubernetes.io/name=larder",
    )
    yield ctl
    ctl.helm_run("uninstall", "larder", "--wait", "--timeout", "120s")


def sample_manifests(sample: str, image: str, cassandra: CassandraServer) -> str:
    """The sample's k8s/ manifests with the journal on the host's Cassandra (which every
    pod reaches at its own 127.0.0.1) and the image from the local store; nothing else
    is changed."""
    documents: list[dict[str, Any]] = []
    for path in sorted((SAMPLES / sample / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Journal":
                cfg = doc["spec"]["cassandra"]
                cfg["contactPoints"] = ["127.0.0.1"]
                cfg["port"] = cassandra.port
                cfg["keyspace"] = f"{cfg['keyspace']}_{uuid.uuid4().hex[:6]}"
            if doc["kind"] == "StatefulFunction":
                doc["spec"]["containers"][0]["image"] = image
                doc["spec"]["containers"][0]["imagePullPolicy"] = "Never"
            documents.append(doc)
    return yaml.safe_dump_all(documents)


def function_ready(kubectl: Kubectl, name: str) -> bool:
    found = kubectl.json("get", "statefulfunction", name)
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in found.get("status", {}).get("conditions", [])
    )


def wait_ready_pods(kubectl: Kubectl, function: str, count: int, image: str) -> list[Any]:
    selector = f"larder.dev/function={function}"
    found: list[Any] = []

    def settled() -> bool:
        pods = kubectl.pods(selector)
        ready = [p for p in ready_pods(pods) if p["spec"]["containers"][0]["image"] == image]
        # Only the wanted pods: old ones of a rollout are gone, not merely unready.
        found[:] = ready if len(ready) == count == len(pods) else []
        return bool(found)

    what = f"{count} Ready pods of {function} on {image}"
    kubectl.wait_for(what, settled, READY_TIMEOUT_S, selector)
    # The pods the condition was true for, not a second listing taken a moment later.
    return found


def local_cluster_nodes(kubectl: Kubectl) -> list[str]:
    return kubectl.run("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()


def endpoint_ips(kubectl: Kubectl, service: str) -> set[str]:
    out = kubectl.run(
        "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}", "-o", "json"
    )
    return {
        address
        for item in json.loads(out)["items"]
        for endpoint in item.get("endpoints") or ()
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint["addresses"]
    }


def test_shopping_cart_runs_scales_rolls_and_goes(
    operator: Kubectl, kubectl: Kubectl, cassandra: CassandraServer, cluster_images: Images
) -> None:
    image = cluster_images.shopping_cart
    kubectl.apply(sample_manifests("shopping-cart", image, cassandra))
    kubectl.wait_for(
        "Ready (StatefulFunction)",
        lambda: function_ready(kubectl, "shopping-cart"),
        READY_TIMEOUT_S,
        "larder.dev/function=shopping-cart",
    )
    pods = wait_ready_pods(kubectl, "shopping-cart", 2, image)
    ip = pods[0]["status"]["podIP"]
    base = f"http://{ip}:9000"
    assert http(
        "POST", f"{base}/cart/alice/items/add", {"product_id": "tea", "name": "Tea", "quantity": 2}
    ) == (200, {})
    with grpc.insecure_channel(f"{ip}:9000") as channel:
        service = "/com.example.shoppingcart.ShoppingCartService"
        unary(
            channel,
            f"{service}/AddItem",
            api.AddLineItem(user_id="alice", product_id="jam", name="Jam", quantity=1),
            Empty,
        )
        cart = unary(channel, f"{service}/GetCart", api.GetShoppingCart(user_id="alice"), api.Cart)
    assert sorted((i.product_id, i.quantity) for i in cart.items) == [("jam", 1), ("tea", 2)]
    # Sharded: the cart lives in exactly one of the pods, whichever pod was asked.
    logs = [kubectl.run("logs", p["metadata"]["name"], "-c", SIDECAR) for p in pods]
    assert sum(bool(re.search(r"activated \S+/alice\b", log)) for log in logs) == 1, logs

    kubectl.run("scale", "statefulfunction", "shopping-cart", "--replicas=3")
    scaled = wait_ready_pods(kubectl, "shopping-cart", 3, image)
    ips = {p["status"]["podIP"] for p in scaled}
    # Where the scheduler puts them is its choice (usually both nodes); each runs on one.
    assert {p["spec"]["nodeName"] for p in scaled} <= set(local_cluster_nodes(kubectl))
    kubectl.wait_for(
        "listing the 3 pods in the EndpointSlices",
        lambda: endpoint_ips(kubectl, "shopping-cart") == ips,
        60,
    )

    # A rolling update to another tag of the user image: new pods replace the old, and the
    # cart, kept in Cassandra, survives.
    rolled = image.rsplit(":", 1)[0] + ":rolled"
    subprocess.run(["buildah", "tag", image, rolled], check=True, capture_output=True)
    try:
        kubectl.run(
            "patch",
            "statefulfunction",
            "shopping-cart",
            "--type=json",
            "-p",
            json.dumps([{"op": "replace", "path": "/spec/containers/0/image", "value": rolled}]),
        )
        rolled_pods = wait_ready_pods(kubectl, "shopping-cart", 3, rolled)
        new_ip = rolled_pods[0]["status"]["podIP"]
        assert http("GET", f"http://{new_ip}:9000/carts/alice")[1]["items"] == [
            {"productId": "tea", "name": "Tea", "quantity": 2},
            {"productId": "jam", "name": "Jam", "quantity": 1},
        ]
        for pod in pods:
            assert_nothing_left(pod)
        # The sample's view, on the Cassandra view store: the carts holding a product,
        # through any pod (the view follows the carts asynchronously, hence the wait).
        teas = (200, {"carts": [{"productId": "tea", "userId": "alice", "name": "Tea"}]})
        kubectl.wait_for(
            "the carts-by-product view answering",
            lambda: http("GET", f"http://{new_ip}:9000/product-carts/tea") == teas,
            60,
        )

        kubectl.run("delete", "statefulfunction", "shopping-cart", "--wait=true")
        kubectl.wait_for(
            "rid of every pod and child",
            lambda: (
                not kubectl.pods("larder.dev/function=shopping-cart")
                and not kubectl.run("get", "deployments,services", "-o", "name")
            ),
            120,
        )
        for pod in rolled_pods:
            assert_nothing_left(pod)
    finally:
        subprocess.run(["buildah", "rmi", rolled], check=False, capture_output=True)


def test_turkey_runs_and_goes(
    operator: Kubectl, kubectl: Kubectl, cassandra: CassandraServer, cluster_images: Images
) -> None:
    image = cluster_images.turkey
    # There is no Kafka here: the manifest as shipped runs without one (eventing off).
    kubectl.apply(sample_manifests("turkey", image, cassandra))
    kubectl.wait_for(
        "Ready (StatefulFunction)",
        lambda: function_ready(kubectl, "turkey"),
        READY_TIMEOUT_S,
        "larder.dev/function=turkey",
    )
    [pod] = wait_ready_pods(kubectl, "turkey", 1, image)
    base = f"http://{pod['status']['podIP']}:9000/com.example.TurkeyService"
    # The sequence tests/e2e/samples checks through `larder dev`, now on the cluster.
    assert http("POST", f"{base}/StartCooking", {"turkey_id": "t1"}) == (200, {})
    assert http(
        "POST", f"{base}/IncreaseTurkeyTemperature", {"turkey_id": "t1", "temperature_change": 160}
    ) == (200, {})
    assert http(
        "POST", f"{base}/DecreaseTurkeyTemperature", {"turkey_id": "t1", "temperature_change": 10}
    ) == (200, {})
    assert http("POST", f"{base}/EndCooking", {"turkey_id": "t1"}) == (200, {})
    assert http("POST", f"{base}/GetCurrentTurkey", {"turkey_id": "t1"}) == (
        200,
        {
            "inOven": False,
            "done": "STILL_SALMONELLA",
            "externalTemperature": 0.0,
            "internalTemperature": 150.0,
        },
    )
    assert "activated" in kubectl.run("logs", pod["metadata"]["name"], "-c", SIDECAR)

    # The README's commands that turn Kafka on, checked by the API server (dry run: the
    # broker they name does not exist here).
    changed = [kubectl_dry_run(kubectl, command) for command in readme_kafka_commands()]
    assert changed[0]["data"] == {"LARDER_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    spec = changed[1]["spec"]
    assert spec["kafka"] == {"configMapRef": {"name": changed[0]["metadata"]["name"]}}
    assert not spec["sidecar"]["env"]

    kubectl.run("delete", "statefulfunction", "turkey", "--wait=true")
    kubectl.wait_for("rid of the pod", lambda: not kubectl.pods("larder.dev/function=turkey"), 120)
    assert_nothing_left(pod)


def readme_kafka_commands() -> list[list[str]]:
    text = (SAMPLES / "turkey" / "README.md").read_text()
    block = text[text.index("To feed them from Kafka") :].split("```")[1]
    lines = block.replace("\\\n", " ").splitlines()[1:]
    return [shlex.split(line) for line in lines if line.strip()]


def kubectl_dry_run(kubectl: Kubectl, command: list[str]) -> Any:
    assert command[0] == "kubectl", command
    return json.loads(kubectl.run(*command[1:], "--dry-run=server", "-o", "json"))
