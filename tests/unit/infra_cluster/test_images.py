"""Image recipes: what a Dockerfile reads, the build's ignore file, cache keys, hadolint."""

from __future__ import annotations

import re
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


_BASE_IMAGE_ARG = re.compile(r"^ARG BASE_IMAGE=(\S+)$", re.MULTILINE)
# python:<3.11 patch>-slim-<Debian codename>: the Python release and the Debian under it
# both fixed, so two builds of the same tree start from the same distribution.
_PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-(?P<debian>[a-z]+)$")


def test_every_dockerfile_takes_one_pinned_base_image_argument() -> None:
    defaults = set()
    for app in images.ALL_APPS:
        text = app.dockerfile.read_text()
        (default,) = _BASE_IMAGE_ARG.findall(text)
        defaults.add(default)
        assert images.copy_sources(text), app.dockerfile
    (default,) = defaults  # one default for all three images
    pinned = _PINNED_PYTHON.match(default)
    assert pinned, f"{default} does not pin the Python patch release and the Debian release"
    # The local cluster's stand-in base is debootstrapped from the same Debian release.
    assert pinned["debian"] == images.DEBIAN_SUITE


@pytest.mark.parametrize("app", images.ALL_APPS, ids=lambda a: a.name)
def test_hadolint_passes_on_every_dockerfile(app: images.AppImage) -> None:
    hadolint = images.REPO_ROOT / ".venv" / "bin" / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(app.dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _patterns(ignore_file: Path) -> list[str]:
    lines = (line.strip() for line in ignore_file.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# Generated code and local caches: the builds regenerate the first, never need the rest.
_GENERATED = (
    "protocol/src/akkaserverless/",
    "protocol/src/larder_internal/",
    "**/_generated/",
    "**/__pycache__/",
    "**/*.pyc",
)


@pytest.mark.parametrize("app", images.ALL_APPS, ids=lambda a: a.name)
def test_each_build_admits_exactly_its_copy_sources_minus_generated_code(
    app: images.AppImage,
) -> None:
    assert app.ignore_file is not None, app.dockerfile
    patterns = _patterns(app.ignore_file)
    assert patterns[0] == "**"
    admitted = [p.removeprefix("!") for p in patterns if p.startswith("!")]
    assert sorted(admitted) == sorted(images.copy_sources(app.dockerfile.read_text()))
    assert set(_GENERATED) <= set(patterns)


def test_the_samples_have_their_own_ignore_files_the_project_the_root_one() -> None:
    # `docker build -f samples/<x>/Dockerfile .` needs sdk/ and samples/, which the root
    # .dockerignore (made for the project image) keeps out.
    assert images.PROJECT.ignore_file == images.REPO_ROOT / ".dockerignore"
    for app in (images.SHOPPING_CART, images.TURKEY):
        assert app.ignore_file == app.dockerfile.with_name("Dockerfile.dockerignore")
        generated = f"samples/{app.dockerfile.parent.name}/src/"
        assert any(
            p.startswith(generated) and p.endswith("/*_pb2.py") for p in _patterns(app.ignore_file)
        ), "the sample's generated protobuf code is copied from the working tree"


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
    app = images.AppImage("demo", tmp_path / "Dockerfile", tmp_path)
    assert app.ignore_file is None
    first = images.app_reference(app, "localhost/base:1")
    assert first.startswith("localhost/demo:")
    (tmp_path / "other.txt").write_text("changed, but no COPY reads it\n")
    assert images.app_reference(app, "localhost/base:1") == first
    assert images.app_reference(app, "localhost/base:2") != first
    (tmp_path / "app" / "main.py").write_text("print('v2')\n")
    second = images.app_reference(app, "localhost/base:1")
    assert second != first
    (tmp_path / ".dockerignore").write_text("**\n!app/\n")
    assert app.ignore_file == tmp_path / ".dockerignore"
    with_shared = images.app_reference(app, "localhost/base:1")
    assert with_shared != second
    (tmp_path / "Dockerfile.dockerignore").write_text("**\n!app/\n**/*.pyc\n")
    assert app.ignore_file == tmp_path / "Dockerfile.dockerignore"
    assert images.app_reference(app, "localhost/base:1") != with_shared


def test_the_base_tag_follows_the_recipe() -> None:
    assert images.rootfs_reference().startswith(f"{images.ROOTFS_NAME}:")
    assert "debootstrap --variant=minbase" in images.base_recipe()
    assert "python3-venv" in images.base_recipe()
    assert images.base_reference() != images.rootfs_reference()
