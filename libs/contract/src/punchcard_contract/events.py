"""The events of the external contract (CONTRACT.md sections 2 and 3) as pydantic models.

Input events (from the POS fleet) allow unknown fields, because producers may add them and
the stored receipt keeps them. Output events (from Punchcard) are frozen and closed: what
``model_dump(mode="json")`` gives is exactly what goes on the topic.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from punchcard_contract.values import Count, Identifier, Money, Quantity, Timestamp

__all__ = [
    "EVENT_NAMESPACE",
    "MAX_COUPONS",
    "MAX_COUPON_USES",
    "MAX_LINES",
    "MAX_POINTS",
    "MAX_RETURN_LINES",
    "CouponRestored",
    "CouponUsageEvent",
    "CouponUse",
    "EventId",
    "PointsEvent",
    "ReceiptEvent",
    "ReceiptLine",
    "ReturnEvent",
    "ReturnLine",
    "ReturnOutcomeEvent",
    "ReturnedLine",
    "SchemaVersion",
    "event_id_for",
    "event_id_text",
    "json_time",
]

EVENT_NAMESPACE = uuid.UUID("5b0e8f3c-2d4a-5c61-9e7f-0a1b2c3d4e5f")
"""The namespace of every output ``event_id``. Never change it: ids must stay stable."""

MAX_LINES = 500
MAX_COUPONS = 50
MAX_COUPON_USES = 100
MAX_POINTS = 1_000_000_000
MAX_RETURN_LINES = 500
_MAX_LINE_NO = 2**31 - 1


def _integer_only(value: object) -> object:
    # Literal[1] alone would take True (True == 1); a version is a JSON integer.
    if type(value) is not int:
        raise ValueError("schema_version must be the integer 1")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_integer_only)]
"""``1`` as a JSON integer (``true`` and ``"1"`` are not version 1)."""

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""A producer's event id: any non-empty text up to 128 characters (UUIDs are typical)."""

Points = Annotated[Count, Field(ge=0, le=MAX_POINTS)]


def event_id_for(*parts: str) -> uuid.UUID:
    """Derive an output event's id from what caused it, e.g. ``(transaction_no, "earn")``.

    A deterministic id lets an effect that is applied again after a crash produce the same
    event, which readers then drop as a repeat (CONTRACT.md section 1).
    """
    if not parts:
        raise ValueError("event_id_for needs at least one part")
    return uuid.uuid5(EVENT_NAMESPACE, ":".join(parts))


_NAMESPACED = hashlib.sha1(EVENT_NAMESPACE.bytes, usedforsecurity=False)


def event_id_text(*parts: str) -> str:
    """``str(event_id_for(*parts))``, without building a ``UUID`` on the way.

    The output path derives a few ids per receipt; this is the same RFC 4122 version 5
    computation (SHA-1 of namespace and name, version and variant bits set) done directly.
    """
    if not parts:
        raise ValueError("event_id_text needs at least one part")
    digest = _NAMESPACED.copy()
    digest.update(":".join(parts).encode("utf-8"))
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_TIME_JSON = TypeAdapter(AwareDatetime)


def json_time(moment: datetime) -> str:
    """A time as an output event's JSON carries it: exactly what ``model_dump`` writes."""
    text: str = _TIME_JSON.dump_python(moment, mode="json")
    return text


class _InputModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class _OutputModel(BaseModel):
    # Every field of an output event is always written, so its schema marks all required.
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )

    schema_version: SchemaVersion = 1
    event_id: uuid.UUID
    occurred_at: Timestamp


class ReceiptLine(_InputModel):
    """One line of a receipt. Producers may add fields; they are kept."""

    sku: str
    description: str
    quantity: Quantity
    unit_price: Money
    amount: Money


class CouponUse(_InputModel):
    """A coupon applied in a sale, ``uses`` times."""

    coupon_id: Identifier
    uses: Annotated[Count, Field(ge=1, le=MAX_COUPON_USES)] = 1
    reservation_id: Identifier | None = None
    """The reservation these uses consume (CONTRACT.md section 5); none, or one that is
    unknown, expired or another customer's, still records the uses."""


_ANONYMOUS_HAS_NO_POINTS: dict[str, Any] = {
    "allOf": [
        {
            "if": {
                "anyOf": [
                    {"not": {"required": ["customer_id"]}},
                    {
                        "required": ["customer_id"],
                        "properties": {"customer_id": {"type": "null"}},
                    },
                ]
            },
            "then": {"properties": {"points_used": {"const": 0}, "points_earned": {"const": 0}}},
        }
    ]
}


class ReceiptEvent(_InputModel):
    """A sale, published by a POS terminal on ``pos.receipts.v1``."""

    model_config = ConfigDict(json_schema_extra=_ANONYMOUS_HAS_NO_POINTS)

    schema_version: SchemaVersion
    event_id: EventId
    transaction_no: Identifier
    store_id: Identifier
    terminal_id: Identifier
    customer_id: Identifier | None = None
    occurred_at: Timestamp
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    total: Money
    lines: Annotated[list[ReceiptLine], Field(max_length=MAX_LINES)] = Field(default_factory=list)
    coupons: Annotated[list[CouponUse], Field(max_length=MAX_COUPONS)] = Field(default_factory=list)
    points_used: Points = 0
    points_earned: Points = 0
    points_expire_at: Timestamp | None = None
    """This sale's earned points expire then, whatever the program's lifetime."""

    @model_validator(mode="after")
    def _anonymous_sale_has_no_points(self) -> Self:
        # Points belong to a customer; on an anonymous sale there is nobody to book them to.
        if self.customer_id is None and (self.points_used or self.points_earned):
            raise ValueError("points_used and points_earned must be 0 on an anonymous sale")
        return self

    def coupon_uses(self) -> dict[str, int]:
        """Uses per coupon, the same ``coupon_id`` twice summed, in first-seen order.

        The contract counts a coupon listed twice as one coupon used twice.
        """
        uses: dict[str, int] = {}
        for coupon in self.coupons:
            uses[coupon.coupon_id] = uses.get(coupon.coupon_id, 0) + coupon.uses
        return uses


class ReturnLine(_InputModel):
    """How much of one line of the sale a return takes back."""

    line_no: Annotated[Count, Field(ge=1, le=_MAX_LINE_NO)]
    """The 1-based position of the line in the sale's ``lines`` array.

    A position the sale does not have is an outcome (``unknown_line``), not a refusal;
    the bound only keeps absurd integers out.
    """
    quantity: Quantity


class ReturnEvent(_InputModel):
    """A return, published by a POS terminal on ``pos.returns.v1``.

    Without ``lines`` it returns everything of the sale not yet returned; with ``lines``
    exactly those quantities, and then ``return_id`` names it within its sale.
    """

    schema_version: SchemaVersion
    event_id: EventId
    transaction_no: Identifier
    store_id: Identifier
    terminal_id: Identifier
    occurred_at: Timestamp
    reason: str | None = None
    return_id: Identifier | None = None
    lines: Annotated[list[ReturnLine], Field(min_length=1, max_length=MAX_RETURN_LINES)] | None = (
        None
    )

    @model_validator(mode="after")
    def _lines_are_named_once(self) -> Self:
        # A refund of some lines must be told apart from its redelivery: by its return_id.
        if self.lines is not None:
            if self.return_id is None:
                raise ValueError("return_id is required when lines are given")
            numbers = [line.line_no for line in self.lines]
            if len(set(numbers)) != len(numbers):
                raise ValueError("each line_no may appear at most once in a return")
        return self


class CouponUsageEvent(_OutputModel):
    """A customer's count of a coupon changed (``punchcard.coupon-usage.v1``)."""

    customer_id: Identifier
    coupon_id: Identifier
    transaction_no: Identifier
    source: Literal["receipt", "return"]
    delta: Count
    uses_made: Annotated[Count, Field(ge=0)]
    uses_permitted: Annotated[Count, Field(ge=1)] | None
    over_limit: Annotated[bool, Strict()]
    reservation_id: Identifier | None
    total_uses_made: Annotated[Count, Field(ge=0)]


class PointsEvent(_OutputModel):
    """A customer's points balance changed (``punchcard.points.v1``)."""

    customer_id: Identifier
    transaction_no: Identifier
    kind: Literal["earn", "burn", "restore", "revoke", "expire"]
    points: Count
    balance: Count


class CouponRestored(BaseModel):
    """Coupon uses given back by an accepted return."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )

    coupon_id: Identifier
    uses: Annotated[Count, Field(ge=1)]


class ReturnedLine(BaseModel):
    """What an accepted return took back of one line; the quantity as a decimal string."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )

    line_no: Annotated[Count, Field(ge=1)]
    quantity: Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?$")]


class ReturnOutcomeEvent(_OutputModel):
    """What became of a return (``punchcard.return-outcomes.v1``).

    The points and coupon uses are this return's own; ``fully_returned`` says whether
    anything of the sale remains after it.
    """

    transaction_no: Identifier
    return_event_id: EventId
    return_id: Identifier | None = None
    customer_id: Identifier | None
    status: Literal["accepted", "rejected"]
    reason: (
        Literal["already_returned", "unknown_transaction", "unknown_line", "exceeds_remaining"]
        | None
    ) = None
    points_restored: Annotated[Count, Field(ge=0)] = 0
    points_revoked: Annotated[Count, Field(ge=0)] = 0
    coupons_restored: list[CouponRestored] = Field(default_factory=list)
    lines: list[ReturnedLine] = Field(default_factory=list)
    fully_returned: Annotated[bool, Strict()] = False

    @model_validator(mode="after")
    def _reason_matches_status(self) -> Self:
        # A rejection always says why, and an accepted return has nothing to explain.
        if (self.status == "rejected") != (self.reason is not None):
            raise ValueError("reason is required when rejected and must be null when accepted")
        return self
