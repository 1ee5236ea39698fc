"""The one connection to Cassandra (the driver's `Cluster` and its `Session`) a sidecar
opens: the journal builds it from its settings, and the view store, on the same keyspace,
adds its execution profiles to it instead of opening a second one (`views/cassandra_store.py`).

An execution profile is a (consistency, row factory) pair under a name; all of them share
the settings' routing (token aware, the local data center first), retry policy, serial
consistency and request timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, ExecutionProfile, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    LoadBalancingPolicy,
    TokenAwarePolicy,
)

from .cassandra_errors import JournalRetryPolicy
from .cassandra_loop import LoopConnection
from .cassandra_settings import CassandraSettings

Profiles = Mapping[Any, tuple[str, Any]]
"""Profile name (or `EXEC_PROFILE_DEFAULT`) -> (consistency level's name, row factory)."""


def _routing(settings: CassandraSettings) -> LoadBalancingPolicy:
    return TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_datacenter or ""))


def _profile(
    settings: CassandraSettings, routing: LoadBalancingPolicy, consistency: str, rows: Any
) -> ExecutionProfile:
    return ExecutionProfile(
        load_balancing_policy=routing,
        retry_policy=JournalRetryPolicy(),
        consistency_level=ConsistencyLevel.name_to_value[consistency],
        serial_consistency_level=ConsistencyLevel.name_to_value[settings.serial_consistency],
        request_timeout=settings.request_timeout,
        row_factory=rows,
    )


def connect(
    settings: CassandraSettings, connection_class: type[LoopConnection], profiles: Profiles
) -> tuple[Cluster, Session]:
    """Connect (blocking: call it on a thread); the caller shuts the cluster down."""
    s = settings
    routing = _routing(s)
    auth = (
        PlainTextAuthProvider(username=s.username, password=s.password)
        if s.username is not None
        else None
    )
    cluster = Cluster(
        contact_points=list(s.contact_points),
        port=s.port,
        auth_provider=auth,
        execution_profiles={
            name: _profile(s, routing, consistency, rows)
            for name, (consistency, rows) in profiles.items()
        },
        # After an outage the connection must come back by itself within seconds,
        # not after the driver's default back-off of up to ten minutes.
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
        connect_timeout=s.request_timeout,
        connection_class=connection_class,
        control_connection_timeout=s.request_timeout,
    )
    try:
        return cluster, cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise


def add_profiles(cluster: Cluster, settings: CassandraSettings, profiles: Profiles) -> None:
    """Add profiles to a connected cluster (blocking: the driver waits for the pools), for
    a second user of the connection; a name already there is kept."""
    routing = _routing(settings)
    for name, (consistency, rows) in profiles.items():
        if name not in cluster.profile_manager.profiles:
            cluster.add_execution_profile(name, _profile(settings, routing, consistency, rows))
