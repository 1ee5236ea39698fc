"""How done a turkey is, from its internal (core) temperature in °F.

PERFECT starts at 165 °F, the USDA safe minimum internal temperature for poultry.
Below 40 °F the bird is fridge-cold (RAW); from 40 °F to 140 °F it is in the USDA
"danger zone" where bacteria multiply (SALMONELLA); 140-155 °F is out of the
danger zone but not yet safe (STILL_SALMONELLA); 155-165 °F is ALMOST_THERE.
"""

from __future__ import annotations

import turkey.turkey_api_pb2 as api

USDA_SAFE_MINIMUM_F = 165.0

# Lower bounds, highest first: the first one the temperature reaches wins.
THRESHOLDS_F: tuple[tuple[float, api.DoneStatus], ...] = (
    (USDA_SAFE_MINIMUM_F, api.PERFECT),
    (155.0, api.ALMOST_THERE),
    (140.0, api.STILL_SALMONELLA),
    (40.0, api.SALMONELLA),
)


def doneness(internal_temperature_f: float) -> api.DoneStatus:
    for lower_bound, status in THRESHOLDS_F:
        if internal_temperature_f >= lower_bound:
            return status
    return api.RAW
