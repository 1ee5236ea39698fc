"""Prometheus metrics, on a registry of their own (so tests can make several sidecars)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "larder_commands",
            "Commands handled, by component, method and outcome",
            ["component", "method", "outcome"],
            registry=self.registry,
        )
        self.command_latency = Histogram(
            "larder_command_duration_seconds",
            "Time from receiving a command to its reply",
            ["component", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.active_entities = Gauge(
            "larder_active_entities",
            "Entities with an open protocol stream",
            registry=self.registry,
        )
        self.activations = Counter(
            "larder_entity_activations",
            "Entity activations",
            ["entity_type"],
            registry=self.registry,
        )
        self.passivations = Counter(
            "larder_entity_passivations",
            "Entity passivations",
            ["entity_type"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "larder_entity_restarts",
            "Entities restarted from the journal after a failure",
            ["entity_type"],
            registry=self.registry,
        )
        self.group_commits = Counter(
            "larder_entity_group_commits",
            "Journal writes that stored the events of more than one command of an entity",
            ["entity_type"],
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "larder_idempotent_replays",
            "Commands answered with the stored reply of an earlier command with the same "
            "idempotency key (not run again)",
            ["entity_type"],
            registry=self.registry,
        )
        self.public_connections = Gauge(
            "larder_public_connections",
            "Open connections on the public port",
            registry=self.registry,
        )
        self.limit_refusals = Counter(
            "larder_limit_refusals",
            "Requests and connections refused for going over a limit, by limit",
            ["limit"],
            registry=self.registry,
        )
        self.public_timeouts = Counter(
            "larder_public_timeouts",
            "Public-port connections ended by a timeout (head, body, idle)",
            ["timeout"],
            registry=self.registry,
        )
        self.fencing_rejections = Counter(
            "larder_fencing_rejections",
            "Journal writes refused because another writer had written first (two sidecars "
            "serving one entity); none are expected in orderly hand-offs",
            ["entity_type"],
            registry=self.registry,
        )
        self.journal_latency = Histogram(
            "larder_journal_duration_seconds",
            "Journal call latency, by operation",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
