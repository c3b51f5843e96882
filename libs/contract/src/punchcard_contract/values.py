"""Value types shared by the events: identifiers, money and timestamps.

Each type states a rule of CONTRACT.md section 2 once, so every event reads it the same way.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

__all__ = [
    "IDENTIFIER_PATTERN",
    "Count",
    "Identifier",
    "Money",
    "Quantity",
    "Timestamp",
    "parse_decimal",
]

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN),
]
"""``transaction_no``, ``store_id``, ``terminal_id``, ``customer_id``, ``coupon_id``."""

Count = Annotated[int, Strict()]
"""An integer that must arrive as a JSON integer: no ``"100"``, no ``100.0``, no ``true``."""

# The JSON number grammar (RFC 8259 section 6), leading zeros tolerated. Decimal() alone
# would also take " 1", "1_000", "NaN" and "Infinity", none of which is money.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"

# PostgreSQL numeric holds at most 16383 digits after the point; a tighter sanity bound
# keeps a hostile "1e999999999" from reaching (and failing) the database as a poison batch.
_MAX_EXPONENT = 1000
_MAX_DIGITS = 1000


def parse_decimal(value: object) -> Decimal:
    """Read a decimal string or a JSON number exactly, never through a binary float.

    The decoder parses JSON numbers with ``parse_float=Decimal``, so numbers arrive here as
    ``int`` or ``Decimal``; a Python ``float`` has already lost digits and is refused.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a decimal number")  # noqa: TRY004 (pydantic wants ValueError)
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError("a decimal string looks like '1980' or '-12.50'")
        try:
            result = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the pattern already guards this
            raise ValueError("not a decimal number") from exc
    elif isinstance(value, float):
        raise ValueError("a binary float cannot hold money exactly; send a string")  # noqa: TRY004
    else:
        raise ValueError("a decimal must be a JSON number or a decimal string")  # noqa: TRY004
    if not result.is_finite():
        raise ValueError("NaN and Infinity are not decimal numbers")
    exponent = result.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, so never 'n', 'N' or 'F'
    if abs(exponent) > _MAX_EXPONENT or len(result.as_tuple().digits) > _MAX_DIGITS:
        raise ValueError("decimal number out of range")
    return result


_DECIMAL_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number"}, {"type": "string", "pattern": _DECIMAL_PATTERN}]
}

Money = Annotated[
    Decimal,
    BeforeValidator(parse_decimal),
    WithJsonSchema(_DECIMAL_JSON_SCHEMA, mode="validation"),
]
"""An exact amount of money, from a decimal string or a JSON number."""

Quantity = Annotated[
    Decimal,
    BeforeValidator(parse_decimal),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _DECIMAL_PATTERN.replace("^-?", "^")},
            ],
            "description": "An exact decimal greater than 0.",
        },
        mode="validation",
    ),
]
"""How many of a line's item were sold: an exact decimal greater than zero."""

# RFC 3339 section 5.6 date-time; the offset is mandatory ("T" may be "t", or a space as
# the RFC's note allows). A bare date, a local time or a unix number is not a timestamp.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _require_rfc3339(value: object) -> object:
    """Let only RFC 3339 text with an offset (or an aware datetime) reach the parser.

    pydantic would otherwise also accept unix numbers and bare dates.
    """
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError(
        "a timestamp is RFC 3339 text with an offset, like '2026-11-22T10:15:30+09:00'"
    )


Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_rfc3339)]
"""An RFC 3339 time with its offset, kept as given."""
