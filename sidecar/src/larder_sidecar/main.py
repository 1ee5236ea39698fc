"""`larder-sidecar`: run the sidecar until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from . import logs
from .app import Sidecar
from .discovery import DiscoveryFailed
from .eventing import EventingError
from .journal.base import JournalUnavailable
from .model import SpecError
from .ports import PortUnavailable
from .settings import Settings, SettingsError, load_settings

log = logging.getLogger("larder_sidecar")


async def run(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sidecar = Sidecar(settings)
    try:
        await sidecar.start_admin()
    except PortUnavailable as e:
        log.error("start-up failed: %s", e)  # noqa: TRY400 - the message says what to do
        return 1
    code = 0
    try:
        await sidecar.start()
    except SpecError:
        # Stay up but never ready: the readiness probe and the log say why, and the
        # pod does not crash-loop on a spec that will not change by restarting.
        log.error("the user function's spec is invalid; not serving (see above)")  # noqa: TRY400
        code = 3
    except (DiscoveryFailed, JournalUnavailable, EventingError, PortUnavailable) as e:
        log.error("start-up failed: %s", e)  # noqa: TRY400 - the message says what to do
        await sidecar.stop()
        return 1
    await stop.wait()
    log.info("shutting down")
    await sidecar.stop()
    return code


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"larder-sidecar: {e}", file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_level, settings.log_format)
    if settings.use_uvloop:
        # Only the import is guarded: an ImportError while running must not start the
        # sidecar a second time on the default loop.
        try:
            import uvloop  # noqa: PLC0415 - optional speed-up, chosen at start
        except ImportError:
            log.info("uvloop not installed; using the default event loop")
        else:
            sys.exit(uvloop.run(run(settings)))
    sys.exit(asyncio.run(run(settings)))
