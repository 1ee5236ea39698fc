"""kopf handlers, one per cause, all funnelling into ``reconcile_function`` and the Journal check.

Built into an explicit registry by ``build_registry`` so importing this module registers
nothing globally and the handlers close over one settings object.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient

from larder_operator.children import FUNCTION_LABEL, GROUP, MANAGED_BY, VERSION
from larder_operator.credentials import missing_message, read_credentials
from larder_operator.journal_check import CheckResult, check_journal
from larder_operator.journals import CassandraJournal, InvalidJournalError, parse_journal
from larder_operator.kube import ApiCluster, Cluster, ClusterError, journal_path
from larder_operator.reconcile import Outcome, reconcile_function
from larder_operator.settings import OperatorSettings
from larder_operator.status import (
    READY,
    Condition,
    Reason,
    render_conditions,
    transitions,
)

logger = logging.getLogger(__name__)

FUNCTIONS = (GROUP, VERSION, "statefulfunctions")
JOURNALS = (GROUP, VERSION, "journals")
_RETRY_AFTER_API_ERROR = 10.0
# kopf hands every index to every handler as a keyword argument named by the index id.
_INDEX = "functions_by_journal"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Connection:
    """The operator's own API client, opened at startup and closed at cleanup."""

    def __init__(self) -> None:
        self._client: ApiClient | None = None
        self._cluster: Cluster | None = None

    async def open(self) -> None:
        try:
            kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kube_config.ConfigException:
            await kube_config.load_kube_config()
        self._client = ApiClient()
        self._cluster = ApiCluster(self._client)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("the API client is used before the operator's startup handler ran")
        return self._cluster


def _post_events(body: Mapping[str, Any], changed: Collection[Condition]) -> None:
    target = kopf.Body(cast(kopf.RawBody, dict(body)))
    for cond in changed:
        message = f"{cond.type}={cond.status_word}: {cond.message}"
        if cond.status:
            kopf.info(target, reason=str(cond.reason), message=message)
        else:
            kopf.warn(target, reason=str(cond.reason), message=message)


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler of the operator, closed over ``settings``."""
    registry = kopf.OperatorRegistry()
    connection = _Connection()
    # One reconcile per function at a time: several causes (its own change, its children's
    # events, a Journal) often arrive together, and the last status written must be the
    # newest. Weak values: a lock lives only while someone holds or waits for it.
    locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
        weakref.WeakValueDictionary()
    )

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same sources as our own client: in-cluster service account, else KUBECONFIG.
        return await kopf.login_via_async_client(**kwargs)

    async def reconcile(namespace: str, name: str) -> Outcome | None:
        lock = locks.get((namespace, name))
        if lock is None:
            lock = locks[(namespace, name)] = asyncio.Lock()
        try:
            async with lock:
                outcome = await reconcile_function(
                    connection.cluster, settings, namespace, name, _now()
                )
        except ClusterError as e:
            raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e
        if outcome is not None:
            _post_events(outcome.body, outcome.changed)
        return outcome

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and diff-base in annotations: our CRDs' status schemas stay ours.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{GROUP}/operator"
        # Our own Events say what matters; kopf's per-handler chatter would bury them.
        settings.posting.level = logging.WARNING
        await connection.open()

    @kopf.on.cleanup(registry=registry)
    async def disconnect(**_: Any) -> None:
        await connection.close()

    @kopf.index(*FUNCTIONS, id=_INDEX, registry=registry)
    def functions_by_journal(
        namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str, str], str] | None:
        journal = spec.get("journal")
        return {(namespace or '', str(journal)): name} if journal else None

    @kopf.on.resume(*FUNCTIONS, id="reconcile", registry=registry)
    @kopf.on.create(*FUNCTIONS, id="reconcile", registry=registry)
    @kopf.on.update(*FUNCTIONS, id="reconcile", registry=registry)
    async def function_changed(namespace: str | None, name: str, **_: Any) -> None:
        outcome = await reconcile(namespace or '', name)
        if outcome is None:
            return
        if outcome.invalid is not None:
            raise kopf.PermanentError(outcome.invalid)
        if outcome.blocked:
            # Journal changes re-trigger us at once; this retry covers Secrets, which we do
            # not watch.
            reasons = ", ".join(sorted({str(c.reason) for c in outcome.conditions if not c.status}))
            raise kopf.TemporaryError(
                f"waiting for: {reasons}", delay=settings.resync_interval
            )

    @kopf.timer(
        *FUNCTIONS,
        id="resync",
        registry=registry,
        interval=settings.resync_interval,
        initial_delay=settings.resync_interval,
    )
    async def function_resync(namespace: str | None, name: str, **_: Any) -> None:
        # Repairs drift nobody told us about (e.g. a deleted RoleBinding).
        await reconcile(namespace or '', name)

    @kopf.on.event("apps", "v1", "deployments", id="child", labels=MANAGED_BY, registry=registry)
    @kopf.on.event("v1", "services", id="child", labels=MANAGED_BY, registry=registry)
    async def child_changed(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        # Pods becoming ready, or a child edited or deleted behind our back.
        function = labels.get(FUNCTION_LABEL)
        if function:
            await reconcile(namespace or '', function)

    async def check(
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        index: kopf.Index[tuple[str, str], str],
        propagate: bool,
    ) -> None:
        cluster = connection.cluster
        spec = body.get("spec") or {}
        previous = (body.get("status") or {}).get("conditions") or []
        result = await _check_one(cluster, settings, namespace, spec)
        conditions = [Condition(READY, result.ready, result.reason, result.message)]
        if result.durable is not None:
            conditions.append(result.durable)
        now = _now()
        generation = body.get("metadata", {}).get("generation")
        status = {
            "conditions": render_conditions(previous, conditions, generation, now),
            "observedGeneration": generation,
            "lastCheckTime": now,
        }
        try:
            await cluster.patch_status(journal_path(namespace, name), status)
        except ClusterError as e:
            raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e
        changed = transitions(previous, conditions)
        _post_events(body, changed)
        if changed or propagate:
            # A snapshot: the index changes while we await.
            for function in list(index.get((namespace, name), ())):
                await reconcile(namespace, function)

    @kopf.on.resume(*JOURNALS, id="check", registry=registry)
    @kopf.on.create(*JOURNALS, id="check", registry=registry)
    @kopf.on.update(*JOURNALS, id="check", registry=registry)
    async def journal_changed(
        namespace: str | None,
        name: str,
        body: kopf.Body,
        **kwargs: Any,
    ) -> None:
        # A spec change rolls the functions using it (their pods carry its hash).
        await check(namespace or '', name, body, _index(kwargs), propagate=True)

    @kopf.timer(
        *JOURNALS,
        id="recheck",
        registry=registry,
        interval=settings.journal_check_interval,
        initial_delay=settings.journal_check_interval,
    )
    async def journal_recheck(
        namespace: str | None,
        name: str,
        body: kopf.Body,
        **kwargs: Any,
    ) -> None:
        await check(namespace or '', name, body, _index(kwargs), propagate=False)

    @kopf.on.event(*JOURNALS, id="journal-event", registry=registry)
    async def journal_event(
        type: str | None,
        namespace: str | None,
        name: str,
        **kwargs: Any,
    ) -> None:
        if type == "DELETED" and namespace:
            for function in list(_index(kwargs).get((namespace, name), ())):
                await reconcile(namespace, function)

    return registry


def _index(kwargs: Mapping[str, Any]) -> kopf.Index[tuple[str, str], str]:
    return cast("kopf.Index[tuple[str, str], str]", kwargs[_INDEX])


async def _check_one(
    cluster: Cluster, settings: OperatorSettings, namespace: str, spec: Mapping[str, Any]
) -> CheckResult:
    try:
        config = parse_journal(namespace, spec)
    except InvalidJournalError as e:
        return CheckResult(False, Reason.JOURNAL_INVALID, str(e))
    credentials = None
    if isinstance(config, CassandraJournal) and config.credentials is not None:
        try:
            credentials = await read_credentials(cluster, namespace, config.credentials)
        except ClusterError as e:
            raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e
        if credentials is None:
            return CheckResult(
                False, Reason.SECRET_MISSING, missing_message(namespace, config.credentials)
            )
    return await check_journal(config, credentials, settings.journal_check_timeout)
