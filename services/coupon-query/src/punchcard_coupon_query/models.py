"""The shapes of the HTTP API (CONTRACT.md section 5), as pydantic models.

They are the OpenAPI document too: what is declared here is what integrators see.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from punchcard_coupon_query.eligibility import CouponTerms
from punchcard_coupon_query.eligibility import Eligibility as EligibilityDecision

__all__ = [
    "IDENTIFIER_PATTERN",
    "MAX_TARGETED_CUSTOMERS",
    "RFC3339_PATTERN",
    "ApiKeyScope",
    "Coupon",
    "CouponInput",
    "CouponList",
    "CustomerCoupons",
    "CustomerReservations",
    "Eligibility",
    "ExpiringPoints",
    "Health",
    "Identifier",
    "LedgerEntry",
    "LineQuantity",
    "PendingReturn",
    "PointsPage",
    "Problem",
    "ProblemError",
    "ReceiptDocument",
    "ReceiptSummary",
    "ReceiptsPage",
    "Reservation",
    "ReservationInput",
    "RestoredCoupon",
    "ReturnOutcome",
    "customer_coupons_json",
    "eligibility_json",
]

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
# RFC 3339 date-time: the offset is mandatory, "T" or a space between date and time.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
MAX_TARGETED_CUSTOMERS = 100_000
# A coupon can name at most this many stores; real chains stay far below it.
MAX_STORES = 10_000
# PostgreSQL integer: uses_permitted is stored as one.
MAX_USES_PERMITTED = 2_147_483_647

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
ApiKeyScope = Literal["read", "checkout", "admin"]
Reason = Literal[
    "inactive",
    "not_started",
    "expired",
    "not_targeted",
    "store_not_allowed",
    "exhausted",
    "reserved",
    "sold_out",
]


# asyncpg writes Python's smallest and largest datetimes as -infinity and infinity,
# which come back without an offset; keep stored times strictly inside those bounds.
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def _storable(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time is out of range once converted to UTC") from exc
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError("time must be from 0001-01-02 up to 9999-12-31 (UTC)")
    return value


StorableTime = Annotated[AwareDatetime, AfterValidator(_storable)]


class Problem(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemError] | None = Field(
        default=None, description="For 422: each invalid input, where it is and why."
    )
    reason: str | None = Field(
        default=None,
        description=(
            "For a refused reservation (409): the eligibility reason, exceeds_remaining or "
            "idempotency_conflict."
        ),
    )


class ProblemError(BaseModel):
    """One invalid input of a request."""

    loc: list[str | int]
    msg: str
    type: str


class CouponInput(BaseModel):
    """The body of ``PUT /v1/coupons/{coupon_id}``: the whole coupon, replacing any before."""

    model_config = ConfigDict(extra="forbid")

    coupon_id: Identifier | None = Field(
        default=None, description="Optional; when given it must equal the path's coupon_id."
    )
    # PostgreSQL text cannot hold NUL characters.
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
    description: Annotated[str, StringConstraints(max_length=4000, pattern=r"^[^\x00]*$")] = ""
    uses_permitted: Annotated[int, Field(ge=1, le=MAX_USES_PERMITTED)] | None = Field(
        default=None, description="Uses each customer may make; null for unlimited."
    )
    valid_from: StorableTime | None = None
    valid_until: StorableTime | None = Field(default=None, description="Exclusive.")
    active: bool = True
    customer_ids: Annotated[list[Identifier], Field(max_length=MAX_TARGETED_CUSTOMERS)] | None = (
        Field(default=None, description="Null: issued to everyone; else only these customers.")
    )
    store_ids: Annotated[list[Identifier], Field(max_length=MAX_STORES)] | None = Field(
        default=None, description="Null: usable at every store."
    )
    restore_on_return: bool = True
    total_uses_permitted: Annotated[int, Field(ge=1, le=MAX_USES_PERMITTED)] | None = Field(
        default=None, description="Uses across all customers; null for unlimited."
    )

    @model_validator(mode="after")
    def _window_is_ordered(self) -> CouponInput:
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            raise ValueError("valid_until must be later than valid_from")
        return self


class Coupon(BaseModel):
    """A coupon of the catalog."""

    coupon_id: Identifier
    name: str
    description: str
    uses_permitted: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    active: bool
    customer_ids: list[str] | None
    store_ids: list[str] | None
    restore_on_return: bool
    total_uses_permitted: int | None


class CouponList(BaseModel):
    """Every coupon of the catalog, ordered by coupon_id."""

    coupons: list[Coupon]


class Eligibility(BaseModel):
    """Whether one customer may use one coupon at a time and store, and why not."""

    coupon_id: str
    name: str
    description: str
    uses_permitted: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    uses_made: int
    uses_reserved: int = Field(description="This customer's active reservations of it.")
    uses_remaining: int | None = Field(
        description="uses_permitted - uses_made - uses_reserved, not below 0; null if unlimited."
    )
    total_uses_remaining: int | None = Field(
        description=(
            "total_uses_permitted less every customer's uses made and active reservations, "
            "not below 0; null if unlimited."
        )
    )
    eligible: bool
    reason: Reason | None

    @classmethod
    def of(cls, decision: EligibilityDecision) -> Eligibility:
        """The API view of a decision of the eligibility rule."""
        coupon = decision.coupon
        return cls(
            coupon_id=coupon.coupon_id,
            name=coupon.name,
            description=coupon.description,
            uses_permitted=coupon.uses_permitted,
            valid_from=coupon.valid_from,
            valid_until=coupon.valid_until,
            uses_made=decision.uses_made,
            uses_reserved=decision.uses_reserved,
            uses_remaining=decision.uses_remaining,
            total_uses_remaining=decision.total_uses_remaining,
            eligible=decision.eligible,
            reason=None if decision.reason is None else decision.reason.value,
        )


def _terms_fields(coupon: CouponTerms) -> dict[str, Any]:
    """The first six fields of an Eligibility: the coupon's own terms."""
    return {
        "coupon_id": coupon.coupon_id,
        "name": coupon.name,
        "description": coupon.description,
        "uses_permitted": coupon.uses_permitted,
        "valid_from": coupon.valid_from,
        "valid_until": coupon.valid_until,
    }


def _eligibility_fields(decision: EligibilityDecision) -> dict[str, Any]:
    return {
        **_terms_fields(decision.coupon),
        "uses_made": decision.uses_made,
        "uses_reserved": decision.uses_reserved,
        "uses_remaining": decision.uses_remaining,
        "total_uses_remaining": decision.total_uses_remaining,
        "eligible": decision.reason is None,
        "reason": None if decision.reason is None else decision.reason.value,
    }


# orjson writes a zero UTC offset as "Z", as pydantic does.
_JSON_OPTIONS = orjson.OPT_UTC_Z


def eligibility_json(decision: EligibilityDecision) -> bytes:
    """An ``Eligibility`` body, byte for byte what the model would write, without the model.

    The hot routes answer with this: our own values need no validation, and building
    pydantic models for every coupon of every request cost more than the rule itself.
    A unit test holds it to ``Eligibility.of(decision).model_dump_json()``.
    """
    return orjson.dumps(_eligibility_fields(decision), option=_JSON_OPTIONS)


def customer_coupons_json(customer_id: str, at: datetime, entries: Sequence[bytes]) -> bytes:
    """A ``CustomerCoupons`` body around its coupons' ``eligibility_json`` entries.

    Byte for byte what the model would write (a unit test holds it to that); the
    entries come from ``listing``, which keeps them per coupon version.
    """
    return b"".join(
        (
            b'{"customer_id":',
            orjson.dumps(customer_id),
            b',"at":',
            orjson.dumps(at, option=_JSON_OPTIONS),
            b',"coupons":[',
            b",".join(entries),
            b"]}",
        )
    )


class CustomerCoupons(BaseModel):
    """The coupons a customer can see at a moment (and store)."""

    customer_id: str
    at: datetime
    coupons: list[Eligibility]


class LedgerEntry(BaseModel):
    """One booking of points; ``points`` is signed (burn and revoke are negative)."""

    kind: Literal["earn", "burn", "restore", "revoke", "expire"]
    points: int
    transaction_no: str
    occurred_at: datetime


class ExpiringPoints(BaseModel):
    """Points still to spend that expire at one moment (exclusive: gone at ``expires_at``)."""

    expires_at: datetime
    points: int


class PointsPage(BaseModel):
    """A customer's balance, what of it expires when, and one page of their ledger."""

    customer_id: str
    balance: int
    expiring: list[ExpiringPoints]
    """The remaining points per expiry moment, soonest first, at most 50."""
    ledger: list[LedgerEntry]
    next_cursor: str | None


class ReceiptSummary(BaseModel):
    """One receipt in a customer's list."""

    transaction_no: str
    store_id: str
    occurred_at: datetime
    total: str = Field(description="Exact decimal, as PostgreSQL keeps it.", examples=["1980"])
    currency: str
    returned: bool = Field(description="True when nothing of the sale remains.")
    returned_amount: str = Field(
        description=(
            "The returned share of the sale's positive line amounts (R), an exact decimal; "
            '"0" when nothing was returned.'
        ),
        examples=["0", "300"],
    )


class ReceiptsPage(BaseModel):
    """One page of a customer's receipts, newest first."""

    customer_id: str
    receipts: list[ReceiptSummary]
    next_cursor: str | None


class RestoredCoupon(BaseModel):
    """Uses of one coupon given back by a return."""

    coupon_id: str
    uses: int


class LineQuantity(BaseModel):
    """A quantity of one line of a sale (1-based ``line_no``), as an exact decimal string."""

    line_no: int
    quantity: str = Field(examples=["1", "0.5"])


class ReturnOutcome(BaseModel):
    """The ReturnOutcomeEvent of CONTRACT.md section 3, as the returns service decided it."""

    model_config = ConfigDict(extra="allow")

    schema_version: int
    event_id: str
    occurred_at: str
    transaction_no: str
    return_event_id: str
    return_id: str | None = None
    customer_id: str | None
    status: Literal["accepted", "rejected"]
    reason: (
        Literal["already_returned", "unknown_transaction", "unknown_line", "exceeds_remaining"]
        | None
    )
    points_restored: int
    points_revoked: int
    coupons_restored: list[RestoredCoupon]
    lines: list[LineQuantity] = Field(default_factory=list)
    fully_returned: bool = False


class PendingReturn(BaseModel):
    """A return is known but still waits for its receipt."""

    status: Literal["pending"]


class ReceiptDocument(BaseModel):
    """The receipt exactly as the POS sent it (unknown fields kept), plus its return state."""

    model_config = ConfigDict(extra="allow")

    transaction_no: str
    returned: bool = Field(description="True when nothing of the sale remains.")
    return_: ReturnOutcome | None = Field(alias="return", description="The latest outcome.")
    returns: list[ReturnOutcome] = Field(
        description="Every decided outcome of a return of this sale, oldest first."
    )
    lines_remaining: list[LineQuantity] = Field(
        description="The lines with something not yet returned, and how much of each."
    )


class ReservationInput(BaseModel):
    """The body of a reservation call: how many uses to hold, how long, and where."""

    model_config = ConfigDict(extra="forbid")

    uses: Annotated[int, Field(ge=1, le=100)] = 1
    ttl_seconds: Annotated[int, Field(ge=1, le=86_400)] = Field(
        default=900, description="Seconds the uses are held unless consumed or released."
    )
    store_id: Identifier | None = Field(
        default=None, description="The store of the checkout; the coupon must be allowed there."
    )
    terminal_id: Identifier | None = None


class Reservation(BaseModel):
    """Uses of a coupon held for a customer until ``expires_at``."""

    reservation_id: str
    customer_id: str
    coupon_id: str
    uses: int
    expires_at: datetime
    uses_remaining: int | None = Field(
        description="The customer's uses left, this reservation counted; null if unlimited."
    )
    total_uses_remaining: int | None = Field(
        description="Uses left across all customers, holds counted; null if unlimited."
    )


class CustomerReservations(BaseModel):
    """A customer's active reservations, soonest to expire first."""

    customer_id: str
    reservations: list[Reservation]


class Health(BaseModel):
    """A liveness or readiness answer."""

    status: str


Problem.model_rebuild()
