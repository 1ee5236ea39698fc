"""Proxy case on a durable journal: state outlives the sidecar process."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from larder_protocol import EVENT_SOURCED_ENTITY
from larder_tck.context import fresh_id
from larder_tck.expect import check, expect_equal
from larder_tck.model import ES_MODEL
from larder_tck.proxy_env import ProxyContext, call_on
from larder_tck.registry import case

from ._proxy import ES_HANDLE, es_messages, expect_traffic, reactivation_of_abcdef, streams_of


@case("proxy.eventsourced.sqlite-restart", "proxy", EVENT_SOURCED_ENTITY)
async def sqlite_restart(ctx: ProxyContext) -> None:
    """On the SQLite journal, events and the snapshot survive the sidecar's SIGKILL and restart."""
    m = ctx.model
    request, action, response, _ = es_messages(ctx)
    name = response.DESCRIPTOR.full_name
    entity = fresh_id("px-sqlite")

    def emitting(values: str) -> object:
        return request(id=entity, actions=[action(emit={"value": v}) for v in values])

    tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="larder-tck-journal-")
    try:
        env = {
            "LARDER_JOURNAL_TYPE": "sqlite",
            "LARDER_JOURNAL_SQLITE_PATH": str(Path(tmp) / "journal.sqlite3"),
        }
        async with ctx.launcher.launch("sqlite-first", env) as first:
            await call_on(
                first.channel,
                m,
                service=ES_MODEL,
                method="Process",
                request=emitting("ABCDE"),
                response=name,
            )
            got = await call_on(
                first.channel,
                m,
                service=ES_MODEL,
                method="Process",
                request=emitting("F"),
                response=name,
            )
            expect_equal("the reply before the restart", response(message="ABCDEF"), got)
            # A crash: every reply the client got must already be durable.
            await first.kill()
        await ctx.interceptor.wait_for(
            lambda: all(x.ended for x in streams_of(ctx, ES_HANDLE, ES_MODEL, entity)),
            f"{entity}'s stream ending with the first sidecar",
        )
        # A new sidecar process on the same journal file.
        async with ctx.launcher.launch("sqlite-second", env) as second:
            got = await call_on(
                second.channel,
                m,
                service=ES_MODEL,
                method="Process",
                request=request(id=entity),
                response=name,
            )
            expect_equal("the state after the restart", response(message="ABCDEF"), got)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)

    streams = streams_of(ctx, ES_HANDLE, ES_MODEL, entity)
    check(
        len(streams) == 2,
        f"expected one stream for {entity} from each sidecar, saw {len(streams)}; calls seen:\n"
        + ctx.interceptor.describe(),
    )
    expect_traffic(
        "the new sidecar -> frontend",
        reactivation_of_abcdef(ctx, entity),
        streams[1].requests,
        "the journal file keeps the snapshot taken at event 5 and the event after it",
    )
