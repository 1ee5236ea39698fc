"""The provisioned helm binary runs, lints and renders a chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


def helm(binary: Path, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [str(binary), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"helm {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def test_version(helm_binary: Path, tmp_path: Path) -> None:
    assert helm(helm_binary, "version", "--short", cwd=tmp_path).startswith("v3.")


def test_lint_and_template_a_chart(helm_binary: Path, tmp_path: Path) -> None:
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\ndescription: infra smoke chart\n"
    )
    (chart / "values.yaml").write_text("replicas: 3\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
        "data:\n  replicas: {{ .Values.replicas | quote }}\n"
    )
    helm(helm_binary, "lint", str(chart), cwd=tmp_path)
    rendered = helm(helm_binary, "template", "rel", str(chart), "--set", "replicas=5", cwd=tmp_path)
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert documents == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "rel-cfg"},
            "data": {"replicas": "5"},
        }
    ]
