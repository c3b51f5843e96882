"""Output events serialise to exactly the field names of CONTRACT.md section 3."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from punchcard_contract import (
    EVENT_NAMESPACE,
    CouponRestored,
    CouponUsageEvent,
    PointsEvent,
    ReturnOutcomeEvent,
    event_id_for,
)
from punchcard_contract.outputs import return_outcome_event
from pydantic import ValidationError

COMMITTED_AT = datetime(2026, 11, 22, 1, 15, 30, tzinfo=UTC)


def a_coupon_usage(**changes: object) -> CouponUsageEvent:
    fields: dict[str, object] = {
        "event_id": event_id_for("T-1", "coupon", "TEA"),
        "occurred_at": COMMITTED_AT,
        "customer_id": "C1",
        "coupon_id": "TEA",
        "transaction_no": "T-1",
        "source": "receipt",
        "delta": 2,
        "uses_made": 3,
        "uses_permitted": 2,
        "over_limit": True,
        "reservation_id": None,
        "total_uses_made": 40,
    }
    return CouponUsageEvent.model_validate(fields | changes)


def test_a_coupon_usage_event_has_the_contract_fields() -> None:
    """CouponUsageEvent carries exactly the fields integrators read."""
    assert a_coupon_usage().model_dump(mode="json") == {
        "schema_version": 1,
        "event_id": str(event_id_for("T-1", "coupon", "TEA")),
        "occurred_at": "2026-11-22T01:15:30Z",
        "customer_id": "C1",
        "coupon_id": "TEA",
        "transaction_no": "T-1",
        "source": "receipt",
        "delta": 2,
        "uses_made": 3,
        "uses_permitted": 2,
        "over_limit": True,
        "reservation_id": None,
        "total_uses_made": 40,
    }


def test_an_unlimited_coupon_has_null_uses_permitted() -> None:
    """uses_permitted is null for a coupon without a limit, and still written."""
    dumped = a_coupon_usage(uses_permitted=None, over_limit=False).model_dump(mode="json")
    assert dumped["uses_permitted"] is None


def test_a_points_event_has_the_contract_fields() -> None:
    """PointsEvent carries a signed amount and the balance after it."""
    event = PointsEvent(
        event_id=event_id_for("T-1", "revoke"),
        occurred_at=COMMITTED_AT,
        customer_id="C1",
        transaction_no="T-1",
        kind="revoke",
        points=-19,
        balance=-4,
    )
    assert event.model_dump(mode="json") == {
        "schema_version": 1,
        "event_id": str(event_id_for("T-1", "revoke")),
        "occurred_at": "2026-11-22T01:15:30Z",
        "customer_id": "C1",
        "transaction_no": "T-1",
        "kind": "revoke",
        "points": -19,
        "balance": -4,
    }


def test_an_accepted_return_outcome_has_the_contract_fields() -> None:
    """ReturnOutcomeEvent lists what was given back."""
    event = ReturnOutcomeEvent(
        event_id=event_id_for("T-1", "return-outcome"),
        occurred_at=COMMITTED_AT,
        transaction_no="T-1",
        return_event_id="0e4a3f7b-7c55-4b8a-8f43-2a1d9c6b5e01",
        customer_id="C1",
        status="accepted",
        points_restored=100,
        points_revoked=19,
        coupons_restored=[CouponRestored(coupon_id="TEA", uses=1)],
        fully_returned=True,
    )
    assert event.model_dump(mode="json") == {
        "schema_version": 1,
        "event_id": str(event_id_for("T-1", "return-outcome")),
        "occurred_at": "2026-11-22T01:15:30Z",
        "transaction_no": "T-1",
        "return_event_id": "0e4a3f7b-7c55-4b8a-8f43-2a1d9c6b5e01",
        "return_id": None,
        "customer_id": "C1",
        "status": "accepted",
        "reason": None,
        "points_restored": 100,
        "points_revoked": 19,
        "coupons_restored": [{"coupon_id": "TEA", "uses": 1}],
        "lines": [],
        "fully_returned": True,
    }


def test_a_rejected_return_outcome_defaults_to_nothing_given_back() -> None:
    """A rejection of an anonymous or unknown sale writes zeros, an empty list and null."""
    event = ReturnOutcomeEvent(
        event_id=uuid.uuid4(),
        occurred_at=COMMITTED_AT,
        transaction_no="T-2",
        return_event_id="r-1",
        customer_id=None,
        status="rejected",
        reason="unknown_transaction",
    )
    dumped = event.model_dump(mode="json")
    assert dumped["customer_id"] is None
    assert dumped["reason"] == "unknown_transaction"
    assert (dumped["points_restored"], dumped["points_revoked"]) == (0, 0)
    assert dumped["coupons_restored"] == []


@pytest.mark.parametrize(
    ("status", "reason"), [("rejected", None), ("accepted", "already_returned")]
)
def test_a_return_outcome_reason_is_given_exactly_when_rejected(
    status: str, reason: str | None
) -> None:
    """A rejection says why; an acceptance has no reason."""
    with pytest.raises(ValidationError):
        ReturnOutcomeEvent.model_validate(
            {
                "event_id": uuid.uuid4(),
                "occurred_at": COMMITTED_AT,
                "transaction_no": "T-3",
                "return_event_id": "r-3",
                "customer_id": "C1",
                "status": status,
                "reason": reason,
            }
        )


def test_an_output_event_keeps_the_offset_of_its_time() -> None:
    """occurred_at is written with the offset it was given."""
    tokyo = timezone(timedelta(hours=9))
    event = a_coupon_usage(occurred_at=datetime(2026, 11, 22, 10, 15, 30, tzinfo=tokyo))
    assert event.model_dump(mode="json")["occurred_at"] == "2026-11-22T10:15:30+09:00"


def test_an_output_event_refuses_a_naive_time() -> None:
    """An output event's time is always aware."""
    with pytest.raises(ValidationError):
        a_coupon_usage(occurred_at=datetime(2026, 11, 22, 10, 15, 30))


def test_an_output_event_refuses_fields_the_contract_does_not_name() -> None:
    """Output events are closed: a typo cannot leak onto the topic."""
    with pytest.raises(ValidationError):
        a_coupon_usage(usesMade=3)


def test_an_output_event_is_frozen() -> None:
    """An event is a fact; it cannot be changed after it is made."""
    event = a_coupon_usage()
    with pytest.raises(ValidationError):
        event.delta = 5  # type: ignore[misc]


def test_an_output_event_read_back_from_json_is_equal() -> None:
    """Analytics can read the topic with the same models."""
    event = a_coupon_usage()
    assert CouponUsageEvent.model_validate_json(event.model_dump_json()) == event


def test_event_ids_are_uuid5_of_the_joined_parts() -> None:
    """event_id_for is uuid5 in Punchcard's namespace of the parts joined by ':'."""
    assert event_id_for("T-1", "earn") == uuid.uuid5(EVENT_NAMESPACE, "T-1:earn")
    assert event_id_for("T-1", "earn").version == 5


def test_event_ids_are_stable_and_differ_by_cause() -> None:
    """The same cause gives the same id, so a re-applied effect is a repeat, not a new event."""
    assert event_id_for("T-1", "earn") == event_id_for("T-1", "earn")
    assert event_id_for("T-1", "earn") != event_id_for("T-1", "burn")
    assert event_id_for("T-1", "earn") != event_id_for("T-2", "earn")


def test_the_event_namespace_never_changes() -> None:
    """Changing the namespace would re-id every event already published."""
    assert uuid.UUID("5b0e8f3c-2d4a-5c61-9e7f-0a1b2c3d4e5f") == EVENT_NAMESPACE


def test_an_event_id_needs_at_least_one_part() -> None:
    """An id derived from nothing would collide for every caller."""
    with pytest.raises(ValueError, match="at least one part"):
        event_id_for()


def test_the_outcome_builder_writes_what_the_model_dumps() -> None:
    """return_outcome_event spells every field of ReturnOutcomeEvent, in the model's order."""
    built = return_outcome_event(
        return_event_id="ret-1",
        occurred_at="2026-11-22T01:15:30Z",
        transaction_no="T-1",
        return_id="R1",
        customer_id="C1",
        status="accepted",
        points_restored=7,
        points_revoked=1,
        coupons_restored=[("TEA", 1)],
        lines=[(1, "1"), (3, "0.5")],
        fully_returned=False,
    )
    dumped = ReturnOutcomeEvent.model_validate_json(built.payload).model_dump(mode="json")

    assert dumped == built.fields
    assert list(dumped) == list(built.fields)
    assert built.event_id == str(event_id_for("ret-1", "outcome"))
    assert built.key == "T-1"


def test_a_rejection_names_its_reason_and_takes_nothing() -> None:
    """The new reasons are outcomes of the contract; a rejection has no lines."""
    for reason in ("unknown_line", "exceeds_remaining", "already_returned"):
        built = return_outcome_event(
            return_event_id="ret-2",
            occurred_at="2026-11-22T01:15:30Z",
            transaction_no="T-1",
            return_id=None,
            customer_id=None,
            status="rejected",
            reason=reason,
        )
        model = ReturnOutcomeEvent.model_validate_json(built.payload)
        assert model.reason == reason
        assert model.lines == []
        assert model.fully_returned is False
