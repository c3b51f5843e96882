"""Contract documents as a POS sends them, shared by every test tier."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tests.helpers import unique_id

__all__ = ["encode", "receipt_document", "redelivery_of", "return_document", "sale_lines"]


def receipt_document(
    customer_id: str | None,
    *,
    transaction_no: str | None = None,
    coupons: Sequence[tuple[str, int]] = (),
    points_used: int = 0,
    points_earned: int = 0,
    total: str = "1980",
    **extra: Any,
) -> dict[str, Any]:
    """A valid ReceiptEvent document with a fresh transaction_no unless one is given."""
    document: dict[str, Any] = {
        "schema_version": 1,
        "event_id": unique_id("E"),
        "transaction_no": transaction_no or unique_id("TX"),
        "store_id": "S0042",
        "terminal_id": "T03",
        "customer_id": customer_id,
        "occurred_at": "2026-11-22T10:15:30+09:00",
        "currency": "JPY",
        "total": total,
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
    document.update(extra)
    return document


def redelivery_of(document: dict[str, Any]) -> dict[str, Any]:
    """The same sale sent again under a new event_id, as a producer retry may do."""
    return {**document, "event_id": unique_id("E")}


def return_document(
    transaction_no: str,
    *,
    event_id: str | None = None,
    lines: Sequence[tuple[int, int | str]] | None = None,
    return_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid ReturnEvent, with a fresh event_id unless one is given.

    Without ``lines`` it returns the whole sale; with ``(line_no, quantity)`` pairs it
    returns those, under ``return_id`` (a fresh one unless given).
    """
    document: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id or unique_id("RE"),
        "transaction_no": transaction_no,
        "store_id": "S0042",
        "terminal_id": "T01",
        "occurred_at": "2026-11-23T09:00:00+09:00",
        "reason": "changed mind",
    }
    if lines is not None:
        document["return_id"] = return_id or unique_id("R")
        document["lines"] = [{"line_no": n, "quantity": q} for n, q in lines]
    elif return_id is not None:
        document["return_id"] = return_id
    document.update(extra)
    return document


def sale_lines(*lines: tuple[int | str, str]) -> list[dict[str, Any]]:
    """Receipt lines from ``(quantity, amount)`` pairs (Punchcard never reads the unit price)."""
    return [
        {
            "sku": f"49012345678{n:02d}",
            "description": f"Item {n}",
            "quantity": quantity,
            "unit_price": amount,
            "amount": amount,
        }
        for n, (quantity, amount) in enumerate(lines, start=1)
    ]


def encode(document: dict[str, Any]) -> bytes:
    """JSON bytes, as on the wire."""
    return json.dumps(document).encode()
