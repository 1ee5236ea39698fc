"""The samples' Kubernetes manifests fit the CRDs in crds/ (a structural schema check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = sorted((REPO / "samples").glob("*/k8s/*.yaml"))
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict, "array": list, "string": str, "integer": int, "boolean": bool,
}


def crd_schema(kind: str) -> dict[str, Any]:
    for path in (REPO / "crds").glob("larder.dev_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for kind {kind} in crds/")


def problems(value: object, schema: dict[str, Any], where: str) -> list[str]:
    found: list[str] = []
    expected = schema.get("type")
    if expected and not isinstance(value, _TYPES[expected]):
        return [f"{where}: expected {expected}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        properties = schema.get("properties", {})
        found += [f"{where}: missing required {r}" for r in schema.get("required", [])
                  if r not in value]
        for key, item in value.items():
            if key in properties:
                found += problems(item, properties[key], f"{where}.{key}")
            elif "additionalProperties" not in schema:
                found.append(f"{where}: unknown field {key}")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{n}]")
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_fits_its_crd(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "larder.dev/v1alpha1"
    schema = crd_schema(manifest["kind"])
    assert problems(manifest["spec"], schema["properties"]["spec"], "spec") == []


def test_every_sample_has_a_journal_and_a_function_using_it() -> None:
    for sample in ("shopping-cart", "turkey"):
        k8s = REPO / "samples" / sample / "k8s"
        journal = yaml.safe_load((k8s / "journal.yaml").read_text())
        function = yaml.safe_load((k8s / "statefulfunction.yaml").read_text())
        assert journal["kind"] == "Journal"
        assert journal["spec"]["type"] == "Cassandra"
        assert function["kind"] == "StatefulFunction"
        assert function["spec"]["journal"] == journal["metadata"]["name"]
        assert len(MANIFESTS) >= 4
