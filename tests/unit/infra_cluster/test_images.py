"""Image recipes: what a Dockerfile reads, the build's ignore file, cache keys, hadolint."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.infra.cluster import images


def test_copy_sources_are_the_context_paths_of_copy_lines() -> None:
    text = (
        "FROM x AS b\nCOPY protocol/ protocol/\nCOPY --chown=1:1 sdk/ a/ dest/\n"
        "COPY --from=b /wheels /wheels\nADD \\\n  samples/x/src/ src/\nRUN true\n"
    )
    assert images.copy_sources(text) == ["protocol/", "sdk/", "a/", "samples/x/src/"]


def test_every_dockerfile_takes_the_base_image_argument() -> None:
    for app in images.ALL_APPS:
        text = app.dockerfile.read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim" in text, app.dockerfile
        assert images.copy_sources(text), app.dockerfile


@pytest.mark.parametrize("app", images.ALL_APPS, ids=lambda a: a.name)
def test_hadolint_passes_on_every_dockerfile(app: images.AppImage) -> None:
    hadolint = images.REPO_ROOT / ".venv" / "bin" / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(app.dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_ignore_file_admits_only_the_copy_sources_minus_generated_code() -> None:
    lines = images.ignore_file_text(["protocol/", "sdk/"]).splitlines()
    assert lines[:3] == ["**", "!protocol/", "!sdk/"]
    assert "**/__pycache__/" in lines
    assert "protocol/src/akkaserverless/" in lines


def _repo(root: Path) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text("print('v1')\n")
    (root / "other.txt").write_text("not copied\n")
    (root / "Dockerfile").write_text(
        "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nCOPY app/ app/\n"
    )


def test_the_app_tag_changes_with_copied_files_and_the_base_only(tmp_path: Path) -> None:
    _repo(tmp_path)
    app = images.AppImage("demo", tmp_path / "Dockerfile")
    first = images.app_reference(app, "localhost/base:1", tmp_path)
    assert first.startswith("localhost/demo:")
    (tmp_path / "other.txt").write_text("changed, but no COPY reads it\n")
    assert images.app_reference(app, "localhost/base:1", tmp_path) == first
    assert images.app_reference(app, "localhost/base:2", tmp_path) != first
    (tmp_path / "app" / "main.py").write_text("print('v2')\n")
    assert images.app_reference(app, "localhost/base:1", tmp_path) != first


def test_the_base_tag_follows_the_recipe() -> None:
    assert images.rootfs_reference().startswith(f"{images.ROOTFS_NAME}:")
    assert "debootstrap --variant=minbase" in images.base_recipe()
    assert "python3-venv" in images.base_recipe()
    assert images.base_reference() != images.rootfs_reference()
