"""Building contract events for end-to-end tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.helpers import unique_id


def receipt(
    customer_id: str | None,
    *,
    transaction_no: str | None = None,
    coupons: list[tuple[str, int]] = (),  # type: ignore[assignment]
    points_used: int = 0,
    points_earned: int = 0,
) -> dict[str, Any]:
    """A valid ReceiptEvent as a POS would send it."""
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "transaction_no": transaction_no or unique_id("T"),
        "store_id": "S0042",
        "terminal_id": "T03",
        "customer_id": customer_id,
        "occurred_at": "2026-11-22T10:15:30+09:00",
        "currency": "JPY",
        "total": "1980",
        "lines": [
            {
                "sku": "4901234567890",
                "description": "Green tea 500ml",
                "quantity": 2,
                "unit_price": "150",
                "amount": "300",
            }
        ],
        "coupons": [{"coupon_id": c, "uses": n} for c, n in coupons],
        "points_used": points_used,
        "points_earned": points_earned,
    }


def return_event(transaction_no: str) -> dict[str, Any]:
    """A valid ReturnEvent for the whole transaction."""
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "transaction_no": transaction_no,
        "store_id": "S0042",
        "terminal_id": "T01",
        "occurred_at": "2026-11-23T09:00:00+09:00",
        "reason": "changed mind",
    }


def encode(document: dict[str, Any]) -> bytes:
    """JSON bytes, as on the wire."""
    return json.dumps(document).encode()
