"""Is a Journal usable? For Cassandra: a real CQL connection, made off the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy

from larder_operator.credentials import Credentials
from larder_operator.journals import CassandraJournal, JournalConfig
from larder_operator.status import Reason


@dataclass(frozen=True)
class CheckResult:
    ready: bool
    reason: Reason
    message: str


async def check_journal(
    config: JournalConfig, credentials: Credentials | None, within: float
) -> CheckResult:
    """Check reachability in about ``within`` seconds; an unreachable store is a result."""
    if not isinstance(config, CassandraJournal):
        return CheckResult(True, Reason.IN_MEMORY, "in-memory journal: nothing to reach")
    where = f"{','.join(config.contact_points)}:{config.port}"
    try:
        # The driver is blocking; its own timeouts bound the thread, ours bounds the wait.
        version = await asyncio.wait_for(
            asyncio.to_thread(_probe_cassandra, config, credentials, within), within * 3
        )
    except TimeoutError:
        return CheckResult(
            False,
            Reason.UNREACHABLE,
            f"no answer from Cassandra at {where} within {within * 3:g}s; is it running and "
            "reachable from the operator's pod?",
        )
    except Exception as e:
        return CheckResult(
            False,
            Reason.UNREACHABLE,
            f"cannot connect to Cassandra at {where}: {type(e).__name__}: {e!s:.300}",
        )
    return CheckResult(
        True, Reason.REACHABLE, f"connected to Cassandra {version} at {where}"
    )


def _probe_cassandra(
    config: CassandraJournal, credentials: Credentials | None, timeout: float
) -> str:
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
        return str(row.release_version)
    finally:
        cluster.shutdown()
