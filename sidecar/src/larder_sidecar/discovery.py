"""Start-up: ask the user function what it serves, and validate the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from .model import (
    DEFAULT_MAX_ENTITY_ID_BYTES,
    SpecError,
    UserFunctionModel,
    build_model,
    proxy_info,
)
from .protocol import (
    ACCEPTED_PROTOCOL_VERSIONS,
    PROXY_PROTOCOL_VERSION,
    discovery_pb2,
    discovery_pb2_grpc,
)

log = logging.getLogger("larder_sidecar.discovery")

SIDECAR_VERSION = "0.1.0"


class DiscoveryFailed(RuntimeError):
    """The user function could not be discovered in time: check it starts and listens."""


async def discover(
    channel: grpc.aio.Channel,
    target: str,
    give_up_after: float,
    *,
    max_entity_id_bytes: int = DEFAULT_MAX_ENTITY_ID_BYTES,
) -> UserFunctionModel:
    """Call Discover until the user function answers (backing off), then validate.

    On an invalid spec, the problems are reported to the user function (its SDK
    prints them) and SpecError is raised: the sidecar must never become ready.
    """
    stub = discovery_pb2_grpc.DiscoveryStub(channel)
    timeout = give_up_after
    deadline = time.monotonic() + timeout
    delay = 0.05
    attempts = 0
    info = proxy_info(PROXY_PROTOCOL_VERSION, SIDECAR_VERSION)
    while True:
        attempts += 1
        try:
            spec: Any = await stub.Discover(info, timeout=max(1.0, min(10.0, timeout)))
            break
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise DiscoveryFailed(
                    f"the user function at {target} rejected Discover: {e.code().name} "
                    f"{e.details()}"
                ) from e
            if time.monotonic() + delay > deadline:
                raise DiscoveryFailed(
                    f"the user function at {target} did not answer Discover after {attempts} "
                    f"attempts in {timeout:.0f}s ({e.details()}); is it running and listening "
                    "on USER_FUNCTION_HOST:USER_FUNCTION_PORT?"
                ) from e
            if attempts == 1 or attempts % 20 == 0:
                log.info("waiting for the user function at %s: %s", target, e.details())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        model = build_model(
            spec, ACCEPTED_PROTOCOL_VERSIONS, max_entity_id_bytes=max_entity_id_bytes
        )
    except SpecError as e:
        log.error("%s", e)  # noqa: TRY400 - the message is the point, not the trace
        try:
            await stub.ReportError(discovery_pb2.UserFunctionError(message=str(e)), timeout=5.0)
        except grpc.aio.AioRpcError as report_error:
            log.warning(
                "could not report the spec error to the user function: %s", report_error.details()
            )
        raise
    log.info(
        "discovered %s %s (%s, protocol %d.%d): %s",
        model.info.service_name or "user function",
        model.info.service_version,
        model.info.support_library,
        *model.info.protocol_version,
        ", ".join(f"{c.service} ({c.kind.name.lower()})" for c in model.components.values()),
    )
    return model


async def proxy_terminated(channel: grpc.aio.Channel) -> None:
    """Tell the user function the sidecar is going away (best effort)."""
    stub = discovery_pb2_grpc.DiscoveryStub(channel)
    try:
        await stub.ProxyTerminated(empty_pb2.Empty(), timeout=2.0)
    except grpc.aio.AioRpcError as e:
        log.debug("ProxyTerminated not delivered: %s", e)
