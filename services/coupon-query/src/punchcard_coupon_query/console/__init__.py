"""The web console under ``/console/``: the customer desk, coupons, dead letters.

Served by coupon-query in the same process and port, rendered on the server (Jinja2
templates in ``templates/``, one stylesheet in ``static/``, no script, nothing from
another site), so it works on machines without internet and in any current browser.
``create_console`` builds it over the pools and key cache the API already has;
``app.create_app`` mounts it. Who each page is for: docs/console.md.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from punchcard_platform.db import Database, is_unavailable
from punchcard_platform.settings import Settings
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from punchcard_coupon_query.apikeys import ApiKeyCache
from punchcard_coupon_query.console.counts import CouponUseCounts
from punchcard_coupon_query.console.queries import CouponUse, coupon_use
from punchcard_coupon_query.console.routes import (
    ConsoleError,
    SignedOutError,
    router,
    templates,
)
from punchcard_coupon_query.console.session import sign_in_address

__all__ = ["CONSOLE_PATH", "create_console"]

CONSOLE_PATH = "/console"
log = structlog.get_logger(__name__)

# Every asset is the console's own; forms post only here; no page may be framed.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
_NO_STORE = (b"cache-control", b"no-store")


class _ConsoleShell:
    """Security headers on every answer, and an error page for what no handler caught.

    Starlette's own last-resort handler answers and then raises again, which the API
    around the console would answer a second time; this one answers once and logs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False
        static = scope["path"].startswith(f"{CONSOLE_PATH}/static/")

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = _SECURITY_HEADERS if static else [*_SECURITY_HEADERS, _NO_STORE]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self._app(scope, receive, with_headers)
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("console_database_unavailable", path=scope["path"], error=str(exc))
            else:
                log.exception("console_request_failed", path=scope["path"])
            if not started:
                await _plain_error(send, 503 if is_unavailable(exc) else 500)


async def _plain_error(send: Send, status: int) -> None:
    body = (
        b"<!doctype html><html lang='en'><title>Punchcard console</title><main><h1>"
        + (b"The database does not answer; try again" if status == 503 else b"Unexpected error")
        + b"</h1><p>It has been logged.</p></main></html>"
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *_SECURITY_HEADERS,
                _NO_STORE,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    if isinstance(exc, SignedOutError):
        if request.method == "GET":
            address = sign_in_address(request.url.path, request.url.query)
        else:  # a form cannot be posted again from the sign-in page: go back to its page
            address = sign_in_address(request.url.path.removesuffix("/deactivate"), "")
        return Response(status_code=303, headers={"location": address})
    return _error_page(request, exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = "No page at this address." if exc.status_code == 404 else str(exc.detail)
    return _error_page(request, exc.status_code, message)


async def _invalid_address(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error_page(request, 404, "No page at this address (a part of it is not valid).")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    status = 503 if is_unavailable(exc) else 500
    message = (
        "The database does not answer; try again in a moment."
        if status == 503
        else "An unexpected error; it has been logged."
    )
    return _error_page(request, status, message)


def _error_page(request: Request, status: int, message: str) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {"session": None, "status": status, "message": message},
        status_code=status,
    )


def create_console(
    settings: Settings, db: Database, *, reads: Database, keys: ApiKeyCache
) -> ASGIApp:
    """The console over the API's pools (``db`` the primary, ``reads`` maybe a replica)."""
    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console.state.settings = settings
    console.state.db = db
    console.state.reads = reads
    console.state.keys = keys

    async def count_use(coupon_id: str) -> CouponUse:
        async with reads.connection() as conn:
            return await coupon_use(conn, coupon_id)

    console.state.use_counts = CouponUseCounts(count_use)
    console.add_exception_handler(ConsoleError, _console_error)
    console.add_exception_handler(StarletteHTTPException, _http_error)
    console.add_exception_handler(RequestValidationError, _invalid_address)
    console.add_exception_handler(Exception, _unexpected_error)
    console.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    console.include_router(router)
    return _ConsoleShell(console)
