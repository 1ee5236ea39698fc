"""Idempotency keys: a client's retry of an entity command that cannot apply it twice.

A client sends a key with a command (`Idempotency-Key` over HTTP, `idempotency-key`
gRPC metadata). The entity stores a record of the command — the key, a fingerprint of
the request and the reply the client got — in the same journal write as the command's
events or state (`Journal.append` / `put_value` take an `IdempotencyWrite`), so the
record exists exactly when the command's effects do. A command that arrives with a
key the entity has a record of is not run: the stored reply is the answer. The records
are loaded with the entity, so this holds after a restart, a hand-off to another
sidecar and a write whose outcome was unknown (the entity reloads before its next
command). Semantics, limits and what is not covered: docs/http.md.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ..invoke import InvokeError, MetadataPairs
from ..journal.base import IdempotencyRecord, IdempotencyWrite
from ..logs import clip
from ..model import IDEMPOTENCY_KEY, Method
from ..outcome import ActionKind, Outcome
from ..protocol import component_pb2

log = logging.getLogger("larder_sidecar.entities.idempotency")

HEADER = IDEMPOTENCY_KEY
"""The HTTP header (case-insensitive) and gRPC metadata key a client sends its key in."""
MAX_KEY_LENGTH = 256
"""Characters. A UUID is 36; the bound keeps records (and log lines) small."""
DEFAULT_WINDOW = 24 * 3600.0
DEFAULT_MAX_KEYS = 100
MAX_REPLY_BYTES = 64 * 1024
"""A reply larger than this is not kept: the record then only says the command was
applied (a retry gets ALREADY_EXISTS saying so), so records stay small."""
MAX_RECORD_BYTES = 1024 * 1024
"""The records of one entity together; beyond it the oldest go. They are read on every
activation, and Cassandra copies all of them into each new event partition in one
mutation, which must stay far below its limit (half a commit-log segment, 16 MiB by
default)."""

KEY_REUSED = "idempotency key reused for a different request"
"""Starts the message of the FAILED_PRECONDITION (HTTP 422) a reused key gets; the
HTTP front recognises the error by it, also when it crossed from another sidecar."""

ALREADY_APPLIED = "the command with idempotency key"
"""Starts the message of the ALREADY_EXISTS a retry gets when the first reply was too
large to keep; eventing recognises it by it (`is_already_applied`)."""

_FINGERPRINT_BYTES = 16
_FORMAT = 1
_KINDS: tuple[ActionKind | None, ...] = (None, "reply", "forward", "failure")
_NOT_KEPT = len(_KINDS)
"""The kind byte of a record whose reply was too large to keep; the body is its size."""
_MESSAGES: dict[str, Any] = {
    "reply": component_pb2.Reply,
    "forward": component_pb2.Forward,
    "failure": component_pb2.Failure,
}


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    window: float = DEFAULT_WINDOW
    """Seconds a record is kept after its command (`LARDER_IDEMPOTENCY_WINDOW`)."""
    max_keys: int = DEFAULT_MAX_KEYS
    """Records kept per entity; beyond it the oldest go (`LARDER_IDEMPOTENCY_MAX_KEYS`)."""


def command_key(metadata: MetadataPairs) -> str | None:
    """The idempotency key a command carries, None without one.

    Raises InvokeError(INVALID_ARGUMENT) for an empty or oversized key, or two
    different ones.
    """
    keys = {value for name, value in metadata if name == HEADER}
    if not keys:
        return None
    if len(keys) > 1:
        raise InvokeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request carries {len(keys)} different {HEADER} values; send one key",
        )
    (key,) = keys
    if not key:
        raise InvokeError(
            grpc.StatusCode.INVALID_ARGUMENT, f"the {HEADER} is empty; send a key or none"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvokeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the {HEADER} is {len(key)} characters long; at most {MAX_KEY_LENGTH} are "
            "accepted (a UUID is 36)",
        )
    return key


def fingerprint(method: Method, payload: bytes) -> bytes:
    """What makes a retry the same request: the method and the request's bytes."""
    digest = hashlib.sha256(method.model.path.encode())
    digest.update(b"\0")
    digest.update(payload)
    return digest.digest()[:_FINGERPRINT_BYTES]


def forward_key(pid: str, key: str) -> str:
    """The key a command's forward carries, so a replayed forward reaches its target as
    a retry of the first one (which then answers from its own record).

    Derived from the forwarding entity too: keys are per entity, so the same client
    key sent to two entities must not name one command of the forward's target.
    """
    return "fwd:" + hashlib.sha256(f"{pid}\0{key}".encode()).hexdigest()[:40]


def encode(print_: bytes, outcome: Outcome) -> bytes:
    """A record's data: format, fingerprint, reply kind and the reply (side effects are
    not kept: a replay does not run them again)."""
    kind = _KINDS.index(outcome.kind)
    body = outcome.message.SerializeToString() if outcome.message is not None else b""
    if len(body) > MAX_REPLY_BYTES:
        kind, body = _NOT_KEPT, str(len(body)).encode()
    return bytes((_FORMAT,)) + print_ + bytes((kind,)) + body


@dataclass(frozen=True, slots=True)
class StoredReply:
    fingerprint: bytes
    outcome: Outcome | None
    """None when the reply was too large to keep (`not_kept` says why)."""
    not_kept: InvokeError | None = None


def decode(record: IdempotencyRecord) -> StoredReply:
    data = record.data
    head = 1 + _FINGERPRINT_BYTES + 1
    if len(data) < head or data[0] != _FORMAT or data[head - 1] > _NOT_KEPT:
        raise InvokeError(
            grpc.StatusCode.INTERNAL,
            f"the stored idempotency record for key {clip(record.key, 80)!r} is not in a "
            "format this sidecar reads; it was written by another version of Larder",
        )
    print_ = data[1 : 1 + _FINGERPRINT_BYTES]
    if data[head - 1] == _NOT_KEPT:
        return StoredReply(
            print_,
            None,
            InvokeError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"{ALREADY_APPLIED} {clip(record.key, 80)!r} was applied "
                f"already; its reply ({data[head:].decode()} bytes) was larger than the "
                f"{MAX_REPLY_BYTES // 1024} KiB an idempotency record keeps, so it cannot "
                "be sent again",
            ),
        )
    kind = _KINDS[data[head - 1]]
    message = None if kind is None else _MESSAGES[kind].FromString(data[head:])
    return StoredReply(print_, Outcome(kind, message))


def reused(key: str, method: Method) -> InvokeError:
    log.warning(
        "idempotency key %r reused on %s for a different request; refused",
        clip(key, 80),
        method.model.path,
    )
    return InvokeError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{KEY_REUSED}: this entity already ran a command with key {clip(key, 80)!r} and "
        "that command's method or body differ from this one; a key names one request, so "
        "send a new key for a new request",
    )


def is_key_reused(error: InvokeError) -> bool:
    return error.code is grpc.StatusCode.FAILED_PRECONDITION and error.message.startswith(
        KEY_REUSED
    )


def is_already_applied(error: InvokeError) -> bool:
    """The error says the command ran before and its reply was too large to keep."""
    return error.code is grpc.StatusCode.ALREADY_EXISTS and error.message.startswith(
        ALREADY_APPLIED
    )


class Records:
    """The idempotency records of one active entity, as stored in the journal."""

    __slots__ = ("_records", "policy")

    def __init__(self, policy: IdempotencyPolicy) -> None:
        self.policy = policy
        self._records: dict[str, IdempotencyRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def load(self, stored: Iterable[IdempotencyRecord], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._records = {
            r.key: r for r in sorted(stored, key=lambda r: r.stored_at) if not self._expired(r, now)
        }

    def _expired(self, record: IdempotencyRecord, now: float) -> bool:
        return now - record.stored_at >= self.policy.window

    def get(self, key: str, now: float | None = None) -> IdempotencyRecord | None:
        record = self._records.get(key)
        if record is None or self._expired(record, time.time() if now is None else now):
            return None
        return record

    def write(
        self, new: Sequence[IdempotencyRecord], now: float | None = None
    ) -> IdempotencyWrite | None:
        """The change a write storing `new` makes (None when there is nothing to keep):
        expired records and the oldest beyond the bound go."""
        if not new and not self._records:
            return None
        now = time.time() if now is None else now
        new_keys = {r.key for r in new}
        kept = [
            r
            for r in self._records.values()
            if r.key not in new_keys and not self._expired(r, now)
        ]
        kept.sort(key=lambda r: r.stored_at)
        live = [*kept, *new]
        over = max(0, len(live) - self.policy.max_keys)
        size = sum(len(r.key) + len(r.data) for r in live[over:])
        # The size bound evicts older records only: this write's own are kept.
        while size > MAX_RECORD_BYTES and over < len(kept):
            size -= len(live[over].key) + len(live[over].data)
            over += 1
        live = live[over:]
        live_keys = {r.key for r in live}
        drop = [k for k in self._records if k not in live_keys and k not in new_keys]
        put = [r for r in new if r.key in live_keys]
        return IdempotencyWrite(put=put, drop=drop, live=live, window=self.policy.window)

    def stored(self, change: IdempotencyWrite) -> None:
        """The write carrying `change` landed."""
        for key in change.drop:
            self._records.pop(key, None)
        for record in change.put:
            self._records[record.key] = record
