"""The reservation calls of CONTRACT.md section 5: decode, decide in a batch, answer.

``reserve`` hands the ask to the process's ``batcher.ReservationBatcher``, which decides
it (``decision.decide``) in one transaction with the asks that came with it, on the
primary. ``hotroute.asgi`` answers ordinary reservation calls itself, through the same
batcher and ``answer``; FastAPI answers the rest (and documents them all).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import Header, HTTPException, Path, Request, Response

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
from punchcard_coupon_query.eligibility import Eligibility, evaluate_candidate
from punchcard_coupon_query.models import (
    IDENTIFIER_PATTERN,
    CustomerReservations,
    Problem,
    Reservation,
    ReservationInput,
)
from punchcard_coupon_query.reservations import store
from punchcard_coupon_query.reservations.batcher import ReservationBatcher
from punchcard_coupon_query.reservations.decision import (
    Ask,
    Made,
    NotInCatalog,
    Outcome,
    Refused,
    Replayed,
)

__all__ = [
    "RESERVE_ROUTE",
    "answer",
    "ask",
    "cancel_reservation",
    "customer_reservations",
    "reserve",
]

RESERVE_ROUTE = "/v1/customers/{customer_id}/coupons/{coupon_id}/reservations"
"""The reservation call's template, as FastAPI names it in the metrics."""

ReservationId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
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

_JSON = JSON.encode()
_PROBLEM = PROBLEM_MEDIA_TYPE.encode()


def ask(
    key_id: str,
    customer_id: str,
    coupon_id: str,
    asked: ReservationInput,
    idempotency_key: str | None,
) -> Ask:
    """The ask a validated reservation call makes."""
    return Ask(
        key_id=key_id,
        customer_id=customer_id,
        coupon_id=coupon_id,
        uses=asked.uses,
        ttl_seconds=asked.ttl_seconds,
        store_id=asked.store_id,
        terminal_id=asked.terminal_id,
        idempotency_key=idempotency_key,
    )


def answer(outcome: Outcome) -> tuple[int, bytes, bytes]:
    """The status, content type and body that answer an outcome."""
    if isinstance(outcome, Made | Replayed):
        return 201, _JSON, outcome.answer.encode()
    if isinstance(outcome, Refused):
        body = problem_body(409, outcome.detail)
        body["reason"] = outcome.reason
        return 409, _PROBLEM, orjson.dumps(body)
    assert isinstance(outcome, NotInCatalog)
    return 404, _PROBLEM, orjson.dumps(problem_body(404, outcome.detail))


@checkout.post(
    RESERVE_ROUTE,
    operation_id="reserveCoupon",
    tags=["reservations"],
    status_code=201,
    response_model=Reservation,
    responses=_CONFLICT,
)
async def reserve(
    request: Request,
    *,
    who: Checkout,
    customer_id: CustomerId,
    coupon_id: CouponId,
    idempotency_key: IdempotencyKey = None,
    body: ReservationInput | None = None,
) -> Response:
    """Hold uses of the coupon for the customer at a checkout, for ``ttl_seconds``."""
    asked = body if body is not None else ReservationInput()
    reservations: ReservationBatcher = request.app.state.reservations
    decided = reservations.reserve(ask(who.key_id, customer_id, coupon_id, asked, idempotency_key))
    await asyncio.wait((decided,))
    status, media_type, content = answer(decided.result())  # raises what the batch raised
    return Response(content, status_code=status, media_type=media_type.decode())


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
        coupon_ids = list(dict.fromkeys(row.coupon_id for row in rows))
        decisions: dict[str, Eligibility] = {}
        if coupon_ids:  # each coupon's terms and counts, and the clock, in one statement
            asks = [Ask(key_id="", customer_id=customer_id, coupon_id=c) for c in coupon_ids]
            found = await store.read(conn, asks)
            for coupon_id, seen in zip(coupon_ids, found.seen, strict=True):
                if seen.candidate is not None:
                    decisions[coupon_id] = evaluate_candidate(
                        seen.candidate, store_id=None, at=found.now
                    )
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
