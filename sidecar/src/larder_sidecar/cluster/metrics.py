"""Sharding's Prometheus metrics, on the sidecar's registry (only with membership)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_HANDOFF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Fine on both sides of 1 s, where the target for a command's wait caused by a hand-off
# lies (its p99 < 1 s), and up to the longest wait (the hand-off wait + 2 s, 12 s).
_HANDOFF_WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 12.5, 15,
)  # fmt: skip


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
        self.handoff_wait = Histogram(
            "larder_handoff_wait_seconds",
            "How long a command waited here because its shard was being handed to this "
            "sidecar (only commands that waited; each wait once, however it ended)",
            buckets=_HANDOFF_WAIT_BUCKETS,
            registry=registry,
        )
        self.handoff_wait_timeouts = Counter(
            "larder_handoff_wait_timeouts",
            "Commands that waited for a hand-off to this sidecar until they failed with "
            "UNAVAILABLE (also observed in larder_handoff_wait_seconds)",
            registry=registry,
        )
