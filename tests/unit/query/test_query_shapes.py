"""Request validation, cursors and the exported OpenAPI document of coupon-query."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from punchcard_coupon_query import openapi
from punchcard_coupon_query.cursors import (
    InvalidCursorError,
    LedgerCursor,
    ReceiptCursor,
    decode_ledger_cursor,
    decode_receipt_cursor,
    encode_ledger_cursor,
    encode_receipt_cursor,
)
from punchcard_coupon_query.models import MAX_TARGETED_CUSTOMERS, CouponInput
from pydantic import ValidationError


def coupon_body(**changes: Any) -> dict[str, Any]:
    """A valid PUT body, changed as asked."""
    body: dict[str, Any] = {
        "name": "Tea 10% off",
        "uses_permitted": 1,
        "valid_from": "2026-11-01T00:00:00+09:00",
        "valid_until": "2026-12-01T00:00:00+09:00",
    }
    body.update(changes)
    return body


def test_a_complete_coupon_body_is_accepted_with_contract_defaults() -> None:
    """active and restore_on_return default to true; customers and stores to everyone."""
    parsed = CouponInput.model_validate(coupon_body())
    assert parsed.active
    assert parsed.restore_on_return
    assert parsed.customer_ids is None
    assert parsed.store_ids is None


def test_a_window_ending_before_it_starts_is_refused() -> None:
    """valid_until earlier than valid_from makes no sense."""
    with pytest.raises(ValidationError, match="valid_until"):
        CouponInput.model_validate(coupon_body(valid_until="2026-10-01T00:00:00+09:00"))


def test_an_empty_window_is_refused() -> None:
    """valid_until is exclusive, so equal to valid_from leaves no instant at all."""
    with pytest.raises(ValidationError, match="valid_until"):
        CouponInput.model_validate(coupon_body(valid_until="2026-11-01T00:00:00+09:00"))


@pytest.mark.parametrize("uses", [0, -1, 2**31])
def test_uses_permitted_outside_one_and_the_integer_range_is_refused(uses: int) -> None:
    """At least one use, and it must fit the stored integer."""
    with pytest.raises(ValidationError):
        CouponInput.model_validate(coupon_body(uses_permitted=uses))


def test_times_without_an_offset_are_refused() -> None:
    """RFC 3339 requires an offset."""
    with pytest.raises(ValidationError):
        CouponInput.model_validate(coupon_body(valid_from="2026-11-01T00:00:00"))


def test_more_customers_than_the_limit_are_refused() -> None:
    """A coupon may target at most 100,000 customers."""
    too_many = [f"C{i}" for i in range(MAX_TARGETED_CUSTOMERS + 1)]
    with pytest.raises(ValidationError, match="100000"):
        CouponInput.model_validate(coupon_body(customer_ids=too_many))


def test_exactly_the_limit_of_customers_is_accepted() -> None:
    """100,000 customers is allowed."""
    customers = [f"C{i}" for i in range(MAX_TARGETED_CUSTOMERS)]
    assert len(
        CouponInput.model_validate(coupon_body(customer_ids=customers)).customer_ids or []
    ) == (MAX_TARGETED_CUSTOMERS)


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "C/1", "C\u00e9"])
def test_identifiers_outside_the_contract_are_refused(bad: str) -> None:
    """1 to 64 characters of A-Z a-z 0-9 . _ : -."""
    with pytest.raises(ValidationError):
        CouponInput.model_validate(coupon_body(customer_ids=[bad]))


def test_unknown_fields_in_a_coupon_body_are_refused() -> None:
    """A misspelt field would otherwise be silently ignored."""
    with pytest.raises(ValidationError):
        CouponInput.model_validate(coupon_body(uses_permited=3))


def test_a_ledger_cursor_round_trips() -> None:
    """What is encoded decodes to the same keyset."""
    at = datetime(2026, 11, 22, 10, 15, 30, 123456, tzinfo=UTC)
    cursor = LedgerCursor(occurred_at=at, id=42)
    assert decode_ledger_cursor(encode_ledger_cursor(cursor)) == cursor


def test_a_receipt_cursor_round_trips_to_the_microsecond() -> None:
    """The time keeps its microseconds and means the same instant."""
    at = datetime(2026, 11, 22, 10, 15, 30, 123456, tzinfo=timezone(timedelta(hours=9)))
    cursor = ReceiptCursor(occurred_at=at, transaction_no="S1-T1-0001")
    decoded = decode_receipt_cursor(encode_receipt_cursor(cursor))
    assert decoded.occurred_at == at
    assert decoded.occurred_at.tzinfo is UTC
    assert decoded.transaction_no == "S1-T1-0001"


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "!!!",
        _raw("not json"),
        _raw("[1]"),
        _raw('{"l": "1"}'),
        _raw('{"l": 0}'),
        _raw('{"l": 9223372036854775808}'),
        _raw('{"l": true}'),
        "A" * 600,
    ],
)
def test_ledger_cursors_not_made_here_are_refused(bad: str) -> None:
    """Anything but a cursor this service made is InvalidCursorError."""
    with pytest.raises(InvalidCursorError):
        decode_ledger_cursor(bad)


@pytest.mark.parametrize(
    "bad",
    [
        _raw('{"l": 5}'),
        _raw('{"t": 1, "x": 5}'),
        _raw('{"t": 1e3, "x": "T"}'),
        _raw('{"t": 99999999999999999999, "x": "T"}'),
        _raw('{"t": 1, "x": "bad id"}'),
        _raw('{"t": 1, "x": "nul\\u0000"}'),
    ],
)
def test_receipt_cursors_not_made_here_are_refused(bad: str) -> None:
    """A ledger cursor, wrong types, times out of range or a bad id are refused."""
    with pytest.raises(InvalidCursorError):
        decode_receipt_cursor(bad)


def test_the_exported_openapi_document_is_current() -> None:
    """services/coupon-query/openapi.json matches the code; regenerate it if not."""
    assert openapi.main(["--check"]) == 0, "run: uv run python -m punchcard_coupon_query.openapi"


def test_the_openapi_check_fails_for_a_stale_file(tmp_path: Path) -> None:
    """--check reports a file that differs from the code."""
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert openapi.main(["--check", "--output", str(stale)]) == 1


def test_every_error_in_the_openapi_document_is_a_problem_document() -> None:
    """4xx and 5xx answers are declared as application/problem+json, 422 included."""
    spec = openapi.openapi_document()
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59.999999Z"],
)
def test_times_at_the_edges_of_what_can_be_stored_are_refused(moment: str) -> None:
    """The driver would store Python's extreme datetimes as infinities."""
    with pytest.raises(ValidationError, match="time"):
        CouponInput.model_validate(coupon_body(valid_from=None, valid_until=moment))


def test_nul_characters_in_texts_are_refused() -> None:
    """PostgreSQL text cannot store them."""
    with pytest.raises(ValidationError):
        CouponInput.model_validate(coupon_body(description="a\x00b"))
