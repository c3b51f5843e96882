"""The receipt consumer's pure decisions, on plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from punchcard_contract import CouponUsageEvent, PointsEvent, event_id_for
from punchcard_receipt_consumer.booking import (
    CouponBooking,
    PointsBooking,
    PointsEntry,
    ReceiptFacts,
    coupon_bookings,
    coupon_usage_deltas,
    judge_repeats,
    output_events,
    points_bookings,
    points_deltas,
    points_entries,
    split_first_deliveries,
)

SOLD_AT = datetime(2026, 11, 22, 1, 15, 30, tzinfo=UTC)
BOOKED_AT = datetime(2026, 11, 22, 1, 16, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Delivery:
    transaction_no: str
    fingerprint: bytes
    label: str = ""


def receipt(
    transaction_no: str,
    customer_id: str | None = "C1",
    *,
    coupons: dict[str, int] | None = None,
    used: int = 0,
    earned: int = 0,
) -> ReceiptFacts:
    return ReceiptFacts(
        transaction_no=transaction_no,
        customer_id=customer_id,
        occurred_at=SOLD_AT,
        coupon_uses=coupons or {},
        points_used=used,
        points_earned=earned,
        fingerprint=transaction_no.encode(),
    )


def test_the_first_delivery_of_each_transaction_is_kept_and_later_ones_are_repeats() -> None:
    """Only the first delivery of a transaction in a batch can be new."""
    a1, b1, a2, a3 = (
        Delivery("A", b"x", "a1"),
        Delivery("B", b"y", "b1"),
        Delivery("A", b"x", "a2"),
        Delivery("A", b"z", "a3"),
    )

    firsts, repeats = split_first_deliveries([a1, b1, a2, a3])

    assert firsts == [a1, b1]
    assert repeats == [a2, a3]


def test_a_repeat_with_the_standing_content_is_a_redelivery() -> None:
    """Same fingerprint as what stands means the same sale sent again: no effect."""
    repeat = Delivery("A", b"x")

    verdict = judge_repeats([repeat], {"A": b"x"})

    assert verdict.redelivered == [repeat]
    assert verdict.conflicting == []


def test_a_repeat_with_other_content_is_a_conflicting_duplicate() -> None:
    """Different content under a stored transaction_no is refused; the first stands."""
    repeat = Delivery("A", b"other")

    verdict = judge_repeats([repeat], {"A": b"x"})

    assert verdict.redelivered == []
    assert verdict.conflicting == [repeat]


def test_a_repeat_without_a_standing_receipt_is_never_guessed() -> None:
    """A repeat whose receipt cannot be found raises, so the batch is retried."""
    with pytest.raises(LookupError):
        judge_repeats([Delivery("A", b"x")], {})


def test_coupon_uses_are_summed_per_customer_and_coupon_except_anonymous_ones() -> None:
    """One increment per (customer, coupon) per batch; an anonymous sale counts for nobody."""
    receipts = [
        receipt("T1", "C2", coupons={"TEA": 1, "BUN": 2}),
        receipt("T2", "C1", coupons={"TEA": 3}),
        receipt("T3", None, coupons={"TEA": 5}),
        receipt("T4", "C2", coupons={"TEA": 4}),
    ]

    deltas = coupon_usage_deltas(receipts)

    assert list(deltas.items()) == [(("C1", "TEA"), 3), (("C2", "BUN"), 2), (("C2", "TEA"), 5)]


def test_each_receipt_sees_the_count_after_itself_derived_from_the_final_count() -> None:
    """With 10 uses after the batch, receipts adding 3 then 4 saw 6 and 10."""
    receipts = [
        receipt("T1", coupons={"TEA": 3}),
        receipt("T2", coupons={"TEA": 4, "BUN": 1}),
    ]

    bookings = coupon_bookings(receipts, {("C1", "TEA"): 10, ("C1", "BUN"): 1}, {"TEA": 8})

    assert bookings == [
        CouponBooking("T1", "C1", "TEA", delta=3, uses_made=6, uses_permitted=8),
        CouponBooking("T2", "C1", "TEA", delta=4, uses_made=10, uses_permitted=8),
        CouponBooking("T2", "C1", "BUN", delta=1, uses_made=1, uses_permitted=None),
    ]


def test_a_use_past_the_permitted_number_is_recorded_and_flagged_over_limit() -> None:
    """over_limit means uses made after the receipt exceed the permitted number."""
    at_limit = CouponBooking("T1", "C1", "TEA", delta=1, uses_made=2, uses_permitted=2)
    past_limit = CouponBooking("T2", "C1", "TEA", delta=1, uses_made=3, uses_permitted=2)
    unlimited = CouponBooking("T3", "C1", "BUN", delta=1, uses_made=999, uses_permitted=None)

    assert not at_limit.over_limit
    assert past_limit.over_limit
    assert not unlimited.over_limit


def test_a_sale_burns_before_it_earns_and_zero_amounts_book_nothing() -> None:
    """Burn is -points_used, earn +points_earned, in receipt order; zeros are skipped."""
    receipts = [
        receipt("T1", used=100, earned=19),
        receipt("T2", earned=5),
        receipt("T3", used=7),
        receipt("T4"),
    ]

    entries = points_entries(receipts)

    assert [(e.transaction_no, e.kind, e.points) for e in entries] == [
        ("T1", "burn", -100),
        ("T1", "earn", 19),
        ("T2", "earn", 5),
        ("T3", "burn", -7),
    ]


def test_an_anonymous_sale_books_no_points() -> None:
    """Points belong to a customer; an anonymous sale has none to book to."""
    assert points_entries([receipt("T1", None, used=5, earned=5)]) == []


def test_points_deltas_sum_each_customers_entries() -> None:
    """One balance increment per customer for the whole batch, sorted by customer."""
    entries = [
        PointsEntry("T1", "C2", "burn", -100, SOLD_AT),
        PointsEntry("T1", "C2", "earn", 19, SOLD_AT),
        PointsEntry("T2", "C1", "earn", 5, SOLD_AT),
    ]

    assert list(points_deltas(entries).items()) == [("C1", 5), ("C2", -81)]


def test_each_entry_sees_the_running_balance_derived_from_the_final_balance() -> None:
    """A final balance of 50 after -100, +19, +5 means 26, 45, 50 along the way."""
    entries = [
        PointsEntry("T1", "C1", "burn", -100, SOLD_AT),
        PointsEntry("T1", "C1", "earn", 19, SOLD_AT),
        PointsEntry("T2", "C2", "earn", 7, SOLD_AT),
        PointsEntry("T3", "C1", "earn", 5, SOLD_AT),
    ]

    bookings = points_bookings(entries, {"C1": 50, "C2": 7})

    assert [b.balance for b in bookings] == [26, 45, 7, 50]


def test_output_events_follow_receipt_order_with_deterministic_ids() -> None:
    """Events come receipt by receipt, coupons then points, with ids derived from the cause."""
    receipts = [receipt("T1", earned=3), receipt("T2", coupons={"TEA": 1})]
    coupons = [CouponBooking("T2", "C1", "TEA", delta=1, uses_made=3, uses_permitted=2)]
    points = [PointsBooking(PointsEntry("T1", "C1", "earn", 3, SOLD_AT), balance=3)]

    events = output_events(receipts, coupons, points, BOOKED_AT)

    expected = [
        PointsEvent(
            event_id=event_id_for("T1", "points", "earn"),
            occurred_at=BOOKED_AT,
            customer_id="C1",
            transaction_no="T1",
            kind="earn",
            points=3,
            balance=3,
        ),
        CouponUsageEvent(
            event_id=event_id_for("T2", "coupon", "TEA", "receipt"),
            occurred_at=BOOKED_AT,
            customer_id="C1",
            coupon_id="TEA",
            transaction_no="T2",
            source="receipt",
            delta=1,
            uses_made=3,
            uses_permitted=2,
            over_limit=True,
        ),
    ]
    # The plain payloads are exactly what the contract's models dump, key order included.
    assert [list(e.payload.items()) for e in events] == [
        list(m.model_dump(mode="json").items()) for m in expected
    ]
    assert [(e.kind, e.key, e.event_id) for e in events] == [
        ("points", "C1", str(expected[0].event_id)),
        ("coupon_usage", "C1", str(expected[1].event_id)),
    ]


def test_the_same_bookings_always_give_the_same_event_ids() -> None:
    """A receipt applied again could only ever produce the events it produced before."""
    receipts = [receipt("T1", used=1, earned=2, coupons={"TEA": 1})]
    coupons = coupon_bookings(receipts, {("C1", "TEA"): 1}, {})
    points = points_bookings(points_entries(receipts), {"C1": 1})

    first = output_events(receipts, coupons, points, BOOKED_AT)
    again = output_events(receipts, coupons, points, SOLD_AT)

    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert len({e.event_id for e in first}) == 3
