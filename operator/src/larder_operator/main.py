"""``larder-operator``: parse settings, then run kopf with our handlers until signalled."""

from __future__ import annotations

import asyncio
import logging
import sys

import kopf

from larder_operator.handlers import build_registry
from larder_operator.settings import OperatorSettings, SettingsError


def main() -> None:
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as e:
        print(f"larder-operator: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # The driver logs every failed connection attempt with a traceback; the Journal check
    # already reports the failure in the Journal's status and Events.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    registry = build_registry(settings)
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            # Several replicas elect one active operator through a KopfPeering resource;
            # naming one makes it mandatory, so a single replica names none.
            standalone=settings.peering_name is None,
            peering_name=settings.peering_name,
            priority=0,
            liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
        )
    )


if __name__ == "__main__":
    main()
