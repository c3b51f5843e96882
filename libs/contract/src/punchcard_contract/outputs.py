"""Every output event of the contract (CONTRACT.md section 3) is built here, once.

Decisions return plain values (who, which coupon, how many, the count after); these
builders turn them into the event's fields in the contract's order and encode them once.
They are the only place that spells an output payload, so a field added to the contract is
added here and nowhere else. They write what ``model_dump(mode="json")`` of the models in
``events`` would, without validating our own values again (that would cost more than
deciding them did); ``tests/unit/contract/test_contract_output_events.py`` holds them to
the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from punchcard_contract.events import event_id_text

__all__ = [
    "OutputEvent",
    "OutputKind",
    "coupon_usage_event",
    "points_event",
    "return_outcome_event",
]

OutputKind = Literal["coupon_usage", "points", "return_outcome"]
PointsKind = Literal["earn", "burn", "restore", "revoke", "expire"]

_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class OutputEvent:
    """An output event ready for the outbox: its kind (the topic), key, id and bytes.

    ``fields`` is the payload as plain values, for the callers that also store or inspect
    it (a return's outcome is kept for the HTTP API).
    """

    kind: OutputKind
    key: str
    event_id: str
    fields: dict[str, Any]
    payload: bytes


def _event(kind: OutputKind, key: str, fields: dict[str, Any]) -> OutputEvent:
    return OutputEvent(kind, key, fields["event_id"], fields, _ENCODER.encode(fields))


def coupon_usage_event(
    *,
    cause: Sequence[str],
    occurred_at: str,
    customer_id: str,
    coupon_id: str,
    transaction_no: str,
    source: Literal["receipt", "return"],
    delta: int,
    uses_made: int,
    uses_permitted: int | None,
    reservation_id: str | None = None,
    total_uses_made: int,
    total_uses_permitted: int | None = None,
) -> OutputEvent:
    """A customer's count of a coupon changed by ``delta``; ``uses_made`` is the count after.

    ``cause`` names what changed it (e.g. the sale and the coupon); the event id is derived
    from it, so the same change always gives the same id. ``total_uses_made`` is the
    coupon's count across all customers after the change; ``over_limit`` says either
    limit was passed (``total_uses_permitted`` is not a field of the event, only a limit).
    """
    return _event(
        "coupon_usage",
        customer_id,
        {
            "schema_version": 1,
            "event_id": event_id_text(*cause),
            "occurred_at": occurred_at,
            "customer_id": customer_id,
            "coupon_id": coupon_id,
            "transaction_no": transaction_no,
            "source": source,
            "delta": delta,
            "uses_made": uses_made,
            "uses_permitted": uses_permitted,
            "over_limit": (uses_permitted is not None and uses_made > uses_permitted)
            or (total_uses_permitted is not None and total_uses_made > total_uses_permitted),
            "reservation_id": reservation_id,
            "total_uses_made": total_uses_made,
        },
    )


def points_event(
    *,
    cause: Sequence[str],
    occurred_at: str,
    customer_id: str,
    transaction_no: str,
    kind: PointsKind,
    points: int,
    balance: int,
) -> OutputEvent:
    """A customer's balance moved by ``points`` (signed); ``balance`` is the balance after."""
    return _event(
        "points",
        customer_id,
        {
            "schema_version": 1,
            "event_id": event_id_text(*cause),
            "occurred_at": occurred_at,
            "customer_id": customer_id,
            "transaction_no": transaction_no,
            "kind": kind,
            "points": points,
            "balance": balance,
        },
    )


def return_outcome_event(
    *,
    return_event_id: str,
    occurred_at: str,
    transaction_no: str,
    return_id: str | None,
    customer_id: str | None,
    status: Literal["accepted", "rejected"],
    reason: str | None = None,
    points_restored: int = 0,
    points_revoked: int = 0,
    coupons_restored: Sequence[tuple[str, int]] = (),
    lines: Sequence[tuple[int, str]] = (),
    fully_returned: bool = False,
) -> OutputEvent:
    """What became of one return; one outcome per return event, so its id is the event's."""
    return _event(
        "return_outcome",
        transaction_no,
        {
            "schema_version": 1,
            "event_id": event_id_text(return_event_id, "outcome"),
            "occurred_at": occurred_at,
            "transaction_no": transaction_no,
            "return_event_id": return_event_id,
            "return_id": return_id,
            "customer_id": customer_id,
            "status": status,
            "reason": reason,
            "points_restored": points_restored,
            "points_revoked": points_revoked,
            "coupons_restored": [
                {"coupon_id": coupon_id, "uses": uses} for coupon_id, uses in coupons_restored
            ],
            "lines": [{"line_no": line_no, "quantity": quantity} for line_no, quantity in lines],
            "fully_returned": fully_returned,
        },
    )
