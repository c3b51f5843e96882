"""Opaque page cursors: the keyset of the last row shown, as URL-safe base64 of JSON.

A keyset (not an offset) is what keeps paging stable while rows are being inserted:
the next page starts strictly after the last row seen, whatever arrived meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from punchcard_coupon_query.models import IDENTIFIER_PATTERN

__all__ = [
    "InvalidCursorError",
    "LedgerCursor",
    "ReceiptCursor",
    "decode_ledger_cursor",
    "decode_receipt_cursor",
    "encode_ledger_cursor",
    "encode_receipt_cursor",
]

_BIGINT_MAX = 2**63 - 1
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_MAX_CURSOR_CHARS = 512


class InvalidCursorError(ValueError):
    """The cursor was not made by this service (or was altered)."""


@dataclass(frozen=True, slots=True)
class LedgerCursor:
    """Continue the points ledger below this (occurred_at, ledger id)."""

    occurred_at: datetime
    id: int


@dataclass(frozen=True, slots=True)
class ReceiptCursor:
    """Continue the receipts below this (occurred_at, transaction_no)."""

    occurred_at: datetime
    transaction_no: str


def _encode(payload: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, object]:
    if len(cursor) > _MAX_CURSOR_CHARS:
        raise InvalidCursorError("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError("cursor is not one this service made") from exc
    if not isinstance(payload, dict):
        raise InvalidCursorError("cursor is not one this service made")
    return payload


def encode_ledger_cursor(cursor: LedgerCursor) -> str:
    """The opaque text of a ledger cursor (time kept to the microsecond, as stored)."""
    return _encode({"t": _micros(cursor.occurred_at), "l": cursor.id})


def decode_ledger_cursor(cursor: str) -> LedgerCursor:
    """Read a ledger cursor, or raise ``InvalidCursorError``."""
    payload = _decode(cursor)
    micros, value = payload.get("t"), payload.get("l")
    if type(value) is not int or not 0 < value <= _BIGINT_MAX or type(micros) is not int:
        raise InvalidCursorError("cursor is not a points cursor")
    return LedgerCursor(occurred_at=_moment(micros, "points"), id=value)


def _micros(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // _MICROSECOND


def _moment(micros: int, kind: str) -> datetime:
    try:
        return _EPOCH + micros * _MICROSECOND
    except OverflowError as exc:
        raise InvalidCursorError(f"cursor is not a {kind} cursor") from exc


def encode_receipt_cursor(cursor: ReceiptCursor) -> str:
    """The opaque text of a receipts cursor (time kept to the microsecond, as stored)."""
    return _encode({"t": _micros(cursor.occurred_at), "x": cursor.transaction_no})


def decode_receipt_cursor(cursor: str) -> ReceiptCursor:
    """Read a receipts cursor, or raise ``InvalidCursorError``."""
    payload = _decode(cursor)
    micros, transaction_no = payload.get("t"), payload.get("x")
    if (
        type(micros) is not int
        or not isinstance(transaction_no, str)
        or not _IDENTIFIER.fullmatch(transaction_no)
    ):
        raise InvalidCursorError("cursor is not a receipts cursor")
    return ReceiptCursor(occurred_at=_moment(micros, "receipts"), transaction_no=transaction_no)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.resolution
