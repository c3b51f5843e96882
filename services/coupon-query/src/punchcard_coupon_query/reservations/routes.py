"""The reservation calls of CONTRACT.md section 5: decode, decide in one transaction, answer.

The decision is ``decision.refusal`` over the eligibility rule, on values read under the
locks ``store.lock_for_decision`` takes; every statement runs on the primary.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import Header, HTTPException, Path, Response
from fastapi.responses import JSONResponse

from punchcard_coupon_query import queries
from punchcard_coupon_query.api import (
    JSON,
    PROBLEM_MEDIA_TYPE,
    Checkout,
    CouponId,
    CustomerId,
    Db,
    checkout,
    problem_body,
)
from punchcard_coupon_query.eligibility import Eligibility, evaluate
from punchcard_coupon_query.models import (
    IDENTIFIER_PATTERN,
    CustomerReservations,
    Problem,
    Reservation,
    ReservationInput,
)
from punchcard_coupon_query.reservations import store
from punchcard_coupon_query.reservations.decision import (
    IDEMPOTENCY_CONFLICT,
    refusal,
    request_fingerprint,
)

__all__ = ["cancel_reservation", "customer_reservations", "reserve"]

log = structlog.get_logger(__name__)

ReservationId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Kept per API key for 24 hours: a retry answers as the first call did.",
    ),
]

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Problem,
        "description": (
            "Not reservable: `reason` is the eligibility reason, `exceeds_remaining` or "
            "`idempotency_conflict`."
        ),
    },
    404: {"model": Problem, "description": "The coupon is not in the catalog."},
}


def _refused(reason: str, detail: str) -> JSONResponse:
    body = problem_body(409, detail)
    body["reason"] = reason
    return JSONResponse(body, status_code=409, media_type=PROBLEM_MEDIA_TYPE)


def _decided(candidate: queries.CouponCandidate, store_id: str | None, at: datetime) -> Eligibility:
    terms, uses_made, issued, reserved, taken = candidate
    return evaluate(
        terms,
        uses_made=uses_made,
        issued_to_customer=issued,
        store_id=store_id,
        at=at,
        uses_reserved=reserved,
        total_taken=taken,
    )


class _RefusedError(Exception):
    """Raised inside the decision's transaction so that it rolls back (the key's claim too)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _less(remaining: int | None, uses: int) -> int | None:
    return None if remaining is None else max(remaining - uses, 0)


@checkout.post(
    "/v1/customers/{customer_id}/coupons/{coupon_id}/reservations",
    operation_id="reserveCoupon",
    tags=["reservations"],
    status_code=201,
    response_model=Reservation,
    responses=_CONFLICT,
)
async def reserve(
    db: Db,
    *,
    who: Checkout,
    customer_id: CustomerId,
    coupon_id: CouponId,
    idempotency_key: IdempotencyKey = None,
    body: ReservationInput | None = None,
) -> Response:
    """Hold uses of the coupon for the customer at a checkout, for ``ttl_seconds``."""
    asked = body if body is not None else ReservationInput()
    try:
        answer = await _reserve(
            db,
            key_id=who.key_id,
            customer_id=customer_id,
            coupon_id=coupon_id,
            idempotency_key=idempotency_key,
            asked=asked,
        )
    except _RefusedError as refused:
        return _refused(refused.reason, refused.detail)
    return Response(answer, status_code=201, media_type=JSON)


async def _reserve(
    db: Db,
    *,
    key_id: str,
    customer_id: str,
    coupon_id: str,
    idempotency_key: str | None,
    asked: ReservationInput,
) -> str:
    """The 201 answer's JSON; raises ``_RefusedError`` for a 409, which rolls back."""
    async with db.transaction() as conn:
        if idempotency_key is not None:
            fingerprint = request_fingerprint(customer_id, coupon_id, asked.model_dump())
            first = await store.claim_idempotency_key(conn, key_id, idempotency_key, fingerprint)
            if first is not None:
                if first[0] != fingerprint:
                    raise _RefusedError(
                        IDEMPOTENCY_CONFLICT, "this Idempotency-Key was used with another request"
                    )
                return first[1]
        candidate = await store.lock_for_decision(conn, customer_id, coupon_id)
        if candidate is None:
            raise HTTPException(404, f"coupon {coupon_id!r} is not in the catalog")
        decision = _decided(candidate, asked.store_id, await store.clock(conn))
        reason = refusal(decision, asked.uses)
        if reason is not None:
            raise _RefusedError(reason, f"coupon {coupon_id!r} cannot be reserved: {reason}")
        row = await store.insert_reservation(
            conn,
            reservation_id=str(uuid.uuid4()),
            customer_id=customer_id,
            coupon_id=coupon_id,
            uses=asked.uses,
            ttl_seconds=asked.ttl_seconds,
            store_id=asked.store_id,
            terminal_id=asked.terminal_id,
        )
        answer = _reservation(
            row,
            _less(decision.uses_remaining, row.uses),
            _less(decision.total_uses_remaining, row.uses),
        ).model_dump_json()
        if idempotency_key is not None:
            await store.store_response(conn, key_id, idempotency_key, answer)
    log.info("coupon_reserved", customer_id=customer_id, coupon_id=coupon_id, uses=asked.uses)
    return answer


def _reservation(
    row: store.ReservationRow, uses_remaining: int | None, total_uses_remaining: int | None
) -> Reservation:
    return Reservation(
        reservation_id=row.reservation_id,
        customer_id=row.customer_id,
        coupon_id=row.coupon_id,
        uses=row.uses,
        expires_at=row.expires_at,
        uses_remaining=uses_remaining,
        total_uses_remaining=total_uses_remaining,
    )


@checkout.delete(
    "/v1/reservations/{reservation_id}",
    operation_id="releaseReservation",
    tags=["reservations"],
    status_code=204,
    response_class=Response,
    responses={404: {"model": Problem, "description": "No such reservation was ever made."}},
)
async def cancel_reservation(db: Db, reservation_id: ReservationId) -> Response:
    """Release a reservation: its uses are free again (also fine when it already ended)."""
    async with db.transaction() as conn:
        known = await store.release(conn, reservation_id)
    if not known:
        raise HTTPException(404, f"reservation {reservation_id!r} was never made")
    return Response(status_code=204)


@checkout.get(
    "/v1/customers/{customer_id}/reservations",
    operation_id="listCustomerReservations",
    tags=["reservations"],
    response_model=CustomerReservations,
)
async def customer_reservations(db: Db, customer_id: CustomerId) -> CustomerReservations:
    """The customer's active reservations, with the uses left now, soonest to expire first."""
    async with db.connection() as conn:
        rows = await store.active_reservations(conn, customer_id)
        at = await store.clock(conn)
        decisions: dict[str, Eligibility] = {}
        for coupon_id in dict.fromkeys(row.coupon_id for row in rows):
            candidate = await queries.fetch_customer_coupon(conn, customer_id, coupon_id)
            if candidate is not None:
                decisions[coupon_id] = _decided(candidate, None, at)
    reservations = []
    for row in rows:
        decision = decisions.get(row.coupon_id)
        reservations.append(
            _reservation(
                row,
                None if decision is None else decision.uses_remaining,
                None if decision is None else decision.total_uses_remaining,
            )
        )
    return CustomerReservations(customer_id=customer_id, reservations=reservations)
