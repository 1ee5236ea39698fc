from __future__ import annotations

import pytest
from larder_sidecar.model import Method

from .fakes import es_method


@pytest.fixture
def method() -> Method:
    return es_method()
