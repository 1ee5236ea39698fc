"""Membership changes under load, with real processes: a fourth sidecar joins and one
leaves (marked terminating, then stopped) while clients keep sending commands through
every serving sidecar. Orderly hand-offs: no client sees an error, every acknowledged
command is in the journal exactly once, the journal never refuses a second writer. And
a sidecar killed with SIGKILL: nothing acknowledged is lost, the commands that failed
are stored whole or not at all, and the others take its shards once it leaves the list."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc.aio

from ..sidecar_cassandra.conftest import JournalTables, Pod, counter_pid
from .conftest import Launch, internal_port, metrics

ENTITIES = 24
WORKERS = 6
WAIT = 30.0


@dataclass
class Load:
    """Clients sending `Add` commands with unique tags through the serving sidecars."""

    serving: list[Pod]
    prefix: str
    """Of entity ids and tags: the tests of this module share a keyspace."""
    acked: dict[str, str] = field(default_factory=dict)
    """tag -> entity"""
    errors: list[str] = field(default_factory=list)
    failed: dict[str, grpc.StatusCode] = field(default_factory=dict)
    """tag -> status of a command that got no reply (it may or may not be stored)"""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0

    async def worker(self, n: int) -> None:
        for i in itertools.count():
            if self.stop.is_set():
                return
            entity = f"{self.prefix}-{(n * 7 + i) % ENTITIES}"
            pod = self.serving[(n + i) % len(self.serving)]
            tag = f"{self.prefix}-w{n}-{i}"
            self.sent += 1
            try:
                await pod.add(entity, tag, 1, deadline=WAIT)
            except grpc.aio.AioRpcError as e:
                self.errors.append(f"{tag} via {pod.name}: {e.code().name} {e.details()}")
                self.failed[tag] = e.code()
                # As a client would: a short pause before the next command.
                await asyncio.sleep(0.05)
            else:
                self.acked[tag] = entity

    async def until_more(self, commands: int) -> None:
        """Until `commands` more were acknowledged (the load is really running)."""
        target = len(self.acked) + commands
        for _ in range(int(WAIT / 0.05)):
            if len(self.acked) >= target:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the load stalled at {len(self.acked)} acknowledged commands")

    async def until_failed(self) -> None:
        """Until a command failed (a client met the dead member)."""
        for _ in range(int(WAIT / 0.05)):
            if self.failed:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no command failed in {WAIT:g}s; {len(self.acked)} acknowledged")


async def _stored(tables: JournalTables, pb: ModuleType, prefix: str) -> collections.Counter[str]:
    """How often each tag is in the journal (events in order, numbered without gaps)."""
    stored: collections.Counter[str] = collections.Counter()
    for n in range(ENTITIES):
        events = await tables.events(counter_pid(f"{prefix}-{n}"))
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
        for _, payload in events:
            stored[pb.Added.FromString(payload).tag] += 1
    return stored


def _timeouts(samples: dict[str, float]) -> float:
    return samples.get('larder_handoffs_total{direction="in",ending="timeout"}', 0.0)


async def _owned(pod: Pod) -> float:
    return (await metrics(pod))["larder_shards_owned"]


async def _until_owned(pod: Pod, condition: str, check: object) -> None:
    for _ in range(int(WAIT / 0.1)):
        if check(await _owned(pod)):  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pod.name} never owned {condition} shards\n{pod.log()}")


async def test_a_member_joins_and_one_leaves_under_load_without_errors_or_lost_commands(
    launch: Launch, tables: JournalTables, pb: ModuleType, tmp_path: Path
) -> None:
    names = ("s0", "s1", "s2", "s3")
    address = {name: f"127.0.0.1:{internal_port()}" for name in names}
    members_file = tmp_path / "members"

    def listing(*lines: str) -> None:
        members_file.write_text("".join(f"{line}\n" for line in lines))

    listing(*(f"{n}={address[n]}" for n in names[:3]))
    cluster = {"LARDER_CLUSTER_MEMBERS_FILE": str(members_file)}
    pods = {}
    for name in names[:3]:
        pods[name] = await launch(name, int(address[name].rpartition(":")[2]), cluster)

    # Start-up hand-offs may time out when the others start slowly (nothing is served
    # yet); only the ones under load count.
    timeouts_before = {name: _timeouts(await metrics(pod)) for name, pod in pods.items()}
    load = Load(serving=[pods["s0"], pods["s1"], pods["s2"]], prefix="joining")
    workers = [asyncio.create_task(load.worker(n)) for n in range(WORKERS)]
    try:
        await load.until_more(60)

        # A fourth sidecar starts (not in the list yet: it owns nothing), then joins.
        pods["s3"] = await launch("s3", int(address["s3"].rpartition(":")[2]), cluster)
        timeouts_before["s3"] = _timeouts(await metrics(pods["s3"]))
        listing(*(f"{n}={address[n]}" for n in names))
        await _until_owned(pods["s3"], "some", lambda owned: owned > 0)
        load.serving.append(pods["s3"])
        await load.until_more(60)

        # s1 leaves: terminating first (it hands its shards away), then stopped.
        listing(*(f"{n}={address[n]}" + (" terminating" if n == "s1" else "") for n in names))
        await _until_owned(pods["s1"], "no", lambda owned: owned == 0)
        load.serving.remove(pods["s1"])
        await load.until_more(30)
        leaving = await metrics(pods["s1"])
        await pods["s1"].stop()
        listing(*(f"{n}={address[n]}" for n in names if n != "s1"))
        await load.until_more(60)
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), WAIT)

    assert not load.errors, f"{len(load.errors)} client errors, e.g. {load.errors[:5]}"
    assert len(load.acked) == load.sent

    stored = await _stored(tables, pb, load.prefix)
    assert set(stored) == set(load.acked)
    assert max(stored.values()) == 1

    # Orderly: hand-offs confirmed, none taken over by timeout, no second writer.
    samples = {name: await metrics(pod) for name, pod in pods.items() if name != "s1"}
    samples["s1"] = leaving
    for name, s in samples.items():
        rejected = sum(v for k, v in s.items() if k.startswith("larder_fencing_rejections"))
        timeouts = _timeouts(s) - timeouts_before[name]
        assert (rejected, timeouts) == (0, 0), name
    assert samples["s3"]['larder_handoffs_total{direction="in",ending="confirmed"}'] > 0
    assert samples["s1"]['larder_handoffs_total{direction="out",ending="released"}'] > 0
    assert sum(s["larder_shards_owned"] for n, s in samples.items() if n != "s1") == 256
    with contextlib.suppress(KeyError):
        assert samples["s1"]["larder_shards_owned"] == 0


async def test_a_killed_member_loses_nothing_acknowledged_and_its_shards_move(
    launch: Launch, tables: JournalTables, pb: ModuleType, tmp_path: Path
) -> None:
    names = ("s0", "s1", "s2")
    address = {name: f"127.0.0.1:{internal_port()}" for name in names}
    members_file = tmp_path / "members"
    members_file.write_text("".join(f"{n}={address[n]}\n" for n in names))
    cluster = {"LARDER_CLUSTER_MEMBERS_FILE": str(members_file)}
    pods = {}
    for name in names:
        pods[name] = await launch(name, int(address[name].rpartition(":")[2]), cluster)

    timeouts_before = {name: _timeouts(await metrics(pods[name])) for name in ("s0", "s2")}
    # Clients talk to s0 and s2; s1's entities are reached by forwarding.
    load = Load(serving=[pods["s0"], pods["s2"]], prefix="killed")
    workers = [asyncio.create_task(load.worker(n)) for n in range(WORKERS)]
    try:
        await load.until_more(60)
        pods["s1"].sidecar.kill()
        await pods["s1"].sidecar.wait()
        await load.until_more(10)  # the others' entities keep working meanwhile
        # Clients must meet the dead member before it leaves the list, or the test would
        # test nothing (the workers may not have asked for one of its entities yet).
        await load.until_failed()
        members_file.write_text("".join(f"{n}={address[n]}\n" for n in ("s0", "s2")))
        for _ in range(int(WAIT / 0.1)):
            if await _owned(pods["s0"]) + await _owned(pods["s2"]) == 256:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"s1's shards were not taken over\n{pods['s0'].log()}")
        settled = len(load.errors)
        await load.until_more(60)
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), WAIT)

    # Only s1's entities failed, fast and retryably, and only until it left the list.
    assert load.failed, "killing s1 failed no command: the test did not test anything"
    assert set(load.failed.values()) == {grpc.StatusCode.UNAVAILABLE}, load.errors[:5]
    assert all("s1" in e for e in load.errors), load.errors[:5]
    assert len(load.errors) - settled <= WORKERS  # at most the ones in flight at the move

    stored = await _stored(tables, pb, load.prefix)
    # Nothing acknowledged is lost or doubled; a failed command is stored once or not at all.
    wrong = {tag: stored[tag] for tag in load.acked if stored[tag] != 1}
    assert not wrong, f"acknowledged, stored this often: {wrong}\n{load.errors[:10]}"
    assert set(stored) <= set(load.acked) | set(load.failed)
    assert max(stored.values()) == 1, {t: n for t, n in stored.items() if n > 1}

    samples = {name: await metrics(pods[name]) for name in ("s0", "s2")}
    assert sum(s["larder_shards_owned"] for s in samples.values()) == 256
    for name, s in samples.items():
        assert sum(v for k, v in s.items() if k.startswith("larder_fencing_rejections")) == 0
        assert _timeouts(s) == timeouts_before[name], name
    assert (
        sum(
            s.get('larder_handoffs_total{direction="in",ending="gone"}', 0.0)
            for s in samples.values()
        )
        > 0
    )
