"""Root test configuration: the tier marker follows the directory a test lives in."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.infra.fixtures"]

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break
