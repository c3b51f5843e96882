"""The one ledger's pure rule: running balances and counts, and the events they give."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from punchcard_contract import CouponUsageEvent, PointsEvent, event_id_text
from punchcard_platform.ledger import (
    SALE,
    LedgerState,
    PointsPosting,
    UsePosting,
    ledger_events,
    post,
)

AT = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
WHEN = "2026-11-22T01:00:05Z"


def points(customer: str, tx: str, kind: str, amount: int, cause: str = SALE) -> PointsPosting:
    return PointsPosting(customer, tx, cause, kind, amount, AT)  # type: ignore[arg-type]


def uses(customer: str, coupon: str, tx: str, delta: int, cause: str = SALE) -> UsePosting:
    return UsePosting(customer, coupon, tx, cause, "receipt" if delta > 0 else "return", delta)


def test_each_entry_sees_the_balance_right_after_it() -> None:
    """Postings walk forward from the balance read under the customer's lock."""
    posted = post(
        LedgerState(balances={"C1": 50}),
        [
            points("C1", "T1", "burn", -100),
            points("C1", "T1", "earn", 19),
            points("C2", "T2", "earn", 5),
        ],
        [],
    )

    assert [p.balance for p in posted.points] == [-50, -31, 5]
    assert posted.balance_deltas() == {"C1": -81, "C2": 5}


def test_a_count_never_goes_below_zero_and_the_real_change_is_reported() -> None:
    """Giving back more uses than counted gives back what there is; nothing is left out."""
    posted = post(
        LedgerState(uses_made={("C1", "TEA"): 1}),
        [],
        [uses("C1", "TEA", "T1", -3, "r1"), uses("C1", "TEA", "T2", -1, "r2")],
    )

    assert [(u.delta, u.uses_made) for u in posted.uses] == [(-1, 0)]
    assert posted.usage_deltas() == {("C1", "TEA"): -1}


def test_a_use_past_the_limit_is_counted_and_flagged_over_limit() -> None:
    """The sale happened, so the use counts; its event says it went over."""
    posted = post(
        LedgerState(uses_made={("C1", "TEA"): 2}, uses_permitted={"TEA": 2}),
        [],
        [uses("C1", "TEA", "T1", 1)],
    )
    (event,) = ledger_events(posted, WHEN)[0][("T1", SALE)]

    assert CouponUsageEvent.model_validate(event.fields).over_limit is True
    assert event.fields["uses_made"] == 3


def test_a_use_past_the_campaign_wide_limit_is_flagged_over_limit() -> None:
    """Within the customer's own limit, a use that takes the total past its cap is over."""
    posted = post(
        LedgerState(
            uses_made={("C1", "TEA"): 0},
            uses_permitted={"TEA": 5},
            total_uses_made={"TEA": 10},
            total_uses_permitted={"TEA": 10},
        ),
        [],
        [uses("C1", "TEA", "T1", 1)],
    )
    (event,) = ledger_events(posted, WHEN)[0][("T1", SALE)]

    assert event.fields["over_limit"] is True
    assert event.fields["total_uses_made"] == 11
    assert event.fields["uses_made"] == 1


def test_the_total_moves_by_what_each_customer_count_moved() -> None:
    """A return clamped at a customer's zero takes back from the total only what it gave."""
    posted = post(
        LedgerState(uses_made={("C1", "TEA"): 1}, total_uses_made={"TEA": 7}),
        [],
        [uses("C2", "TEA", "T1", 2), uses("C1", "TEA", "T2", -3, "r1")],
    )

    assert [u.total_uses_made for u in posted.uses] == [9, 8]
    assert posted.total_deltas() == {"TEA": 1}


def test_a_sale_naming_a_reservation_reports_it_in_its_event() -> None:
    """reservation_id travels from the posting to the CouponUsageEvent."""
    use = UsePosting("C1", "TEA", "T1", SALE, "receipt", 1, "R-1")
    (event,) = ledger_events(post(LedgerState(), [], [use]), WHEN)[0][("T1", SALE)]

    assert event.fields["reservation_id"] == "R-1"
    assert CouponUsageEvent.model_validate(event.fields).reservation_id == "R-1"


def test_events_are_grouped_by_cause_with_ids_derived_from_it() -> None:
    """A sale's events keep v1's ids; a return's points add the return's event id."""
    posted = post(
        LedgerState(),
        [points("C1", "T1", "earn", 19), points("C1", "T1", "revoke", -9, "ret-1")],
        [uses("C1", "TEA", "T1", 1)],
    )
    events, expiries = ledger_events(posted, WHEN)
    assert expiries == []

    assert [e.event_id for e in events[("T1", SALE)]] == [
        event_id_text("T1", "coupon", "TEA", "receipt"),
        event_id_text("T1", "points", "earn"),
    ]
    assert [e.event_id for e in events[("T1", "ret-1")]] == [
        event_id_text("T1", "points", "revoke", "ret-1")
    ]
    for group in events.values():
        for event in group:
            model = CouponUsageEvent if event.kind == "coupon_usage" else PointsEvent
            assert model.model_validate(event.fields).model_dump(mode="json") == event.fields


amounts = st.integers(min_value=-1000, max_value=1000)
customers = st.sampled_from(["C1", "C2", "C3"])


@given(
    before=st.dictionaries(customers, amounts),
    moves=st.lists(st.tuples(customers, amounts), max_size=30),
)
def test_the_balance_after_is_the_balance_before_plus_the_ledger(
    before: dict[str, int], moves: list[tuple[str, int]]
) -> None:
    """balance == what it was + the sum of the entries booked, at every step."""
    entries = [points(c, f"T{i}", "earn", n) for i, (c, n) in enumerate(moves)]
    posted = post(LedgerState(balances=before), entries, [])
    running = dict(before)
    for booked in posted.points:
        customer = booked.posting.customer_id
        running[customer] = running.get(customer, 0) + booked.posting.points
        assert booked.balance == running[customer]
    for customer, delta in posted.balance_deltas().items():
        assert before.get(customer, 0) + delta == running[customer]


@given(
    before=st.integers(min_value=0, max_value=20),
    deltas=st.lists(st.integers(min_value=-5, max_value=5).filter(bool), max_size=30),
)
def test_counts_stay_at_zero_or_above_whatever_the_postings(before: int, deltas: list[int]) -> None:
    """No sequence of uses and give-backs takes a count below zero."""
    posted = post(
        LedgerState(uses_made={("C1", "K"): before}),
        [],
        [uses("C1", "K", f"T{i}", d) for i, d in enumerate(deltas)],
    )
    count = before
    for change in posted.uses:
        count += change.delta
        assert change.uses_made == count >= 0
    assert before + sum(posted.usage_deltas().values()) == count
