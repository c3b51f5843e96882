"""The console's pages: decode the request, ask the database, render a template.

Stable addresses under ``/console/`` (a support ticket can carry a link). Every page but
sign-in needs a signed-in key; every form that changes state needs its session's token
and an admin key. SQL comes from ``queries`` (the API's) and ``console.queries``; what a
person reads is decided in ``console.views``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from punchcard_platform.db import Database
from punchcard_platform.dead_letters import (
    DeadLetterFilter,
    fetch_dead_letter,
    list_dead_letters,
)
from starlette.datastructures import FormData, UploadFile

from punchcard_coupon_query import queries
from punchcard_coupon_query.api import Db, Reads
from punchcard_coupon_query.apikeys import ApiKeyCache, Caller
from punchcard_coupon_query.console import queries as console_queries
from punchcard_coupon_query.console.counts import CouponUseCounts
from punchcard_coupon_query.console.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    csrf_token,
    csrf_token_matches,
    safe_next,
)
from punchcard_coupon_query.console.views import (
    CouponForm,
    coupon_form_errors,
    format_day,
    format_time,
    parse_customer_csv,
    parse_exact_json,
    pretty_json,
    reason_in_words,
    show_bytes,
)
from punchcard_coupon_query.cursors import (
    InvalidCursorError,
    LedgerCursor,
    ReceiptCursor,
    decode_ledger_cursor,
    decode_receipt_cursor,
    encode_ledger_cursor,
    encode_receipt_cursor,
)
from punchcard_coupon_query.eligibility import evaluate_candidate, is_listed
from punchcard_coupon_query.models import IDENTIFIER_PATTERN, MAX_TARGETED_CUSTOMERS

__all__ = [
    "ConsoleError",
    "ForbiddenError",
    "NotFoundError",
    "SignedOutError",
    "router",
    "templates",
]

log = structlog.get_logger(__name__)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["time"] = format_time
templates.env.filters["day"] = format_day

router = APIRouter()

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
PAGE_SIZE = 20
"""Rows per page of the ledger, the receipts, the returns and the dead letters."""
COUPON_LIST_LIMIT = 500


class ConsoleError(Exception):
    """A page that cannot be shown, answered with an error page of ``status``."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignedOutError(ConsoleError):
    """No key, or one that is unknown or revoked: ask for it, then come back."""

    status = 401


class ForbiddenError(ConsoleError):
    """The key may read but not change this."""

    status = 403


class NotFoundError(ConsoleError):
    """Nothing at this address."""

    status = 404


@dataclass(frozen=True, slots=True)
class Session:
    """The signed-in key: who it is and the token its forms carry."""

    caller: Caller
    csrf: str

    @property
    def can_edit(self) -> bool:
        """``admin`` keys may change coupons; ``read`` keys see everything, change nothing."""
        return self.caller.scope == "admin"


async def _session(request: Request) -> Session:
    key = request.cookies.get(COOKIE_NAME)
    if not key:
        raise SignedOutError("sign in with an API key")
    keys: ApiKeyCache = request.app.state.keys
    caller = await keys.authenticate(key)
    if caller is None:
        raise SignedOutError("the key is unknown or was revoked; sign in again")
    return Session(caller=caller, csrf=csrf_token(key))


SignedIn = Annotated[Session, Depends(_session)]


def _use_counts(request: Request) -> CouponUseCounts:
    counts: CouponUseCounts = request.app.state.use_counts
    return counts


def _same_origin(request: Request) -> bool:
    """A browser names the site a form came from; refuse forms from other sites.

    Only the host and port are compared: behind a proxy that ends TLS the browser's
    origin is https and this request is http, and the form's token is the real check.
    """
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.partition("://")[2] == request.url.netloc


async def _change_form(request: Request, session: Session) -> FormData:
    """The posted form, if it carries this session's token and came from this site."""
    form = await request.form(max_files=1, max_fields=50, max_part_size=1024 * 1024)
    token = form.get(CSRF_FIELD)
    if not _same_origin(request) or not csrf_token_matches(
        session.csrf, token if isinstance(token, str) else None
    ):
        raise ForbiddenError("this form is out of date or came from another site; try again")
    return form


def _admin(session: Session) -> None:
    if not session.can_edit:
        raise ForbiddenError("this key has scope 'read': it can look at coupons, not change them")


def _identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise NotFoundError(f"{value[:80]!r} is not a valid {what}")
    return value


def _render(
    request: Request,
    template: str,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> Response:
    return templates.TemplateResponse(
        request,
        template,
        {"session": session, "csrf_field": CSRF_FIELD, **context},
        status_code=status,
    )


def _see_other(address: str) -> RedirectResponse:
    return RedirectResponse(address, status_code=303)


@router.get("/")
async def home(
    request: Request,
    next: str | None = None,
    customer_id: str | None = None,
    transaction_no: str | None = None,
    coupon_id: str | None = None,
) -> Response:
    """Sign-in when signed out, else the search: find a customer, a receipt or a coupon."""
    try:
        session = await _session(request)
    except SignedOutError:
        return _render(request, "sign_in.html", None, next=safe_next(next), error=None)
    wanted = [
        ("customers", customer_id, "customer id"),
        ("receipts", transaction_no, "transaction number"),
        ("coupons", coupon_id, "coupon id"),
    ]
    for section, value, what in wanted:
        if value is None:
            continue
        wanted_id = value.strip()
        if _IDENTIFIER.fullmatch(wanted_id):
            return _see_other(f"/console/{section}/{wanted_id}")
        return _render(
            request, "search.html", session, 422, error=f"{wanted_id[:80]!r} is not a valid {what}"
        )
    return _render(request, "search.html", session, error=None)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Check the key; keep it in the session cookie and go where the visit was going."""
    form = await request.form(max_files=0, max_fields=5)
    key = str(form.get("api_key", "")).strip()
    target = safe_next(str(form.get("next", "")))
    keys: ApiKeyCache = request.app.state.keys
    caller = await keys.authenticate(key) if key and _same_origin(request) else None
    if caller is None:
        return _render(
            request,
            "sign_in.html",
            None,
            401,
            next=target,
            error="This key is unknown or was revoked.",
        )
    log.info("console_signed_in", key_id=caller.key_id, scope=caller.scope)
    response = _see_other(target)
    # A session cookie (no max-age): a shared desk's browser forgets the key when closed.
    response.set_cookie(
        COOKIE_NAME,
        key,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SignedIn) -> Response:
    """Forget the key in this browser."""
    await _change_form(request, session)
    response = _see_other("/console/")
    response.delete_cookie(
        COOKIE_NAME,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _ledger_after(value: str | None) -> LedgerCursor | None:
    try:
        return None if not value else decode_ledger_cursor(value)
    except InvalidCursorError as exc:
        raise NotFoundError("this page of the ledger does not exist") from exc


def _receipts_after(value: str | None) -> ReceiptCursor | None:
    try:
        return None if not value else decode_receipt_cursor(value)
    except InvalidCursorError as exc:
        raise NotFoundError("this page of receipts does not exist") from exc


@router.get("/customers/{customer_id}")
async def customer(
    request: Request,
    *,
    session: SignedIn,
    reads: Reads,
    customer_id: str,
    points_after: str | None = None,
    receipts_after: str | None = None,
    ineligible: bool = False,
    store_id: str | None = None,
) -> Response:
    """The customer desk: balance and ledger, coupons and why not, receipts, returns."""
    _identifier(customer_id, "customer id")
    store = (store_id or "").strip() or None
    if store is not None:
        _identifier(store, "store id")
    at = datetime.now(UTC)
    async with reads.connection() as conn:
        balance, expiring, ledger = await queries.fetch_points(
            conn, customer_id, _ledger_after(points_after), PAGE_SIZE + 1
        )
        candidates = await queries.fetch_customer_coupons(conn, customer_id)
        receipts = await queries.fetch_receipts(
            conn, customer_id, _receipts_after(receipts_after), PAGE_SIZE + 1
        )
        returns = await console_queries.returns_of_customer(conn, customer_id, PAGE_SIZE)
    decisions = [evaluate_candidate(c, store_id=store, at=at) for c in candidates]
    usable = [d for d in decisions if d.eligible]
    unusable = [
        (d, reason_in_words(d, store_id=store))
        for d in decisions
        if not d.eligible and is_listed(d, include_ineligible=True)
    ]
    next_points = None
    if len(ledger) > PAGE_SIZE:
        ledger = ledger[:PAGE_SIZE]
        ledger_id, last_entry = ledger[-1]
        next_points = encode_ledger_cursor(
            LedgerCursor(occurred_at=last_entry.occurred_at, id=ledger_id)
        )
    next_receipts = None
    if len(receipts) > PAGE_SIZE:
        receipts = receipts[:PAGE_SIZE]
        last = receipts[-1]
        next_receipts = encode_receipt_cursor(
            ReceiptCursor(occurred_at=last.occurred_at, transaction_no=last.transaction_no)
        )
    return _render(
        request,
        "customer.html",
        session,
        customer_id=customer_id,
        at=at,
        store_id=store,
        balance=balance,
        expiring=expiring,
        ledger=[entry for _, entry in ledger],
        paged_ledger=points_after is not None,
        next_points=next_points,
        usable=usable,
        unusable=unusable,
        show_unusable=ineligible,
        receipts=receipts,
        paged_receipts=receipts_after is not None,
        next_receipts=next_receipts,
        returns=returns,
    )


@router.get("/receipts/{transaction_no}")
async def receipt(
    request: Request, session: SignedIn, reads: Reads, transaction_no: str
) -> Response:
    """The stored receipt as sent: lines, coupons, points, the raw document, its returns."""
    _identifier(transaction_no, "transaction number")
    async with reads.connection() as conn:
        text = await queries.fetch_receipt_document(conn, transaction_no)
        returns = await console_queries.returns_of_receipt(conn, transaction_no)
    if text is None:
        raise NotFoundError(f"no receipt {transaction_no} has been stored")
    document = parse_exact_json(text)
    stored = {k: v for k, v in document.items() if k not in ("returned", "return")}
    return _render(
        request,
        "receipt.html",
        session,
        transaction_no=transaction_no,
        receipt=document,
        lines=document.get("lines") or [],
        coupons=document.get("coupons") or [],
        returns=returns,
        outcome=document.get("return"),
        raw=pretty_json(stored),
    )


_CHOICES = {"": None, "yes": True, "no": False}
_VALIDITY = {"", "current", "upcoming", "ended"}


@router.get("/coupons")
async def coupons(
    request: Request,
    *,
    session: SignedIn,
    reads: Reads,
    active: str = "",
    targeted: str = "",
    validity: str = "",
) -> Response:
    """The catalog with filters: active, targeted, validity."""
    if active not in _CHOICES or targeted not in _CHOICES or validity not in _VALIDITY:
        raise ConsoleError("unknown filter value")
    at = datetime.now(UTC)
    async with reads.connection() as conn:
        rows = await console_queries.list_coupon_rows(
            conn,
            active=_CHOICES[active],
            targeted=_CHOICES[targeted],
            validity=validity or None,
            at=at,
            limit=COUPON_LIST_LIMIT,
        )
    return _render(
        request,
        "coupons.html",
        session,
        coupons=rows,
        filters={"active": active, "targeted": targeted, "validity": validity},
        at=at,
        limit=COUPON_LIST_LIMIT,
    )


@router.get("/coupons/new")
async def new_coupon(request: Request, session: SignedIn) -> Response:
    """The form for a new coupon (admin keys only)."""
    _admin(session)
    return _render(
        request, "coupon_form.html", session, form=CouponForm(), errors={}, creating=True
    )


def _coupon_form(form: FormData, coupon_id: str) -> CouponForm:
    def text(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    return CouponForm(
        coupon_id=coupon_id.strip(),
        name=text("name"),
        description=text("description"),
        uses_permitted=text("uses_permitted"),
        total_uses_permitted=text("total_uses_permitted"),
        valid_from=text("valid_from"),
        valid_until=text("valid_until"),
        store_ids=text("store_ids"),
        active=form.get("active") == "on",
        restore_on_return=form.get("restore_on_return") == "on",
        targeting=text("targeting") or "everyone",
    )


async def _targets(
    form: FormData, fields: CouponForm, kept: list[str] | None
) -> tuple[list[str] | None, list[str]]:
    """The customers the form issues the coupon to (None: everyone), and what is wrong."""
    if fields.targeting == "keep":
        return kept, []
    if fields.targeting != "csv":
        return None, []
    upload = form.get("customer_csv")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None, ["choose a CSV file of customer ids"]
    parsed = parse_customer_csv(await upload.read(), limit=MAX_TARGETED_CUSTOMERS)
    return parsed.customer_ids, parsed.errors


async def _store_coupon(
    request: Request,
    session: Session,
    db: Database,
    fields: CouponForm,
    form: FormData,
    *,
    creating: bool,
) -> Response:
    kept: list[str] | None = None
    if not creating:
        async with db.connection() as conn:
            current = await queries.fetch_coupon(conn, fields.coupon_id)
        if current is None:
            raise NotFoundError(f"coupon {fields.coupon_id} is not in the catalog")
        kept = current.customer_ids
    customer_ids, target_errors = await _targets(form, fields, kept)
    coupon, errors = coupon_form_errors(fields, customer_ids)
    if target_errors:
        errors.setdefault("targeting", []).extend(target_errors)
    if coupon is not None and not errors:
        async with db.transaction() as conn:
            if creating and await console_queries.coupon_exists(conn, fields.coupon_id):
                errors["coupon_id"] = ["a coupon with this id exists already"]
            else:
                await queries.upsert_coupon(conn, fields.coupon_id, coupon)
    if errors or coupon is None:
        return _render(
            request, "coupon_form.html", session, 422, form=fields, errors=errors, creating=creating
        )
    log.info(
        "coupon_stored",
        coupon_id=fields.coupon_id,
        created=creating,
        by="console",
        key_id=session.caller.key_id,
        customers=None if customer_ids is None else len(customer_ids),
    )
    return _see_other(f"/console/coupons/{fields.coupon_id}?saved=1")


@router.post("/coupons/new")
async def create_coupon(request: Request, session: SignedIn, db: Db) -> Response:
    """Create a coupon from the form (admin keys only)."""
    _admin(session)
    form = await _change_form(request, session)
    coupon_id = form.get("coupon_id")
    fields = _coupon_form(form, coupon_id if isinstance(coupon_id, str) else "")
    return await _store_coupon(request, session, db, fields, form, creating=True)


@router.get("/coupons/{coupon_id}")
async def coupon(
    request: Request, session: SignedIn, db: Db, coupon_id: str, saved: bool = False
) -> Response:
    """One coupon: its terms, uses made across customers, and (for admins) its form."""
    _identifier(coupon_id, "coupon id")
    # The primary: an admin who just saved must see what they saved.
    async with db.connection() as conn:
        found = await console_queries.fetch_coupon_row(conn, coupon_id)
    if found is None:
        raise NotFoundError(f"coupon {coupon_id} is not in the catalog")
    use = await _use_counts(request).get(coupon_id)
    return _render(
        request,
        "coupon.html",
        session,
        coupon=found,
        use=use,
        form=_form_of(found),
        errors={},
        creating=False,
        saved=saved,
    )


def _form_of(coupon: console_queries.CouponRow) -> CouponForm:
    return CouponForm(
        coupon_id=coupon.coupon_id,
        name=coupon.name,
        description=coupon.description,
        uses_permitted="" if coupon.uses_permitted is None else str(coupon.uses_permitted),
        total_uses_permitted=(
            "" if coupon.total_uses_permitted is None else str(coupon.total_uses_permitted)
        ),
        valid_from=format_time(coupon.valid_from),
        valid_until=format_time(coupon.valid_until),
        store_ids=", ".join(coupon.store_ids or ()),
        active=coupon.active,
        restore_on_return=coupon.restore_on_return,
        targeting="keep" if coupon.targeted else "everyone",
    )


@router.post("/coupons/{coupon_id}")
async def edit_coupon(request: Request, session: SignedIn, db: Db, coupon_id: str) -> Response:
    """Replace a coupon's terms (and, if a CSV is given, its customers); admin keys only."""
    _identifier(coupon_id, "coupon id")
    _admin(session)
    form = await _change_form(request, session)
    fields = _coupon_form(form, coupon_id)
    return await _store_coupon(request, session, db, fields, form, creating=False)


@router.get("/coupons/{coupon_id}/deactivate")
async def confirm_deactivation(
    request: Request, session: SignedIn, db: Db, coupon_id: str
) -> Response:
    """Ask before deactivating: customers stop seeing the coupon at once."""
    _identifier(coupon_id, "coupon id")
    _admin(session)
    async with db.connection() as conn:
        found = await console_queries.fetch_coupon_row(conn, coupon_id)
    if found is None:
        raise NotFoundError(f"coupon {coupon_id} is not in the catalog")
    use = await _use_counts(request).get(coupon_id)
    return _render(request, "deactivate.html", session, coupon=found, use=use)


@router.post("/coupons/{coupon_id}/deactivate")
async def deactivate(request: Request, session: SignedIn, db: Db, coupon_id: str) -> Response:
    """Deactivate the coupon; its usage history stays."""
    _identifier(coupon_id, "coupon id")
    _admin(session)
    await _change_form(request, session)
    async with db.transaction() as conn:
        found = await queries.deactivate_coupon(conn, coupon_id)
    if found is None:
        raise NotFoundError(f"coupon {coupon_id} is not in the catalog")
    log.info("coupon_deactivated", coupon_id=coupon_id, by="console", key_id=session.caller.key_id)
    return _see_other(f"/console/coupons/{coupon_id}?saved=1")


@router.get("/dead-letters")
async def dead_letters(
    request: Request,
    *,
    session: SignedIn,
    db: Db,
    reason: str = "",
    before: int | None = None,
) -> Response:
    """Dead letters by reason and time, newest first, with the counts per reason."""
    if reason and not _IDENTIFIER.fullmatch(reason):
        raise ConsoleError("unknown reason")
    async with db.connection() as conn:
        reasons = await console_queries.dead_letter_reasons(conn)
        letters = await list_dead_letters(
            conn, DeadLetterFilter(reason=reason or None), limit=PAGE_SIZE + 1, before_id=before
        )
    next_before = None
    if len(letters) > PAGE_SIZE:
        letters = letters[:PAGE_SIZE]
        next_before = letters[-1].id
    return _render(
        request,
        "dead_letters.html",
        session,
        reasons=reasons,
        reason=reason,
        letters=letters,
        paged=before is not None,
        next_before=next_before,
    )


@router.get("/dead-letters/{letter_id}")
async def dead_letter(request: Request, session: SignedIn, db: Db, letter_id: int) -> Response:
    """One dead letter: where it came from, why, its bytes, and the command that replays it."""
    async with db.connection() as conn:
        letter = await fetch_dead_letter(conn, letter_id)
    if letter is None:
        raise NotFoundError(f"no dead letter {letter_id}")
    return _render(
        request,
        "dead_letter.html",
        session,
        letter=letter,
        key=show_bytes(letter.key),
        value=show_bytes(letter.value),
        headers=[(name, show_bytes(value).text) for name, value in letter.headers],
    )
