"""Is a Journal usable? For Cassandra: a real CQL connection, made off the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cassandra import InvalidRequest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy

from larder_operator import durability
from larder_operator.credentials import Credentials
from larder_operator.journals import CassandraJournal, JournalConfig, replication_factors
from larder_operator.status import DURABLE, Condition, Reason


@dataclass(frozen=True)
class CheckResult:
    ready: bool
    reason: Reason
    message: str
    durable: Condition | None = None
    """Whether acknowledged writes survive a crash; None when the spec is not usable."""


def _cannot_tell(why: str) -> Condition:
    return Condition(DURABLE, False, Reason.DURABILITY_UNKNOWN, f"cannot tell: {why}")


async def check_journal(
    config: JournalConfig, credentials: Credentials | None, within: float
) -> CheckResult:
    """Check reachability in about ``within`` seconds; an unreachable store is a result."""
    if not isinstance(config, CassandraJournal):
        return CheckResult(
            True, Reason.IN_MEMORY, "in-memory journal: nothing to reach", durability.in_memory()
        )
    where = f"{','.join(config.contact_points)}:{config.port}"
    try:
        # The driver is blocking; its own timeouts bound the thread, ours bounds the wait.
        version, facts = await asyncio.wait_for(
            asyncio.to_thread(_probe_cassandra, config, credentials, within), within * 3
        )
    except TimeoutError:
        return CheckResult(
            False,
            Reason.UNREACHABLE,
            f"no answer from Cassandra at {where} within {within * 3:g}s; is it running and "
            "reachable from the operator's pod?",
            _cannot_tell("Cassandra is unreachable"),
        )
    except Exception as e:
        return CheckResult(
            False,
            Reason.UNREACHABLE,
            f"cannot connect to Cassandra at {where}: {type(e).__name__}: {e!s:.300}",
            _cannot_tell("Cassandra is unreachable"),
        )
    durable = durability.assess(
        facts,
        replication_factors(config.replication),
        config.write_consistency,
        config.local_datacenter,
    )
    return CheckResult(
        True, Reason.REACHABLE, f"connected to Cassandra {version} at {where}", durable
    )


def _probe_cassandra(
    config: CassandraJournal, credentials: Credentials | None, timeout: float
) -> tuple[str, durability.ClusterFacts]:
    auth = (
        PlainTextAuthProvider(username=credentials.username, password=credentials.password)
        if credentials is not None
        else None
    )
    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=config.local_datacenter),
        request_timeout=timeout,
    )
    cluster = Cluster(
        contact_points=list(config.contact_points),
        port=config.port,
        auth_provider=auth,
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        return str(row.release_version), durability.ClusterFacts(
            commitlog_sync=_commitlog_sync(session),
            replication=_keyspace_replication(session, config.keyspace),
        )
    finally:
        cluster.shutdown()


def _commitlog_sync(session: Any) -> str | None:
    # A virtual table of Cassandra 4.0 and later; older nodes cannot say.
    try:
        row = session.execute(
            "SELECT value FROM system_views.settings WHERE name = 'commitlog_sync'"
        ).one()
    except InvalidRequest:
        return None
    return str(row.value) if row is not None and row.value else None


def _keyspace_replication(session: Any, keyspace: str) -> dict[str, int] | None:
    row = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    if row is None:
        return None
    options = dict(row.replication)
    strategy = options.pop("class", "")
    if strategy.endswith("SimpleStrategy"):
        return {"*": int(options.get("replication_factor", 1))}
    return {dc: int(rf) for dc, rf in options.items()}
