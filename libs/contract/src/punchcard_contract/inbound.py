"""Inbound events as the per-record path holds them: msgspec Structs, cheap to decode.

The pydantic models in ``events`` state the contract for the JSON Schemas and decide the
wording of every refusal; these Structs are what a valid record becomes on the hot path.
Money fields are typed ``Any`` only so that the decoder can see whether a value came as a
JSON number or a string (CONTRACT.md section 2 takes both, exactly), and ``occurred_at``
so that it can check the text before reading it; once ``decode_receipt`` returns, money
holds a ``Decimal`` and ``occurred_at`` an aware ``datetime``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from punchcard_contract.events import (
    MAX_COUPON_USES,
    MAX_COUPONS,
    MAX_LINES,
    MAX_POINTS,
    MAX_RETURN_LINES,
)

__all__ = ["InboundCoupon", "InboundLine", "InboundReceipt", "InboundReturn", "InboundReturnLine"]

# Python's re.search, unlike the schema's regex engine, lets "$" match before a final
# newline: \Z does not.
_IDENTIFIER = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}\Z")]
_EVENT_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_CURRENCY = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}\Z")]
_POINTS = Annotated[int, msgspec.Meta(ge=0, le=MAX_POINTS)]
_USES = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUPON_USES)]


class InboundLine(msgspec.Struct, kw_only=True):
    """One line of a receipt; ``quantity``, ``unit_price`` and ``amount`` are Decimals."""

    sku: str
    description: str
    quantity: Any
    unit_price: Any
    amount: Any


class InboundCoupon(msgspec.Struct, kw_only=True):
    """A coupon applied in a sale, ``uses`` times."""

    coupon_id: _IDENTIFIER
    uses: _USES = 1
    reservation_id: _IDENTIFIER | None = None


class InboundReceipt(msgspec.Struct, kw_only=True):
    """A valid ``pos.receipts.v1`` event; ``occurred_at`` and ``total`` are read for you."""

    schema_version: int
    event_id: _EVENT_ID
    transaction_no: _IDENTIFIER
    store_id: _IDENTIFIER
    terminal_id: _IDENTIFIER
    customer_id: _IDENTIFIER | None = None
    occurred_at: Any
    currency: _CURRENCY
    total: Any
    lines: Annotated[list[InboundLine], msgspec.Meta(max_length=MAX_LINES)] = []
    coupons: Annotated[list[InboundCoupon], msgspec.Meta(max_length=MAX_COUPONS)] = []
    points_used: _POINTS = 0
    points_earned: _POINTS = 0
    points_expire_at: Any = None

    def coupon_uses(self) -> dict[str, int]:
        """Uses per coupon, the same ``coupon_id`` twice summed, in first-seen order."""
        uses: dict[str, int] = {}
        for coupon in self.coupons:
            uses[coupon.coupon_id] = uses.get(coupon.coupon_id, 0) + coupon.uses
        return uses

    def coupon_reservations(self) -> dict[str, str]:
        """The reservation each coupon's uses consume: the first one named for it."""
        named: dict[str, str] = {}
        for coupon in self.coupons:
            if coupon.reservation_id is not None:
                named.setdefault(coupon.coupon_id, coupon.reservation_id)
        return named


class InboundReturnLine(msgspec.Struct, kw_only=True):
    """How much of one line a return takes back; ``quantity`` is a Decimal greater than 0."""

    line_no: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    quantity: Any


class InboundReturn(msgspec.Struct, kw_only=True):
    """A valid ``pos.returns.v1`` event; ``occurred_at`` is a ``datetime``.

    ``lines`` is None for a return of everything that remains of the sale.
    """

    schema_version: int
    event_id: _EVENT_ID
    transaction_no: _IDENTIFIER
    store_id: _IDENTIFIER
    terminal_id: _IDENTIFIER
    occurred_at: Any
    reason: str | None = None
    return_id: _IDENTIFIER | None = None
    lines: (
        Annotated[list[InboundReturnLine], msgspec.Meta(min_length=1, max_length=MAX_RETURN_LINES)]
        | None
    ) = None
