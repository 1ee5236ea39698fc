"""Sharding's Prometheus metrics, on the sidecar's registry (only with membership)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_HANDOFF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ClusterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.shards_owned = Gauge(
            "larder_shards_owned",
            "Shards this sidecar serves (owned under its map, hand-off finished)",
            registry=registry,
        )
        self.map_version = Gauge(
            "larder_shard_map_version",
            "Version of this sidecar's current membership (0: no map yet)",
            registry=registry,
        )
        self.forwarded_out = Counter(
            "larder_forwarded_commands_out",
            "Commands sent to the sidecar that owns their entity, by result "
            "(ok, error, redirect, unavailable; rerouted: never sent, and the map changed)",
            ["result"],
            registry=registry,
        )
        self.forwarded_in = Counter(
            "larder_forwarded_commands_in",
            "Commands received from another sidecar, by result (ok, error, redirect, refused)",
            ["result"],
            registry=registry,
        )
        self.handoffs = Counter(
            "larder_handoffs",
            "Shard hand-offs finished, by direction (in, out) and how an incoming one ended "
            "(confirmed, timeout, gone, none; out: released)",
            ["direction", "ending"],
            registry=registry,
        )
        self.handoff_duration = Histogram(
            "larder_handoff_duration_seconds",
            "From the map change to the end of a hand-off (one batch of shards), by direction",
            ["direction"],
            buckets=_HANDOFF_BUCKETS,
            registry=registry,
        )
        self.waiting = Gauge(
            "larder_commands_waiting_on_handoff",
            "Commands held until their shard's hand-off to this sidecar finishes",
            registry=registry,
        )
