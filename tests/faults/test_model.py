"""The fault suite's oracle decides partial returns as CONTRACT.md section 2 says."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from tests.documents import encode, receipt_document, return_document, sale_lines
from tests.faults.model import EXPIRY_CAUSE, SALE, Expected, InputRecord, expected_state
from tests.faults.workload import CAPPED_PER_CUSTOMER, CAPPED_TOTAL, make_workload


def _replay(sale: dict[str, Any], *returns: dict[str, Any]) -> Expected:
    receipts = [InputRecord(0, 0, encode(sale))]
    logged = [InputRecord(0, n, encode(document)) for n, document in enumerate(returns)]
    return expected_state(receipts, logged)


def _three_lines(**extra: Any) -> dict[str, Any]:
    given: dict[str, Any] = {"points_earned": 10, "points_used": 5, **extra}
    return receipt_document(
        "C1",
        coupons=[("CPN", 2)],
        lines=sale_lines((1, "100"), (1, "100"), (1, "100")),
        **given,
    )


def test_a_sale_returned_line_by_line_moves_floors_then_exactly_the_rest() -> None:
    """Revoked in all after each part: floor(10/3), floor(20/3), then all 10."""
    sale = _three_lines()
    parts = [return_document(sale["transaction_no"], lines=[(n, 1)]) for n in (1, 2, 3)]
    expected = _replay(sale, *parts)
    moved = [expected.outcome_events[p["event_id"]] for p in parts]
    assert [(o.points_revoked, o.points_restored) for o in moved] == [(3, 1), (3, 2), (4, 2)]
    assert [o.fully_returned for o in moved] == [False, False, True]
    assert expected.balances["C1"] == 0
    assert expected.uses == {}
    assert (sale["transaction_no"], "CPN", "return") in expected.usage_events
    assert expected.ledger[("C1", sale["transaction_no"], "revoke", parts[0]["event_id"], -3)]


def test_coupon_uses_stay_while_anything_of_the_sale_remains() -> None:
    """Two lines of three back: the points move, the coupon count does not."""
    sale = _three_lines()
    expected = _replay(sale, return_document(sale["transaction_no"], lines=[(1, 1), (2, 1)]))
    assert expected.uses == {("C1", "CPN"): 2}
    assert expected.balances["C1"] == 10 - 5 - 6 + 3


def test_rejections_are_checked_unknown_line_then_already_returned_then_exceeds() -> None:
    """Each rejection changes nothing, and the order of the checks is the contract's."""
    sale = _three_lines()
    tx = sale["transaction_no"]
    first = return_document(tx, lines=[(1, 1)])
    unknown = return_document(tx, lines=[(1, 1), (4, 1)])
    already = return_document(tx, lines=[(1, 1)])
    exceeds = return_document(tx, lines=[(1, 1), (2, 2)])
    rest = return_document(tx)
    again = return_document(tx)
    expected = _replay(sale, first, unknown, already, exceeds, rest, again)
    reasons = [expected.returns[d["event_id"]] for d in (unknown, already, exceeds, again)]
    assert [reason for _, reason in reasons] == [
        "unknown_line",
        "already_returned",
        "exceeds_remaining",
        "already_returned",
    ]
    whole = expected.outcome_events[rest["event_id"]]
    assert whole.lines == ((2, Fraction(1)), (3, Fraction(1)))
    assert expected.sale_returns[tx] == ((Fraction(1),) * 3, 5, 10, True)


def test_a_repeated_return_id_is_a_redelivery_or_a_conflict_by_its_content() -> None:
    """Same content under a new event_id: no outcome; other content: a dead letter."""
    sale = _three_lines()
    tx = sale["transaction_no"]
    first = return_document(tx, lines=[(1, 1)], return_id="R1")
    redelivered = {**first, "event_id": "another"}
    conflicting = return_document(tx, lines=[(2, 1)], return_id="R1")
    expected = _replay(sale, first, redelivered, conflicting)
    assert list(expected.returns) == [first["event_id"]]
    assert expected.return_conflicts == {(0, 2)}


def test_a_sale_without_positive_amounts_moves_points_only_when_nothing_remains() -> None:
    """W = 0: the first part moves nothing, the last moves everything."""
    sale = receipt_document(
        "C1", points_earned=7, lines=sale_lines((1, "0"), (2, "-50")), total="0"
    )
    tx = sale["transaction_no"]
    part, rest = return_document(tx, lines=[(2, 1)]), return_document(tx)
    expected = _replay(sale, part, rest)
    assert expected.outcome_events[part["event_id"]].points_revoked == 0
    assert expected.outcome_events[rest["event_id"]].points_revoked == 7
    assert (tx, "revoke", SALE) not in expected.points_events


_SOON = "2026-12-03T14:00:00+00:00"


def test_a_lot_of_a_customer_who_never_burns_expires_what_its_returns_left() -> None:
    """Earned 10, a third returned (3 revoked): 7 expire, once, and the balance ends at 0."""
    sale = _three_lines(points_used=0, points_expire_at=_SOON)
    tx = sale["transaction_no"]
    expected = _replay(sale, return_document(tx, lines=[(1, 1)]))
    assert expected.before_expiry["C1"] == 7
    assert expected.balances["C1"] == 0
    assert expected.ledger[("C1", tx, "expire", EXPIRY_CAUSE, -7)] == 1
    assert expected.points_events[(tx, "expire", EXPIRY_CAUSE)] == ("C1", -7)
    assert expected.expiring[tx].expires == 7
    assert expected.uncertain == set()


def test_a_lot_returned_whole_before_its_expiry_expires_nothing() -> None:
    """All 10 revoked: nothing remains, so there is no expire entry and no event."""
    sale = _three_lines(points_used=0, points_expire_at=_SOON)
    tx = sale["transaction_no"]
    expected = _replay(sale, return_document(tx))
    assert expected.expiring[tx].expires == 0
    assert not [key for key in expected.ledger if key[2] == "expire"]
    assert (tx, "expire", EXPIRY_CAUSE) not in expected.points_events
    assert expected.balances["C1"] == 0


def test_a_customer_who_burns_and_holds_an_expiring_lot_is_left_to_the_invariants() -> None:
    """Which lot a burn took from depends on the order of partitions: no exact expiry."""
    earning = receipt_document("C1", points_earned=30, points_expire_at=_SOON)
    burning = receipt_document("C1", points_used=20)
    receipts = [InputRecord(0, 0, encode(earning)), InputRecord(1, 0, encode(burning))]
    expected = expected_state(receipts, [])
    assert expected.uncertain == {"C1"}
    assert expected.expiring[earning["transaction_no"]].expires is None
    assert expected.balances["C1"] == expected.before_expiry["C1"] == 10
    assert not [key for key in expected.ledger if key[2] == "expire"]


def test_lots_without_an_expiry_and_anonymous_sales_never_expire() -> None:
    """A v1 sale and an anonymous one carry no lot the model expects to expire."""
    kept = receipt_document("C2", points_earned=5)
    anonymous = receipt_document(None, points_expire_at=_SOON)
    receipts = [InputRecord(0, 0, encode(kept)), InputRecord(0, 1, encode(anonymous))]
    expected = expected_state(receipts, [])
    assert expected.expiring == {}
    assert expected.balances == {"C2": 5}


def test_an_uncertain_customers_expiry_is_admitted_once_and_never_beyond_the_lot() -> None:
    """One entry per lot, at most what it earned, on the customer's own expiring lot."""
    earning = receipt_document("C1", points_earned=30, points_expire_at=_SOON)
    burning = receipt_document("C1", points_used=20)
    tx = earning["transaction_no"]
    receipts = [InputRecord(0, 0, encode(earning)), InputRecord(1, 0, encode(burning))]
    expected = expected_state(receipts, [])
    booked = ("C1", tx, "expire", EXPIRY_CAUSE, -10)
    refused = expected.admit_expiries(
        [
            booked,
            ("C1", tx, "expire", EXPIRY_CAUSE, -3),
            ("C1", tx, "expire", EXPIRY_CAUSE, -31),
            ("C1", burning["transaction_no"], "expire", EXPIRY_CAUSE, -1),
            ("C2", tx, "expire", EXPIRY_CAUSE, -1),
        ]
    )
    assert booked not in refused
    assert len(refused) == 3
    assert expected.balances["C1"] == 0
    assert expected.points_events[(tx, "expire", EXPIRY_CAUSE)] == ("C1", -10)


def test_the_load_dates_limited_time_points_from_its_start_and_the_model_reads_them() -> None:
    """Lots that wait for the load expire after it; those that lose all they earned, during it."""
    workload = make_workload(sales=300, seconds=10, seed=1, expire_after=30)
    started = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    sent = [(p, workload.dated(p, started)) for p in workload.schedule]
    receipts = [
        InputRecord(0, n, encode(document))
        for n, (p, document) in enumerate(sent)
        if p.stream == "receipts"
    ]
    returns = [
        InputRecord(0, n, encode(document))
        for n, (p, document) in enumerate(sent)
        if p.stream == "returns"
    ]
    expected = expected_state(receipts, returns)
    lots = expected.expiring.values()
    assert min(lot.expires_at for lot in lots if lot.after_load) >= started.replace(second=30)
    early = [lot for lot in lots if lot.expires_at < started.replace(second=30)]
    assert early
    assert all(not lot.after_load and lot.expires == lot.points for lot in early)
    assert any(lot.expires is not None for lot in lots if lot.after_load)
    assert expected.uncertain


def test_a_coupon_total_sums_its_uses_over_customers_and_a_full_return_takes_them_back() -> None:
    """Two customers' sales add up; an anonymous one counts toward nobody; a return gives back."""
    first = receipt_document("C1", coupons=[("CPN", 2)])
    second = receipt_document("C2", coupons=[("CPN", 1), ("OTHER", 1)])
    anonymous = receipt_document(None, coupons=[("CPN", 5)])
    returned = receipt_document("C3", coupons=[("CPN", 4)])
    sales = [InputRecord(0, n, encode(d)) for n, d in enumerate([first, second, anonymous])]
    sales.append(InputRecord(1, 0, encode(returned)))
    back = [InputRecord(0, 0, encode(return_document(returned["transaction_no"])))]
    expected = expected_state(sales, back)
    assert expected.totals == {"CPN": 3, "OTHER": 1}


def test_a_sale_naming_a_reservation_consumes_it_once_and_its_usage_event_names_it() -> None:
    """The standing sale names the reservation; its redelivery does not name it twice."""
    sale = receipt_document("C1", coupons=[])
    sale["coupons"] = [
        {"coupon_id": "CPN", "uses": 1, "reservation_id": "R1"},
        {"coupon_id": "CPN", "uses": 1},
        {"coupon_id": "OTHER", "uses": 1},
    ]
    redelivered = {**sale, "event_id": "again"}
    receipts = [InputRecord(0, 0, encode(sale)), InputRecord(0, 1, encode(redelivered))]
    expected = expected_state(receipts, [])
    tx = sale["transaction_no"]
    assert expected.named == {"R1": tx}
    assert expected.usage_reservations == {
        (tx, "CPN", "receipt"): "R1",
        (tx, "OTHER", "receipt"): None,
    }
    assert expected.uses == {("C1", "CPN"): 2, ("C1", "OTHER"): 1}


def test_the_capped_coupon_is_asked_for_more_often_than_its_caps_allow() -> None:
    """Over both caps, never released or left to lapse: exactly the cap must be granted."""
    workload = make_workload(sales=200, seconds=10, seed=3)
    capped = [r for r in workload.reservations if r.coupon_id == workload.capped_coupon]
    per_customer = Counter(r.customer_id for r in capped)
    assert len(capped) > CAPPED_TOTAL
    assert max(per_customer.values()) > CAPPED_PER_CUSTOMER
    assert sum(min(n, CAPPED_PER_CUSTOMER) for n in per_customer.values()) > CAPPED_TOTAL
    assert {r.fate for r in capped} <= {"consume", "hold"}
    held = {r.fate for r in workload.reservations if r.coupon_id == workload.held_coupon}
    assert held == {"consume", "hold", "release", "lapse"}
    assert len({r.idempotency_key for r in workload.reservations}) == len(workload.reservations)


def test_the_sale_consuming_a_reservation_names_it_and_is_the_same_every_time() -> None:
    """Sent again after a broker restart, it is a redelivery, not a conflicting duplicate."""
    workload = make_workload(sales=200, seconds=10, seed=3)
    planned = next(r for r in workload.reservations if r.fate == "consume")
    sale = workload.reserved_sale(planned, "R1")
    assert sale == workload.reserved_sale(planned, "R1")
    assert sale["coupons"] == [{"coupon_id": planned.coupon_id, "uses": 1, "reservation_id": "R1"}]
    assert sale["customer_id"] == planned.customer_id
