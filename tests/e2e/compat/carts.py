"""The two shopping-cart user functions, built for a test run the way their SDKs' users build them.

Generated code and descriptor sets go into the test's temporary directory; only the
sources (``functions/``) are in git.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.compat.stack import FunctionSpec
from tests.infra import published_sdks
from tests.infra.published_sdks import PublishedSdks

FUNCTIONS = Path(__file__).resolve().parent / "functions"
PROTO_DIR = FUNCTIONS / "proto"
PROTO_SOURCES = ("compatcart/cart_api.proto", "compatcart/cart_domain.proto")
SERVICE = "com.example.compat.cart.ShoppingCartService"
ENTITY_TYPE = "shopping-cart"


@dataclass(frozen=True)
class CartFunction:
    """One SDK's cart, and what that SDK does that the tests must expect."""

    sdk: str
    support_library: str
    """What the SDK announces in ``ServiceInfo`` (name and version)."""
    spec: FunctionSpec
    sidecar_env: dict[str, str]
    failure_description: Callable[[str], str]
    """The ``Failure.description`` the SDK sends for the message its user failed with."""


def user_descriptor_set(sdks: PublishedSdks) -> bytes:
    """The cart's protos with all their imports, against the npm SDK's protocol files."""
    return published_sdks.compile_descriptor_set([PROTO_DIR, sdks.npm_proto_dir], PROTO_SOURCES)


def pypi_cart(sdks: PublishedSdks, workdir: Path, snapshot_every: int = 0) -> CartFunction:
    """The PyPI cart; ``snapshot_every`` 0 (the SDK's default) takes no snapshots."""
    generated = workdir / "generated"
    published_sdks.compile_for_pypi_sdk(sdks, [PROTO_DIR], PROTO_SOURCES, generated)
    spec = FunctionSpec(
        name="pypi-cart",
        argv=[str(sdks.python), str(FUNCTIONS / "pypi_cart" / "shopping_cart.py")],
        cwd=workdir,
        env={
            **published_sdks.PYPI_SDK_ENV,
            "PYTHONPATH": str(generated),
            "SNAPSHOT_EVERY": str(snapshot_every),
        },
    )
    return CartFunction(
        sdk=f"PyPI {published_sdks.PYPI_SDK} {published_sdks.PYPI_SDK_VERSION}",
        support_library="akkaserverless-python-support 0.0.1",
        spec=spec,
        # The SDK cannot announce a passivation timeout; the sidecar's default applies.
        sidecar_env={"LARDER_PASSIVATION_TIMEOUT": "1s"},
        # The SDK collects failure messages in a list and sends str(list).
        failure_description=lambda message: str([message]),
    )


def npm_cart(
    sdks: PublishedSdks, workdir: Path, descriptor_set: bytes, snapshot_every: int | None = None
) -> CartFunction:
    """The npm cart; ``snapshot_every`` None keeps the SDK's default (100 events)."""
    project = workdir / "project"
    project.mkdir()
    for name in ("index.js", "package.json"):
        shutil.copy(FUNCTIONS / "npm_cart" / name, project / name)
    shutil.copytree(PROTO_DIR, project / "proto")
    (project / "user-function.desc").write_bytes(descriptor_set)
    # As `npm install` would leave it: the package under node_modules.
    scope = project / "node_modules" / "@lightbend"
    scope.mkdir(parents=True)
    (scope / "akkaserverless-javascript-sdk").symlink_to(sdks.npm_package, target_is_directory=True)
    spec = FunctionSpec(
        name="npm-cart",
        argv=["node", "index.js"],
        cwd=project,
        env={
            "PASSIVATION_TIMEOUT_MS": "1000",
            # The SDK's own debug log names snapshots and replayed events.
            "DEBUG": "akkaserverless-event-sourced-entity",
            **({} if snapshot_every is None else {"SNAPSHOT_EVERY": str(snapshot_every)}),
        },
    )
    return CartFunction(
        sdk=f"npm {published_sdks.NPM_SDK} {published_sdks.NPM_SDK_VERSION}",
        support_library=f"{published_sdks.NPM_SDK} {published_sdks.NPM_SDK_VERSION}",
        spec=spec,
        # Long, so that passivating after 1 s proves the SDK's own setting is used.
        sidecar_env={"LARDER_PASSIVATION_TIMEOUT": "10m"},
        failure_description=lambda message: message,
    )
