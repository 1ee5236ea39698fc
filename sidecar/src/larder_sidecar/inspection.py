"""The admin port's read-only window on this sidecar's journal: `/inspect/...`.

`larder inspect --admin URL` reads through it what it would otherwise read straight from
the journal, without the journal's address or credentials, and decodes payloads with the
descriptors the user function gave at discovery (`/inspect/descriptors`). Each route is
one `JournalReader` call (`journal/reading.py`) as JSON; payloads travel as base64.

It shows user data: `admin.py` answers these routes only to loopback clients (`kubectl
port-forward`, `larder dev`) unless a token is set, and then only with that token.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from google.protobuf import descriptor_pb2

from .journal.base import JournalCorrupt, JournalUnavailable, PersistenceId, StoredPayload
from .journal.base import persistence_id as make_pid
from .journal.reading import (
    BadContinuation,
    EntityInfo,
    JournalReader,
    NotAJournal,
    SettingMismatch,
)
from .settings import Settings

log = logging.getLogger("larder_sidecar.admin")

MAX_PAGE = 1000
"""The most ids or events one request returns: a page, not a dump."""

Answer = tuple[int, object]
InspectRoute = Callable[[Mapping[str, str]], Awaitable[Answer]]


class _BadQuery(ValueError):
    pass


def reader_factory(settings: Settings) -> Callable[[], JournalReader] | None:
    """How to open a reader on this sidecar's journal; None for the in-memory journal."""
    if settings.journal_type == "sqlite":
        path = settings.journal_sqlite_path

        def sqlite() -> JournalReader:
            # Imported when first used: most sidecars are never inspected.
            from .journal.sqlite_reading import SqliteReader  # noqa: PLC0415

            return SqliteReader(path)

        return sqlite
    cassandra = settings.journal_cassandra
    if settings.journal_type == "cassandra" and cassandra is not None:

        def connect() -> JournalReader:
            from .journal.cassandra_reading import CassandraReader  # noqa: PLC0415

            return CassandraReader(
                cassandra.contact_points,
                cassandra.port,
                cassandra.keyspace,
                username=cassandra.username,
                password=cassandra.password,
                partition_size=cassandra.partition_size,
                timeout=cassandra.request_timeout,
                consistency=cassandra.read_consistency,
            )

        return connect
    return None


class JournalInspection:
    """The `/inspect/...` routes. The reader is opened on first use and its blocking calls
    run one at a time on a worker thread, off the sidecar's event loop."""

    def __init__(
        self,
        open_reader: Callable[[], JournalReader] | None,
        file_set: Callable[[], descriptor_pb2.FileDescriptorSet | None],
    ) -> None:
        self._open_reader = open_reader
        self._file_set = file_set
        self._reader: JournalReader | None = None
        self._lock = asyncio.Lock()

    def routes(self) -> dict[str, InspectRoute]:
        return {
            "/inspect/descriptors": self._descriptors,
            "/inspect/types": self._types,
            "/inspect/ids": self._ids,
            "/inspect/entity": self._entity,
            "/inspect/events": self._events,
            "/inspect/snapshot": self._snapshot,
            "/inspect/value": self._value,
        }

    async def close(self) -> None:
        async with self._lock:
            if self._reader is not None:
                await asyncio.to_thread(self._reader.close)
                self._reader = None

    async def _read(self, call: Callable[[JournalReader], object]) -> Answer:
        if self._open_reader is None:
            return 409, {
                "error": "this sidecar keeps its journal in memory (LARDER_JOURNAL_TYPE="
                "memory): nothing outlives the process and there is nothing to inspect",
                "kind": "no-journal",
            }
        opener = self._open_reader
        try:
            async with self._lock:

                def run() -> object:
                    if self._reader is None:
                        self._reader = opener()
                    return call(self._reader)

                return 200, await asyncio.to_thread(run)
        except _BadQuery as e:
            return 400, {"error": str(e), "kind": "input"}
        except BadContinuation as e:
            return 400, {"error": str(e), "kind": "continuation"}
        except (NotAJournal, SettingMismatch) as e:
            return 409, {"error": str(e), "kind": "no-journal"}
        except JournalUnavailable as e:
            return 503, {"error": str(e), "kind": "unavailable"}
        except JournalCorrupt as e:
            return 500, {"error": str(e), "kind": "corrupt"}

    async def _descriptors(self, query: Mapping[str, str]) -> Answer:
        file_set = self._file_set()
        if file_set is None:
            return 503, {
                "error": "the user function has not been discovered yet; ask again when "
                "the sidecar is ready",
                "kind": "unavailable",
            }
        return 200, {"file_descriptor_set": _b64(file_set.SerializeToString())}

    async def _types(self, query: Mapping[str, str]) -> Answer:
        return await self._read(
            lambda r: {
                "types": [
                    {"entity_type": c.entity_type, "kind": c.kind, "entities": c.entities}
                    for c in r.entity_types()
                ]
            }
        )

    async def _ids(self, query: Mapping[str, str]) -> Answer:
        def ids(r: JournalReader) -> object:
            page = r.entity_ids(
                _required(query, "type"), limit=_limit(query), after=query.get("after")
            )
            return {
                "entities": [
                    {"entity_type": e.entity_type, "entity_id": e.entity_id, "kind": e.kind}
                    for e in page.entities
                ],
                "next_after": page.next_after,
            }

        return await self._read(ids)

    async def _entity(self, query: Mapping[str, str]) -> Answer:
        return await self._read(lambda r: {"entity": _info(r.entity(_pid(query)))})

    async def _events(self, query: Mapping[str, str]) -> Answer:
        def events(r: JournalReader) -> object:
            page = r.events(
                _pid(query), from_seq=_number(query, "from_seq", 1), limit=_limit(query)
            )
            return {
                "events": [
                    {
                        "sequence_nr": e.sequence_nr,
                        "written_at": _time(e.written_at),
                        **_payload(e.payload),
                    }
                    for e in page.events
                ],
                "next_from_seq": page.next_from_seq,
            }

        return await self._read(events)

    async def _snapshot(self, query: Mapping[str, str]) -> Answer:
        def snapshot(r: JournalReader) -> object:
            s = r.snapshot(_pid(query))
            if s is None:
                return {"snapshot": None}
            return {
                "snapshot": {
                    "sequence_nr": s.sequence_nr,
                    "written_at": _time(s.written_at),
                    **_payload(s.payload),
                }
            }

        return await self._read(snapshot)

    async def _value(self, query: Mapping[str, str]) -> Answer:
        def value(r: JournalReader) -> object:
            v = r.value(_pid(query))
            if v is None:
                return {"value": None}
            return {
                "value": {
                    "revision": v.revision,
                    "written_at": _time(v.written_at),
                    "state": None if v.payload is None else _payload(v.payload),
                }
            }

        return await self._read(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _payload(payload: StoredPayload) -> dict[str, Any]:
    return {"type_url": payload.type_url, "value": _b64(payload.value)}


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _info(info: EntityInfo | None) -> object:
    if info is None:
        return None
    return {
        "kind": info.kind,
        "last_sequence_nr": info.last_sequence_nr,
        "snapshot_sequence_nr": info.snapshot_sequence_nr,
        "value_revision": info.value_revision,
    }


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise _BadQuery(f"the query parameter {name!r} is missing")
    return value


def _pid(query: Mapping[str, str]) -> PersistenceId:
    # An empty id is an id like any other; only a missing one is an error.
    if "id" not in query:
        raise _BadQuery("the query parameter 'id' is missing")
    return make_pid(_required(query, "type"), query["id"])


def _number(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise _BadQuery(f"the query parameter {name}={raw!r} is not a whole number of 1 or more")
    return int(raw)


def _limit(query: Mapping[str, str]) -> int:
    limit = _number(query, "limit", 100)
    if limit > MAX_PAGE:
        raise _BadQuery(f"limit={limit} is more than {MAX_PAGE}; page with a smaller one")
    return limit
