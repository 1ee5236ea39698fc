"""kopf handlers, one per cause, all funnelling into ``reconcile_function`` and the Journal check.

Built into an explicit registry by ``build_registry`` so importing this module registers
nothing globally and the handlers close over one settings object. The startup handler also
starts the periodic resync and Journal recheck (resync.py), which the cleanup handler stops;
no handler needs kopf's finalizer, so deleting our resources never waits for the operator.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient

from larder_operator.children import FUNCTION_LABEL, GROUP, MANAGED_BY, VERSION
from larder_operator.credentials import missing_message, read_credentials
from larder_operator.events import COMPONENT, EventPoster
from larder_operator.journal_check import CheckResult, check_journal
from larder_operator.journal_protection import JournalGuard
from larder_operator.journals import CassandraJournal, InvalidJournalError, parse_journal
from larder_operator.kube import ApiCluster, Cluster, ClusterError, journal_path
from larder_operator.map_check import record_shard_map
from larder_operator.pod_views import HttpViewReader, read_pod_views
from larder_operator.reconcile import Outcome, reconcile_function
from larder_operator.resync import Periodic, for_each
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
_BY_JOURNAL = "functions_by_journal"
_FUNCTIONS = "functions"
_JOURNALS = "journals"
# How many functions (or Journals) the periodic work handles at once.
_PARALLEL = 8


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Connection:
    """The operator's own API client, opened at startup and closed at cleanup."""

    def __init__(self) -> None:
        self._client: ApiClient | None = None
        self._cluster: Cluster | None = None
        self._events: EventPoster | None = None
        self._guard: JournalGuard | None = None

    async def open(self) -> None:
        try:
            kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kube_config.ConfigException:
            await kube_config.load_kube_config()
        self._client = ApiClient()
        self._cluster = ApiCluster(self._client)
        # In a pod the host name is the pod's name: the Event says which replica reported.
        self._events = EventPoster(self._cluster, socket.gethostname())
        self._guard = JournalGuard(self._cluster, self._events)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("the API client is used before the operator's startup handler ran")
        return self._cluster

    @property
    def events(self) -> EventPoster:
        if self._events is None:
            raise RuntimeError("Events are posted before the operator's startup handler ran")
        return self._events

    @property
    def guard(self) -> JournalGuard:
        if self._guard is None:
            raise RuntimeError("a Journal is protected before the operator's startup handler ran")
        return self._guard


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler of the operator, closed over ``settings``."""
    registry = kopf.OperatorRegistry()
    connection = _Connection()
    # One reconcile per function at a time: several causes (its own change, its children's
    # events, a Journal, the resync) often arrive together, and the last status written
    # must be the newest. Weak values: a lock lives only while someone holds or waits for it.
    locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
        weakref.WeakValueDictionary()
    )
    background: list[Periodic] = []
    reader = HttpViewReader(settings.shard_map_timeout)

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same sources as our own client: in-cluster service account, else KUBECONFIG.
        return await kopf.login_via_async_client(**kwargs)

    def lock_of(namespace: str, name: str) -> asyncio.Lock:
        lock = locks.get((namespace, name))
        if lock is None:
            lock = locks[(namespace, name)] = asyncio.Lock()
        return lock

    async def reconcile(namespace: str, name: str) -> Outcome | None:
        async with lock_of(namespace, name):
            outcome = await reconcile_function(
                connection.cluster, settings, namespace, name, _now()
            )
            if outcome is not None:
                await connection.events.transitions(outcome.body, outcome.changed, _now())
        return outcome

    async def check_map(namespace: str, name: str) -> None:
        # The pods are asked outside the lock (a silent one takes its timeout); the status
        # is written under it, because reconcile rewrites the conditions list too.
        views = await read_pod_views(connection.cluster, reader, namespace, name)
        async with lock_of(namespace, name):
            found = await record_shard_map(
                connection.cluster,
                views,
                grace=settings.shard_map_grace,
                namespace=namespace,
                name=name,
                now=_now(),
            )
            if found is not None:
                await connection.events.transitions(found.body, found.changed, _now())

    async def protect(
        namespace: str,
        journal: str,
        index: kopf.Index[tuple[str, str], str],
        body: Mapping[str, Any] | None = None,
    ) -> None:
        await connection.guard.protect(
            namespace, journal, list(index.get((namespace, journal), ())), _now(), body
        )

    @kopf.on.startup(registry=registry)
    async def configure(logger: kopf.Logger, **kwargs: Any) -> None:
        # kopf's settings, named like ours: taken from kwargs to keep ours in sight.
        kopf_settings: kopf.OperatorSettings = kwargs["settings"]
        # Progress and diff-base in annotations: our CRDs' status schemas stay ours.
        kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        # No handler of ours needs kopf's finalizer (children go by garbage collection, and
        # periodic work is not a kopf timer). Naming the one earlier versions added lets
        # kopf take it off the resources that still carry it.
        kopf_settings.persistence.finalizer = f"{GROUP}/operator"
        # We post our own Events (events.py); should kopf post any, they say who we are.
        # Its per-handler log lines stay out of Events: they would bury ours.
        kopf_settings.posting.level = logging.INFO
        kopf_settings.posting.loggers = False
        kopf_settings.posting.reporting_component = COMPONENT
        kopf_settings.posting.reporting_instance = socket.gethostname()
        kopf_settings.posting.event_name_prefix = f"{COMPONENT}-"
        await connection.open()
        functions = _index(kwargs, _FUNCTIONS)
        journals = _index(kwargs, _JOURNALS)
        by_journal = _index(kwargs, _BY_JOURNAL)

        async def resync_one(key: tuple[str, str]) -> None:
            try:
                await reconcile(*key)
            except ClusterError as e:
                logger.warning(f"resync of {key[0]}/{key[1]}: {e}")

        async def map_check_one(key: tuple[str, str]) -> None:
            try:
                await check_map(*key)
            except ClusterError as e:
                logger.warning(f"shard-map check of {key[0]}/{key[1]}: {e}")

        async def recheck_one(key: tuple[str, str]) -> None:
            namespace, name = key
            try:
                body = await connection.cluster.get(journal_path(namespace, name))
                if body is not None:
                    await check(namespace, name, body, by_journal, propagate=False)
            except (ClusterError, kopf.TemporaryError) as e:
                logger.warning(f"check of Journal {namespace}/{name}: {e}")

        # Repairs drift nobody told us about (e.g. a deleted RoleBinding), and retries what
        # waits on something we do not watch (a Secret).
        background.append(
            Periodic(
                "function resync",
                settings.resync_interval,
                lambda: for_each(_keys(functions), resync_one, _PARALLEL),
            )
        )
        background.append(
            Periodic(
                "journal recheck",
                settings.journal_check_interval,
                lambda: for_each(_keys(journals), recheck_one, _PARALLEL),
            )
        )
        # Whether each function's ready pods agree on their shard map (map_check.py).
        background.append(
            Periodic(
                "shard-map check",
                settings.shard_map_interval,
                lambda: for_each(_keys(functions), map_check_one, _PARALLEL),
            )
        )
        for task in background:
            task.start()

    @kopf.on.cleanup(registry=registry)
    async def disconnect(**_: Any) -> None:
        while background:
            await background.pop().stop()
        await connection.close()

    @kopf.index(*FUNCTIONS, id=_BY_JOURNAL, registry=registry)
    def functions_by_journal(
        namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str, str], str] | None:
        journal = spec.get("journal")
        return {(namespace or '', str(journal)): name} if journal else None

    @kopf.index(*FUNCTIONS, id=_FUNCTIONS, registry=registry)
    def all_functions(namespace: str | None, name: str, **_: Any) -> dict[str, str]:
        return {namespace or '': name}

    @kopf.index(*JOURNALS, id=_JOURNALS, registry=registry)
    def all_journals(namespace: str | None, name: str, **_: Any) -> dict[str, str]:
        return {namespace or '': name}

    @kopf.on.resume(*FUNCTIONS, id="reconcile", registry=registry)
    @kopf.on.create(*FUNCTIONS, id="reconcile", registry=registry)
    @kopf.on.update(*FUNCTIONS, id="reconcile", registry=registry)
    async def function_changed(
        namespace: str | None,
        name: str,
        spec: kopf.Spec,
        old: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        namespace = namespace or ''
        index = _index(kwargs, _BY_JOURNAL)
        try:
            outcome = await reconcile(namespace, name)
            # Protect the Journal it uses now; release the one it used before.
            journals = {spec.get("journal"), ((old or {}).get("spec") or {}).get("journal")}
            for journal in sorted(str(j) for j in journals if j):
                await protect(namespace, journal, index)
        except ClusterError as e:
            raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e
        if outcome is None:
            return
        if outcome.invalid is not None:
            raise kopf.PermanentError(outcome.invalid)
        if outcome.blocked:
            # Expected, and said in status and Events; Journal changes re-trigger us at once,
            # the periodic resync covers Secrets, which we do not watch.
            reasons = ", ".join(sorted({str(c.reason) for c in outcome.conditions if not c.status}))
            logger.info(
                "%s/%s is waiting for: %s; checked again every %g s",
                namespace, name, reasons, settings.resync_interval,
            )

    @kopf.on.event(*FUNCTIONS, id="function-event", registry=registry)
    async def function_event(
        type: str | None, namespace: str | None, spec: kopf.Spec, **kwargs: Any
    ) -> None:
        journal = spec.get("journal")
        if type == "DELETED" and namespace and journal:
            # Its Journal may be free now (and its deletion may be waiting for that).
            try:
                await protect(namespace, str(journal), _index(kwargs, _BY_JOURNAL))
            except ClusterError as e:
                raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e

    @kopf.on.event("apps", "v1", "deployments", id="child", labels=MANAGED_BY, registry=registry)
    @kopf.on.event("v1", "services", id="child", labels=MANAGED_BY, registry=registry)
    async def child_changed(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        # Pods becoming ready, or a child edited or deleted behind our back.
        function = labels.get(FUNCTION_LABEL)
        if function:
            try:
                await reconcile(namespace or '', function)
            except ClusterError as e:
                raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e

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
        await connection.events.transitions(body, changed, now)
        if changed or propagate:
            # A snapshot: the index changes while we await.
            for function in list(index.get((namespace, name), ())):
                try:
                    await reconcile(namespace, function)
                except ClusterError as e:
                    raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e

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
        await check(namespace or '', name, body, _index(kwargs, _BY_JOURNAL), propagate=True)

    @kopf.on.event(*JOURNALS, id="journal-event", registry=registry)
    async def journal_event(
        type: str | None,
        namespace: str | None,
        name: str,
        body: kopf.Body,
        **kwargs: Any,
    ) -> None:
        if not namespace:
            return
        index = _index(kwargs, _BY_JOURNAL)
        try:
            if type == "DELETED":
                for function in list(index.get((namespace, name), ())):
                    await reconcile(namespace, function)
            else:
                # Every change (the periodic check's status included) re-decides protection.
                await protect(namespace, name, index, body)
        except ClusterError as e:
            raise kopf.TemporaryError(str(e), delay=_RETRY_AFTER_API_ERROR) from e

    return registry


def _keys(index: kopf.Index[str, str]) -> list[tuple[str, str]]:
    """(namespace, name) of everything in a namespace-keyed index, as a snapshot."""
    return [(namespace, name) for namespace in list(index) for name in list(index[namespace])]


def _index(kwargs: Mapping[str, Any], id_: str) -> kopf.Index[Any, str]:
    return cast("kopf.Index[Any, str]", kwargs[id_])


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
