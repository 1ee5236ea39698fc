"""`larder inspect --admin URL`: the journal read through a running sidecar's admin port.

Implements `JournalReader` over the sidecar's `/inspect/...` routes (`inspection.py`),
so every command of `larder inspect` works the same against a sidecar as against a
journal, and payloads decode with the descriptors the sidecar got from its user function.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from ..journal.base import JournalCorrupt, JournalUnavailable, PersistenceId, StoredPayload
from ..journal.reading import (
    BadContinuation,
    EntityInfo,
    EntityKind,
    EntityPage,
    EntityRef,
    EntityTypeCount,
    EventPage,
    NotAJournal,
    StoredEvent,
    StoredSnapshot,
    StoredValue,
    split_persistence_id,
)
from .views import InspectInputError


class AccessRefused(InspectInputError):
    """The sidecar wants a token (or this host is not loopback): fix the input."""


class RemoteReader:
    """Implements `JournalReader` against `http://HOST:ADMIN_PORT`."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InspectInputError(
                f"--admin {url!r} is not a sidecar's admin address (http://HOST:9603)"
            )
        self._base = f"{parsed.scheme}://{parsed.netloc}"
        self._token = token
        self._timeout = timeout

    def close(self) -> None:
        """Nothing is kept open: one connection per request."""

    def _get(self, route: str, **params: object) -> Any:
        query = urllib.parse.urlencode(
            {k: str(v) for k, v in params.items() if v is not None},
            quote_via=urllib.parse.quote,
        )
        url = f"{self._base}/inspect/{route}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self._token is not None:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise _error(self._base, route, e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise JournalUnavailable(
                f"cannot reach the sidecar's admin port at {self._base}: {reason} (is the "
                "sidecar running, and the port forwarded: `kubectl port-forward POD 9603`?)"
            ) from None
        except json.JSONDecodeError as e:
            raise JournalCorrupt(
                f"{self._base}/inspect/{route} answered something that is not JSON ({e}): "
                "is this a Larder sidecar's admin port?"
            ) from None

    def descriptors(self) -> descriptor_pb2.FileDescriptorSet:
        """The user function's descriptors, as the sidecar got them at discovery."""
        answer = self._get("descriptors")
        file_set = descriptor_pb2.FileDescriptorSet()
        try:
            file_set.ParseFromString(base64.b64decode(answer["file_descriptor_set"]))
        except (KeyError, TypeError, binascii.Error, DecodeError) as e:
            raise JournalCorrupt(
                f"{self._base} sent descriptors that cannot be read: {e}"
            ) from None
        return file_set

    def entity_types(self) -> Sequence[EntityTypeCount]:
        return [
            EntityTypeCount(t["entity_type"], _kind(t["kind"]), int(t["entities"]))
            for t in self._get("types")["types"]
        ]

    def entity_ids(self, entity_type: str, *, limit: int, after: str | None) -> EntityPage:
        answer = self._get("ids", type=entity_type, limit=limit, after=after)
        return EntityPage(
            [
                EntityRef(e["entity_type"], e["entity_id"], _kind(e["kind"]))
                for e in answer["entities"]
            ],
            answer["next_after"],
        )

    def entity(self, pid: PersistenceId) -> EntityInfo | None:
        entity_type, entity_id = split_persistence_id(pid)
        info = self._get("entity", type=entity_type, id=entity_id)["entity"]
        if info is None:
            return None
        return EntityInfo(
            pid,
            _kind(info["kind"]),
            int(info["last_sequence_nr"]),
            info["snapshot_sequence_nr"],
            info["value_revision"],
        )

    def events(self, pid: PersistenceId, *, from_seq: int, limit: int) -> EventPage:
        entity_type, entity_id = split_persistence_id(pid)
        answer = self._get("events", type=entity_type, id=entity_id, from_seq=from_seq, limit=limit)
        return EventPage(
            [
                StoredEvent(int(e["sequence_nr"]), _payload(e), _time(e["written_at"]))
                for e in answer["events"]
            ],
            answer["next_from_seq"],
        )

    def snapshot(self, pid: PersistenceId) -> StoredSnapshot | None:
        entity_type, entity_id = split_persistence_id(pid)
        s = self._get("snapshot", type=entity_type, id=entity_id)["snapshot"]
        if s is None:
            return None
        return StoredSnapshot(int(s["sequence_nr"]), _payload(s), _time(s["written_at"]))

    def value(self, pid: PersistenceId) -> StoredValue | None:
        entity_type, entity_id = split_persistence_id(pid)
        v = self._get("value", type=entity_type, id=entity_id)["value"]
        if v is None:
            return None
        state = v["state"]
        return StoredValue(
            int(v["revision"]),
            None if state is None else _payload(state),
            _time(v["written_at"]),
        )


def _error(base: str, route: str, status: int, body: bytes) -> Exception:
    try:
        answer = json.loads(body)
        message, kind = str(answer["error"]), str(answer.get("kind", ""))
    except (ValueError, KeyError, TypeError):
        message, kind = body.decode("utf-8", "replace").strip()[:300], ""
    where = f"the sidecar at {base}"
    if status in (401, 403):
        return AccessRefused(f"{where} refused: {message}")
    if status == 404:
        return NotAJournal(
            f"{where} has no /inspect/{route}: is it a Larder sidecar's admin port, of a "
            "version with `larder inspect --admin`?"
        )
    if kind == "continuation":
        return BadContinuation(message)
    if status == 400:
        return InspectInputError(f"{where}: {message}")
    if kind == "no-journal":
        return NotAJournal(f"{where}: {message}")
    if kind == "corrupt":
        return JournalCorrupt(f"{where}: {message}")
    return JournalUnavailable(f"{where} answered {status}: {message}")


def _kind(text: object) -> EntityKind:
    if text not in ("event-sourced", "value"):
        raise JournalCorrupt(f"the sidecar named an unknown entity kind {text!r}")
    return text


def _payload(item: Mapping[str, Any]) -> StoredPayload:
    try:
        return StoredPayload(str(item["type_url"]), base64.b64decode(item["value"]))
    except (KeyError, TypeError, binascii.Error) as e:
        raise JournalCorrupt(f"the sidecar sent a payload that cannot be read: {e}") from None


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
