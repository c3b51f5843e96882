"""Whose fault a failed batch is: the record's (dead-letter it) or ours (halt and retry)."""

from __future__ import annotations

import asyncpg
import pytest
from punchcard_platform.db import is_retryable, is_the_records_fault, is_unavailable


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
