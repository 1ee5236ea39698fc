"""Membership from a file that may change while the sidecars run (off Kubernetes).

`LARDER_CLUSTER_MEMBERS_FILE` names a file in the syntax of `LARDER_CLUSTER_MEMBERS`
(`id=host:port`, separated by commas or lines; `#` starts a comment), where a member
followed by the word `terminating` is known but given no shards, so it hands its
shards away. The file is read again every `poll` seconds; each change is a new
snapshot. A file that cannot be read or parsed is logged and the last good membership
kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

from ..settings import SettingsError, parse_members
from .membership import Member, MemberId, Membership, describe_change

log = logging.getLogger("larder_sidecar.cluster.membership")

TERMINATING = "terminating"
_MAX_BYTES = 1 << 20


def parse_member_file(text: str) -> tuple[Member, ...]:
    """The members a file lists; raises SettingsError naming the problem."""
    entries: list[str] = []
    ending: set[str] = set()
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            words = item.split()
            if not words:
                continue
            if len(words) == 2 and words[1] == TERMINATING:
                ending.add(words[0].partition("=")[0])
            elif len(words) != 1:
                raise SettingsError(
                    f"LARDER_CLUSTER_MEMBERS_FILE: {item.strip()!r} is not id=host:port, "
                    f"optionally followed by {TERMINATING!r}"
                )
            entries.append(words[0])
    if not entries:
        raise SettingsError("LARDER_CLUSTER_MEMBERS_FILE lists no members")
    members = parse_members(",".join(entries), "LARDER_CLUSTER_MEMBERS_FILE")
    return tuple(Member(MemberId(i), address, i in ending) for i, address in members)


class FileMembership:
    """A `MembershipSource` reading a member list file again whenever it changes."""

    def __init__(self, path: str | Path, poll: float = 0.5) -> None:
        self._path = Path(path)
        self._poll = poll

    def _read(self) -> str:
        with self._path.open("rb") as f:
            return f.read(_MAX_BYTES).decode("utf-8", "replace")

    async def snapshots(self) -> AsyncGenerator[Membership, None]:
        current: Membership | None = None
        seen: str | None = None
        failing = False
        while True:
            try:
                text = await asyncio.to_thread(self._read)
                if text != seen:
                    seen = text
                    version = 1 if current is None else current.version + 1
                    snapshot = Membership(parse_member_file(text), version)
                    if current is None or snapshot.members != current.members:
                        log.info("%s (file %s)", describe_change(current, snapshot), self._path)
                        current = snapshot
                        yield snapshot
                failing = False
            except (OSError, SettingsError) as e:
                if not failing:
                    log.error(  # noqa: TRY400 - the message is the point, not a traceback
                        "cannot use the member list file %s (%s); keeping %s",
                        self._path,
                        e,
                        "no membership yet"
                        if current is None
                        else f"membership v{current.version}",
                    )
                failing = True
            # A file gives no change events without inotify; reading a small file twice
            # a second is cheap.
            await asyncio.sleep(self._poll)
