"""Membership snapshots, the static source, and the Kubernetes source over a fake API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import pytest
from larder_sidecar.cluster.kube_membership import (
    KubernetesMembership,
    MembershipUnavailableError,
    SliceEvent,
    WatchExpiredError,
    members_from_slices,
)
from larder_sidecar.cluster.membership import (
    Member,
    MemberId,
    Membership,
    MembershipSource,
    StaticMembership,
    describe_change,
)

# -- snapshots --------------------------------------------------------------------------


def test_a_snapshot_sorts_its_members_and_knows_the_active_ones() -> None:
    snapshot = Membership(
        (
            Member(MemberId("c"), "10.0.0.3:9604"),
            Member(MemberId("a"), "10.0.0.1:9604", terminating=True),
            Member(MemberId("b"), "10.0.0.2:9604"),
        ),
        version=4,
    )
    assert [m.id for m in snapshot.members] == ["a", "b", "c"]
    assert snapshot.active == ("b", "c")
    assert snapshot.get(MemberId("a")) == Member(MemberId("a"), "10.0.0.1:9604", True)
    assert snapshot.get(MemberId("z")) is None


def test_the_fingerprint_is_of_the_members_not_the_version() -> None:
    a = Member(MemberId("a"), "10.0.0.1:9604")
    assert Membership((a,), 1).fingerprint == Membership((a,), 7).fingerprint
    moved = Member(MemberId("a"), "10.0.0.9:9604")
    leaving = Member(MemberId("a"), "10.0.0.1:9604", terminating=True)
    fingerprints = {Membership((m,), 1).fingerprint for m in (a, moved, leaving)}
    assert len(fingerprints) == 3


def test_one_line_says_what_changed() -> None:
    before = Membership(
        (Member(MemberId("a"), "h:1"), Member(MemberId("b"), "h:2"), Member(MemberId("x"), "h:9")),
        1,
    )
    after = Membership(
        (
            Member(MemberId("a"), "h:11"),
            Member(MemberId("b"), "h:2", terminating=True),
            Member(MemberId("c"), "h:3"),
        ),
        2,
    )
    assert describe_change(before, after) == (
        "membership v2: a, b (terminating), c; joined: c; left: x; terminating: b; new address: a"
    )
    assert describe_change(None, Membership((), 1)) == "membership v1: no members"


async def test_the_static_source_yields_its_list_once_and_stays_open() -> None:
    source: MembershipSource = StaticMembership([("b", "127.0.0.1:9614"), ("a", "127.0.0.1:9604")])
    snapshots = source.snapshots()
    first = await anext(snapshots)
    assert first.version == 1
    assert first.members == (
        Member(MemberId("a"), "127.0.0.1:9604"),
        Member(MemberId("b"), "127.0.0.1:9614"),
    )
    following = asyncio.ensure_future(anext(snapshots))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not following.done()
    following.cancel()
    with pytest.raises(asyncio.CancelledError):
        await following
    await snapshots.aclose()


# -- EndpointSlices -> members ---------------------------------------------------------


def endpoint(
    pod: str | None,
    ip: str,
    ready: bool | None = True,
    serving: bool | None = True,
    terminating: bool | None = False,
    hostname: str | None = None,
) -> dict[str, Any]:
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    result: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if pod is not None:
        result["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "shop"}
    if hostname is not None:
        result["hostname"] = hostname
    return result


def endpoint_slice(
    name: str, *endpoints: dict[str, Any], address_type: str = "IPv4", port: str = "internal"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1"},
        "addressType": address_type,
        "ports": [{"name": port, "port": 9604, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


@pytest.mark.parametrize(
    ("ready", "serving", "terminating", "expected"),
    [
        (True, True, False, False),
        # Published anyway (`ready` forced true) but not passing its probe: starting, or
        # its function gone. Not a member until it serves: its shards would go to a pod
        # whose internal port may not even listen yet.
        (True, False, False, None),
        (False, True, False, False),
        (False, False, False, None),
        (None, None, None, False),  # nil: ready and serving true, terminating false
        (True, None, False, False),  # nil serving (older API servers): ready decides
        (False, None, False, None),
        (True, True, True, True),  # publishNotReadyAddresses keeps `ready` when terminating
        (False, True, True, True),
        (False, False, True, None),
        (None, None, True, True),
    ],
)
def test_endpoint_conditions_decide_membership(
    ready: bool | None, serving: bool | None, terminating: bool | None, expected: bool | None
) -> None:
    members = members_from_slices(
        [endpoint_slice("s", endpoint("cart-a", "10.0.0.1", ready, serving, terminating))]
    )
    if expected is None:
        assert members == ()
    else:
        assert members == (Member(MemberId("cart-a"), "10.0.0.1:9604", terminating=expected),)


def test_a_pod_in_two_slices_is_one_member() -> None:
    members = members_from_slices(
        [
            endpoint_slice("v6", endpoint("cart-a", "fd00::1"), address_type="IPv6"),
            endpoint_slice("v4", endpoint("cart-a", "10.0.0.1"), endpoint("cart-b", "10.0.0.2")),
            endpoint_slice("v6b", endpoint("cart-c", "fd00::3"), address_type="IPv6"),
            # A stale copy during repacking; terminating is one-way, so it wins.
            endpoint_slice("old", endpoint("cart-b", "10.0.0.2", terminating=True)),
        ]
    )
    assert members == (
        Member(MemberId("cart-a"), "10.0.0.1:9604"),
        Member(MemberId("cart-b"), "10.0.0.2:9604", terminating=True),
        Member(MemberId("cart-c"), "[fd00::3]:9604"),
    )


def test_slices_without_the_internal_port_or_an_id_add_nothing() -> None:
    members = members_from_slices(
        [
            endpoint_slice("p", endpoint("cart-a", "10.0.0.1"), port="http"),
            endpoint_slice("f", endpoint("cart-b", "cart-b.example"), address_type="FQDN"),
            endpoint_slice(
                "n", endpoint(None, "10.0.0.3"), endpoint(None, "10.0.0.4", hostname="h")
            ),
        ]
    )
    assert members == (Member(MemberId("h"), "10.0.0.4:9604"),)


# -- the Kubernetes source, over a fake API ---------------------------------------------


class FakeApi:
    """Scripted answers: each `list()` and each `watch()` takes the next one queued. A
    watch script is a list of events and exceptions; it stays open after its last event
    unless `end` is in it."""

    END = object()

    def __init__(self) -> None:
        self.lists: asyncio.Queue[tuple[list[Mapping[str, Any]], str] | Exception] = asyncio.Queue()
        self.watches: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.watched_from: list[str] = []
        self.list_calls = 0
        self.open = False

    async def list(self) -> tuple[list[Mapping[str, Any]], str]:
        self.list_calls += 1
        answer = await self.lists.get()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch(self, resource_version: str) -> AsyncIterator[SliceEvent]:
        self.watched_from.append(resource_version)
        script = await self.watches.get()
        for step in script:
            if step is FakeApi.END:
                return
            if isinstance(step, Exception):
                raise step
            yield step
        await asyncio.Event().wait()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[FakeApi]:
        self.open = True
        try:
            yield self
        finally:
            self.open = False


def event(kind: str, obj: dict[str, Any], version: str) -> SliceEvent:
    return SliceEvent(kind, {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}})


def source(api: FakeApi) -> KubernetesMembership:
    return KubernetesMembership(
        "shop", "cart-internal", api=api.connect, retry_delay=0.001, max_retry_delay=0.004
    )


async def next_snapshot(snapshots: AsyncGenerator[Membership, None]) -> Membership:
    return await asyncio.wait_for(anext(snapshots), timeout=5)


A = endpoint("cart-a", "10.0.0.1")
B = endpoint("cart-b", "10.0.0.2")


async def test_kubernetes_snapshots_follow_the_slices(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="larder_sidecar.cluster")
    api = FakeApi()
    api.lists.put_nowait(([endpoint_slice("s1", A, B)], "100"))
    b_leaving = endpoint("cart-b", "10.0.0.2", ready=True, serving=False, terminating=True)
    api.watches.put_nowait(
        [
            SliceEvent("BOOKMARK", {"metadata": {"resourceVersion": "101"}}),
            # A change that changes no member: no snapshot.
            event("MODIFIED", {**endpoint_slice("s1", A, B), "x": 1}, "102"),
            event("MODIFIED", endpoint_slice("s1", A, b_leaving), "103"),
            event("ADDED", endpoint_slice("s2", endpoint("cart-c", "10.0.0.3")), "104"),
            event("MODIFIED", endpoint_slice("s1", A), "105"),
            event("DELETED", endpoint_slice("s2"), "106"),
        ]
    )
    snapshots = source(api).snapshots()
    first = await next_snapshot(snapshots)
    assert (first.version, [m.id for m in first.members]) == (1, ["cart-a", "cart-b"])
    assert api.open

    seen = [await next_snapshot(snapshots) for _ in range(4)]
    assert [s.version for s in seen] == [2, 3, 4, 5]
    assert seen[0].members[1] == Member(MemberId("cart-b"), "10.0.0.2:9604", terminating=True)
    assert [m.id for m in seen[1].members] == ["cart-a", "cart-b", "cart-c"]
    assert [m.id for m in seen[2].members] == ["cart-a", "cart-c"]
    assert seen[3].members == (Member(MemberId("cart-a"), "10.0.0.1:9604"),)
    assert api.watched_from == ["100"]

    lines = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 5, [r.getMessage() for r in lines]
    assert lines[1].getMessage() == (
        "membership v2: cart-a, cart-b (terminating); terminating: cart-b (shop/cart-internal)"
    )
    await snapshots.aclose()
    assert not api.open


async def test_an_ended_watch_resumes_from_the_last_version_seen() -> None:
    api = FakeApi()
    api.lists.put_nowait(([endpoint_slice("s1", A)], "10"))
    api.watches.put_nowait(
        [SliceEvent("BOOKMARK", {"metadata": {"resourceVersion": "15"}}), FakeApi.END]
    )
    api.watches.put_nowait([event("MODIFIED", endpoint_slice("s1", A, B), "16")])
    snapshots = source(api).snapshots()
    await next_snapshot(snapshots)
    second = await next_snapshot(snapshots)
    assert second.version == 2
    assert api.watched_from == ["10", "15"]
    assert api.list_calls == 1
    await snapshots.aclose()


async def test_an_expired_watch_lists_again_and_reports_only_real_changes() -> None:
    api = FakeApi()
    api.lists.put_nowait(([endpoint_slice("s1", A)], "10"))
    api.watches.put_nowait([event("MODIFIED", endpoint_slice("s1", A), "11"), WatchExpiredError()])
    # Meanwhile b joined and the slice was renamed.
    api.lists.put_nowait(([endpoint_slice("s9", A, B)], "50"))
    api.watches.put_nowait([])
    snapshots = source(api).snapshots()
    assert (await next_snapshot(snapshots)).version == 1
    second = await next_snapshot(snapshots)
    assert (second.version, [m.id for m in second.members]) == (2, ["cart-a", "cart-b"])
    assert api.watched_from == ["10"]
    assert api.list_calls == 2
    await snapshots.aclose()


async def test_failures_are_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.lists.put_nowait(MembershipUnavailableError("HTTP 503"))
    api.lists.put_nowait(MembershipUnavailableError("HTTP 503"))
    api.lists.put_nowait(([endpoint_slice("s1", A)], "10"))
    api.watches.put_nowait([MembershipUnavailableError("connection reset")])
    # Expired right after a fresh list is no progress either: backed off, not a busy loop.
    api.lists.put_nowait(([endpoint_slice("s1", A)], "20"))
    api.watches.put_nowait([WatchExpiredError()])
    api.lists.put_nowait(([endpoint_slice("s1", A, B)], "30"))
    api.watches.put_nowait([])
    snapshots = source(api).snapshots()
    first = await next_snapshot(snapshots)
    assert [m.id for m in first.members] == ["cart-a"]
    second = await next_snapshot(snapshots)
    assert [m.id for m in second.members] == ["cart-a", "cart-b"]
    assert api.list_calls == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert "HTTP 503" in warnings[0]
    assert "listing again in" in warnings[0]
    assert "expired again at once" in warnings[3]
    await snapshots.aclose()


async def test_cancelling_the_consumer_closes_the_api_client() -> None:
    api = FakeApi()
    api.lists.put_nowait(([endpoint_slice("s1", A)], "10"))
    api.watches.put_nowait([])
    first_seen = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(source(api).snapshots()) as snapshots:
            async for _ in snapshots:
                first_seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_seen.wait(), timeout=5)
    assert api.open
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not api.open
