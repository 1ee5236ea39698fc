"""The turkey's doneness stages against its internal temperature."""

from __future__ import annotations

import pytest
import turkey.turkey_api_pb2 as api
from turkey.doneness import USDA_SAFE_MINIMUM_F, doneness


@pytest.mark.parametrize(
    ("internal_f", "expected"),
    [
        (-10.0, api.RAW),
        (0.0, api.RAW),
        (39.9, api.RAW),
        (40.0, api.SALMONELLA),
        (139.9, api.SALMONELLA),
        (140.0, api.STILL_SALMONELLA),
        (154.9, api.STILL_SALMONELLA),
        (155.0, api.ALMOST_THERE),
        (164.9, api.ALMOST_THERE),
        (165.0, api.PERFECT),
        (212.0, api.PERFECT),
    ],
)
def test_stage_follows_the_internal_temperature(internal_f: float, expected: int) -> None:
    assert api.DoneStatus.Name(doneness(internal_f)) == api.DoneStatus.Name(expected)


def test_perfect_starts_at_the_usda_safe_minimum_for_poultry() -> None:
    assert USDA_SAFE_MINIMUM_F == 165.0
    assert doneness(USDA_SAFE_MINIMUM_F) == api.PERFECT
    assert doneness(USDA_SAFE_MINIMUM_F - 0.1) != api.PERFECT


def test_stages_never_go_backwards_as_the_turkey_heats_up() -> None:
    stages = [doneness(t / 2) for t in range(-40, 500)]
    assert stages == sorted(stages)
