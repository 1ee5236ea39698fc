"""Bring one StatefulFunction's children and status in line with its spec and its Journal.

Idempotent: run on every cause (create, update, resume, timer, a child or Journal change);
each run reads fresh state, applies the full desired children and rewrites status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from larder_operator.children import (
    Children,
    FunctionRef,
    InvalidSpecError,
    render_children,
    selector_string,
    service_address,
)
from larder_operator.credentials import missing_message, read_credentials
from larder_operator.journals import (
    CassandraJournal,
    InvalidJournalError,
    JournalConfig,
    parse_journal,
)
from larder_operator.kube import (
    Cluster,
    RejectedError,
    collection_path,
    function_path,
    journal_path,
    object_path,
)
from larder_operator.settings import OperatorSettings
from larder_operator.status import (
    JOURNAL_READY,
    READY,
    SHARD_MAP_AGREED,
    Condition,
    Reason,
    find_condition,
    pods_failure,
    ready_condition,
    render_conditions,
    transitions,
)

# Without these the pods could not start correctly, so nothing is built until they resolve.
_BLOCKING = frozenset({Reason.JOURNAL_MISSING, Reason.JOURNAL_INVALID, Reason.SECRET_MISSING})


@dataclass(frozen=True)
class Outcome:
    """What a reconcile run found; the caller posts Events and decides whether to retry."""

    body: Mapping[str, Any]
    conditions: tuple[Condition, ...]
    # Conditions whose status or reason changed in this run.
    changed: tuple[Condition, ...]
    # Set when the spec itself must change: retrying will not help.
    invalid: str | None = None

    @property
    def blocked(self) -> bool:
        """True when children could not be built for a reason that may resolve by itself."""
        return any(not c.status and c.reason in _BLOCKING for c in self.conditions)


@dataclass(frozen=True)
class _JournalResolution:
    condition: Condition
    config: JournalConfig | None = None
    spec: Mapping[str, Any] | None = None


async def _resolve_journal(
    cluster: Cluster, namespace: str, spec: Mapping[str, Any]
) -> _JournalResolution:
    name = spec.get("journal")
    if not name:
        return _JournalResolution(
            Condition(
                JOURNAL_READY,
                True,
                Reason.IN_MEMORY,
                "no spec.journal: state is kept in memory and lost when a pod restarts",
            )
        )
    journal = await cluster.get(journal_path(namespace, name))
    if journal is None:
        return _JournalResolution(
            Condition(
                JOURNAL_READY,
                False,
                Reason.JOURNAL_MISSING,
                f"Journal {name!r} does not exist in namespace {namespace!r}; create it or "
                "fix spec.journal",
            )
        )
    jspec = journal.get("spec") or {}
    try:
        config = parse_journal(namespace, jspec)
    except InvalidJournalError as e:
        return _JournalResolution(
            Condition(JOURNAL_READY, False, Reason.JOURNAL_INVALID, f"Journal {name!r}: {e}")
        )
    ref = config.credentials if isinstance(config, CassandraJournal) else None
    if ref is not None and await read_credentials(cluster, namespace, ref) is None:
        return _JournalResolution(
            Condition(
                JOURNAL_READY,
                False,
                Reason.SECRET_MISSING,
                f"Journal {name!r}: {missing_message(namespace, ref)}",
            )
        )
    ready = find_condition((journal.get("status") or {}).get("conditions") or (), READY)
    if ready is None or ready.get("status") != "True":
        detail = (ready or {}).get("message") or "its reachability has not been checked yet"
        return _JournalResolution(
            Condition(
                JOURNAL_READY, False, Reason.JOURNAL_NOT_READY, f"Journal {name!r}: {detail}"
            ),
            config,
            jspec,
        )
    return _JournalResolution(
        Condition(JOURNAL_READY, True, Reason.JOURNAL_READY, f"Journal {name!r} is ready"),
        config,
        jspec,
    )


# The Deployment controller's annotation: the revision of a Deployment and of its ReplicaSets.
_REVISION = "deployment.kubernetes.io/revision"


async def _current_replica_set_conditions(
    cluster: Cluster, deployment: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The conditions of the Deployment's ReplicaSet of its latest revision.

    Read only when the Deployment reports a ReplicaFailure (it copies the failure of any of
    its ReplicaSets), so a healthy function costs no call.
    """
    failure = find_condition((deployment.get("status") or {}).get("conditions") or (),
                             "ReplicaFailure")
    if failure is None or failure.get("status") != "True":
        return []
    meta = deployment["metadata"]
    revision = (meta.get("annotations") or {}).get(_REVISION)
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    replica_sets = await cluster.list(
        collection_path("apps/v1", "ReplicaSet", meta["namespace"]), selector
    )
    for rs in replica_sets:
        rs_meta = rs.get("metadata") or {}
        owned = any(o.get("uid") == meta.get("uid") for o in rs_meta.get("ownerReferences") or ())
        if owned and (rs_meta.get("annotations") or {}).get(_REVISION) == revision:
            return list((rs.get("status") or {}).get("conditions") or ())
    return []


async def _remove_disruption_budget(cluster: Cluster, ref: FunctionRef) -> None:
    """Scaled to one pod or none: the budget this function had goes (only one it owns)."""
    path = object_path("policy/v1", "PodDisruptionBudget", ref.namespace, ref.name)
    budget = await cluster.get(path)
    if budget is None:
        return
    owners = budget["metadata"].get("ownerReferences") or ()
    if any(o.get("uid") == ref.uid and o.get("controller") for o in owners):
        await cluster.delete(path, budget["metadata"]["uid"])


async def reconcile_function(
    cluster: Cluster, settings: OperatorSettings, namespace: str, name: str, now: str
) -> Outcome | None:
    """Reconcile; None when the function is gone or being deleted (GC handles children)."""
    body = await cluster.get(function_path(namespace, name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    meta = body["metadata"]
    spec = body.get("spec") or {}
    previous = (body.get("status") or {}).get("conditions") or []
    ref = FunctionRef(name=name, namespace=namespace, uid=meta["uid"])
    journal = await _resolve_journal(cluster, namespace, spec)

    invalid: str | None = None
    children: Children | None = None
    if journal.condition.status or journal.condition.reason not in _BLOCKING:
        try:
            children = render_children(ref, spec, journal.config, journal.spec, settings)
        except InvalidSpecError as e:
            invalid = str(e)

    deployment: Mapping[str, Any] | None = None
    service_exists = False
    if children is not None:
        try:
            for child in children.in_apply_order():
                live = await cluster.apply(child)
                service_exists = service_exists or child is children.service
                if child is children.deployment:
                    deployment = live
            if children.disruption_budget is None:
                await _remove_disruption_budget(cluster, ref)
        except RejectedError as e:
            # The schema let the spec through but the API server refuses what it yields
            # (e.g. a volumeMount without a volume): only the user can fix it.
            meta_child = child["metadata"]
            invalid = (
                f"the API server rejected the {child['kind']} {meta_child['name']!r} made "
                f"from this spec: {e.api_message} (fix that field in this StatefulFunction's "
                "spec and apply it again)"
            )
            children = None
    if children is None:
        # Blocked or invalid: leave whatever runs alone; never build half a set of children.
        deployment = await cluster.get(object_path("apps/v1", "Deployment", namespace, name))
        # Untouched children keep the address they had; nothing built, nothing to address.
        service_exists = service_exists or (
            deployment is not None and bool((body.get("status") or {}).get("address"))
        )

    dstatus = (deployment or {}).get("status") or {}
    desired = int(spec.get("replicas", 1))
    if invalid is not None:
        ready = Condition(READY, False, Reason.INVALID_SPEC, invalid)
    else:
        # A Deployment that has not yet seen its latest spec reports stale counts.
        fresh = (deployment or {}).get("metadata", {}).get("generation") == dstatus.get(
            "observedGeneration"
        )
        selector = selector_string(name)
        failure = None
        # Conditions about an older spec say nothing about this one.
        if fresh and deployment is not None:
            failure = pods_failure(
                dstatus.get("conditions") or (),
                await _current_replica_set_conditions(cluster, deployment),
                namespace=namespace,
                selector=selector,
            )
        ready = ready_condition(
            journal.condition,
            desired,
            int(dstatus.get("readyReplicas", 0)) if fresh else 0,
            int(dstatus.get("updatedReplicas", 0)) if fresh else 0,
            namespace=namespace,
            selector=selector,
            failure=failure,
        )
    conditions = (ready, journal.condition)
    status: dict[str, Any] = {
        # ShardMapAgreed is the shard-map check's (map_check.py): kept as it was.
        "conditions": render_conditions(previous, conditions, meta.get("generation"), now)
        + [c for c in previous if c.get("type") == SHARD_MAP_AGREED],
        "observedGeneration": meta.get("generation"),
        "replicas": int(dstatus.get("replicas", 0)),
        "readyReplicas": int(dstatus.get("readyReplicas", 0)),
        "selector": selector_string(name),
        # None removes a stale address (status is merge-patched).
        "address": service_address(ref, spec) if service_exists else None,
    }
    await cluster.patch_status(function_path(namespace, name), status)
    return Outcome(
        body=body,
        conditions=conditions,
        changed=tuple(transitions(previous, conditions)),
        invalid=invalid,
    )
