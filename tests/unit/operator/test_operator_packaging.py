"""The chart, the CRDs and the Dockerfile agree with each other and pass their linters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
CHART = ROOT / "charts" / "larder"


def test_chart_crds_are_exactly_the_crds_directory() -> None:
    # One source of truth: the chart ships byte-identical copies of crds/.
    ours = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert ours, "crds/ is empty"
    assert chart == ours, "charts/larder/crds differs from crds/: copy crds/*.yaml over"


def test_crds_have_status_subresource_and_short_names() -> None:
    crds = {
        doc["spec"]["names"]["kind"]: doc
        for path in CRDS.glob("larder.dev_*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
    }
    assert set(crds) == {"StatefulFunction", "Journal"}
    fn = crds["StatefulFunction"]["spec"]
    assert fn["names"]["shortNames"] == ["sf", "sfn"]
    (version,) = fn["versions"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert {"Ready", "Replicas", "Journal", "Age"} <= set(columns)
    journal = crds["Journal"]["spec"]
    assert journal["names"]["shortNames"] == ["jn"]
    assert "status" in journal["versions"][0]["subresources"]


def test_every_chart_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        previous = lines[index - 1].strip() if index else ""
        parent = next(
            (
                lines[j]
                for j in range(index - 1, -1, -1)
                if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) < indent
            ),
            "",
        )
        # A key is documented by a comment right above it, or by its documented parent.
        if not previous.startswith("#") and not (indent and parent.strip().endswith(":")):
            uncommented.append(stripped)
    assert uncommented == []


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shares_the_base_image_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # Which tag is pinned is checked once, for all Dockerfiles, in tests/unit/infra_cluster.
    assert text.count("ARG BASE_IMAGE=python:3.11.") == 1
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2
    assert all(line.split()[1] == "${BASE_IMAGE}" for line in froms)
    assert "USER 10001:10001" in text
