"""Inbound receipts and returns: every rule of CONTRACT.md section 2 and each dead-letter reason."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from punchcard_contract import (
    MAX_VALUE_BYTES,
    DeadLetterReason,
    InvalidEventError,
    content_fingerprint,
    decode_receipt,
    decode_return,
)
from punchcard_contract.decoding import decode_receipt_exactly, decode_return_exactly


def a_receipt(**changes: Any) -> dict[str, Any]:
    """The contract's example receipt; a change of ``None`` removes the field."""
    receipt: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "6f1c2a5e-3b9d-4c1e-9a57-0d2f4b8e7a10",
        "transaction_no": "S0042-T03-20261122-000123",
        "store_id": "S0042",
        "terminal_id": "T03",
        "customer_id": "C000123",
        "occurred_at": "2026-11-22T10:15:30+09:00",
        "currency": "JPY",
        "total": "1980",
        "lines": [
            {
                "sku": "4901234567890",
                "description": "Green tea 500ml",
                "quantity": 2,
                "unit_price": "150",
                "amount": "300",
            }
        ],
        "coupons": [{"coupon_id": "TEA-10OFF", "uses": 1}],
        "points_used": 100,
        "points_earned": 19,
    }
    for key, value in changes.items():
        if value is None:
            receipt.pop(key, None)
        else:
            receipt[key] = value
    return receipt


def a_return(**changes: Any) -> dict[str, Any]:
    """The contract's example return; a change of ``None`` removes the field."""
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "0e4a3f7b-7c55-4b8a-8f43-2a1d9c6b5e01",
        "transaction_no": "S0042-T03-20261122-000123",
        "store_id": "S0042",
        "terminal_id": "T01",
        "occurred_at": "2026-11-23T09:00:00+09:00",
        "reason": "changed mind",
    }
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def encoded(document: object) -> bytes:
    return json.dumps(document).encode("utf-8")


def refusal(value: bytes | None) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as caught:
        decode_receipt(value)
    return caught.value


def test_the_contract_example_receipt_is_valid() -> None:
    """The example of CONTRACT.md decodes with every field as written."""
    parsed = decode_receipt(encoded(a_receipt()))
    event = parsed.event
    assert event.customer_id == "C000123"
    assert event.total == Decimal("1980")
    assert event.lines[0].quantity == Decimal(2)
    assert event.coupon_uses() == {"TEA-10OFF": 1}
    assert (event.points_used, event.points_earned) == (100, 19)
    assert event.occurred_at.isoformat() == "2026-11-22T10:15:30+09:00"


def test_the_document_is_the_text_exactly_as_sent() -> None:
    """Whitespace, key order and number spelling of the original survive in ``document``."""
    text = '{ "total":"1980" , ' + encoded(a_receipt(total=None)).decode()[1:]
    assert decode_receipt(text.encode()).document == text


def test_unknown_fields_are_allowed_and_kept_in_the_document() -> None:
    """Fields the contract does not name are accepted and stored with the receipt."""
    receipt = a_receipt(loyalty_tier="gold")
    receipt["lines"][0]["tax_rate"] = "0.08"
    receipt["coupons"][0]["campaign"] = "autumn"
    parsed = decode_receipt(encoded(receipt))
    stored = json.loads(parsed.document)
    assert stored["loyalty_tier"] == "gold"
    assert stored["lines"][0]["tax_rate"] == "0.08"
    assert stored["coupons"][0]["campaign"] == "autumn"
    assert not hasattr(parsed.event, "loyalty_tier")


def test_an_event_id_need_not_be_a_uuid() -> None:
    """Any non-empty text up to 128 characters is an event id."""
    assert decode_receipt(encoded(a_receipt(event_id="pos-7/42"))).event.event_id == "pos-7/42"


@pytest.mark.parametrize("event_id", ["", "x" * 129, 42])
def test_an_empty_overlong_or_numeric_event_id_is_a_schema_violation(event_id: object) -> None:
    """An event id is 1 to 128 characters of text."""
    assert refusal(encoded(a_receipt(event_id=event_id))).reason == "schema_violation"


@pytest.mark.parametrize("field", ["transaction_no", "store_id", "terminal_id", "customer_id"])
@pytest.mark.parametrize("identifier", ["", "x" * 65, "S 42", "S/42"])
def test_each_receipt_identifier_follows_the_identifier_rule(field: str, identifier: str) -> None:
    """transaction_no, store_id, terminal_id and customer_id are 1-64 allowed characters."""
    error = refusal(encoded(a_receipt(**{field: identifier})))
    assert error.reason == "schema_violation"
    assert field in error.detail


@pytest.mark.parametrize("identifier", ["", "x" * 65, "TEA 10"])
def test_a_coupon_id_follows_the_identifier_rule(identifier: str) -> None:
    """coupon_id is an identifier too."""
    error = refusal(encoded(a_receipt(coupons=[{"coupon_id": identifier}])))
    assert "coupons.0.coupon_id" in error.detail


@pytest.mark.parametrize("field", ["transaction_no", "store_id", "terminal_id", "occurred_at"])
def test_a_missing_required_field_is_a_schema_violation(field: str) -> None:
    """A receipt without its transaction, store, terminal or time is refused."""
    error = refusal(encoded(a_receipt(**{field: None})))
    assert error.reason == "schema_violation"
    assert f"{field}: Field required" in error.detail


@pytest.mark.parametrize("currency", ["jpy", "JP", "JPYY", "12A"])
def test_a_currency_is_three_uppercase_letters(currency: str) -> None:
    """Currency codes look like JPY."""
    assert refusal(encoded(a_receipt(currency=currency))).reason == "schema_violation"


def test_an_anonymous_sale_without_customer_id_or_points_is_valid() -> None:
    """A receipt with no customer is stored as an anonymous sale."""
    receipt = a_receipt(customer_id=None, points_used=None, points_earned=None)
    assert decode_receipt(encoded(receipt)).event.customer_id is None


def test_an_anonymous_sale_with_a_null_customer_id_is_valid() -> None:
    """customer_id may be sent as null."""
    receipt = a_receipt(points_used=0, points_earned=0)
    receipt["customer_id"] = None
    assert decode_receipt(encoded(receipt)).event.customer_id is None


@pytest.mark.parametrize("points", [{"points_used": 1}, {"points_earned": 1}])
def test_an_anonymous_sale_with_points_is_a_schema_violation(points: dict[str, int]) -> None:
    """Points on a sale with no customer have nobody to belong to."""
    receipt = a_receipt(customer_id=None, **{"points_used": 0, "points_earned": 0, **points})
    error = refusal(encoded(receipt))
    assert error.reason == "schema_violation"
    assert "anonymous" in error.detail


def test_points_default_to_zero() -> None:
    """Absent points are 0."""
    event = decode_receipt(encoded(a_receipt(points_used=None, points_earned=None))).event
    assert (event.points_used, event.points_earned) == (0, 0)


@pytest.mark.parametrize("field", ["points_used", "points_earned"])
@pytest.mark.parametrize("points", [0, 1_000_000_000])
def test_points_at_either_bound_are_valid(field: str, points: int) -> None:
    """0 and 1,000,000,000 are both allowed."""
    assert getattr(decode_receipt(encoded(a_receipt(**{field: points}))).event, field) == points


@pytest.mark.parametrize("field", ["points_used", "points_earned"])
@pytest.mark.parametrize("points", [-1, 1_000_000_001, "100", 1.5, 100.0, True])
def test_points_outside_the_bounds_or_not_integers_are_refused(field: str, points: object) -> None:
    """Points are JSON integers from 0 to 1,000,000,000."""
    error = refusal(encoded(a_receipt(**{field: points})))
    assert error.reason == "schema_violation"
    assert field in error.detail


def a_line(quantity: object = 1) -> dict[str, object]:
    return {
        "sku": "1",
        "description": "tea",
        "quantity": quantity,
        "unit_price": "1",
        "amount": "1",
    }


@pytest.mark.parametrize("count", [0, 500])
def test_a_receipt_may_have_from_0_to_500_lines(count: int) -> None:
    """No lines and 500 lines are both valid."""
    event = decode_receipt(encoded(a_receipt(lines=[a_line()] * count or []))).event
    assert len(event.lines) == count


def test_a_receipt_with_501_lines_is_refused() -> None:
    """500 lines is the most."""
    assert refusal(encoded(a_receipt(lines=[a_line()] * 501))).reason == "schema_violation"


def test_lines_may_be_absent() -> None:
    """A receipt without a lines field has no lines."""
    assert decode_receipt(encoded(a_receipt(lines=None))).event.lines == []


@pytest.mark.parametrize("quantity", [0, "0", -1, "-0.5"])
def test_a_quantity_of_zero_or_less_is_refused(quantity: object) -> None:
    """A line's quantity is greater than 0."""
    error = refusal(encoded(a_receipt(lines=[a_line(quantity)])))
    assert "lines.0.quantity" in error.detail


@pytest.mark.parametrize("quantity", ["0.001", 1, "2.5"])
def test_a_fractional_or_whole_positive_quantity_is_valid(quantity: object) -> None:
    """Weighed goods have fractional quantities."""
    event = decode_receipt(encoded(a_receipt(lines=[a_line(quantity)]))).event
    assert event.lines[0].quantity == Decimal(str(quantity))


def test_numbers_in_the_json_are_read_exactly() -> None:
    """JSON numbers never pass through a binary float: 0.1 + 0.2 is exactly 0.3."""
    text = encoded(a_receipt(total=None))[:-1] + b', "total": 0.1}'
    line = b'{"sku":"1","description":"x","quantity":1,"unit_price":0.2,"amount":1e-30}'
    text = text.replace(b'"lines": [', b'"lines": [' + line + b", ")
    event = decode_receipt(text).event
    assert event.total + event.lines[0].unit_price == Decimal("0.3")
    assert event.lines[0].amount == Decimal("1e-30")
    assert str(event.lines[0].amount) == "1E-30"


def test_money_as_a_string_is_read_exactly() -> None:
    """A money string keeps all of its digits and its scale."""
    event = decode_receipt(encoded(a_receipt(total="1980.10"))).event
    assert str(event.total) == "1980.10"


def test_the_same_coupon_twice_is_summed_in_first_seen_order() -> None:
    """coupon_uses() adds the uses of a coupon listed more than once."""
    coupons = [
        {"coupon_id": "B", "uses": 2},
        {"coupon_id": "A"},
        {"coupon_id": "B", "uses": 3},
    ]
    uses = decode_receipt(encoded(a_receipt(coupons=coupons))).event.coupon_uses()
    assert list(uses.items()) == [("B", 5), ("A", 1)]


@pytest.mark.parametrize("count", [0, 50])
def test_a_receipt_may_have_from_0_to_50_coupons(count: int) -> None:
    """No coupons and 50 coupon entries are both valid."""
    coupons = [{"coupon_id": f"C{index}"} for index in range(count)]
    assert len(decode_receipt(encoded(a_receipt(coupons=coupons))).event.coupons) == count


def test_a_receipt_with_51_coupons_is_refused() -> None:
    """50 coupon entries is the most."""
    coupons = [{"coupon_id": f"C{index}"} for index in range(51)]
    assert refusal(encoded(a_receipt(coupons=coupons))).reason == "schema_violation"


@pytest.mark.parametrize("uses", [1, 100])
def test_coupon_uses_at_either_bound_are_valid(uses: int) -> None:
    """uses may be 1 to 100."""
    coupons = [{"coupon_id": "TEA", "uses": uses}]
    assert decode_receipt(encoded(a_receipt(coupons=coupons))).event.coupon_uses() == {"TEA": uses}


@pytest.mark.parametrize("uses", [0, 101, -1, "2", 1.5])
def test_coupon_uses_outside_1_to_100_are_refused(uses: object) -> None:
    """uses is an integer from 1 to 100."""
    error = refusal(encoded(a_receipt(coupons=[{"coupon_id": "TEA", "uses": uses}])))
    assert "coupons.0.uses" in error.detail


def test_coupon_uses_default_to_one() -> None:
    """A coupon entry without uses is used once."""
    coupons = [{"coupon_id": "TEA"}]
    assert decode_receipt(encoded(a_receipt(coupons=coupons))).event.coupon_uses() == {"TEA": 1}


def test_a_time_without_an_offset_is_a_schema_violation() -> None:
    """occurred_at must carry its offset."""
    error = refusal(encoded(a_receipt(occurred_at="2026-11-22T10:15:30")))
    assert error.reason == "schema_violation"
    assert "occurred_at" in error.detail


def test_a_value_over_1_mib_is_payload_too_large() -> None:
    """Size is checked first, before any parsing."""
    value = b"{" + b" " * MAX_VALUE_BYTES + b"}"
    assert refusal(value).reason == "payload_too_large"


def test_a_valid_value_of_exactly_1_mib_is_accepted() -> None:
    """1 MiB itself is within the limit."""
    value = encoded(a_receipt())
    value = value[:-1] + b" " * (MAX_VALUE_BYTES - len(value)) + b"}"
    assert len(value) == MAX_VALUE_BYTES
    assert decode_receipt(value).event.store_id == "S0042"


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b'{"total": NaN}',
        b'{"total": Infinity}',
        b'{"total": -Infinity}',
        b"\xef\xbb\xbf{}",
        b'{"a": "\\ud800"}',
        b'{"a": "nul \\u0000"}',
        b"[" * 100_000,
        b'{"n": ' + b"9" * 5000 + b"}",
    ],
)
def test_values_that_are_not_a_storable_json_object_are_invalid_json(value: bytes | None) -> None:
    """A tombstone, non-UTF-8, non-JSON, a non-object, NaN or unstorable text is invalid_json."""
    assert refusal(value).reason == "invalid_json"


def test_another_schema_version_is_unsupported() -> None:
    """schema_version 2 goes to the DLQ as unsupported_schema_version."""
    error = refusal(encoded(a_receipt(schema_version=2)))
    assert error.reason == "unsupported_schema_version"
    assert "2" in error.detail


@pytest.mark.parametrize("version", [b'"1"', b"true", b"1.0", b"0", b"null"])
def test_a_schema_version_that_is_not_the_integer_1_is_unsupported(version: bytes) -> None:
    """Only the JSON integer 1 is version 1."""
    value = encoded(a_receipt(schema_version=None))[:-1] + b', "schema_version": ' + version + b"}"
    assert refusal(value).reason == "unsupported_schema_version"


def test_the_schema_version_is_checked_before_the_other_rules() -> None:
    """A version 2 receipt is unsupported, even if it breaks version 1's rules."""
    assert refusal(b'{"schema_version": 2}').reason == "unsupported_schema_version"


def test_a_missing_schema_version_is_a_schema_violation() -> None:
    """Without schema_version the event is not a valid version 1 event."""
    error = refusal(encoded(a_receipt(schema_version=None)))
    assert error.reason == "schema_violation"
    assert "schema_version: Field required" in error.detail


def test_a_schema_violation_lists_every_failing_field_path() -> None:
    """The detail names each bad field so an operator can fix the producer."""
    error = refusal(encoded(a_receipt(store_id="", lines=[a_line(0)], currency="yen")))
    assert "store_id" in error.detail
    assert "lines.0.quantity" in error.detail
    assert "currency" in error.detail


def test_a_huge_schema_violation_detail_stays_within_4_kib() -> None:
    """Hundreds of bad lines still give a header of at most 4 KiB."""
    error = refusal(encoded(a_receipt(lines=[a_line(0)] * 400)))
    assert len(error.detail.encode("utf-8")) <= 4096


def test_content_equal_apart_from_event_id_has_the_same_fingerprint() -> None:
    """A redelivery with a new event_id is recognised as the same receipt."""
    first = decode_receipt(encoded(a_receipt(event_id="one")))
    second = decode_receipt(encoded(a_receipt(event_id="two")))
    assert first.fingerprint == second.fingerprint


def test_whitespace_and_key_order_do_not_change_the_fingerprint() -> None:
    """The fingerprint is of the content, not of its formatting."""
    receipt = a_receipt()
    reordered = dict(reversed(list(receipt.items())))
    compact = json.dumps(receipt, separators=(",", ":")).encode()
    assert decode_receipt(compact).fingerprint == decode_receipt(encoded(reordered)).fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"total": "1981"},
        {"total": 1980},
        {"points_earned": 20},
        {"customer_id": "C000124"},
        {"coupons": []},
        {"note": "extra"},
    ],
)
def test_different_content_has_a_different_fingerprint(change: dict[str, object]) -> None:
    """Any change of content, even "1980" against 1980 or an extra field, is a conflict."""
    original = decode_receipt(encoded(a_receipt()))
    changed = decode_receipt(encoded(a_receipt(**change)))
    assert original.fingerprint != changed.fingerprint


@given(
    first=st.text(min_size=1, max_size=128).filter(lambda text: "\x00" not in text),
    second=st.text(min_size=1, max_size=128).filter(lambda text: "\x00" not in text),
    total=st.decimals(allow_nan=False, allow_infinity=False, places=2),
)
def test_the_fingerprint_ignores_the_event_id(first: str, second: str, total: Decimal) -> None:
    """For any event ids and any total, only the event id differs, so fingerprints are equal."""
    one = decode_receipt(encoded(a_receipt(event_id=first, total=str(total))))
    two = decode_receipt(encoded(a_receipt(event_id=second, total=str(total))))
    assert one.fingerprint == two.fingerprint


def test_the_contract_example_return_is_valid() -> None:
    """The example return of CONTRACT.md decodes."""
    parsed = decode_return(encoded(a_return()))
    assert parsed.event.transaction_no == "S0042-T03-20261122-000123"
    assert parsed.event.reason == "changed mind"
    assert parsed.document == encoded(a_return()).decode()


def test_a_return_reason_is_optional_and_unknown_fields_are_kept() -> None:
    """A return may omit its reason and carry fields of its own."""
    parsed = decode_return(encoded(a_return(reason=None, clerk="K7")))
    assert parsed.event.reason is None
    assert json.loads(parsed.document)["clerk"] == "K7"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{" + b" " * MAX_VALUE_BYTES + b"}", "payload_too_large"),
        (None, "invalid_json"),
        (b"{", "invalid_json"),
        (encoded(a_return(schema_version=2)), "unsupported_schema_version"),
        (encoded(a_return(schema_version=None)), "schema_violation"),
        (encoded(a_return(transaction_no="no spaces")), "schema_violation"),
        (encoded(a_return(occurred_at="2026-11-23")), "schema_violation"),
    ],
)
def test_a_bad_return_is_refused_with_its_reason(value: bytes | None, reason: str) -> None:
    """Returns follow the same order of checks as receipts."""
    with pytest.raises(InvalidEventError) as caught:
        decode_return(value)
    assert caught.value.reason == DeadLetterReason(reason)


_TRICKY: st.SearchStrategy[object] = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        1.0,
        1.5,
        0.1,
        1e-30,
        1e400,
        10**30,
        100,
        101,
        1_000_000_001,
        "",
        "1",
        "1.0",
        "-0",
        "+1",
        ".5",
        "5.",
        "1e3",
        "1E-3",
        "NaN",
        "Infinity",
        " 1",
        "1_000",
        "C000123",
        "no spaces",
        "a" * 64,
        "a" * 65,
        "x\n",
        "JPY",
        "jpy",
        "JPYY",
        "2026-11-22T10:15:30+09:00",
        "2026-11-22t10:15:30z",
        "2026-11-22 10:15:30Z",
        "2026-11-22T10:15:30.1234567Z",
        "2026-11-22T10:15:30+0900",
        "2026-11-22T10:15:30",
        "2026-11-22T23:59:60Z",
        "2026-11-22T10:15:30+09:60",
        "2026-02-30T10:15:30Z",
        "2026-11-22T10:15:30-00:00",
        "2026-11-22",
        "é✓",
        [],
        {},
        [{}],
        [{"coupon_id": "A"}],
        [{"coupon_id": "A", "uses": 0}],
        [{"coupon_id": "A", "uses": 1.0}],
    ]
)
_RECEIPT_FIELDS = st.sampled_from(
    [
        "schema_version",
        "event_id",
        "transaction_no",
        "store_id",
        "terminal_id",
        "customer_id",
        "occurred_at",
        "currency",
        "total",
        "lines",
        "coupons",
        "points_used",
        "points_earned",
        "extra",
    ]
)
_LINE_FIELDS = st.sampled_from(["sku", "description", "quantity", "unit_price", "amount"])


def _outcome(decode: Any, value: bytes) -> tuple[str, Any]:
    try:
        parsed = decode(value)
    except InvalidEventError as error:
        return ("refused", (error.reason, error.detail))
    fields = {name: getattr(parsed.event, name) for name in parsed.event.__struct_fields__}
    for name in ("lines", "coupons"):
        # Nested Structs compare by identity of type; their field values are what matters.
        items = fields.get(name)
        if items is not None:
            fields[name] = [tuple(getattr(i, f) for f in i.__struct_fields__) for i in items]
    extra = (parsed.fingerprint,) if hasattr(parsed, "fingerprint") else ()
    return ("accepted", (fields, parsed.document, *extra))


@given(
    changes=st.dictionaries(_RECEIPT_FIELDS, _TRICKY, max_size=3),
    line_changes=st.dictionaries(_LINE_FIELDS, _TRICKY, max_size=2),
    drop=st.booleans(),
)
def test_the_cheap_path_and_the_exact_path_give_the_same_verdict(
    changes: dict[str, object], line_changes: dict[str, object], drop: bool
) -> None:
    """Whatever the record, the fast decoder accepts exactly what pydantic accepts, equally."""
    # _TRICKY hands out the same list and dict objects every time: changing them in place
    # (lines[0] below) would carry over into later examples, and could make them circular.
    changes, line_changes = copy.deepcopy(changes), copy.deepcopy(line_changes)
    receipt = a_receipt()
    for key, change in changes.items():
        if change is None and drop:
            receipt.pop(key, None)
        else:
            receipt[key] = change
    receipt["lines"] = receipt.get("lines") if "lines" in changes else [a_line()]
    lines = receipt["lines"]
    if isinstance(lines, list) and lines and isinstance(lines[0], dict) and line_changes:
        lines[0] = {**lines[0], **line_changes}
    value = json.dumps(receipt, ensure_ascii=False).encode()
    assert _outcome(decode_receipt, value) == _outcome(decode_receipt_exactly, value)


@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "schema_version",
                "event_id",
                "transaction_no",
                "store_id",
                "terminal_id",
                "occurred_at",
                "reason",
                "return_id",
                "extra",
            ]
        ),
        _TRICKY,
        max_size=3,
    ),
    lines=st.none()
    | st.lists(
        st.fixed_dictionaries(
            {"line_no": st.sampled_from([0, 1, 2, 1.0, "1", True, 2**40])},
            optional={"quantity": _TRICKY},
        ),
        max_size=3,
    ),
    return_id=st.sampled_from([None, "R-1", "bad id", 7]),
)
def test_the_cheap_and_exact_paths_agree_on_returns(
    changes: dict[str, object], lines: list[dict[str, object]] | None, return_id: object
) -> None:
    """Returns too, partial ones included: the fast decoder never accepts what is refused."""
    document: dict[str, object] = {**a_return(), **copy.deepcopy(changes)}
    if lines is not None:
        document["lines"] = copy.deepcopy(lines)
        document["return_id"] = return_id
    value = json.dumps(document, ensure_ascii=False, default=str).encode()
    assert _outcome(decode_return, value) == _outcome(decode_return_exactly, value)


@pytest.mark.parametrize(
    "extra",
    [
        {"a": Decimal("1.50"), "b": [Decimal("1E+3"), Decimal("-0.0")], "é": "x\ty\n\x7f"},
        {"é": "✓", "a": 123456789012345678901234567890, "b": 0.1, "c": {"z": 1, "y": None}},
    ],
)
def test_the_cheap_fingerprint_is_the_one_stored_by_earlier_versions(extra: dict[str, Any]) -> None:
    """Byte for byte the same fingerprint, so a redelivery of an older receipt still matches."""
    text = json.dumps({**a_receipt(), "extra": extra}, ensure_ascii=False, default=str)
    text = text.replace('"1.50"', "1.50").replace('"1E+3"', "1E+3").replace('"-0.0"', "-0.0")
    value = text.encode()
    assert decode_receipt(value).fingerprint == content_fingerprint(text)
    assert decode_receipt(value).fingerprint == decode_receipt_exactly(value).fingerprint
