"""Whose fault a failure is: the record's (dead-letter it, set it aside) or ours (halt, retry)."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
)
from punchcard_platform.db import is_retryable, is_the_records_fault, is_unavailable
from punchcard_platform.kafka import describe_refusal, is_refused_for_good


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.NumericValueOutOfRangeError("value out of range"),
        asyncpg.InvalidTextRepresentationError("invalid input syntax"),
        asyncpg.StringDataRightTruncationError("value too long"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.CheckViolationError("violates check constraint"),
        asyncpg.ForeignKeyViolationError("violates foreign key constraint"),
    ],
    ids=lambda e: e.sqlstate,
)
def test_data_exceptions_and_integrity_violations_are_the_records_fault(
    error: asyncpg.PostgresError,
) -> None:
    """Classes 22 and 23 come from what the record says: it is dead-lettered."""
    assert is_the_records_fault(error)
    assert not is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        TypeError("unsupported operand"),
        LookupError("no standing receipt"),
        KeyError("coupon_id"),
        asyncpg.InsufficientPrivilegeError("permission denied for table receipts"),
        asyncpg.RaiseError("raised by a trigger"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        asyncpg.UndefinedTableError("relation does not exist"),
        asyncpg.UndefinedColumnError("column does not exist"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    ],
    ids=lambda e: getattr(e, "sqlstate", None) or type(e).__name__,
)
def test_bugs_privileges_triggers_and_read_only_databases_are_not_the_records_fault(
    error: Exception,
) -> None:
    """A fault of the code or the environment halts the consumer instead of dead-lettering."""
    assert not is_the_records_fault(error)
    assert not is_retryable(error)
    assert not is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        MessageSizeTooLargeError(),
        MessageSizeTooLargeError("larger than the max_request_size configuration"),
        RecordListTooLargeError(),
        InvalidTopicError(),
    ],
    ids=repr,
)
def test_a_record_too_large_or_for_an_invalid_topic_is_refused_for_good(error: Exception) -> None:
    """The relay sets such an output event aside instead of holding the rest behind it."""
    assert is_refused_for_good(error)
    assert describe_refusal(error).startswith(str(error))


@pytest.mark.parametrize(
    "error",
    [
        UnknownTopicOrPartitionError(),
        NotLeaderForPartitionError(),
        KafkaTimeoutError(),
        OutOfOrderSequenceNumber(),
    ],
    ids=repr,
)
def test_a_missing_topic_a_moving_leader_or_a_timeout_is_tried_again(error: Exception) -> None:
    """These may pass on a later try: the relay keeps the row and its place."""
    assert not is_refused_for_good(error)
