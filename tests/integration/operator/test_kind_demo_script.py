"""scripts/kind-demo.sh: lint-clean, every command printed, and its cluster-facing part run
against the test API server with server-side dry-run applies (there is no kind or docker
here: the kind and image steps are only checked as printed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import yaml

from tests.infra.kube import KubeControlPlane
from tests.integration.operator.conftest import ROOT, Kubectl

SCRIPT = ROOT / "scripts" / "kind-demo.sh"


def run_script(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
        timeout=timeout, check=False,
    )


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run scripts/system-packages.sh"
    result = subprocess.run(
        [shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_print_mode_shows_the_whole_kind_path_without_any_tool(tmp_path: Path) -> None:
    # No docker, kind, kubectl or helm on PATH: --print must not need them.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run_script("--print", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    kubeconfig = f"{tmp_path}/.cache/larder/kind-larder.kubeconfig"
    commands = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    assert commands[:4] == [
        f"kind create cluster --name larder --kubeconfig {kubeconfig}",
        "docker build -t larder:dev .",
        "docker build -f samples/shopping-cart/Dockerfile -t shopping-cart:dev .",
        "kind load docker-image --name larder larder:dev shopping-cart:dev",
    ]
    # Every cluster call names its own kubeconfig and context; none switches the user's.
    cluster_calls = [c for c in commands if c.startswith(("kubectl", "helm"))]
    assert len(cluster_calls) == 5
    for call in cluster_calls:
        assert f"--kubeconfig {kubeconfig}" in call, call
        assert "--context kind-larder" in call or "--kube-context kind-larder" in call, call
    assert "use-context" not in out
    assert "image: shopping-cart:dev, imagePullPolicy: Never" in out
    # The closing calls use the sample's own key field.
    assert '{"user_id": "alice"}' in out and "cart_id" not in out
    assert f"kind delete cluster --name larder --kubeconfig {kubeconfig}" in out


def test_example_runs_the_image_the_sample_builds() -> None:
    readme = (ROOT / "samples" / "shopping-cart" / "README.md").read_text()
    built = re.search(r"docker build -f samples/shopping-cart/Dockerfile -t (\S+) \.", readme)
    assert built, "the sample's README no longer says how its image is built"
    docs = [d for d in yaml.safe_load_all((ROOT / "operator/examples/shopping-cart.yaml")
                                          .read_text()) if d]
    function = next(d for d in docs if d["kind"] == "StatefulFunction")
    assert function["spec"]["containers"][0]["image"] == built.group(1)
    kubernetes_md = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "larder-shopping-cart" not in kubernetes_md


def test_bad_arguments_are_refused_with_a_reason(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for args, said in [
        (["--bogus"], "unknown argument --bogus"),
        (["--server-dry-run"], "needs an existing cluster: add --no-kind"),
        (["--context", "x", "--print"], "--context is for --no-kind"),
    ]:
        result = run_script(*args, env=env)
        assert result.returncode == 2, (args, result.stdout)
        assert said in result.stderr, (args, result.stderr)


def test_server_dry_run_on_an_existing_cluster(
    kube: KubeControlPlane, kubectl: Kubectl, crds: None, helm_binary: Path, tmp_path: Path
) -> None:
    # A kubeconfig whose current context is somewhere else: the script must use the
    # context it is given and leave the file as it was.
    config = yaml.safe_load(kube.kubeconfig.read_text())
    real_context = config["contexts"][0]["name"]
    config["clusters"].append({"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"].append({"name": "elsewhere",
                               "context": {"cluster": "elsewhere", "user": "admin"}})
    config["current-context"] = "elsewhere"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    before = kubeconfig.read_bytes()

    demo_namespace = f"demo-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", demo_namespace)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM": str(helm_binary),
        "HOME": str(tmp_path),
        "NAMESPACE": f"larder-{uuid.uuid4().hex[:6]}",
        "DEMO_NAMESPACE": demo_namespace,
        "IMAGE": "registry.example/larder:1.2",
        "USER_IMAGE": "registry.example/cart:7",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    try:
        result = run_script("--no-kind", "--context", real_context, "--server-dry-run", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        # helm asked the server (a dry run that renders the release), kubectl applied both
        # objects through admission (CRD schema and CEL rules) without storing them.
        assert "STATUS: pending-install" in out, out
        assert "journal.larder.dev/main created (server dry run)" in out, out
        assert "statefulfunction.larder.dev/shopping-cart created (server dry run)" in out, out
        assert "docker" not in out and "kind " not in out
        assert "image: registry.example/cart:7, imagePullPolicy: IfNotPresent" in out
        assert f"--context {real_context}" in out and "Try it:" in out
        assert kubeconfig.read_bytes() == before
        assert kubectl.get("statefulfunction", "shopping-cart", demo_namespace) is None

    finally:
        kubectl.run("delete", "namespace", demo_namespace, "--wait=false", check=False)


def test_an_unknown_context_fails_before_anything_is_applied(
    kube: KubeControlPlane, helm_binary: Path, tmp_path: Path
) -> None:
    context = "no-such-context"
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HELM": str(helm_binary),
           "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = run_script("--no-kind", "--context", context, "--server-dry-run", env=env)
    assert result.returncode != 0
    assert context in result.stderr
    assert "Try it:" not in result.stdout
