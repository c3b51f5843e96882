"""The receipt consumer's pure decisions, on plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from punchcard_platform.ledger import SALE, UsePosting
from punchcard_receipt_consumer.booking import (
    ReceiptFacts,
    judge_repeats,
    receipt_postings,
    split_first_deliveries,
)

SOLD_AT = datetime(2026, 11, 22, 1, 15, 30, tzinfo=UTC)


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


def test_a_sale_posts_its_coupon_uses_then_burns_before_it_earns() -> None:
    """Uses per coupon as summed, then burn (negative) and earn, all caused by the sale."""
    points, uses = receipt_postings([receipt("T1", coupons={"TEA": 2}, used=100, earned=19)])

    assert uses == [UsePosting("C1", "TEA", "T1", SALE, "receipt", 2)]
    assert [(p.kind, p.points, p.cause, p.occurred_at) for p in points] == [
        ("burn", -100, SALE, SOLD_AT),
        ("earn", 19, SALE, SOLD_AT),
    ]


def test_zero_amounts_post_nothing() -> None:
    """A sale that neither burns nor earns books no points entry."""
    points, _ = receipt_postings([receipt("T1", earned=5), receipt("T2")])

    assert [(p.transaction_no, p.kind) for p in points] == [("T1", "earn")]


def test_an_anonymous_sale_posts_nothing() -> None:
    """Nobody to book points or coupon uses to."""
    assert receipt_postings([receipt("T1", None, coupons={"TEA": 1})]) == ([], [])


def test_postings_follow_receipt_order() -> None:
    """The ledger walks postings in order, so events read in the order receipts came."""
    points, uses = receipt_postings(
        [receipt("T2", "C2", coupons={"A": 1}, earned=1), receipt("T1", "C1", coupons={"B": 1})]
    )

    assert [u.transaction_no for u in uses] == ["T2", "T1"]
    assert [p.transaction_no for p in points] == ["T2"]
