"""The views of `larder inspect`: what each command shows, as a table or JSON lines."""

from __future__ import annotations

import json
import shlex
from typing import Any

from ..journal.base import PersistenceId, persistence_id
from ..journal.reading import EntityInfo, JournalReader
from .payloads import Decoded, PayloadDecoder
from .render import Printer, compact, timestamp


class InspectInputError(ValueError):
    """Input the user must fix; the message says what."""


class Inspector:
    """One method per command; each reads through the reader and prints."""

    def __init__(self, reader: JournalReader, decoder: PayloadDecoder, printer: Printer) -> None:
        self.reader = reader
        self.decoder = decoder
        self.out = printer

    def _entity(self, entity_type: str, entity_id: str) -> tuple[PersistenceId, EntityInfo]:
        pid = persistence_id(entity_type, entity_id)
        info = self.reader.entity(pid)
        if info is None:
            raise InspectInputError(
                f"no entity {entity_type} {entity_id!r} in this journal: nothing is stored "
                f"under {pid!r} (`larder inspect types` lists the types, `larder inspect ids "
                f"{shlex.quote(entity_type)}` their ids)"
            )
        return pid, info

    @staticmethod
    def _refuse(info: EntityInfo, wanted: str, entity_type: str, entity_id: str) -> None:
        other, article = ("value", "a") if info.kind == "value" else ("events", "an")
        raise InspectInputError(
            f"{entity_type} {entity_id!r} is {article} {info.kind} entity, which has no "
            f"{wanted}; "
            f"`larder inspect {other} {shlex.quote(entity_type)} {shlex.quote(entity_id)}` "
            "shows what it has"
        )

    def _payload_cell(self, decoded: Decoded) -> str:
        if decoded.decoded:
            return compact(decoded.json)
        note = f"  [{decoded.note}]" if decoded.note else ""
        return f"base64:{decoded.base64}{note}"

    def _payload_block(self, decoded: Decoded) -> None:
        if decoded.decoded:
            self.out.line(json.dumps(decoded.json, indent=2, ensure_ascii=False))
        else:
            self.out.line(self._payload_cell(decoded))

    def types(self) -> None:
        counts = self.reader.entity_types()
        if self.out.output == "jsonl":
            for c in counts:
                self.out.record({"entity_type": c.entity_type, "kind": c.kind,
                                 "entities": c.entities})
            return
        if not counts:
            self.out.line("(no entities in this journal)")
            return
        self.out.table(("ENTITY TYPE", "KIND", "ENTITIES"),
                       [(c.entity_type, c.kind, str(c.entities)) for c in counts])

    def ids(self, entity_type: str, limit: int, after: str | None) -> None:
        page = self.reader.entity_ids(entity_type, limit=limit, after=after)
        if self.out.output == "jsonl":
            for ref in page.entities:
                self.out.record({"entity_type": ref.entity_type, "entity_id": ref.entity_id,
                                 "kind": ref.kind})
            if page.next_after is not None:
                self.out.record({"next_after": page.next_after})
            return
        if not page.entities:
            self.out.line(f"(no entities of type {entity_type}"
                          f"{' after that token' if after else ''})")
        else:
            self.out.table(("ENTITY ID", "KIND"),
                           [(ref.entity_id, ref.kind) for ref in page.entities])
        if page.next_after is not None:
            self.out.line(f"more: the same command with --after {shlex.quote(page.next_after)}")

    def entity(self, entity_type: str, entity_id: str) -> None:
        _, info = self._entity(entity_type, entity_id)
        document: dict[str, Any] = {
            "entity_type": entity_type, "entity_id": entity_id, "kind": info.kind,
        }
        if info.kind == "value":
            document["revision"] = info.value_revision
        else:
            document["last_sequence_nr"] = info.last_sequence_nr
            document["snapshot_sequence_nr"] = info.snapshot_sequence_nr
        if self.out.output == "jsonl":
            self.out.record(document)
            return
        self.out.fields([(k.replace("_", " "), "-" if v is None else str(v))
                         for k, v in document.items()])

    def events(self, entity_type: str, entity_id: str, from_seq: int, limit: int) -> None:
        pid, info = self._entity(entity_type, entity_id)
        if info.kind != "event-sourced":
            self._refuse(info, "events", entity_type, entity_id)
        page = self.reader.events(pid, from_seq=from_seq, limit=limit)
        rows = [(e, self.decoder.decode(e.payload)) for e in page.events]
        if self.out.output == "jsonl":
            for event, decoded in rows:
                self.out.record({"sequence_nr": event.sequence_nr,
                                 "written_at": timestamp(event.written_at),
                                 **decoded.to_dict()})
            if page.next_from_seq is not None:
                self.out.record({"next_from_seq": page.next_from_seq})
            return
        snapshot = (f", snapshot at {info.snapshot_sequence_nr}"
                    if info.snapshot_sequence_nr is not None else "")
        self.out.line(f"# {entity_type} {entity_id!r}: {info.last_sequence_nr} events{snapshot}")
        if not rows:
            self.out.line(f"(no events from {from_seq}; the last is {info.last_sequence_nr})")
            return
        timed = any(e.written_at is not None for e, _ in rows)
        header = ("SEQ", "WRITTEN AT", "TYPE", "PAYLOAD") if timed else ("SEQ", "TYPE", "PAYLOAD")
        table = []
        for event, decoded in rows:
            cells = [str(event.sequence_nr)]
            if timed:
                cells.append(timestamp(event.written_at) or "-")
            table.append((*cells, decoded.type_url, self._payload_cell(decoded)))
        self.out.table(header, table)
        if page.next_from_seq is not None:
            self.out.line(f"more: the same command with --from-seq {page.next_from_seq}")

    def snapshot(self, entity_type: str, entity_id: str) -> None:
        pid, info = self._entity(entity_type, entity_id)
        if info.kind != "event-sourced":
            self._refuse(info, "snapshot", entity_type, entity_id)
        snapshot = self.reader.snapshot(pid)
        decoded = self.decoder.decode(snapshot.payload) if snapshot else None
        if self.out.output == "jsonl":
            body = None
            if snapshot is not None and decoded is not None:
                body = {"sequence_nr": snapshot.sequence_nr,
                        "written_at": timestamp(snapshot.written_at), **decoded.to_dict()}
            self.out.record({"entity_type": entity_type, "entity_id": entity_id,
                             "last_sequence_nr": info.last_sequence_nr, "snapshot": body})
            return
        pairs = [("entity", f"{entity_type} {entity_id!r}"),
                 ("last event", str(info.last_sequence_nr))]
        if snapshot is None or decoded is None:
            self.out.fields([*pairs, ("snapshot", "none stored")])
            return
        self.out.fields([*pairs, ("snapshot at", f"event {snapshot.sequence_nr}"),
                         ("written at", timestamp(snapshot.written_at) or "-"),
                         ("type", decoded.type_url)])
        self._payload_block(decoded)

    def value(self, entity_type: str, entity_id: str) -> None:
        pid, info = self._entity(entity_type, entity_id)
        if info.kind != "value":
            self._refuse(info, "value state", entity_type, entity_id)
        value = self.reader.value(pid)
        if value is None:  # deleted between the two reads: nothing to show
            raise InspectInputError(f"no entity {entity_type} {entity_id!r} in this journal")
        decoded = self.decoder.decode(value.payload) if value.payload else None
        if self.out.output == "jsonl":
            self.out.record({"entity_type": entity_type, "entity_id": entity_id,
                             "revision": value.revision,
                             "written_at": timestamp(value.written_at),
                             "state": decoded.to_dict() if decoded else None})
            return
        pairs = [("entity", f"{entity_type} {entity_id!r}"), ("revision", str(value.revision)),
                 ("written at", timestamp(value.written_at) or "-")]
        if decoded is None:
            self.out.fields([*pairs, ("state", "none (deleted)")])
            return
        self.out.fields([*pairs, ("type", decoded.type_url)])
        self._payload_block(decoded)
