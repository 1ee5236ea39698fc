"""Views' Prometheus metrics, on the sidecar's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ViewMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.changes_applied = Counter(
            "larder_view_changes_applied",
            "Entity changes (a value entity's state, one event) applied to a view",
            ["view"],
            registry=registry,
        )
        self.update_failures = Counter(
            "larder_view_update_failures",
            "Failed attempts to apply a change to a view (retried: the view waits)",
            ["view"],
            registry=registry,
        )
        self.changes_deferred = Counter(
            "larder_view_changes_deferred",
            "Committed changes not queued because the view had too many waiting; it reads "
            "them back from the journal once its queue has drained",
            ["view"],
            registry=registry,
        )
        self.rows_rejected = Counter(
            "larder_view_rows_rejected",
            "Rows the update handler answered that are not the table's row type (logged, "
            "the change is skipped)",
            ["view"],
            registry=registry,
        )
        self.pending = Gauge(
            "larder_view_pending_changes",
            "Changes committed to the journal and not yet applied to the view (count lag)",
            ["view"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "larder_view_lag_seconds",
            "Age of the oldest change not yet applied to the view (0 when none waits)",
            ["view"],
            registry=registry,
        )
        self.queries = Counter(
            "larder_view_queries",
            "View queries served, by outcome",
            ["view", "method", "outcome"],
            registry=registry,
        )
        self.query_latency = Histogram(
            "larder_view_query_seconds",
            "Time to serve a view query (all rows, for streams)",
            ["view", "method"],
            registry=registry,
        )
