"""Whether uses of a coupon may be held for a customer, decided on plain values.

The eligibility rule (``eligibility.evaluate``) already counts every active reservation:
a coupon whose remaining uses are all held is ``reserved`` (this customer's holds) or
``sold_out`` (everyone's). A reservation is refused with that reason; an eligible coupon
with fewer uses left than asked for is refused as ``exceeds_remaining``.
"""

from __future__ import annotations

import hashlib
from typing import Final

import orjson

from punchcard_coupon_query.eligibility import Eligibility

__all__ = ["EXCEEDS_REMAINING", "IDEMPOTENCY_CONFLICT", "refusal", "request_fingerprint"]

EXCEEDS_REMAINING: Final = "exceeds_remaining"
IDEMPOTENCY_CONFLICT: Final = "idempotency_conflict"


def refusal(eligibility: Eligibility, uses: int) -> str | None:
    """The 409 ``reason`` for holding ``uses`` more, or None when they may be held."""
    if eligibility.reason is not None:
        return eligibility.reason.value
    left = [
        n for n in (eligibility.uses_remaining, eligibility.total_uses_remaining) if n is not None
    ]
    if left and uses > min(left):
        return EXCEEDS_REMAINING
    return None


def request_fingerprint(customer_id: str, coupon_id: str, body: dict[str, object]) -> bytes:
    """What an ``Idempotency-Key`` is held to: the customer, the coupon and the body,
    defaults applied, so that a retry spelling a default out is the same request."""
    canonical = orjson.dumps(
        {"customer_id": customer_id, "coupon_id": coupon_id, "body": body},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).digest()
