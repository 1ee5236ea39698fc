"""`python -m shoppingcart`: generate the proto code if needed, then serve on HOST/PORT."""

from __future__ import annotations

import logging

from shoppingcart._codegen import ensure_generated


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The entity module imports the generated code, so it is imported only after
    # generation.
    ensure_generated()
    from larder_sdk import LarderService  # noqa: PLC0415

    from shoppingcart.cart import entity  # noqa: PLC0415
    from shoppingcart.carts_by_product import view  # noqa: PLC0415

    LarderService([entity, view], service_name="shopping-cart", service_version="1.0.0").run()


if __name__ == "__main__":
    main()
