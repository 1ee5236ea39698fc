"""The reachability check itself against the real Cassandra (no Kubernetes involved)."""

from __future__ import annotations

import time

from larder_operator.credentials import Credentials
from larder_operator.journal_check import check_journal
from larder_operator.journals import parse_journal
from larder_operator.status import Reason

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port


async def test_connects_to_the_real_cassandra(cassandra: CassandraServer) -> None:
    config = parse_journal(
        "ns", {"type": "Cassandra", "cassandra": {"contactPoints": [cassandra.host],
                                                  "port": cassandra.port}}
    )
    result = await check_journal(config, None, within=10)
    assert (result.ready, result.reason) == (True, Reason.REACHABLE), result.message
    assert result.message.startswith("connected to Cassandra 5.")


async def test_a_closed_port_is_unreachable_quickly() -> None:
    port = free_port()
    config = parse_journal(
        "ns", {"type": "Cassandra", "cassandra": {"contactPoints": ["127.0.0.1"], "port": port}}
    )
    started = time.monotonic()
    result = await check_journal(config, Credentials("u", "p"), within=2)
    assert (result.ready, result.reason) == (False, Reason.UNREACHABLE)
    assert f"127.0.0.1:{port}" in result.message
    assert time.monotonic() - started < 6.5


async def test_in_memory_needs_no_check() -> None:
    result = await check_journal(parse_journal("ns", {"type": "InMemory"}), None, within=1)
    assert (result.ready, result.reason) == (True, Reason.IN_MEMORY)
