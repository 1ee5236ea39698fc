"""Fixtures: the published SDKs, and one running cart (function + sidecar) per SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.compat.carts import CartFunction, npm_cart, pypi_cart, user_descriptor_set
from tests.e2e.compat.stack import CompatStack
from tests.infra import published_sdks
from tests.infra.published_sdks import PublishedSdks


@dataclass(frozen=True)
class RunningCart:
    function: CartFunction
    stack: CompatStack
    descriptor_set: bytes


@pytest.fixture(scope="session")
def sdks() -> PublishedSdks:
    return published_sdks.provision()


@pytest.fixture(scope="session")
def descriptor_set(sdks: PublishedSdks) -> bytes:
    return user_descriptor_set(sdks)


@pytest.fixture(scope="module", params=["pypi", "npm"])
def cart(
    request: pytest.FixtureRequest,
    sdks: PublishedSdks,
    descriptor_set: bytes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningCart]:
    workdir = tmp_path_factory.mktemp(f"compat-{request.param}")
    function = (
        pypi_cart(sdks, workdir)
        if request.param == "pypi"
        else npm_cart(sdks, workdir, descriptor_set)
    )
    with running(function, workdir, descriptor_set) as cart:
        yield cart


@contextmanager
def running(function: CartFunction, workdir: Path, descriptor_set: bytes) -> Iterator[RunningCart]:
    stack = CompatStack(function.spec, workdir, function.sidecar_env)
    try:
        stack.start()
        yield RunningCart(function, stack, descriptor_set)
    finally:
        stack.close()
