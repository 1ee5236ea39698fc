"""`kubectl explain` on the real API server describes every field of Larder's CRDs."""

from __future__ import annotations

import functools

import pytest
import yaml

from tests.integration.operator.conftest import ROOT, Kubectl, wait_for
from tests.unit.operator.test_operator_crd_descriptions import properties


@pytest.mark.parametrize("name", ["larder.dev_statefulfunctions.yaml", "larder.dev_journals.yaml"])
def test_kubectl_explain_has_no_field_without_a_description(
    kubectl: Kubectl, crds: None, name: str
) -> None:
    crd = yaml.safe_load((ROOT / "crds" / name).read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    kind = crd["spec"]["names"]["kind"]
    # `kubectl explain X` lists X's fields with their descriptions: explaining every object
    # that has fields covers every field.
    parents = [kind] + [
        path for path, schema in properties(root, kind)
        if schema.get("properties") or (schema.get("items") or {}).get("properties")
    ]
    resource = f"{crd['spec']['names']['plural']}.larder.dev"

    def explained(field: str) -> str | None:
        out = kubectl.run("explain", field, check=False)
        return out if "FIELDS:" in out else None

    for parent in parents:
        field = resource + parent[len(kind):]
        # The API server publishes a changed CRD's OpenAPI a moment after applying it.
        out = wait_for(f"kubectl explain {field}", functools.partial(explained, field), timeout=30)
        assert "<no description>" not in out, out
