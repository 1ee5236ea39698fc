"""A subscribed topic created after the sidecar's consumer group is already consuming
another: the sidecar says the topic is missing, then consumes it within seconds of its
creation. (librdkafka finds such a topic at its next full metadata refresh: 5 minutes
by default; a group with no existing topic at all retries much sooner.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.infra.kafka import KafkaServer

from .conftest import SidecarProcess, ce_headers, create_topics, free_port, produce

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def own_counter(tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    """A counter function in its own process, with topic names nobody created."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.eventing.counter_function", str(tmp_path / "pb"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the counter function exited before it said where it serves"
        yield json.loads(line)
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_topic_created_after_start_is_consumed_within_seconds(
    kafka: KafkaServer, own_counter: dict[str, object], tmp_path: Path
) -> None:
    topic_in, topic_out = str(own_counter["in"]), str(own_counter["out"])
    late = str(own_counter["more"])
    await asyncio.to_thread(create_topics, kafka.bootstrap_servers, topic_in, topic_out)
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "USER_FUNCTION_PORT": str(own_counter["port"]),
        "LARDER_PORT": str(port),
        "LARDER_ADMIN_PORT": str(admin),
        "LARDER_INTERNAL_PORT": str(free_port()),
        "LARDER_JOURNAL_TYPE": "sqlite",
        "LARDER_JOURNAL_SQLITE_PATH": str(tmp_path / "journal.sqlite3"),
        "LARDER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LARDER_DISCOVERY_TIMEOUT": "10s",
    }
    sidecar = SidecarProcess(env, port, admin, tmp_path / "sidecar.log")
    await sidecar.start()
    try:
        for _ in range(300):
            if "a subscribed topic does not exist" in sidecar.log():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no warning about the missing topic in 30 s:\n{sidecar.log()}")

        entity = f"late-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(
            produce, kafka.bootstrap_servers, topic_in,
            [(entity.encode(), _add_json(entity, 1), ce_headers(
                "larder.eventingtest.AddRequest", "application/json"))],
        )
        # The group consumes the first topic: it is formed, and assigned what exists.
        for _ in range(300):
            status, text = await sidecar.get(entity)
            assert status == 200, text
            if json.loads(text).get("total") == "1":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the record on the first topic was not applied:\n{sidecar.log()}")

        await asyncio.to_thread(create_topics, kafka.bootstrap_servers, late)
        await asyncio.to_thread(
            produce, kafka.bootstrap_servers, late,
            [(entity.encode(), _add_json(entity, 4), ce_headers(
                "larder.eventingtest.AddRequest", "application/json"))],
        )
        # Within seconds (the refresh is 5 s; librdkafka's default would be 5 minutes).
        for _ in range(300):
            status, text = await sidecar.get(entity)
            assert status == 200, text
            if json.loads(text).get("total") == "5":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the record on the late topic was not applied in 30 s:\n{sidecar.log()}")
    finally:
        assert await sidecar.terminate() == 0


def _add_json(entity: str, amount: int) -> bytes:
    return json.dumps({"id": entity, "amount": str(amount), "tag": "late"}).encode()
