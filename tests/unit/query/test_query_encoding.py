"""The hot routes' hand-built JSON is byte for byte what the documented models write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from punchcard_coupon_query.eligibility import CouponTerms, evaluate, is_listed
from punchcard_coupon_query.eligibility import Eligibility as Decision
from punchcard_coupon_query.listing import coupon_list_json
from punchcard_coupon_query.models import (
    CustomerCoupons,
    Eligibility,
    customer_coupons_json,
    eligibility_json,
)

_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
_OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(0)), timezone(timedelta(hours=9)), timezone(-timedelta(hours=3.5))]
)
_TIMES = st.datetimes(
    min_value=datetime(1, 1, 3),
    max_value=datetime(9999, 12, 30),
    timezones=_OFFSETS,
)
_TERMS = st.builds(
    CouponTerms,
    coupon_id=_IDS,
    name=st.text(min_size=1, max_size=40),
    description=st.text(max_size=80),
    uses_permitted=st.none() | st.integers(1, 2**31 - 1),
    valid_from=st.none() | _TIMES,
    valid_until=st.none() | _TIMES,
    active=st.booleans(),
    targeted=st.booleans(),
    store_ids=st.none() | st.frozensets(_IDS | st.sampled_from(["S1", "S2"]), max_size=3),
    total_uses_permitted=st.none() | st.integers(1, 12),
)
_DECISIONS: st.SearchStrategy[Decision] = st.builds(
    lambda terms, uses, issued, store, at, reserved, taken: evaluate(
        terms,
        uses_made=uses,
        issued_to_customer=issued,
        store_id=store,
        at=at,
        uses_reserved=reserved,
        total_taken=taken,
    ),
    _TERMS,
    st.integers(0, 2**31),
    st.booleans(),
    st.none() | _IDS,
    _TIMES,
    st.integers(0, 100),
    st.integers(0, 2**40),
)


@given(decision=_DECISIONS)
def test_one_eligibility_is_encoded_as_the_model_encodes_it(decision: Decision) -> None:
    """eligibility_json equals Eligibility.of(...).model_dump_json() for any decision."""
    assert eligibility_json(decision) == Eligibility.of(decision).model_dump_json().encode()


@given(customer_id=_IDS, at=_TIMES, decisions=st.lists(_DECISIONS, max_size=5))
def test_a_coupon_list_is_encoded_as_the_model_encodes_it(
    customer_id: str, at: datetime, decisions: list[Decision]
) -> None:
    """customer_coupons_json equals the CustomerCoupons model's JSON, byte for byte."""
    model = CustomerCoupons(
        customer_id=customer_id, at=at, coupons=[Eligibility.of(d) for d in decisions]
    )
    entries = [eligibility_json(d) for d in decisions]
    assert customer_coupons_json(customer_id, at, entries) == model.model_dump_json().encode()


def _listed_by_the_rule(
    customer_id: str,
    at: datetime,
    candidates: list[tuple[CouponTerms, int, bool, int, int]],
    store_id: str | None,
    include_ineligible: bool,
) -> bytes:
    """The list as the rule and the model give it, one coupon at a time, nothing kept."""
    decisions = [
        evaluate(
            terms,
            uses_made=uses,
            issued_to_customer=issued,
            store_id=store_id,
            at=at,
            uses_reserved=reserved,
            total_taken=taken,
        )
        for terms, uses, issued, reserved, taken in candidates
    ]
    listed = [d for d in decisions if is_listed(d, include_ineligible=include_ineligible)]
    model = CustomerCoupons(
        customer_id=customer_id, at=at, coupons=[Eligibility.of(d) for d in listed]
    )
    return model.model_dump_json().encode()


_CANDIDATES = st.lists(
    st.tuples(_TERMS, st.integers(0, 12), st.booleans(), st.integers(0, 3), st.integers(0, 14)),
    min_size=1,
    max_size=6,
)
_ASKED = st.tuples(_TIMES, st.none() | st.sampled_from(["S1", "S2"]) | _IDS, st.booleans())


@given(customer_id=_IDS, candidates=_CANDIDATES, asked=st.lists(_ASKED, min_size=1, max_size=4))
def test_remembered_list_entries_are_what_the_rule_and_the_model_give(
    customer_id: str,
    candidates: list[tuple[CouponTerms, int, bool, int, int]],
    asked: list[tuple[datetime, str | None, bool]],
) -> None:
    """coupon_list_json, asked again with other moments, stores and flags, never goes stale."""
    for at, store_id, include_ineligible in asked:
        expected = _listed_by_the_rule(customer_id, at, candidates, store_id, include_ineligible)
        listed = coupon_list_json(
            customer_id, at, candidates, store_id=store_id, include_ineligible=include_ineligible
        )
        assert listed == expected
