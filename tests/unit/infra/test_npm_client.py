"""The @grpc/grpc-js client's manifests: exact pins, a lock that agrees, a keyed cache entry."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.infra import npm_client
from tests.infra.provision import COMPONENTS, GRPC_JS_CLIENT_DIR


def test_the_client_pins_exact_versions_and_its_lock_agrees() -> None:
    manifest = json.loads((GRPC_JS_CLIENT_DIR / "package.json").read_text())
    lock = json.loads((GRPC_JS_CLIENT_DIR / "package-lock.json").read_text())
    dependencies: dict[str, str] = manifest["dependencies"]
    assert set(dependencies) == {"@grpc/grpc-js", "@grpc/proto-loader"}
    for name, version in dependencies.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned exactly"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert lock["packages"][""]["dependencies"] == dependencies
    # npm ci checks every package it installs against these.
    for path, entry in lock["packages"].items():
        if path:
            assert entry["integrity"].startswith("sha512-"), path


def test_a_changed_lock_is_a_new_cache_entry(tmp_path: Path) -> None:
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(GRPC_JS_CLIENT_DIR / name, tmp_path / name)
    before = npm_client.recipe(tmp_path)
    assert before == COMPONENTS["grpc-js-client"].recipe
    lock = tmp_path / "package-lock.json"
    lock.write_text(lock.read_text().replace("1.14.7", "1.14.6", 1))
    assert npm_client.recipe(tmp_path) != before
