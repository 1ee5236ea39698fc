"""The turkey sample fed from Kafka: `python -m turkey.generate` -> the real Kafka ->
`larder-sidecar` -> the turkey user function, state read back over HTTP."""

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
from confluent_kafka.admin import AdminClient

from tests.infra.kafka import KafkaServer

from .conftest import SidecarProcess, create_topics, free_port

REPO = Path(__file__).resolve().parents[3]
TURKEY_SRC = REPO / "samples" / "turkey" / "src"
TOPICS = ("increase_temp", "decrease_temp")


def ensure_topics(bootstrap: str) -> None:
    existing = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics
    missing = [t for t in TOPICS if t not in existing]
    if missing:
        create_topics(bootstrap, *missing)


@pytest.fixture
async def turkey_function(tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(TURKEY_SRC), "HOST": "127.0.0.1", "PORT": str(port)}
    with (tmp_path / "turkey.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turkey", env=env, stdout=log, stderr=log
        )
    yield port
    # The SDK may already have exited after the sidecar's ProxyTerminated.
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    await proc.wait()


async def generate(bootstrap: str, turkey: str, direction: str, amount: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turkey.generate", "--id", turkey, f"--{direction}",
        "--amount", str(amount), "--bootstrap-servers", bootstrap,
        env={**os.environ, "PYTHONPATH": str(TURKEY_SRC)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_generated_records_change_the_turkeys_temperature(
    kafka: KafkaServer, turkey_function: int, tmp_path: Path
) -> None:
    await asyncio.to_thread(ensure_topics, kafka.bootstrap_servers)
    port, admin = free_port(), free_port()
    sidecar = SidecarProcess(
        {
            **os.environ,
            "USER_FUNCTION_PORT": str(turkey_function),
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(free_port()),
            "LARDER_JOURNAL_TYPE": "memory",
            "LARDER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            # The turkey generates its protobuf code when it starts.
            "LARDER_DISCOVERY_TIMEOUT": "60s",
        },
        port, admin, tmp_path / "sidecar.log",
    )
    await sidecar.start()
    turkey = f"turkey-{uuid.uuid4().hex[:6]}"
    said = await generate(kafka.bootstrap_servers, turkey, "increase", 100)
    assert "1 record(s) sent to increase_temp" in said
    await generate(kafka.bootstrap_servers, turkey, "decrease", 30)

    # Two topics, so the two records may apply in either order; the end state is fixed.
    state: dict[str, object] = {}
    for _ in range(300):  # another process's state is only visible by asking
        status, body = await sidecar.get_path(f"/turkeys/{turkey}")
        assert status == 200, body
        state = json.loads(body)
        if state.get("internalTemperature") == 70.0:
            break
        await asyncio.sleep(0.1)
    assert state == {"inOven": False, "done": "SALMONELLA", "externalTemperature": 0.0,
                     "internalTemperature": 70.0}
    assert await sidecar.terminate() == 0
