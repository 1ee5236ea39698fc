"""`python -m turkey`: generate the proto code if needed, then serve on HOST/PORT."""

from __future__ import annotations

import logging

from turkey._codegen import ensure_generated


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The entity module imports the generated code, so it is imported only after
    # generation.
    ensure_generated()
    from larder_sdk import LarderService  # noqa: PLC0415

    from turkey.entity import entity  # noqa: PLC0415

    LarderService([entity], service_name="turkey-tracker", service_version="1.0.0").run()


if __name__ == "__main__":
    main()
