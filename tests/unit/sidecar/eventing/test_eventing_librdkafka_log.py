"""librdkafka's log lines reach the sidecar's log, not the process's stderr.

No broker needed: a client pointed at a closed port logs the refused connection itself.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from larder_sidecar.eventing.librdkafka_log import LibrdkafkaLog
from larder_sidecar.eventing.producer import AsyncProducer
from larder_sidecar.eventing.settings import KafkaSettings

LOGGER = "larder_sidecar.eventing.librdkafka"


async def test_the_producers_librdkafka_lines_go_to_the_log_not_stderr(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    # Port 1 on loopback: nothing listens, every connection attempt is refused at once.
    producer = AsyncProducer(
        KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"reconnect.backoff.ms": "50"})
    )
    producer.start()
    try:
        for _ in range(100):
            if any(r.name == LOGGER for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    finally:
        await producer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines, "librdkafka logged nothing through the sidecar's log"
    assert all(line.startswith("producer: ") for line in lines), lines
    assert any("127.0.0.1:1" in line for line in lines), lines
    # librdkafka's own format on fd 2 is "%<level>|<time>|<client>|<FACILITY>|…".
    assert "|FAIL|" not in capfd.readouterr().err


def test_quiet_facilities_go_to_debug_others_keep_their_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    log = LibrdkafkaLog("group g", quiet={"FAIL"})
    log.log(logging.ERROR, "[thrd:%s]: %s", "FAIL", "Connect to 127.0.0.1:1 failed")
    log.log(logging.WARNING, "[thrd:%s]: %s", "SESSTMOUT", "session timed out")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "group g: [thrd:FAIL]: Connect to 127.0.0.1:1 failed"),
        (logging.WARNING, "group g: [thrd:SESSTMOUT]: session timed out"),
    ]
