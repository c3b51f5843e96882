"""The eligibility rule of CONTRACT.md section 5, decided from plain values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from punchcard_coupon_query.eligibility import (
    CouponTerms,
    Eligibility,
    IneligibleReason,
    evaluate,
    is_listed,
)
from punchcard_coupon_query.listing import coupon_list_json
from punchcard_coupon_query.reservations.decision import refusal

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def coupon(**changes: object) -> CouponTerms:
    """A coupon that is usable by everyone, everywhere, now, once; changed as asked."""
    base = CouponTerms(
        coupon_id="TEA-10OFF",
        name="Tea 10% off",
        description="",
        uses_permitted=1,
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
        active=True,
        targeted=False,
        store_ids=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def decide(
    terms: CouponTerms,
    *,
    uses_made: int = 0,
    issued: bool = False,
    store_id: str | None = None,
    at: datetime = NOW,
) -> Eligibility:
    """Evaluate with defaults that change nothing."""
    return evaluate(terms, uses_made=uses_made, issued_to_customer=issued, store_id=store_id, at=at)


def test_a_plain_coupon_is_eligible_with_no_reason() -> None:
    """Active, started, not expired, for everyone, any store, unused: eligible."""
    answer = decide(coupon())
    assert answer.eligible
    assert answer.reason is None
    assert answer.uses_remaining == 1


def test_an_inactive_coupon_is_refused_as_inactive() -> None:
    """Deactivated coupons are never usable."""
    assert decide(coupon(active=False)).reason is IneligibleReason.INACTIVE


def test_a_coupon_is_eligible_exactly_at_valid_from() -> None:
    """valid_from is inclusive."""
    terms = coupon(valid_from=NOW)
    assert decide(terms, at=NOW).eligible


def test_a_coupon_is_not_started_one_microsecond_before_valid_from() -> None:
    """Before valid_from the reason is not_started."""
    terms = coupon(valid_from=NOW)
    answer = decide(terms, at=NOW - timedelta(microseconds=1))
    assert answer.reason is IneligibleReason.NOT_STARTED


def test_a_coupon_is_expired_exactly_at_valid_until() -> None:
    """valid_until is exclusive."""
    terms = coupon(valid_until=NOW)
    assert decide(terms, at=NOW).reason is IneligibleReason.EXPIRED


def test_a_coupon_is_eligible_one_microsecond_before_valid_until() -> None:
    """The last usable instant is just before valid_until."""
    terms = coupon(valid_until=NOW)
    assert decide(terms, at=NOW - timedelta(microseconds=1)).eligible


def test_times_in_other_offsets_compare_as_instants() -> None:
    """10:00 at +09:00 is 01:00 UTC, so a coupon starting 01:00 UTC has started."""
    tokyo = timezone(timedelta(hours=9))
    terms = coupon(valid_from=datetime(2026, 11, 22, 1, 0, tzinfo=UTC))
    assert decide(terms, at=datetime(2026, 11, 22, 10, 0, tzinfo=tokyo)).eligible
    assert not decide(terms, at=datetime(2026, 11, 22, 9, 59, tzinfo=tokyo)).eligible


def test_open_windows_never_start_late_or_expire() -> None:
    """A null valid_from or valid_until does not limit the window."""
    terms = coupon(valid_from=None, valid_until=None)
    assert decide(terms, at=datetime(1, 1, 2, tzinfo=UTC)).eligible
    assert decide(terms, at=datetime(9999, 12, 30, tzinfo=UTC)).eligible


def test_a_targeted_coupon_is_eligible_for_a_customer_it_was_issued_to() -> None:
    """Being on the list is enough."""
    assert decide(coupon(targeted=True), issued=True).eligible


def test_a_targeted_coupon_is_not_targeted_for_anyone_else() -> None:
    """Customers not on the list get not_targeted."""
    answer = decide(coupon(targeted=True), issued=False)
    assert answer.reason is IneligibleReason.NOT_TARGETED
    assert not answer.issued_to_customer


def test_an_untargeted_coupon_is_issued_to_everyone() -> None:
    """The issued flag does not matter for a coupon issued to everyone."""
    answer = decide(coupon(targeted=False), issued=False)
    assert answer.eligible
    assert answer.issued_to_customer


def test_a_store_list_allows_its_stores() -> None:
    """A store on the list may honour the coupon."""
    terms = coupon(store_ids=frozenset({"S0042", "S0043"}))
    assert decide(terms, store_id="S0042").eligible


def test_a_store_list_refuses_other_stores() -> None:
    """A store not on the list gets store_not_allowed."""
    terms = coupon(store_ids=frozenset({"S0042"}))
    assert decide(terms, store_id="S9999").reason is IneligibleReason.STORE_NOT_ALLOWED


def test_an_empty_store_list_refuses_every_store() -> None:
    """An empty list names no store."""
    terms = coupon(store_ids=frozenset())
    assert decide(terms, store_id="S0042").reason is IneligibleReason.STORE_NOT_ALLOWED


def test_no_store_in_the_question_means_no_store_check() -> None:
    """Asked without a store, the store list does not decide."""
    assert decide(coupon(store_ids=frozenset({"S0042"})), store_id=None).eligible


def test_no_store_list_allows_every_store() -> None:
    """store_ids null means every store."""
    assert decide(coupon(store_ids=None), store_id="ANY").eligible


def test_a_coupon_used_as_often_as_permitted_is_exhausted() -> None:
    """uses_made == uses_permitted leaves nothing."""
    answer = decide(coupon(uses_permitted=3), uses_made=3)
    assert answer.reason is IneligibleReason.EXHAUSTED
    assert answer.uses_remaining == 0


def test_a_coupon_with_one_use_left_is_eligible() -> None:
    """uses_made one below uses_permitted is still usable."""
    answer = decide(coupon(uses_permitted=3), uses_made=2)
    assert answer.eligible
    assert answer.uses_remaining == 1


def test_usage_past_the_limit_leaves_zero_remaining_not_negative() -> None:
    """Over-limit usage is recorded; what remains is never below zero."""
    answer = decide(coupon(uses_permitted=2), uses_made=5)
    assert answer.reason is IneligibleReason.EXHAUSTED
    assert answer.uses_remaining == 0


def test_an_unlimited_coupon_is_never_exhausted() -> None:
    """uses_permitted null: any number of uses, uses_remaining null."""
    answer = decide(coupon(uses_permitted=None), uses_made=1_000_000)
    assert answer.eligible
    assert answer.uses_remaining is None


@pytest.mark.parametrize(
    ("changes", "context", "expected"),
    [
        (
            {"active": False, "valid_from": NOW + timedelta(days=1), "uses_permitted": 1},
            {"uses_made": 5},
            IneligibleReason.INACTIVE,
        ),
        (
            {"valid_from": NOW + timedelta(days=1), "targeted": True},
            {"issued": False},
            IneligibleReason.NOT_STARTED,
        ),
        (
            {"valid_until": NOW, "targeted": True, "store_ids": frozenset()},
            {"issued": False, "store_id": "S1"},
            IneligibleReason.EXPIRED,
        ),
        (
            {"targeted": True, "store_ids": frozenset()},
            {"issued": False, "store_id": "S1", "uses_made": 9},
            IneligibleReason.NOT_TARGETED,
        ),
        (
            {"store_ids": frozenset({"S2"}), "uses_permitted": 1},
            {"store_id": "S1", "uses_made": 1},
            IneligibleReason.STORE_NOT_ALLOWED,
        ),
    ],
)
def test_the_first_failing_check_is_the_reason(
    changes: dict[str, object], context: dict[str, object], expected: IneligibleReason
) -> None:
    """With several checks failing, the reason is the earliest in the contract's order."""
    answer = evaluate(
        coupon(**changes),
        uses_made=int(context.get("uses_made", 0)),  # type: ignore[call-overload]
        issued_to_customer=bool(context.get("issued", False)),
        store_id=context.get("store_id"),  # type: ignore[arg-type]
        at=NOW,
    )
    assert answer.reason is expected


def test_reasons_are_declared_in_the_contracts_order() -> None:
    """The enum's order is the order of the checks."""
    assert [r.value for r in IneligibleReason] == [
        "inactive",
        "not_started",
        "expired",
        "not_targeted",
        "store_not_allowed",
        "exhausted",
        "reserved",
        "sold_out",
    ]


def test_the_list_holds_only_eligible_coupons_by_default() -> None:
    """Without include_ineligible every ineligible coupon is left out."""
    assert is_listed(decide(coupon()), include_ineligible=False)
    assert not is_listed(decide(coupon(), uses_made=1), include_ineligible=False)


@pytest.mark.parametrize(
    ("changes", "context"),
    [
        ({"valid_from": NOW + timedelta(days=1)}, {}),
        ({"valid_until": NOW}, {}),
        ({"store_ids": frozenset({"S2"})}, {"store_id": "S1"}),
        ({}, {"uses_made": 1}),
        ({"targeted": True, "uses_permitted": 1}, {"issued": True, "uses_made": 1}),
    ],
)
def test_include_ineligible_adds_coupons_failing_by_time_store_or_use(
    changes: dict[str, object], context: dict[str, object]
) -> None:
    """not_started, expired, store_not_allowed and exhausted coupons are the customer's to see."""
    answer = decide(coupon(**changes), **context)  # type: ignore[arg-type]
    assert not answer.eligible
    assert is_listed(answer, include_ineligible=True)


def test_include_ineligible_never_adds_an_inactive_coupon() -> None:
    """Inactive coupons stay hidden."""
    assert not is_listed(decide(coupon(active=False)), include_ineligible=True)


def test_a_coupon_issued_to_other_customers_is_never_listed() -> None:
    """Even when it fails by an earlier check such as expired, it is someone else's coupon."""
    expired_for_others = decide(coupon(targeted=True, valid_until=NOW), issued=False)
    assert expired_for_others.reason is IneligibleReason.EXPIRED
    assert not is_listed(expired_for_others, include_ineligible=True)
    not_targeted = decide(coupon(targeted=True), issued=False)
    assert not is_listed(not_targeted, include_ineligible=True)


def test_a_list_evaluates_and_filters_its_rows_in_order() -> None:
    """Rows go in as (terms, uses_made, issued, reserved, taken) and come out listed, in order."""
    rows = [
        (coupon(coupon_id="A"), 0, False, 0, 0),
        (coupon(coupon_id="B"), 1, False, 0, 0),
        (coupon(coupon_id="C", targeted=True), 0, False, 0, 0),
        (coupon(coupon_id="D", targeted=True), 0, True, 0, 0),
    ]

    def listed(*, include_ineligible: bool) -> list[str]:
        body = coupon_list_json(
            "C1", NOW, rows, store_id=None, include_ineligible=include_ineligible
        )
        return [entry["coupon_id"] for entry in orjson.loads(body)["coupons"]]

    assert listed(include_ineligible=False) == ["A", "D"]
    assert listed(include_ineligible=True) == ["A", "B", "D"]


def test_a_remembered_entry_follows_the_moment_across_the_validity_window() -> None:
    """The same coupon version asked before, during and after its window: each answer anew."""
    terms = coupon(valid_from=NOW, valid_until=NOW + timedelta(days=1))

    def reason(at: datetime) -> str | None:
        body = coupon_list_json(
            "C1", at, [(terms, 0, False, 0, 0)], store_id=None, include_ineligible=True
        )
        (entry,) = orjson.loads(body)["coupons"]
        return entry["reason"]  # type: ignore[no-any-return]

    assert reason(NOW - timedelta(seconds=1)) == "not_started"
    assert reason(NOW) is None
    assert reason(NOW + timedelta(days=1)) == "expired"
    assert reason(NOW + timedelta(hours=1)) is None


def reserve_decide(
    terms: CouponTerms, *, uses_made: int = 0, reserved: int = 0, taken: int = 0
) -> Eligibility:
    """Evaluate with reservations and the campaign-wide count."""
    return evaluate(
        terms,
        uses_made=uses_made,
        issued_to_customer=False,
        store_id=None,
        at=NOW,
        uses_reserved=reserved,
        total_taken=taken,
    )


def test_uses_held_by_the_customers_reservations_make_it_reserved() -> None:
    """Uses made below the limit, the rest held at a checkout: reserved, nothing remaining."""
    answer = reserve_decide(coupon(uses_permitted=3), uses_made=1, reserved=2)
    assert answer.reason is IneligibleReason.RESERVED
    assert answer.uses_remaining == 0
    assert answer.uses_reserved == 2


def test_exhausted_comes_before_reserved() -> None:
    """When the uses made alone reach the limit, the coupon is exhausted, held or not."""
    answer = reserve_decide(coupon(uses_permitted=2), uses_made=2, reserved=1)
    assert answer.reason is IneligibleReason.EXHAUSTED


def test_a_partly_held_coupon_is_eligible_with_the_rest_remaining() -> None:
    """uses_remaining is uses_permitted - uses_made - uses_reserved."""
    answer = reserve_decide(coupon(uses_permitted=5), uses_made=1, reserved=2)
    assert answer.eligible
    assert answer.uses_remaining == 2


def test_a_coupon_whose_total_is_taken_is_sold_out() -> None:
    """Total uses made plus every active reservation reaching the cap: sold_out."""
    answer = reserve_decide(coupon(uses_permitted=None, total_uses_permitted=10), taken=10)
    assert answer.reason is IneligibleReason.SOLD_OUT
    assert answer.total_uses_remaining == 0


def test_reserved_comes_before_sold_out() -> None:
    """The customer's own holds are named before the campaign's."""
    answer = reserve_decide(coupon(uses_permitted=1, total_uses_permitted=10), reserved=1, taken=10)
    assert answer.reason is IneligibleReason.RESERVED


def test_an_uncapped_coupon_has_no_total_remaining_and_ignores_the_total() -> None:
    """total_uses_remaining is null without total_uses_permitted, however much was taken."""
    answer = reserve_decide(coupon(uses_permitted=None), taken=10**9)
    assert answer.eligible
    assert answer.total_uses_remaining is None


def test_include_ineligible_lists_reserved_and_sold_out_coupons() -> None:
    """A coupon waiting at a checkout or sold out is still the customer's to see."""
    reserved = reserve_decide(coupon(uses_permitted=1), reserved=1)
    sold_out = reserve_decide(coupon(total_uses_permitted=1), taken=1)
    for answer in (reserved, sold_out):
        assert is_listed(answer, include_ineligible=True)
        assert not is_listed(answer, include_ineligible=False)


@given(
    permitted=st.none() | st.integers(1, 20),
    total=st.none() | st.integers(1, 50),
    made=st.integers(0, 25),
    reserved=st.integers(0, 25),
    taken=st.integers(0, 60),
)
def test_eligible_exactly_when_uses_remain_for_the_customer_and_in_total(
    permitted: int | None, total: int | None, made: int, reserved: int, taken: int
) -> None:
    """Eligible iff uses_remaining (if limited) > 0 and total_uses_remaining (if capped) > 0;
    remaining values are never negative."""
    answer = reserve_decide(
        coupon(uses_permitted=permitted, total_uses_permitted=total),
        uses_made=made,
        reserved=reserved,
        taken=taken,
    )
    customer_left = answer.uses_remaining is None or answer.uses_remaining > 0
    total_left = answer.total_uses_remaining is None or answer.total_uses_remaining > 0
    assert answer.eligible == (customer_left and total_left)
    assert (answer.uses_remaining or 0) >= 0
    assert (answer.total_uses_remaining or 0) >= 0
    if permitted is not None and made >= permitted:
        assert answer.reason is IneligibleReason.EXHAUSTED


@given(
    left=st.none() | st.integers(0, 20),
    total_left=st.none() | st.integers(0, 20),
    uses=st.integers(1, 100),
)
def test_a_reservation_is_made_only_for_uses_that_remain(
    left: int | None, total_left: int | None, uses: int
) -> None:
    """refusal() admits exactly when the coupon is eligible and both remainders cover uses."""
    permitted = None if left is None else left
    total = None if total_left is None else total_left
    answer = reserve_decide(
        coupon(
            uses_permitted=None if permitted is None else permitted + 1,
            total_uses_permitted=None if total is None else total + 1,
        ),
        uses_made=1 if permitted is not None else 0,
        taken=1 if total is not None else 0,
    )
    reason = refusal(answer, uses)
    fits = all(n is None or uses <= n for n in (left, total_left)) and answer.eligible
    assert (reason is None) == fits
    if answer.eligible and not fits:
        assert reason == "exceeds_remaining"
