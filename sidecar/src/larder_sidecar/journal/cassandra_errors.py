"""Turning Cassandra driver errors into journal errors, and the retry policy behind them.

The question for every failed write is whether it may have been applied. Only an
error raised before any replica could have stored it (no connection to any node, the
coordinator's own "not enough replicas alive", an overloaded or bootstrapping
coordinator) is `JournalUnavailable`; anything after the request left the client is
`WriteOutcomeUnknown`, which the caller must resolve by reloading, never by retrying.
The retry policy keeps that true: the driver never re-sends a write on its own.
"""

from __future__ import annotations

from typing import Any

from cassandra import (
    CoordinationFailure,
    DriverException,
    InvalidRequest,
    OperationTimedOut,
    ReadTimeout,
    RequestValidationException,
    Timeout,
    Unauthorized,
    Unavailable,
    WriteFailure,
    WriteTimeout,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import RetryPolicy, WriteType
from cassandra.protocol import ErrorMessage, IsBootstrappingErrorMessage, OverloadedErrorMessage

from .base import JournalError, JournalUnavailable, WriteOutcomeUnknown

# Errors that prove the request was not executed by any replica.
_NOT_EXECUTED: tuple[type[BaseException], ...] = (
    NoHostAvailable,
    Unavailable,
    OverloadedErrorMessage,
    IsBootstrappingErrorMessage,
)


DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    DriverException,
    NoHostAvailable,
    ConnectionException,
    ErrorMessage,
    OSError,
)
"""What the driver raises for a failed request; anything else is a bug and propagates."""


class JournalRetryPolicy(RetryPolicy):  # type: ignore[misc]  # the driver is untyped
    """Retries reads as the driver's default does; never re-sends a write.

    A write re-sent after a timeout or a dropped connection could find its own first
    attempt applied and be reported as a conflict, or apply twice in unfenced mode.
    """

    def on_write_timeout(self, *args: Any, **kwargs: Any) -> tuple[int, None]:
        return self.RETHROW, None

    def on_request_error(
        self, query: Any, consistency: Any, error: BaseException, retry_num: int
    ) -> tuple[int, None]:
        if getattr(query, "is_idempotent", False):
            return self.RETRY_NEXT_HOST, None
        return self.RETHROW, None


def describe(error: BaseException) -> str:
    """A short description of a driver error, for messages."""
    if isinstance(error, WriteTimeout) and error.write_type == WriteType.CAS:
        return f"lightweight transaction timed out ({error})"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def translate(error: BaseException, *, writing: bool, what: str) -> JournalError:
    """The journal error for a driver error raised while doing `what`."""
    if isinstance(error, JournalError):
        return error
    cause = describe(error)
    if isinstance(error, Unauthorized | InvalidRequest | RequestValidationException):
        # The request never ran; an operator must fix the schema or the grants.
        return JournalUnavailable(
            f"Cassandra refused to {what}: {cause}; the keyspace or tables may be missing "
            "or the journal's role lacks permissions"
        )
    if not writing or isinstance(error, _NOT_EXECUTED):
        return JournalUnavailable(f"Cassandra could not {what}: {cause}")
    if isinstance(error, WriteTimeout | WriteFailure | OperationTimedOut | ConnectionException):
        return WriteOutcomeUnknown(
            f"could not confirm that Cassandra did {what}: {cause}; it may or may not be "
            "stored, reload before writing again"
        )
    if isinstance(error, ReadTimeout | Timeout | CoordinationFailure | DriverException):
        return WriteOutcomeUnknown(
            f"Cassandra failed while asked to {what}: {cause}; the write may or may not "
            "be stored, reload before writing again"
        )
    # Server errors the driver does not know (such as a newer protocol's
    # CAS_WRITE_UNKNOWN) say nothing about whether the write landed.
    return WriteOutcomeUnknown(
        f"Cassandra answered an unexpected error to {what}: {cause}; the write may or "
        "may not be stored, reload before writing again"
    )
