"""The journal watch: readiness drops only after the grace, and comes back by itself."""

from __future__ import annotations

import asyncio

import pytest
from larder_sidecar.journal.base import JournalUnavailable
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal_watch import JournalWatch
from larder_sidecar.settings import SettingsError, load_settings


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _FlakyJournal(MemoryJournal):
    """A journal whose probe answers as told; every probe is counted and announced."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = True
        self.raise_instead = False
        self.probes = 0
        self.probed = asyncio.Condition()

    async def ready(self) -> bool:
        async with self.probed:
            self.probes += 1
            self.probed.notify_all()
        if self.raise_instead:
            raise JournalUnavailable("no host")
        return self.answers


async def _probes_after(journal: _FlakyJournal, count: int) -> None:
    target = journal.probes + count
    async with asyncio.timeout(5), journal.probed:
        await journal.probed.wait_for(lambda: journal.probes >= target)


async def test_ready_until_the_grace_runs_out_then_ready_again() -> None:
    journal, clock = _FlakyJournal(), _Clock()
    watch = JournalWatch(journal, grace=10.0, interval=0.001, clock=clock)
    watch.start()
    try:
        await _probes_after(journal, 1)
        assert watch.status() == (True, "ready")

        journal.answers = False
        clock.now += 9.0
        await _probes_after(journal, 2)
        assert watch.status()[0], "still inside the grace"

        clock.now += 2.0
        await _probes_after(journal, 2)
        ok, why = watch.status()
        assert not ok
        assert "has not answered for 11s" in why
        assert "LARDER_JOURNAL_UNAVAILABLE_GRACE=10s" in why

        journal.answers = True
        await _probes_after(journal, 2)
        assert watch.status() == (True, "ready")
    finally:
        await watch.close()


async def test_a_probe_that_raises_counts_as_no_answer() -> None:
    journal, clock = _FlakyJournal(), _Clock()
    journal.raise_instead = True
    watch = JournalWatch(journal, grace=1.0, interval=0.001, clock=clock)
    watch.start()
    try:
        clock.now += 5.0
        await _probes_after(journal, 2)
        assert not watch.status()[0]
    finally:
        await watch.close()


async def test_close_cancels_the_task() -> None:
    journal = _FlakyJournal()
    watch = JournalWatch(journal, grace=1.0, interval=0.001)
    watch.start()
    await _probes_after(journal, 1)
    await watch.close()
    probes = journal.probes
    await asyncio.sleep(0.02)  # time for probes that must not happen
    assert journal.probes == probes


def test_default_interval_follows_the_grace() -> None:
    assert JournalWatch(MemoryJournal(), grace=10.0).interval == 1.0
    assert JournalWatch(MemoryJournal(), grace=2.0).interval == 0.5


def test_grace_setting() -> None:
    assert load_settings({}).journal_unavailable_grace == 10.0
    assert load_settings({"LARDER_JOURNAL_UNAVAILABLE_GRACE": "2s"}).journal_unavailable_grace == 2
    with pytest.raises(SettingsError, match="LARDER_JOURNAL_UNAVAILABLE_GRACE"):
        load_settings({"LARDER_JOURNAL_UNAVAILABLE_GRACE": "soon"})
