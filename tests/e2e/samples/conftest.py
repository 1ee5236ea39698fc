"""The samples run from their source trees: put them on sys.path, generate their protos."""

from __future__ import annotations

import sys
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[3] / "samples"

for _src in (SAMPLES / "shopping-cart" / "src", SAMPLES / "turkey" / "src"):
    if str(_src) not in sys.path:
        sys.path.insert(0, str(_src))

# Generation must happen before the test modules import the samples' entity modules.
from shoppingcart._codegen import ensure_generated as _generate_cart  # noqa: E402
from turkey._codegen import ensure_generated as _generate_turkey  # noqa: E402

_generate_cart()
_generate_turkey()
