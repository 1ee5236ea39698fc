"""The chart's Grafana dashboard queries metrics the sidecar really exports.

The metric families come from the sidecar's own metric classes on one registry, as a
sidecar with sharding and eventing builds them; a renamed metric or label breaks this test,
not a user's dashboard. A metric the sidecar exports and no panel shows fails it too, so
the dashboard grows with the metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from larder_sidecar.cluster.metrics import ClusterMetrics
from larder_sidecar.eventing.metrics import EventingMetrics
from larder_sidecar.metrics import Metrics
from larder_sidecar.tracing.metrics import TracingMetrics
from larder_sidecar.views.metrics import ViewMetrics
from prometheus_client import CollectorRegistry

DASHBOARD = Path(__file__).parents[3] / "charts" / "larder" / "dashboards" / "larder.json"

# Labels Prometheus adds to every scraped series (the pod's namespace and name), and the one
# the chart's PodMonitor copies from the pod (`podTargetLabels: [larder.dev/function]`).
TARGET_LABELS = {"namespace", "pod", "larder_dev_function"}

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
_METRIC = re.compile(r"\blarder_[a-z0-9_]+")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=)\s*\"")
_SELECTOR = re.compile(r"\{[^}]*\}")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def _exported() -> dict[str, tuple[str, frozenset[str]]]:
    """Every series name a sidecar can export → (family, its labels)."""
    metrics = Metrics()
    registry: CollectorRegistry = metrics.registry
    ClusterMetrics(registry)
    EventingMetrics(registry)
    ViewMetrics(registry)
    TracingMetrics(registry)
    names: dict[str, tuple[str, frozenset[str]]] = {}
    # The registry's collectors: prometheus_client has no public listing of them.
    for collector in list(registry._collector_to_names):
        family_type = getattr(collector, "_type", None)
        family = getattr(collector, "_name", None)
        labels = frozenset(getattr(collector, "_labelnames", ()))
        if family_type not in _SUFFIXES or not isinstance(family, str):
            continue
        for suffix in _SUFFIXES[family_type]:
            extra = {"le"} if suffix == "_bucket" else set()
            names[family + suffix] = (family, labels | extra)
    return names


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield panel["title"], target


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[str, frozenset[str]]]:
    return _exported()


def test_the_sidecar_metric_listing_is_not_empty(
    exported: dict[str, tuple[str, frozenset[str]]],
) -> None:
    # Guards the test itself: prometheus_client's internals moving would empty the listing.
    assert "larder_commands_total" in exported
    assert exported["larder_command_duration_seconds_bucket"][1] == {"component", "method", "le"}
    assert "larder_shards_owned" in exported
    assert "larder_eventing_consumer_lag" in exported


def test_every_panel_queries_only_metrics_and_labels_the_sidecar_exports(
    dashboard: dict[str, Any], exported: dict[str, tuple[str, frozenset[str]]]
) -> None:
    problems: list[str] = []
    queried = 0
    for title, target in _targets(dashboard):
        expr = target["expr"]
        # Metric names outside `{...}` (inside are label matchers, e.g. larder_dev_function).
        used = _METRIC.findall(_SELECTOR.sub("", expr))
        if not used:
            problems.append(f"{title!r}: {expr!r} names no larder metric")
            continue
        labels = set(TARGET_LABELS)
        for name in used:
            if name not in exported:
                problems.append(f"{title!r}: {name} is not a series the sidecar exports")
                continue
            labels |= exported[name][1]
            queried += 1
        grouped = {p.strip() for g in _BY.findall(expr) for p in g.split(",")} - {""}
        problems += [f"{title!r}: groups by {x!r}, a label {used} lack" for x in grouped - labels]
        problems += [
            f"{title!r}: filters on {x!r}, a label {used} lack"
            for x in _MATCHER.findall(expr)
            if x not in labels
        ]
        problems += [
            f"{title!r}: legend shows {x!r}, which the query drops"
            for x in _LEGEND.findall(target.get("legendFormat", ""))
            if x not in grouped
        ]
    assert not problems, "\n".join(problems)
    assert queried >= 20


def test_every_metric_the_sidecar_exports_is_on_a_panel(
    dashboard: dict[str, Any], exported: dict[str, tuple[str, frozenset[str]]]
) -> None:
    shown = {
        exported[name][0]
        for _, target in _targets(dashboard)
        for name in _METRIC.findall(_SELECTOR.sub("", target["expr"]))
        if name in exported
    }
    assert {family for family, _ in exported.values()} - shown == set()


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_queries_use_the_dashboard_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "function"}
    for title, target in _targets(dashboard):
        # Every query is scoped to the chosen namespaces and functions, so one Grafana
        # can show one function of a shared cluster.
        assert "$namespace" in target["expr"] and "$function" in target["expr"], title
        assert target["datasource"]["uid"] == "${datasource}", title
