"""`larder inspect --admin`: a running sidecar's journal, read through its admin port,
payloads decoded with the descriptors the sidecar got at discovery (no --proto-dir)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from larder_sidecar.app import Sidecar
from larder_sidecar.inspector.cli import EXIT_BAD_INPUT, EXIT_FAILED, run

from .conftest import Client, SidecarFactory
from .user_function import UserFunction

TOKEN = "s3cret-token-of-24-chars"


async def inspect(*argv: str, **environ: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    # The CLI blocks; the sidecar it asks runs on this test's event loop.
    code = await asyncio.to_thread(run, list(argv), out, err, environ)
    return code, out.getvalue(), err.getvalue()


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def _sqlite_sidecar(
    start_sidecar: SidecarFactory, fn: UserFunction, tmp_path: Path, **overrides: Any
) -> Sidecar:
    from larder_sidecar.journal.sqlite import SqliteJournal  # noqa: PLC0415

    path = str(tmp_path / "journal.sqlite3")
    return await start_sidecar(
        fn,
        journal=SqliteJournal(path),
        journal_type="sqlite",
        journal_sqlite_path=path,
        **overrides,
    )


async def test_events_and_ids_of_a_running_sidecar_decoded_with_its_own_descriptors(
    start_sidecar: SidecarFactory,
    user_function: UserFunction,
    connect: Any,
    tmp_path: Path,
) -> None:
    sidecar = await _sqlite_sidecar(start_sidecar, user_function, tmp_path)
    client: Client = connect(sidecar)
    for amount in (1, 2, 3):
        await client.add("alice", amount)
    await client.add("bob|with a pipe", 5)
    admin = f"http://127.0.0.1:{sidecar.admin.port}"

    code, out, err = await inspect("types", "--admin", admin, "--output", "jsonl")
    assert code == 0, err
    assert jsonl(out) == [{"entity_type": "counter", "kind": "event-sourced", "entities": 2}]

    code, out, err = await inspect("ids", "--admin", admin, "counter", "--limit", "1",
                                   "--output", "jsonl")
    assert code == 0, err
    first = jsonl(out)
    assert first[0]["entity_id"] == "alice" and "next_after" in first[1]
    code, out, err = await inspect("ids", "--admin", admin, "counter", "--limit", "1",
                                   "--after", first[1]["next_after"], "--output", "jsonl")
    assert code == 0, err
    assert [r["entity_id"] for r in jsonl(out)] == ["bob|with a pipe"]

    code, out, err = await inspect("events", "--admin", admin, "counter", "alice",
                                   "--limit", "2", "--output", "jsonl")
    assert code == 0, err
    records = jsonl(out)
    # Decoded without --proto-dir: the sidecar sent the function's descriptors.
    assert [(r["sequence_nr"], r["payload"]) for r in records[:2]] == [
        # int64 is a string in protobuf's JSON mapping.
        (1, {"amount": "1"}),
        (2, {"amount": "2"}),
    ], records
    assert records[2] == {"next_from_seq": 3}
    code, out, err = await inspect("events", "--admin", admin, "counter", "bob|with a pipe",
                                   "--output", "jsonl")
    assert code == 0, err
    assert [r["payload"] for r in jsonl(out)] == [{"amount": "5"}]

    code, out, err = await inspect("events", "--admin", admin, "counter", "carol")
    assert code == EXIT_BAD_INPUT
    assert "no entity counter 'carol'" in err


async def test_with_a_token_set_a_request_without_it_is_refused(
    start_sidecar: SidecarFactory,
    user_function: UserFunction,
    connect: Any,
    tmp_path: Path,
) -> None:
    sidecar = await _sqlite_sidecar(
        start_sidecar, user_function, tmp_path, admin_token=TOKEN
    )
    await connect(sidecar).add("alice", 7)
    admin = f"http://127.0.0.1:{sidecar.admin.port}"

    code, _, err = await inspect("types", "--admin", admin)
    assert code == EXIT_BAD_INPUT
    assert "refused" in err and "no token" in err and "LARDER_ADMIN_TOKEN" in err
    code, _, err = await inspect("types", "--admin", admin, LARDER_ADMIN_TOKEN="x" * 24)
    assert code == EXIT_BAD_INPUT and "a wrong token" in err

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, out, err = await inspect("events", "--admin", admin, "--token-file", str(token_file),
                                   "counter", "alice", "--output", "jsonl")
    assert code == 0, err
    assert [r["payload"] for r in jsonl(out)] == [{"amount": "7"}]
    code, out, err = await inspect("entity", "--admin", admin, "counter", "alice",
                                   "--output", "jsonl", LARDER_ADMIN_TOKEN=TOKEN)
    assert code == 0, err
    assert jsonl(out)[0]["last_sequence_nr"] == 1


async def test_a_memory_journal_and_an_unreachable_sidecar_say_so(
    start_sidecar: SidecarFactory, user_function: UserFunction
) -> None:
    sidecar = await start_sidecar(user_function)  # the in-memory journal
    code, _, err = await inspect("types", "--admin", f"http://127.0.0.1:{sidecar.admin.port}")
    assert code == EXIT_BAD_INPUT
    assert "keeps its journal in memory" in err
    port = sidecar.admin.port
    await sidecar.stop()
    code, _, err = await inspect("types", "--admin", f"127.0.0.1:{port}", "--timeout", "2")
    assert code == EXIT_FAILED
    assert f"cannot reach the sidecar's admin port at http://127.0.0.1:{port}" in err
