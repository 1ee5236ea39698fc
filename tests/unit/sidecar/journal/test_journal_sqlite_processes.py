"""One SQLite journal file shared by several processes (`larder dev --replicas N`): a
write waits for another process's write lock instead of failing, a lock held too long is
`JournalUnavailable`, and fencing still refuses a second writer of an entity."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from larder_sidecar.journal.base import JournalUnavailable, PersistenceId, StoredPayload
from larder_sidecar.journal.sqlite import BUSY_TIMEOUT_S, SqliteJournal

PID = PersistenceId("cart|alice")
EVENT = StoredPayload("type.googleapis.com/x.Added", b"\x08\x01")

# Takes the write lock of the journal file the way a sidecar's append does, says so, and
# keeps it for argv[2] seconds.
HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""

# Another sidecar's journal: waits for argv[2] to exist (so two of these start their
# append together), then appends one event at sequence number 0 and prints how it went.
APPEND_FIRST_EVENT = """
import asyncio, os, sys, time
from larder_sidecar.journal.base import ConcurrentWriteError, PersistenceId, StoredPayload
from larder_sidecar.journal.sqlite import SqliteJournal

async def main():
    journal = SqliteJournal(sys.argv[1])
    await journal.start()
    print("started", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.005)
    try:
        seq = await journal.append(PersistenceId("cart|alice"), 0,
                                   [StoredPayload("type.googleapis.com/x.Added", b"")])
        print(f"appended {seq}", flush=True)
    except ConcurrentWriteError as e:
        print(f"refused: {e}", flush=True)
    finally:
        await journal.close()

asyncio.run(main())
"""


async def python(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE
    )


async def line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        return (await process.stdout.readline()).decode().strip()


async def finished(process: asyncio.subprocess.Process) -> list[str]:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode().split()


async def test_the_busy_timeout_is_set_on_the_connection(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")
    await journal.start()
    try:
        (timeout_ms,) = await journal._run(lambda c: c.execute("PRAGMA busy_timeout").fetchone())
    finally:
        await journal.close()
    assert timeout_ms == int(BUSY_TIMEOUT_S * 1000)


async def test_a_write_waits_for_another_process_holding_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    holder = await python(HOLD_WRITE_LOCK, str(path), "1.0")
    try:
        assert await line(holder) == "locked"
        started = time.monotonic()
        # Without a busy timeout this fails at once with SQLITE_BUSY ("database is locked").
        assert await journal.append(PID, 0, [EVENT]) == 1
        waited = time.monotonic() - started
        assert await finished(holder) == ["released"]
        assert 0.5 < waited < BUSY_TIMEOUT_S
        recovery = await journal.load(PID)
        assert (recovery.last_sequence_nr, recovery.events) == (1, (EVENT,))
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await journal.close()


async def test_a_lock_held_past_the_busy_timeout_is_unavailable_then_writes_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path, busy_timeout=0.2)
    await journal.start()
    holder = await python(HOLD_WRITE_LOCK, str(path), "3")
    try:
        assert await line(holder) == "locked"
        with pytest.raises(JournalUnavailable, match=r"another process held its lock for more "
                                                     r"than 0\.2s\); retry"):
            await journal.append(PID, 0, [EVENT])
        assert await finished(holder) == ["released"]
        # Nothing of the refused append was written; the same append now goes through.
        assert await journal.append(PID, 0, [EVENT]) == 1
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await journal.close()


async def test_two_processes_appending_the_same_sequence_number_one_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    go = tmp_path / "go"
    writers = [await python(APPEND_FIRST_EVENT, str(path), str(go)) for _ in range(2)]
    try:
        for writer in writers:
            assert await line(writer) == "started"
        go.touch()
        results = [" ".join(await finished(writer)) for writer in writers]
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
    assert sorted(r.split(":")[0] for r in results) == ["appended 1", "refused"], results
    refused = next(r for r in results if r.startswith("refused"))
    assert "expected sequence number 0 but the journal holds 1; another writer" in refused
    journal = SqliteJournal(path)
    await journal.start()
    try:
        assert (await journal.load(PID)).last_sequence_nr == 1
    finally:
        await journal.close()
