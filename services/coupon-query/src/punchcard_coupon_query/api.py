"""The HTTP routes of CONTRACT.md section 5: decode the request, ask the database, answer.

Decisions live in ``eligibility``, SQL in ``queries``; this module only translates.
Every error leaves as ``application/problem+json`` (RFC 9457).
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from punchcard_platform.db import Database
from starlette.exceptions import HTTPException as StarletteHTTPException

from punchcard_coupon_query import queries
from punchcard_coupon_query.apikeys import ApiKeyCache, Caller
from punchcard_coupon_query.cursors import (
    InvalidCursorError,
    LedgerCursor,
    ReceiptCursor,
    decode_ledger_cursor,
    decode_receipt_cursor,
    encode_ledger_cursor,
    encode_receipt_cursor,
)
from punchcard_coupon_query.eligibility import evaluate_candidate
from punchcard_coupon_query.hotroute.batcher import CouponListBatcher
from punchcard_coupon_query.limits import MAX_BODY_BYTES, MAX_HEAD_BYTES
from punchcard_coupon_query.listing import coupon_list_json
from punchcard_coupon_query.models import (
    IDENTIFIER_PATTERN,
    RFC3339_PATTERN,
    Coupon,
    CouponInput,
    CouponList,
    CustomerCoupons,
    Eligibility,
    Health,
    PendingReturn,
    PointsPage,
    Problem,
    ReceiptDocument,
    ReceiptsPage,
    ReturnOutcome,
    eligibility_json,
)
from punchcard_coupon_query.problems import (
    PROBLEM_MEDIA_TYPE,
    ServiceBusyError,
    failure_problem,
    problem_body,
)

__all__ = [
    "JSON",
    "PROBLEM_MEDIA_TYPE",
    "Checkout",
    "CouponId",
    "CustomerId",
    "Db",
    "Reads",
    "checkout",
    "install_error_handlers",
    "manager",
    "operations",
    "parse_at",
    "problem_body",
    "reader",
]

JSON = "application/json"
log = structlog.get_logger(__name__)

CustomerId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["C000123"])]
CouponId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["TEA-10OFF"])]
TransactionNo = Annotated[
    str, Path(pattern=IDENTIFIER_PATTERN, examples=["S0042-T03-20261122-000123"])
]
StoreId = Annotated[
    str | None,
    Query(pattern=IDENTIFIER_PATTERN, description="Ask about this store; omit for any store."),
]
At = Annotated[
    str | None,
    Query(
        pattern=RFC3339_PATTERN,
        description="RFC 3339 time with an offset; default now.",
        examples=["2026-11-22T10:15:30+09:00"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="next_cursor of the previous page; omit for the first."),
]


def _problem_ref(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem_ref("No key, or a key that is unknown or revoked."),
    422: _problem_ref("An invalid identifier or parameter."),
    431: _problem_ref(f"The request line and headers exceed {MAX_HEAD_BYTES} bytes."),
    503: _problem_ref("The database did not answer in time; try again after Retry-After."),
}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    403: _problem_ref("The key's scope does not allow this call."),
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem_ref("Not found.")}


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document."""
    body = problem_body(status, detail, errors=errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": location, "msg": message, "type": "value_error"}])


def parse_at(value: str) -> datetime:
    """An ``at`` that matched RFC3339_PATTERN as a time; ValueError if it is not one."""
    try:
        # fromisoformat takes "Z" but not lower-case "t"/"z", both valid RFC 3339.
        at = datetime.fromisoformat(value.upper())
        at.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(str(exc)) from exc
    return at


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return parse_at(value)
    except ValueError as exc:
        raise _invalid(("query", "at"), f"not an RFC 3339 time: {exc}") from exc


def _ledger_cursor(value: str | None) -> LedgerCursor | None:
    try:
        return None if value is None else decode_ledger_cursor(value)
    except InvalidCursorError as exc:
        raise _invalid(("query", "cursor"), str(exc)) from exc


def _receipt_cursor(value: str | None) -> ReceiptCursor | None:
    try:
        return None if value is None else decode_receipt_cursor(value)
    except InvalidCursorError as exc:
        raise _invalid(("query", "cursor"), str(exc)) from exc


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `punchcard apikey create`, sent as `Authorization: Bearer <key>`.",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


# Dependencies are coroutines: FastAPI runs a plain function in its thread pool.
async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _reads(request: Request) -> Database:
    reads: Database = request.app.state.reads
    return reads


Db = Annotated[Database, Depends(_database)]
"""The primary: for writes, and reads that must see them."""
Reads = Annotated[Database, Depends(_reads)]
"""The read replica when one is configured, else the primary."""


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None:
        raise _unauthorized("send an API key as 'Authorization: Bearer <key>'")
    keys: ApiKeyCache = request.app.state.keys
    found = await keys.authenticate(credentials.credentials)
    if found is None:
        raise _unauthorized("the API key is unknown or revoked")
    return found


async def _admin(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    if who.scope != "admin":
        raise HTTPException(403, "this call needs an API key with scope 'admin'")
    return who


async def _checkout(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    if who.scope not in ("checkout", "admin"):
        raise HTTPException(403, "this call needs an API key with scope 'checkout' or 'admin'")
    return who


Checkout = Annotated[Caller, Depends(_checkout)]
"""The caller of a reservation call: a key of scope ``checkout`` or ``admin``."""

reader = APIRouter(dependencies=[Depends(_caller)], responses=_AUTH_ERRORS)
"""Calls any key may make."""
checkout = APIRouter(dependencies=[Depends(_checkout)], responses=_ADMIN_ERRORS)
"""Calls that hold coupon uses at a checkout: a ``checkout`` or ``admin`` key."""
manager = APIRouter(dependencies=[Depends(_admin)], responses=_ADMIN_ERRORS)
"""Calls that need an admin key."""


@reader.get(
    "/v1/customers/{customer_id}/coupons",
    operation_id="listCustomerCoupons",
    tags=["customers"],
    response_model=CustomerCoupons,
)
async def customer_coupons(
    request: Request,
    customer_id: CustomerId,
    store_id: StoreId = None,
    at: At = None,
    include_ineligible: Annotated[
        bool, Query(description="Also list coupons failing by time, store or exhaustion.")
    ] = False,
) -> Response:
    """The customer's eligible coupons (and, if asked, those not usable now or here)."""
    # Most calls never get here: ``hotroute`` answers them. This route answers the rest
    # (unusual parameters, errors) and documents the call. Its list comes through the
    # same batcher, so it is bound by the same deadline.
    lists: CouponListBatcher = request.app.state.lists
    moment = _parse_at(at)
    candidates = await lists.fetch(customer_id)
    body = coupon_list_json(
        customer_id, moment, candidates, store_id=store_id, include_ineligible=include_ineligible
    )
    return Response(body, media_type=JSON)


@reader.get(
    "/v1/customers/{customer_id}/coupons/{coupon_id}",
    operation_id="getCustomerCoupon",
    tags=["customers"],
    response_model=Eligibility,
    responses=_NOT_FOUND,
)
async def customer_coupon(
    db: Reads, customer_id: CustomerId, coupon_id: CouponId, store_id: StoreId = None, at: At = None
) -> Response:
    """Whether the customer may use this coupon, and if not, why not."""
    moment = _parse_at(at)
    async with db.connection() as conn:
        candidate = await queries.fetch_customer_coupon(conn, customer_id, coupon_id)
    if candidate is None:
        raise HTTPException(404, f"coupon {coupon_id!r} is not in the catalog")
    decision = evaluate_candidate(candidate, store_id=store_id, at=moment)
    return Response(eligibility_json(decision), media_type=JSON)


@reader.get(
    "/v1/customers/{customer_id}/points", operation_id="getCustomerPoints", tags=["customers"]
)
async def customer_points(
    db: Reads, customer_id: CustomerId, limit: Limit = 50, cursor: Cursor = None
) -> PointsPage:
    """The points balance and the ledger, newest first, a page at a time."""
    after = _ledger_cursor(cursor)
    async with db.connection() as conn:
        balance, expiring, rows = await queries.fetch_points(conn, customer_id, after, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        ledger_id, last = rows[-1]
        next_cursor = encode_ledger_cursor(LedgerCursor(occurred_at=last.occurred_at, id=ledger_id))
    return PointsPage(
        customer_id=customer_id,
        balance=balance,
        expiring=expiring,
        ledger=[entry for _, entry in rows],
        next_cursor=next_cursor,
    )


@reader.get(
    "/v1/customers/{customer_id}/receipts",
    operation_id="listCustomerReceipts",
    tags=["customers"],
)
async def customer_receipts(
    db: Reads, customer_id: CustomerId, limit: Limit = 50, cursor: Cursor = None
) -> ReceiptsPage:
    """The customer's receipts, newest first, a page at a time."""
    after = _receipt_cursor(cursor)
    async with db.connection() as conn:
        rows = await queries.fetch_receipts(conn, customer_id, after, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_receipt_cursor(
            ReceiptCursor(occurred_at=last.occurred_at, transaction_no=last.transaction_no)
        )
    return ReceiptsPage(customer_id=customer_id, receipts=rows, next_cursor=next_cursor)


@reader.get(
    "/v1/receipts/{transaction_no}",
    operation_id="getReceipt",
    tags=["receipts"],
    response_model=ReceiptDocument,
    responses=_NOT_FOUND,
)
async def receipt(db: Reads, transaction_no: TransactionNo) -> Response:
    """The receipt as the POS sent it, plus whether and how it was returned."""
    async with db.connection() as conn:
        document = await queries.fetch_receipt_document(conn, transaction_no)
    if document is None:
        raise HTTPException(404, f"no receipt {transaction_no!r}")
    return Response(document, media_type="application/json")


@reader.get(
    "/v1/returns/{transaction_no}",
    operation_id="getReturn",
    tags=["receipts"],
    response_model=ReturnOutcome | PendingReturn,
    responses=_NOT_FOUND,
)
async def return_status(db: Reads, transaction_no: TransactionNo) -> Response:
    """The latest decided outcome of a return of this transaction, or that one is pending."""
    async with db.connection() as conn:
        found = await queries.fetch_return_status(conn, transaction_no)
    if found is None:
        raise HTTPException(404, f"no return of {transaction_no!r} is known")
    status, outcome = found
    if outcome is None:
        return JSONResponse({"status": status})
    return Response(outcome, media_type="application/json")


@reader.get("/v1/coupons", operation_id="listCoupons", tags=["coupons"])
async def coupons(
    db: Reads,
) -> CouponList:
    """The whole catalog, inactive coupons included."""
    async with db.connection() as conn:
        return CouponList(coupons=await queries.list_coupons(conn))


@reader.get(
    "/v1/coupons/{coupon_id}", operation_id="getCoupon", tags=["coupons"], responses=_NOT_FOUND
)
async def coupon(db: Reads, coupon_id: CouponId) -> Coupon:
    """One coupon of the catalog, with the customers it was issued to."""
    async with db.connection() as conn:
        found = await queries.fetch_coupon(conn, coupon_id)
    if found is None:
        raise HTTPException(404, f"coupon {coupon_id!r} is not in the catalog")
    return found


@manager.put(
    "/v1/coupons/{coupon_id}",
    operation_id="putCoupon",
    tags=["coupons"],
    responses={
        200: {"description": "Replaced."},
        201: {"model": Coupon, "description": "Created."},
        413: _problem_ref(f"The body exceeds {MAX_BODY_BYTES} bytes."),
    },
)
async def put_coupon(db: Db, coupon_id: CouponId, body: CouponInput, response: Response) -> Coupon:
    """Create or replace a coupon (its customer list too); 201 if it is new."""
    if body.coupon_id is not None and body.coupon_id != coupon_id:
        raise _invalid(("body", "coupon_id"), "must equal the coupon_id of the path")
    async with db.transaction() as conn:
        created = await queries.upsert_coupon(conn, coupon_id, body)
        stored = await queries.fetch_coupon(conn, coupon_id)
    assert stored is not None
    response.status_code = 201 if created else 200
    log.info("coupon_stored", coupon_id=coupon_id, created=created)
    return stored


@manager.delete(
    "/v1/coupons/{coupon_id}",
    operation_id="deactivateCoupon",
    tags=["coupons"],
    responses=_NOT_FOUND,
)
async def deactivate_coupon(db: Db, coupon_id: CouponId) -> Coupon:
    """Deactivate a coupon; its usage history stays."""
    async with db.transaction() as conn:
        found = await queries.deactivate_coupon(conn, coupon_id)
    if found is None:
        raise HTTPException(404, f"coupon {coupon_id!r} is not in the catalog")
    log.info("coupon_deactivated", coupon_id=coupon_id)
    return found


operations = APIRouter(tags=["operations"])
"""Liveness, readiness and metrics: no key needed, for the orchestrator and Prometheus."""


@operations.get("/healthz", operation_id="healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@operations.get(
    "/readyz",
    operation_id="readyz",
    responses={503: _problem_ref("The database does not answer.")},
)
async def readyz(db: Db, reads: Reads) -> Health:
    """The database (and the read replica, if any) answers, so requests can be served."""
    if not await db.is_ready() or (reads is not db and not await reads.is_ready()):
        raise HTTPException(503, "the database does not answer")
    return Health(status="ready")


@operations.get(
    "/metrics",
    operation_id="metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else ""
    if detail == HTTPStatus(exc.status_code).phrase:
        detail = ""
    headers = None if exc.headers is None else dict(exc.headers)
    # FastAPI answers 400 for a body it cannot even decode; the contract calls every
    # invalid input 422, as it does for malformed JSON.
    status = 422 if exc.status_code == 400 else exc.status_code
    return problem_response(status, detail or None, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [part for part in error.get("loc", ()) if isinstance(part, str | int)],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "value_error")),
        }
        for error in jsonable_encoder(exc.errors())
    ]
    return problem_response(422, "the request has invalid parameters", errors=errors)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    failure = failure_problem(exc, request.url.path)
    return problem_response(failure.status, failure.detail, headers=failure.headers or None)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error, FastAPI's own validation errors included, as a problem document."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Shedding is expected under a failing database: answered inside the app, so it is
    # not also reported by the server as an exception with its traceback, as the
    # catch-all below is.
    app.add_exception_handler(ServiceBusyError, _unexpected_error)
    app.add_exception_handler(Exception, _unexpected_error)
