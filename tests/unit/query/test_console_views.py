"""The console's pure parts: reasons in words, exact JSON, bytes, CSV targets, forms, sign-in."""

from __future__ import annotations

from datetime import UTC, datetime

from punchcard_coupon_query.console.session import (
    csrf_token,
    csrf_token_matches,
    safe_next,
    sign_in_address,
)
from punchcard_coupon_query.console.views import (
    CouponForm,
    coupon_form_errors,
    parse_customer_csv,
    parse_exact_json,
    pretty_json,
    reason_in_words,
    show_bytes,
)
from punchcard_coupon_query.eligibility import CouponTerms, evaluate

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _terms(**changes: object) -> CouponTerms:
    values: dict[str, object] = {
        "coupon_id": "TEA-10OFF",
        "name": "Tea",
        "description": "",
        "uses_permitted": 3,
        "valid_from": None,
        "valid_until": None,
        "active": True,
        "targeted": False,
        "store_ids": None,
    }
    values.update(changes)
    return CouponTerms(**values)  # type: ignore[arg-type]


def _words(uses: int = 0, store_id: str | None = None, **changes: object) -> str:
    decision = evaluate(
        _terms(**changes), uses_made=uses, issued_to_customer=False, store_id=store_id, at=NOW
    )
    return reason_in_words(decision, store_id=store_id)


def test_each_reason_reads_as_the_service_desk_would_say_it() -> None:
    """Uses, dates and stores are named; an eligible coupon has no reason."""
    assert _words(uses=3) == "used 3 of 3 times"
    assert _words(uses=1, uses_permitted=1) == "used 1 of 1 time"
    assert _words(valid_from=datetime(2026, 12, 1, tzinfo=UTC)) == "starts 1 Dec 2026"
    assert _words(valid_until=datetime(2026, 11, 1, tzinfo=UTC)) == "ended 1 Nov 2026"
    assert _words(store_id="S0042", store_ids=frozenset({"S0001"})) == "not valid at store S0042"
    assert _words(active=False) == "deactivated"
    assert _words(targeted=True) == "issued to other customers"
    assert _words(uses=2) == ""


def test_held_and_sold_out_coupons_read_as_the_service_desk_would_say_it() -> None:
    """A use waiting at a checkout, and a campaign whose uses are all made or held."""
    held = evaluate(
        _terms(), uses_made=1, issued_to_customer=False, store_id=None, at=NOW, uses_reserved=2
    )
    assert reason_in_words(held, store_id=None) == "2 held at a checkout"
    sold_out = evaluate(
        _terms(total_uses_permitted=500),
        uses_made=0,
        issued_to_customer=False,
        store_id=None,
        at=NOW,
        total_taken=500,
    )
    assert reason_in_words(sold_out, store_id=None) == "sold out: all 500 uses made or held"


def test_json_numbers_stay_exactly_as_they_were_sent() -> None:
    """Money is never read through a float, so 0.1 stays 0.1 and 1e2 keeps its digits."""
    document = parse_exact_json('{"total": 1980.10, "points": 19, "odd": 0.1, "list": [], "m": {}}')
    assert pretty_json(document) == (
        '{\n  "total": 1980.10,\n  "points": 19,\n  "odd": 0.1,\n  "list": [],\n  "m": {}\n}'
    )


def test_bytes_are_shown_as_json_text_or_hex_as_they_allow() -> None:
    """A dead letter's bytes are readable whatever they are."""
    assert show_bytes(b'{"a": [1]}').kind == "json"
    assert show_bytes(b"not json").text == "not json"
    shown = show_bytes(b"\xff\x00ab")
    assert (shown.kind, shown.text) == ("hex", "00000000  ff 00 61 62")
    assert show_bytes(None).kind == "none"
    assert show_bytes(b"NaN").kind == "text"


def test_a_csv_of_customer_ids_counts_each_once_and_skips_a_header() -> None:
    """First column, one id a line, repeats once, a header line and blank lines ignored."""
    parsed = parse_customer_csv(b"\xef\xbb\xbfcustomer_id,name\nC1,Ann\r\n\nC2\nC1\n", limit=10)
    assert (parsed.customer_ids, parsed.errors) == (["C1", "C2"], [])


def test_a_csv_with_a_bad_id_is_refused_whole_with_its_lines_named() -> None:
    """A campaign for the wrong customers is worse than none."""
    parsed = parse_customer_csv(b"C1\nnot an id\nC3\n", limit=10)
    assert parsed.customer_ids == []
    assert parsed.errors == ["line 2: 'not an id' is not a customer id"]
    assert parse_customer_csv(b"C1\nC2\nC3\n", limit=2).errors == [
        "3 customers; a coupon can be issued to 2 at most"
    ]
    assert parse_customer_csv(b"", limit=2).errors == ["the file holds no customer ids"]


def test_a_hundred_thousand_ids_are_read_in_one_pass() -> None:
    """The largest campaign the API takes fits the upload."""
    data = "\n".join(f"C{i:07d}" for i in range(100_000)).encode()
    assert len(parse_customer_csv(data, limit=100_000).customer_ids) == 100_000


def test_form_errors_follow_the_apis_rules_and_sit_by_their_fields() -> None:
    """The coupon form is checked by CouponInput itself; messages are keyed by field."""
    form = CouponForm(coupon_id="bad id", name="", uses_permitted="0", valid_from="yesterday")
    coupon, errors = coupon_form_errors(form, None)
    assert coupon is None
    assert set(errors) == {"coupon_id", "name", "uses_permitted", "valid_from"}
    window = CouponForm(
        coupon_id="XMAS",
        name="Cake",
        valid_from="2026-12-02T00:00:00+09:00",
        valid_until="2026-12-01T00:00:00+09:00",
    )
    assert coupon_form_errors(window, None)[1] == {
        "valid_until": ["valid_until must be later than valid_from"]
    }
    good = CouponForm(coupon_id="XMAS", name="Cake", uses_permitted="2", store_ids="S1, S2\nS3")
    coupon, errors = coupon_form_errors(good, ["C1"])
    assert errors == {}
    assert coupon is not None
    assert (coupon.uses_permitted, coupon.store_ids, coupon.customer_ids) == (
        2,
        ["S1", "S2", "S3"],
        ["C1"],
    )


def test_sign_in_returns_only_to_console_addresses_of_this_site() -> None:
    """A crafted ``next`` cannot send a freshly signed-in person to another site."""
    assert safe_next("/console/customers/C1?ineligible=true") == (
        "/console/customers/C1?ineligible=true"
    )
    for elsewhere in (None, "", "//evil.example", "https://evil.example/console/", "/v1/coupons"):
        assert safe_next(elsewhere) == "/console/"
    assert safe_next("/console/\\evil") == "/console/"
    assert sign_in_address("/console/coupons", "active=yes") == (
        "/console/?next=%2Fconsole%2Fcoupons%3Factive%3Dyes"
    )
    assert sign_in_address("/console/", "") == "/console/"


def test_a_forms_token_belongs_to_its_key_and_gives_the_key_away_to_nobody() -> None:
    """Derived by HMAC: another key's token, or none, does not match."""
    token = csrf_token("pc_key_one")
    assert "pc_key_one" not in token
    assert csrf_token_matches(token, csrf_token("pc_key_one"))
    assert not csrf_token_matches(token, csrf_token("pc_key_two"))
    assert not csrf_token_matches(token, None)
