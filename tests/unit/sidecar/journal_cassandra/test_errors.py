"""Which journal error a driver error becomes, and the retry policy behind it."""

from __future__ import annotations

import pytest
from cassandra import (
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    Unavailable,
    WriteFailure,
    WriteTimeout,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown
from cassandra.policies import RetryPolicy, WriteType
from cassandra.protocol import ErrorMessage, OverloadedErrorMessage, ServerError
from cassandra.query import SimpleStatement
from larder_sidecar.journal.base import (
    ConcurrentWriteError,
    JournalUnavailable,
    WriteOutcomeUnknown,
)
from larder_sidecar.journal.cassandra_errors import JournalRetryPolicy, describe, translate

CL = ConsistencyLevel.QUORUM


def _cas_timeout() -> WriteTimeout:
    return WriteTimeout(
        "Operation timed out - received only 0 responses.",
        consistency=ConsistencyLevel.SERIAL,
        required_responses=1,
        received_responses=0,
        write_type=WriteType.CAS,
    )


NOT_SENT = [
    NoHostAvailable("Unable to connect to any servers", {"127.0.0.1": OSError("refused")}),
    Unavailable(
        "Cannot achieve consistency level QUORUM",
        consistency=CL,
        required_replicas=2,
        alive_replicas=1,
    ),
    OverloadedErrorMessage(0x1001, "overloaded", None),
]
MAYBE_APPLIED = [
    _cas_timeout(),
    WriteTimeout(
        "timed out",
        consistency=CL,
        required_responses=2,
        received_responses=1,
        write_type=WriteType.SIMPLE,
    ),
    WriteFailure(
        "failed",
        consistency=CL,
        required_responses=2,
        received_responses=1,
        failures=1,
        write_type=WriteType.BATCH,
    ),
    OperationTimedOut({"127.0.0.1": "Client request timeout"}, "127.0.0.1"),
    ConnectionShutdown("Connection to 127.0.0.1 was closed"),
    ServerError(0x0000, "java.lang.RuntimeException", None),
    ErrorMessage(0x1700, "CAS_WRITE_UNKNOWN", None),
]


@pytest.mark.parametrize("error", NOT_SENT, ids=lambda e: type(e).__name__)
def test_writes_that_never_ran_are_unavailable(error: Exception) -> None:
    mapped = translate(error, writing=True, what="append events to t|1")
    assert type(mapped) is JournalUnavailable
    assert "append events to t|1" in str(mapped)


@pytest.mark.parametrize("error", MAYBE_APPLIED, ids=lambda e: type(e).__name__)
def test_writes_that_may_have_landed_have_unknown_outcome(error: Exception) -> None:
    mapped = translate(error, writing=True, what="append events to t|1")
    assert isinstance(mapped, WriteOutcomeUnknown)
    assert "reload" in str(mapped)


@pytest.mark.parametrize("error", NOT_SENT + MAYBE_APPLIED, ids=lambda e: type(e).__name__)
def test_failed_reads_are_unavailable(error: Exception) -> None:
    mapped = translate(error, writing=False, what="read the events of t|1")
    assert type(mapped) is JournalUnavailable


def test_a_missing_table_is_unavailable_and_says_why() -> None:
    mapped = translate(
        InvalidRequest("unconfigured table events"), writing=True, what="append events to t|1"
    )
    assert type(mapped) is JournalUnavailable
    assert "tables may be missing" in str(mapped)


def test_journal_errors_pass_through() -> None:
    error = ConcurrentWriteError("taken")
    assert translate(error, writing=True, what="x") is error


def test_cas_timeouts_are_named() -> None:
    assert "lightweight transaction" in describe(_cas_timeout())


def test_retry_policy_never_resends_a_write() -> None:
    policy = JournalRetryPolicy()
    write = SimpleStatement("INSERT ...", is_idempotent=False)
    read = SimpleStatement("SELECT ...", is_idempotent=True)
    for write_type in (WriteType.CAS, WriteType.BATCH_LOG, WriteType.UNLOGGED_BATCH):
        decision, _ = policy.on_write_timeout(write, CL, write_type, 2, 1, 0)
        assert decision == RetryPolicy.RETHROW
    error = ConnectionShutdown("closed")
    assert policy.on_request_error(write, CL, error, 0)[0] == RetryPolicy.RETHROW
    assert policy.on_request_error(read, CL, error, 0)[0] == RetryPolicy.RETRY_NEXT_HOST
    # Unavailable means no replica ran it: trying another coordinator once is safe.
    assert policy.on_unavailable(write, CL, 2, 1, 0)[0] == RetryPolicy.RETRY_NEXT_HOST
