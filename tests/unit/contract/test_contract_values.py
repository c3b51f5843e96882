"""Identifiers, money and timestamps read exactly as CONTRACT.md section 2 says."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from punchcard_contract import (
    MAX_DETAIL_BYTES,
    DeadLetterReason,
    Identifier,
    InvalidEventError,
    Money,
    Timestamp,
    truncate_detail,
)
from pydantic import BaseModel, ValidationError

IDENTIFIER_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"


class Holder(BaseModel):
    identifier: Identifier | None = None
    money: Money | None = None
    at: Timestamp | None = None


@given(st.text(alphabet=IDENTIFIER_ALPHABET, min_size=1, max_size=64))
def test_every_identifier_of_the_allowed_alphabet_round_trips(identifier: str) -> None:
    """Any 1 to 64 characters of A-Z a-z 0-9 . _ : - are an identifier, kept as given."""
    assert Holder(identifier=identifier).identifier == identifier


def test_an_identifier_of_64_characters_is_accepted() -> None:
    """64 characters is the longest identifier."""
    assert Holder(identifier="x" * 64).identifier == "x" * 64


def test_an_identifier_of_65_characters_is_refused() -> None:
    """65 characters is one too many."""
    with pytest.raises(ValidationError):
        Holder(identifier="x" * 65)


def test_an_empty_identifier_is_refused() -> None:
    """An identifier has at least one character."""
    with pytest.raises(ValidationError):
        Holder(identifier="")


@pytest.mark.parametrize(
    "identifier", ["has space", "slash/no", "ümlaut", "tab\t", "line\n", "comma,", "at@", "C1\n"]
)
def test_an_identifier_with_a_character_outside_the_alphabet_is_refused(identifier: str) -> None:
    """Only A-Z a-z 0-9 . _ : - are allowed, not even a trailing newline."""
    with pytest.raises(ValidationError):
        Holder(identifier=identifier)


def test_a_number_is_not_an_identifier() -> None:
    """A JSON number is not silently turned into an identifier string."""
    with pytest.raises(ValidationError):
        Holder.model_validate({"identifier": 123})


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("1980", Decimal("1980")),
        ("0.1", Decimal("0.1")),
        ("-12.50", Decimal("-12.50")),
        ("1e-30", Decimal("1e-30")),
        (1980, Decimal(1980)),
        (Decimal("0.1"), Decimal("0.1")),
        (Decimal("1E-30"), Decimal("1E-30")),
    ],
)
def test_money_is_read_exactly_from_a_string_or_a_number(sent: object, expected: Decimal) -> None:
    """Money keeps every digit it was sent, as a string or a (Decimal-parsed) number."""
    money = Holder.model_validate({"money": sent}).money
    assert money == expected
    assert str(money) == str(expected)


def test_money_adds_up_exactly() -> None:
    """0.1 + 0.2 is 0.3, which a binary float would get wrong."""
    first = Holder.model_validate({"money": "0.1"}).money
    second = Holder.model_validate({"money": Decimal("0.2")}).money
    assert first is not None
    assert second is not None
    assert first + second == Decimal("0.3")


@pytest.mark.parametrize(
    "sent",
    ["NaN", "Infinity", "-Infinity", "1_000", " 1", "1.", ".5", "0x10", "", "abc"],
)
def test_money_text_that_is_not_a_decimal_number_is_refused(sent: str) -> None:
    """Only the JSON number grammar is money: no NaN, no underscores, no spaces."""
    with pytest.raises(ValidationError):
        Holder.model_validate({"money": sent})


@pytest.mark.parametrize("sent", [True, False, 0.1, Decimal("NaN"), Decimal("Infinity"), [1]])
def test_money_of_a_boolean_a_float_or_a_non_finite_decimal_is_refused(sent: object) -> None:
    """Booleans, binary floats and non-finite decimals are not money."""
    with pytest.raises(ValidationError):
        Holder.model_validate({"money": sent})


def test_money_with_an_absurd_exponent_is_refused() -> None:
    """A number the database could not store is refused at the door, not in a batch."""
    with pytest.raises(ValidationError):
        Holder.model_validate({"money": "1e999999"})


@pytest.mark.parametrize(
    ("sent", "offset"),
    [
        ("2026-11-22T10:15:30+09:00", timedelta(hours=9)),
        ("2026-11-22T10:15:30Z", timedelta(0)),
        ("2026-11-22t10:15:30.250z", timedelta(0)),
        ("2026-11-22T10:15:30-05:30", -timedelta(hours=5, minutes=30)),
    ],
)
def test_a_time_with_an_offset_is_read_and_keeps_its_offset(sent: str, offset: timedelta) -> None:
    """An RFC 3339 time keeps the offset it was sent with."""
    at = Holder.model_validate({"at": sent}).at
    assert at is not None
    assert at.utcoffset() == offset


def test_a_time_serialises_with_the_offset_it_was_given() -> None:
    """A +09:00 time is written back as +09:00, not converted to UTC."""
    holder = Holder.model_validate({"at": "2026-11-22T10:15:30+09:00"})
    assert holder.model_dump(mode="json")["at"] == "2026-11-22T10:15:30+09:00"


@pytest.mark.parametrize(
    "sent",
    [
        "2026-11-22T10:15:30",
        "2026-11-22",
        "2026-11-22T10:15+09:00",
        "22/11/2026 10:15:30+09:00",
        "2026-11-22T25:15:30+09:00",
        1_795_000_000,
        "1795000000",
    ],
)
def test_a_time_without_an_offset_a_bare_date_or_a_unix_number_is_refused(sent: object) -> None:
    """Only RFC 3339 date-times with an offset are timestamps."""
    with pytest.raises(ValidationError):
        Holder.model_validate({"at": sent})


def test_a_naive_datetime_object_is_refused() -> None:
    """A datetime without tzinfo is as ambiguous as text without an offset."""
    with pytest.raises(ValidationError):
        Holder(at=datetime(2026, 11, 22, 10, 15, 30))


def test_a_short_detail_is_kept_whole() -> None:
    """Detail under the limit is not touched."""
    assert truncate_detail("lines.0.quantity: too small") == "lines.0.quantity: too small"


@given(st.text(min_size=0, max_size=3000))
def test_a_detail_is_never_longer_than_4_kib_of_utf8(text: str) -> None:
    """However long or multi-byte the text, the header fits in 4 KiB and is valid UTF-8."""
    detail = InvalidEventError(DeadLetterReason.SCHEMA_VIOLATION, text * 3).detail
    assert len(detail.encode("utf-8", errors="replace")) <= MAX_DETAIL_BYTES


def test_a_long_multibyte_detail_is_cut_on_a_character_boundary() -> None:
    """Cutting 3-byte characters leaves whole characters and an ellipsis."""
    detail = truncate_detail("円" * 5000)
    assert len(detail.encode("utf-8")) <= MAX_DETAIL_BYTES
    assert detail.endswith("…")
    assert set(detail[:-1]) == {"円"}


def test_an_invalid_event_error_reads_as_reason_and_detail() -> None:
    """str() of the error names the reason first, for logs."""
    error = InvalidEventError(DeadLetterReason.INVALID_JSON, "value is not JSON")
    assert error.reason is DeadLetterReason.INVALID_JSON
    assert str(error) == "invalid_json: value is not JSON"


def test_the_dead_letter_reasons_are_exactly_those_of_the_contract() -> None:
    """The header values are the five of CONTRACT.md section 4."""
    assert {reason.value for reason in DeadLetterReason} == {
        "invalid_json",
        "schema_violation",
        "unsupported_schema_version",
        "conflicting_duplicate",
        "payload_too_large",
    }
