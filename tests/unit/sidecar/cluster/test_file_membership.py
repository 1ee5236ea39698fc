"""A member list file (`LARDER_CLUSTER_MEMBERS_FILE`): parsed like the static list, with
terminating members, read again when it changes; a broken file keeps the last list."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from larder_sidecar.cluster.file_membership import FileMembership, parse_member_file
from larder_sidecar.cluster.membership import Member, MemberId, Membership
from larder_sidecar.settings import ClusterSettings, SettingsError, load_settings


def test_the_file_lists_members_by_line_or_comma_and_marks_terminating_ones() -> None:
    members = parse_member_file(
        "# the cart function\na=127.0.0.1:9604, b=127.0.0.1:9614\nc=127.0.0.1:9624 terminating\n"
    )
    assert members == (
        Member(MemberId("a"), "127.0.0.1:9604"),
        Member(MemberId("b"), "127.0.0.1:9614"),
        Member(MemberId("c"), "127.0.0.1:9624", terminating=True),
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "lists no members"),
        ("# nobody\n", "lists no members"),
        ("a=127.0.0.1:9604 leaving", "optionally followed by 'terminating'"),
        ("a=127.0.0.1", "is not host:port"),
        ("a=127.0.0.1:1,a=127.0.0.1:2", "appears twice"),
    ],
)
def test_a_broken_file_is_refused_with_the_variable_named(text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match="LARDER_CLUSTER_MEMBERS_FILE") as info:
        parse_member_file(text)
    assert problem in str(info.value)


async def _next(snapshots: object, within: float = 5.0) -> Membership:
    return await asyncio.wait_for(snapshots.__anext__(), within)  # type: ignore[attr-defined]


async def test_each_change_of_the_file_is_a_new_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "members"
    path.write_text("a=127.0.0.1:1\n")
    source = FileMembership(path, poll=0.01)
    async with contextlib.aclosing(source.snapshots()) as snapshots:
        first = await _next(snapshots)
        assert (first.version, first.active) == (1, ("a",))
        path.write_text("a=127.0.0.1:1\nb=127.0.0.1:2\n")
        second = await _next(snapshots)
        assert (second.version, second.active) == (2, ("a", "b"))
        # Broken, then only reformatted: neither is a change of membership.
        path.write_text("a=127.0.0.1:1\nb=\n")
        path.write_text("b=127.0.0.1:2, a=127.0.0.1:1  # same members\n")
        path.write_text("a=127.0.0.1:1 terminating\nb=127.0.0.1:2\n")
        third = await _next(snapshots)
        assert (third.version, third.active) == (3, ("b",))
        assert third.get(MemberId("a")) == Member(MemberId("a"), "127.0.0.1:1", True)


async def test_a_missing_file_yields_nothing_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "members"
    source = FileMembership(path, poll=0.01)
    async with contextlib.aclosing(source.snapshots()) as snapshots:
        waiting = asyncio.ensure_future(_next(snapshots))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        path.write_text("a=127.0.0.1:1\n")
        assert (await waiting).version == 1


def test_the_setting_names_the_file_and_excludes_the_other_sources() -> None:
    env = {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS_FILE": "/etc/larder/members"}
    assert load_settings(env).cluster == ClusterSettings(members_file="/etc/larder/members")
    with pytest.raises(SettingsError, match="POD_NAME is empty"):
        load_settings({"LARDER_CLUSTER_MEMBERS_FILE": "/x"})
    with pytest.raises(SettingsError, match="one source"):
        load_settings({**env, "LARDER_CLUSTER_MEMBERS": "a=127.0.0.1:1"})
