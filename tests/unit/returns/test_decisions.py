"""The return rules of CONTRACT.md section 2, decided on plain values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from punchcard_contract import CouponUsageEvent, PointsEvent, ReturnOutcomeEvent, event_id_for
from punchcard_platform.settings import TopicNames
from punchcard_returns.decisions import (
    CatalogCoupon,
    PendingReturn,
    ReturnPlan,
    StoredReceipt,
    claims,
    coupons_to_count,
    decide_returns,
)

NOW = datetime(2026, 11, 23, 0, 0, 0, tzinfo=UTC)
TOPICS = TopicNames()


def waiting(
    event_id: str, transaction_no: str = "T1", *, seq: int = 1, wait: float = 600
) -> PendingReturn:
    return PendingReturn(event_id, transaction_no, seq, NOW + timedelta(seconds=wait))


def sale(
    transaction_no: str = "T1",
    customer_id: str | None = "C1",
    *,
    used: int = 0,
    earned: int = 0,
    coupons: Mapping[str, int] | None = None,
) -> StoredReceipt:
    return StoredReceipt(transaction_no, customer_id, used, earned, tuple((coupons or {}).items()))


def decide(
    pending: Sequence[PendingReturn],
    receipts: Sequence[StoredReceipt] = (),
    *,
    claimed: Set[str] = frozenset(),
    catalog: Sequence[CatalogCoupon] = (),
    uses_made: Mapping[tuple[str, str], int] | None = None,
    balances: Mapping[str, int] | None = None,
) -> ReturnPlan:
    return decide_returns(
        pending,
        receipts={r.transaction_no: r for r in receipts},
        claimed=claimed,
        catalog={c.coupon_id: c for c in catalog},
        uses_made=uses_made or {},
        balances=balances or {},
        now=NOW,
        topics=TOPICS,
    )


def outcome_of(plan: ReturnPlan, event_id: str) -> ReturnOutcomeEvent:
    """The decision's outcome, checked against the contract's model field by field."""
    (decision,) = [d for d in plan.decisions if d.event_id == event_id]
    outcome = ReturnOutcomeEvent.model_validate_json(decision.encoded)
    assert outcome.model_dump(mode="json") == decision.outcome
    assert list(decision.outcome) == list(outcome.model_dump(mode="json"))
    return outcome


def payloads(plan: ReturnPlan, topic: str) -> list[dict[str, Any]]:
    """The decoded JSON of the plan's messages to one topic, in order."""
    return [json.loads(m.payload) for m in plan.messages if m.topic == topic]


def test_claims_pick_the_earliest_return_of_each_known_sale() -> None:
    """Of several returns of one sale only the first sent tries to claim it."""
    pending = [waiting("late", seq=7), waiting("early", seq=3), waiting("other", "T9", seq=1)]
    assert claims(pending, {"T1": sale()}) == {"T1": "early"}


def test_an_accepted_return_restores_burned_points_and_revokes_earned_ones() -> None:
    """Burned points come back as usable points, earned points are taken back."""
    plan = decide([waiting("R1")], [sale(used=100, earned=19)], claimed={"R1"}, balances={"C1": 5})
    outcome = outcome_of(plan, "R1")
    assert (outcome.status, outcome.reason) == ("accepted", None)
    assert (outcome.points_restored, outcome.points_revoked) == (100, 19)
    assert [(e.kind, e.points) for e in plan.ledger] == [("restore", 100), ("revoke", -19)]
    points = payloads(plan, TOPICS.points)
    assert [(p["kind"], p["points"], p["balance"]) for p in points] == [
        ("restore", 100, 105),
        ("revoke", -19, 86),
    ]
    assert plan.returned == [("T1", "R1")]


def test_a_balance_may_go_negative_and_is_never_clamped() -> None:
    """Points earned and already spent leave the customer below zero."""
    plan = decide([waiting("R1")], [sale(earned=50)], claimed={"R1"}, balances={"C1": 10})
    (message,) = [m for m in plan.messages if m.topic == TOPICS.points]
    assert PointsEvent.model_validate_json(message.payload).balance == -40


def test_coupon_uses_are_given_back_and_reported() -> None:
    """Each coupon use of the sale is taken off the customer's count."""
    plan = decide(
        [waiting("R1")],
        [sale(coupons={"TEA": 2, "NEW": 1})],
        claimed={"R1"},
        catalog=[CatalogCoupon("TEA", uses_permitted=3)],
        uses_made={("C1", "TEA"): 5, ("C1", "NEW"): 1},
    )
    outcome = outcome_of(plan, "R1")
    assert [(c.coupon_id, c.uses) for c in outcome.coupons_restored] == [("TEA", 2), ("NEW", 1)]
    usage = [
        CouponUsageEvent.model_validate_json(m.payload)
        for m in plan.messages
        if m.topic == TOPICS.coupon_usage
    ]
    assert [(u.coupon_id, u.delta, u.uses_made, u.uses_permitted, u.over_limit) for u in usage] == [
        ("TEA", -2, 3, 3, False),
        ("NEW", -1, 0, None, False),
    ]
    assert all(u.source == "return" for u in usage)


def test_uses_never_go_below_zero_and_the_real_delta_is_reported() -> None:
    """A count already lower than the sale's uses stops at zero."""
    plan = decide(
        [waiting("R1")], [sale(coupons={"TEA": 3})], claimed={"R1"}, uses_made={("C1", "TEA"): 1}
    )
    assert [(g.coupon_id, g.uses) for g in plan.uses_given_back] == [("TEA", 1)]
    assert outcome_of(plan, "R1").coupons_restored[0].uses == 1


def test_a_count_already_at_zero_gives_nothing_back_and_publishes_nothing() -> None:
    """No change, no CouponUsageEvent and no entry in coupons_restored."""
    plan = decide([waiting("R1")], [sale(coupons={"TEA": 1})], claimed={"R1"})
    assert plan.uses_given_back == []
    assert outcome_of(plan, "R1").coupons_restored == []
    assert [m.topic for m in plan.messages] == [TOPICS.return_outcomes]


def test_a_coupon_not_restored_on_return_keeps_its_uses() -> None:
    """restore_on_return false: the use stays counted."""
    plan = decide(
        [waiting("R1")],
        [sale(coupons={"ONCE": 1})],
        claimed={"R1"},
        catalog=[CatalogCoupon("ONCE", uses_permitted=1, restore_on_return=False)],
        uses_made={("C1", "ONCE"): 1},
    )
    assert plan.uses_given_back == []
    assert outcome_of(plan, "R1").coupons_restored == []


def test_an_over_limit_count_stays_flagged_after_a_return() -> None:
    """A count still above the permitted number after the return is over_limit."""
    plan = decide(
        [waiting("R1")],
        [sale(coupons={"TEA": 1})],
        claimed={"R1"},
        catalog=[CatalogCoupon("TEA", uses_permitted=1)],
        uses_made={("C1", "TEA"): 3},
    )
    (message,) = [m for m in plan.messages if m.topic == TOPICS.coupon_usage]
    assert CouponUsageEvent.model_validate_json(message.payload).over_limit is True


def test_returns_of_one_customer_in_one_batch_see_each_others_effects() -> None:
    """The second return's events carry the values after the first."""
    plan = decide(
        [waiting("R1", "T1", seq=1), waiting("R2", "T2", seq=2)],
        [sale("T1", used=10, coupons={"TEA": 1}), sale("T2", used=20, coupons={"TEA": 1})],
        claimed={"R1", "R2"},
        uses_made={("C1", "TEA"): 2},
        balances={"C1": 0},
    )
    points = [p["balance"] for p in payloads(plan, TOPICS.points)]
    uses = [p["uses_made"] for p in payloads(plan, TOPICS.coupon_usage)]
    assert (points, uses) == ([10, 30], [1, 0])


def test_a_second_return_of_a_sale_is_rejected_as_already_returned_and_changes_nothing() -> None:
    """Only the claimed return applies; the other is refused for good."""
    plan = decide(
        [waiting("R1", seq=1), waiting("R2", seq=2)],
        [sale(used=5, coupons={"TEA": 1})],
        claimed={"R1"},
        uses_made={("C1", "TEA"): 1},
    )
    rejected = outcome_of(plan, "R2")
    assert (rejected.status, rejected.reason, rejected.customer_id) == (
        "rejected",
        "already_returned",
        "C1",
    )
    assert (rejected.points_restored, rejected.coupons_restored) == (0, [])
    assert plan.returned == [("T1", "R1")]
    assert len(plan.ledger) == 1


def test_a_return_that_lost_the_claim_is_already_returned() -> None:
    """When the sale was returned earlier (the claim did not win), nothing applies."""
    plan = decide([waiting("R1")], [sale(used=5)])
    assert outcome_of(plan, "R1").reason == "already_returned"
    assert (plan.ledger, plan.returned) == ([], [])


def test_a_return_of_an_unknown_sale_waits() -> None:
    """No receipt yet and time left: no decision, no event."""
    pending = waiting("R1", wait=1)
    plan = decide([pending])
    assert (plan.decisions, plan.messages, plan.still_pending) == ([], [], [pending])


def test_a_return_whose_wait_is_over_is_rejected_as_unknown_transaction() -> None:
    """The wait ends exactly at wait_until."""
    plan = decide([waiting("R1", wait=0)])
    outcome = outcome_of(plan, "R1")
    assert (outcome.status, outcome.reason, outcome.customer_id) == (
        "rejected",
        "unknown_transaction",
        None,
    )


def test_an_anonymous_sale_is_accepted_without_touching_any_count() -> None:
    """Nobody's points or coupons moved on the sale, so nothing moves back."""
    plan = decide([waiting("R1")], [sale(customer_id=None, coupons={"TEA": 1})], claimed={"R1"})
    outcome = outcome_of(plan, "R1")
    assert (outcome.status, outcome.customer_id, outcome.coupons_restored) == (
        "accepted",
        None,
        [],
    )
    assert (plan.ledger, plan.uses_given_back, plan.returned) == ([], [], [("T1", "R1")])


def test_event_ids_are_derived_from_what_caused_them() -> None:
    """Applying the same return again yields the same ids, which readers drop as repeats."""
    args = ([waiting("R1")], [sale(used=1, earned=2, coupons={"TEA": 1})])
    first = decide(*args, claimed={"R1"}, uses_made={("C1", "TEA"): 1})
    again = decide(*args, claimed={"R1"}, uses_made={("C1", "TEA"): 1})
    assert [m.event_id for m in first.messages] == [m.event_id for m in again.messages]
    assert {UUID(str(m.event_id)) for m in first.messages} == {
        event_id_for("R1", "outcome"),
        event_id_for("T1", "points", "restore"),
        event_id_for("T1", "points", "revoke"),
        event_id_for("T1", "coupon", "TEA", "return"),
    }


def test_outcomes_are_keyed_by_transaction_and_the_rest_by_customer() -> None:
    """CONTRACT.md section 1 keys."""
    plan = decide(
        [waiting("R1")],
        [sale(used=1, coupons={"TEA": 1})],
        claimed={"R1"},
        uses_made={("C1", "TEA"): 1},
    )
    keys = {m.topic: m.key for m in plan.messages}
    assert keys == {TOPICS.return_outcomes: "T1", TOPICS.points: "C1", TOPICS.coupon_usage: "C1"}


def test_only_known_customers_coupons_are_loaded() -> None:
    """Anonymous sales need no coupon counts."""
    receipts = [sale("T1", "C1", coupons={"A": 1}), sale("T2", None, coupons={"B": 1})]
    assert coupons_to_count(receipts) == {("C1", "A")}
