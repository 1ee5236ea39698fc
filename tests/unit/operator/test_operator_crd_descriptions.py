"""Every field of Larder's CRDs is described, so `kubectl explain` never says
`<no description>`; embedded Kubernetes types kept as written say so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CRDS = ["larder.dev_statefulfunctions.yaml", "larder.dev_journals.yaml"]
# What a field kept as written (x-kubernetes-preserve-unknown-fields) must say about itself.
KEPT = "kept as written"
# The API server refuses anything but `type: object` on the top-level metadata (it is
# always ObjectMeta, and `kubectl explain` describes it from Kubernetes' own schema).
NOT_DESCRIBED = {"metadata"}


def properties(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property below ``schema``, with its path as `kubectl explain` spells it."""
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from properties(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        yield from properties(items, path)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from properties(extra, path)


def problems(crd: dict[str, Any]) -> list[str]:
    found = []
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        kind = crd["spec"]["names"]["kind"]
        for path, schema in [(kind, root), *properties(root, kind)]:
            if path.removeprefix(f"{kind}.") in NOT_DESCRIBED:
                assert schema == {"type": "object"}, f"{path}: the API server refuses {schema}"
                continue
            description = schema.get("description", "").strip()
            if not description:
                found.append(f"{version['name']} {path}: no description")
                continue
            items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            kept = schema.get("x-kubernetes-preserve-unknown-fields") or (
                items.get("x-kubernetes-preserve-unknown-fields")
            )
            if kept and KEPT not in " ".join(description.split()):
                found.append(
                    f"{version['name']} {path}: preserves unknown fields, and its description"
                    f" does not say it is {KEPT!r}"
                )
    return found


@pytest.mark.parametrize("name", CRDS)
def test_every_field_has_a_description(name: str) -> None:
    for directory in (ROOT / "crds", ROOT / "charts" / "larder" / "crds"):
        crd = yaml.safe_load((directory / name).read_text())
        assert problems(crd) == [], f"{directory / name}:\n" + "\n".join(problems(crd))


def test_the_walk_finds_a_missing_description_and_a_silent_kept_field() -> None:
    crd = yaml.safe_load((ROOT / "crds" / CRDS[0]).read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    container = spec["properties"]["containers"]["items"]["properties"]
    del container["image"]["description"]
    container["resources"]["description"] = "CPU and memory."
    assert problems(crd) == [
        "v1alpha1 StatefulFunction.spec.containers.image: no description",
        "v1alpha1 StatefulFunction.spec.containers.resources: preserves unknown fields, and"
        " its description does not say it is 'kept as written'",
    ]
