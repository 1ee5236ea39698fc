"""Container images for the local cluster, built with buildah on a locally made base.

There is no registry to pull the Dockerfiles' `python:3.11.<patch>-slim-bookworm`
from, so the base is made here: Debian bookworm (minbase) from debootstrap with
python3, python3-venv and ca-certificates, plus a virtualenv at /usr/local/python
that is first on PATH, so `python` and `pip` behave as in the python slim image.

Both kinds of image are cached in buildah's own store under a tag that is a hash:
the base's tag hashes its recipe, an app image's tag hashes its Dockerfile, the
files its COPY lines name and the base's tag. An unchanged tree is never rebuilt.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.infra.errors import ProvisionError
from tests.infra.procs import Step, run_step

REPO_ROOT = Path(__file__).resolve().parents[3]

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_VENV = "/usr/local/python"
BASE_PATH = f"{BASE_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOTFS_NAME = "localhost/larder-rootfs"
BASE_NAME = "localhost/larder-base"
# Certificate authorities this machine trusts beyond Debian's (e.g. an egress proxy's):
# without them pip inside a build cannot reach PyPI. They go into the base image's
# trust store, and pip is pointed at that store (its vendored bundle ignores it).
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

DEBOOTSTRAP_TIMEOUT_S = 900.0
BUILD_TIMEOUT_S = 1200.0

@dataclass(frozen=True)
class AppImage:
    """An image built from a Dockerfile whose build context is the repository root."""

    name: str
    dockerfile: Path
    context: Path = REPO_ROOT

    @property
    def repository(self) -> str:
        return f"localhost/{self.name}"

    @property
    def ignore_file(self) -> Path | None:
        """The ignore file a build of this Dockerfile uses: `<Dockerfile>.dockerignore`
        next to it if there is one (BuildKit and buildah 1.28 look for it first), else
        the context's `.dockerignore`, else none."""
        own = self.dockerfile.with_name(f"{self.dockerfile.name}.dockerignore")
        shared = self.context / ".dockerignore"
        return own if own.is_file() else shared if shared.is_file() else None


PROJECT = AppImage("larder", REPO_ROOT / "Dockerfile")
SHOPPING_CART = AppImage("shopping-cart", REPO_ROOT / "samples/shopping-cart/Dockerfile")
TURKEY = AppImage("turkey", REPO_ROOT / "samples/turkey/Dockerfile")
ALL_APPS = (PROJECT, SHOPPING_CART, TURKEY)


def base_recipe() -> str:
    return "\n".join(
        [
            f"debootstrap --variant=minbase --include={','.join(BASE_PACKAGES)}",
            f"{DEBIAN_SUITE} {DEBIAN_MIRROR}",
            f"python3 -m venv {BASE_VENV}",
            f"PATH={BASE_PATH}",
        ]
    )


def rootfs_reference() -> str:
    return f"{ROOTFS_NAME}:{hashlib.sha256(base_recipe().encode()).hexdigest()[:12]}"


def host_cas() -> list[Path]:
    if not HOST_EXTRA_CAS.is_dir():
        return []
    return sorted(p for p in HOST_EXTRA_CAS.rglob("*.crt") if p.is_file())


def base_reference() -> str:
    digest = hashlib.sha256(rootfs_reference().encode())
    for ca in host_cas():
        digest.update(ca.name.encode() + b"\0" + ca.read_bytes())
    return f"{BASE_NAME}:{digest.hexdigest()[:12]}"


def image_exists(reference: str) -> bool:
    done = subprocess.run(
        ["buildah", "inspect", "--type", "image", reference],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode == 0


def ensure_base() -> str:
    """The base image's reference: the Debian rootfs plus this machine's extra CAs."""
    reference = base_reference()
    if image_exists(reference):
        return reference
    rootfs = ensure_rootfs()
    step = Step("base-image", reference)
    container = run_step(
        step, "buildah from", ["buildah", "from", "--pull=never", rootfs], timeout=120
    ).strip()
    try:
        cas = host_cas()
        for ca in cas:
            run_step(
                step,
                "copy CA",
                [
                    "buildah",
                    "copy",
                    container,
                    str(ca),
                    f"/usr/local/share/ca-certificates/{ca.name}",
                ],
                timeout=60,
            )
        if cas:
            run_step(
                step,
                "update-ca-certificates",
                [
                    "buildah",
                    "run",
                    "--isolation",
                    "chroot",
                    container,
                    "--",
                    "update-ca-certificates",
                ],
                timeout=120,
            )
        run_step(
            step,
            "buildah config",
            [
                "buildah",
                "config",
                "--env",
                f"PIP_CERT={CA_BUNDLE}",
                "--env",
                f"SSL_CERT_FILE={CA_BUNDLE}",
                container,
            ],
            timeout=60,
        )
        run_step(step, "buildah commit", ["buildah", "commit", container, reference], timeout=600)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    return reference


def ensure_rootfs() -> str:
    """The debootstrapped Debian with python, made first if the store does not hold it."""
    reference = rootfs_reference()
    if image_exists(reference):
        return reference
    step = Step("base-rootfs", reference)
    container = run_step(
        step, "buildah from scratch", ["buildah", "from", "scratch"], timeout=60
    ).strip()
    try:
        rootfs = run_step(
            step, "buildah mount", ["buildah", "mount", container], timeout=60
        ).strip()
        run_step(
            step,
            "debootstrap",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                rootfs,
                DEBIAN_MIRROR,
            ],
            timeout=DEBOOTSTRAP_TIMEOUT_S,
        )
        # Downloaded packages and indexes are not needed at run time.
        run_step(
            step,
            "clean apt caches",
            [
                "sh",
                "-c",
                f"rm -rf {rootfs}/var/cache/apt/archives/*.deb {rootfs}/var/lib/apt/lists/*",
            ],
            timeout=60,
        )
        run_step(
            step,
            "python venv",
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                container,
                "--",
                "python3",
                "-m",
                "venv",
                BASE_VENV,
            ],
            timeout=300,
        )
        run_step(
            step,
            "buildah config",
            [
                "buildah",
                "config",
                "--env",
                f"PATH={BASE_PATH}",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                container,
            ],
            timeout=60,
        )
        run_step(step, "buildah commit", ["buildah", "commit", container, reference], timeout=600)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    return reference


_COPY = re.compile(r"^\s*(?:COPY|ADD)\s+(.*)$", re.IGNORECASE)


def copy_sources(dockerfile_text: str) -> list[str]:
    """The build-context paths the Dockerfile's COPY/ADD lines read (not `--from=` ones)."""
    sources: list[str] = []
    for line in dockerfile_text.replace("\\\n", " ").splitlines():
        match = _COPY.match(line)
        if not match:
            continue
        words = shlex.split(match.group(1))
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def context_files(sources: list[str], root: Path = REPO_ROOT) -> list[Path]:
    """The files of the working tree (tracked or not, minus .gitignore'd) under the sources."""
    done = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *sources],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(root / line for line in done.stdout.splitlines() if (root / line).is_file())


def app_reference(app: AppImage, base: str) -> str:
    text = app.dockerfile.read_text()
    digest = hashlib.sha256(f"{base}\n{text}".encode())
    # What the ignore file lets in shapes the image as much as the files do.
    if app.ignore_file is not None:
        digest.update(b"\0" + app.ignore_file.read_bytes())
    for path in context_files(copy_sources(text), app.context):
        digest.update(str(path.relative_to(app.context)).encode() + b"\0")
        digest.update(path.read_bytes())
    return f"{app.repository}:{digest.hexdigest()[:12]}"


def ensure_app(app: AppImage, base: str | None = None) -> str:
    """The app image's reference, built with `buildah bud` if the tree changed."""
    base = base or ensure_base()
    reference = app_reference(app, base)
    if image_exists(reference):
        return reference
    step = Step(app.name, reference)
    run_step(
        step,
        "buildah bud",
        [
            "buildah",
            "bud",
            "--isolation",
            "chroot",
            "--network",
            "host",  # pip inside the build fetches from PyPI
            # No --layers: buildah 1.28 reuses a cached `RUN --mount=...,from=builder`
            # step even when the builder stage's output changed, which shipped a stale
            # operator. The whole image is cached under its content hash instead.
            "--layers=false",
            "--force-rm",  # no working container is left behind by a failed build
            "--build-arg",
            f"BASE_IMAGE={base}",
            # The ignore file a user's `docker build -f <Dockerfile> .` would use, named
            # explicitly so a buildah that does not look for <Dockerfile>.dockerignore
            # builds the same image.
            *(("--ignorefile", str(app.ignore_file)) if app.ignore_file else ()),
            "-f",
            str(app.dockerfile),
            "-t",
            reference,
            str(app.context),
        ],
        timeout=BUILD_TIMEOUT_S,
    )
    if not image_exists(reference):
        raise ProvisionError(app.name, reference, "buildah bud", "finished but left no image")
    _remove_older(app.repository, reference)
    return reference


def _remove_older(repository: str, keep: str) -> None:
    """Older builds of the same image: every tree change makes one, and they are large.

    An image a container still uses is refused by buildah and stays.
    """
    listed = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for name in listed:
        if name.startswith(f"{repository}:") and name != keep:
            subprocess.run(["buildah", "rmi", name], capture_output=True, check=False)


@dataclass(frozen=True)
class Built:
    name: str
    reference: str
    cached: bool
    seconds: float


def provision_all() -> list[Built]:
    """The base and every app image, built if missing (`provision cluster`)."""
    results: list[Built] = []
    started = time.monotonic()
    had_base = image_exists(base_reference())
    base = ensure_base()
    results.append(Built("base", base, had_base, time.monotonic() - started))
    for app in ALL_APPS:
        started = time.monotonic()
        reference = app_reference(app, base)
        cached = image_exists(reference)
        ensure_app(app, base)
        results.append(Built(app.name, reference, cached, time.monotonic() - started))
    return results
