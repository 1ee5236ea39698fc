"""Session fixtures of the local cluster: images, control plane + node agent, namespaces."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster.kubectl import Kubectl
from tests.infra.cassandra import CassandraServer
from tests.infra.cluster import images
from tests.infra.cluster.cluster import LocalCluster
from tests.infra.kube import KubeControlPlane
from tests.infra.logs import keep_logs

# The shopping cart's generated gRPC code, for the client side of the tests (as
# tests/e2e/samples does it); generated before a test module imports it.
_CART_SRC = images.REPO_ROOT / "samples" / "shopping-cart" / "src"
if str(_CART_SRC) not in sys.path:
    sys.path.insert(0, str(_CART_SRC))
from shoppingcart._codegen import ensure_generated  # noqa: E402

ensure_generated()


@dataclass(frozen=True)
class Images:
    base: str
    larder: str
    shopping_cart: str
    turkey: str


@pytest.fixture(scope="session")
def cluster_images() -> Images:
    base = images.ensure_base()
    return Images(
        base=base,
        larder=images.ensure_app(images.PROJECT, base),
        shopping_cart=images.ensure_app(images.SHOPPING_CART, base),
        turkey=images.ensure_app(images.TURKEY, base),
    )


@pytest.fixture(scope="session")
def local_cluster(
    request: pytest.FixtureRequest,
    kube: KubeControlPlane,
    cassandra: CassandraServer,
    cluster_images: Images,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalCluster]:
    workdir: Path = tmp_path_factory.mktemp("local-cluster")
    # Two Nodes, so the scheduler spreads a scaled function's pods over both.
    cluster = LocalCluster(
        kube, workdir, forwarded_ports=(cassandra.port,), nodes=("larder-node-0", "larder-node-1")
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        if request.session.testsfailed:
            keep_logs("local-cluster", workdir)


@pytest.fixture()
def kubectl(local_cluster: LocalCluster) -> Iterator[Kubectl]:
    """A fresh namespace per test, deleted (and its pods cleaned up) afterwards."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(local_cluster, "default")
    admin.run("create", "namespace", namespace)
    ctl = Kubectl(local_cluster, namespace)
    # The namespace's default ServiceAccount comes from the controller manager.
    ctl.wait_for(
        "given a default ServiceAccount",
        lambda: bool(ctl.run("get", "serviceaccount", "default", check=False)),
        30,
    )
    yield ctl
    admin.run("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
