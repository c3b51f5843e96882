"""The composition root of coupon-query: build the app, serve it, stop cleanly.

``create_app`` takes its settings and database from the caller, so tests and the CLI
build the same application with what they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from typing import Any

import structlog
import uvicorn
import uvloop
from fastapi import FastAPI
from punchcard_platform.db import Database
from punchcard_platform.health import serve_app, stop_on_signals
from punchcard_platform.heap import freeze_startup_objects
from punchcard_platform.settings import Settings

from punchcard_coupon_query import queries
from punchcard_coupon_query.api import (
    PROBLEM_MEDIA_TYPE,
    checkout,
    install_error_handlers,
    manager,
    operations,
    reader,
)
from punchcard_coupon_query.apikeys import ApiKeyCache
from punchcard_coupon_query.console import CONSOLE_PATH, create_console
from punchcard_coupon_query.hotroute.asgi import CouponQueryApp
from punchcard_coupon_query.hotroute.fence import http_protocol
from punchcard_coupon_query.limits import MAX_BODY_BYTES, MAX_HEAD_BYTES
from punchcard_coupon_query.reservations import routes as _reservation_routes  # noqa: F401 -- registers the reservation routes on ``checkout``
from punchcard_coupon_query.reservations import store as reservation_store

__all__ = [
    "CLEANUP_INTERVAL_SECONDS",
    "DEFAULT_PORT",
    "clean_reservations",
    "create_app",
    "run",
    "serve",
    "serve_worker",
    "server_config",
]

DEFAULT_PORT = 8080
log = structlog.get_logger(__name__)

_DESCRIPTION = """\
Coupon eligibility, points, receipts and returns for app backends, and the coupon
catalog for administrators (CONTRACT.md section 5). Every `/v1` call needs
`Authorization: Bearer <key>`; errors are `application/problem+json` (RFC 9457).

A request's line and headers may take {head} bytes in all (431 beyond) and its body
{body} bytes (413 beyond). A 503 carries `Retry-After`.
"""


def create_app(
    settings: Settings,
    db: Database,
    *,
    reads: Database | None = None,
    keys: ApiKeyCache | None = None,
) -> CouponQueryApp:
    """The coupon-query application over open pools (which the caller closes).

    ``db`` is the primary; ``reads``, if given, a replica the read endpoints use.
    """
    api = FastAPI(
        title="Punchcard coupon-query",
        version="1.0.0",
        description=_DESCRIPTION.format(head=MAX_HEAD_BYTES, body=MAX_BODY_BYTES),
        docs_url=None,
        redoc_url=None,
    )
    keys = ApiKeyCache(db) if keys is None else keys
    api.state.settings = settings
    api.state.db = db
    api.state.reads = db if reads is None else reads
    api.state.keys = keys
    install_error_handlers(api)
    api.include_router(reader)
    api.include_router(manager)
    api.include_router(checkout)
    api.include_router(operations)
    # The web console: same process and port, the same pools and key cache.
    api.mount(CONSOLE_PATH, create_console(settings, db, reads=api.state.reads, keys=keys))

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = _problem_documents(FastAPI.openapi(api))
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return CouponQueryApp.over(api, db=db, reads=api.state.reads, keys=keys)


def _problem_documents(spec: dict[str, Any]) -> dict[str, Any]:
    """Declare errors as ``application/problem+json`` with the Problem schema.

    FastAPI documents error bodies as ``application/json`` and its own validation
    error shape; this service answers every error with a problem document instead.
    """
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if status.startswith(("4", "5")):
                    response["content"] = {PROBLEM_MEDIA_TYPE: problem}
    schemas = spec.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return spec


def server_config(
    app: CouponQueryApp, *, uvicorn_version: str = uvicorn.__version__, **options: Any
) -> uvicorn.Config:
    """How uvicorn serves the app, here and in the tests; ``options`` add to it.

    Its protocol answers the hot route itself (``hotroute.protocol``) when uvicorn is the
    version it was written for (``hotroute.fence``).
    """
    return uvicorn.Config(
        app,
        http=http_protocol(uvicorn_version),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        # Nothing here reads the client address; X-Forwarded-* parsing is pure cost.
        proxy_headers=False,
        **options,
    )


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, in ``PUNCHCARD_HTTP_WORKERS`` processes.

    One worker serves in this process. More are separate processes (``workers``) that
    share one listening socket, each with its own pools, so every core can be used.
    """
    if settings.http_workers > 1:
        # Imported here: the workers module imports this one.
        from punchcard_coupon_query.workers import supervise  # noqa: PLC0415

        await supervise(settings)
    else:
        await serve_worker(settings)


async def serve_worker(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve the API (on ``sock`` if given) until SIGTERM or SIGINT, then close the pools."""

    # Pools are opened full, so no request waits for a connection to be made, and
    # released without asyncpg's session reset: this service never changes session state.
    def connect(url: str) -> Awaitable[Database]:
        size = settings.database_pool_size
        return Database.connect(
            url,
            max_size=size,
            min_size=size,
            reset_sessions=False,
            server_settings=queries.SESSION_SETTINGS,
        )

    db = await connect(settings.database_url)
    reads: Database | None = None
    try:
        if settings.read_database_url:
            reads = await connect(settings.read_database_url)
        config = server_config(
            create_app(settings, db, reads=reads),
            host=settings.http_host,
            port=settings.port_for(DEFAULT_PORT),
            loop="uvloop",
            timeout_graceful_shutdown=10,
        )
        log.info(
            "coupon_query_starting",
            host=settings.http_host,
            port=config.port,
            read_replica=reads is not None,
        )
        stop = asyncio.Event()
        stop_on_signals(stop)
        freeze_startup_objects()
        cleanup = asyncio.create_task(clean_reservations(db, stop))
        try:
            await serve_app(config, stop, sockets=None if sock is None else [sock])
        finally:
            cleanup.cancel()
            await asyncio.gather(cleanup, return_exceptions=True)
    finally:
        if reads is not None:
            await reads.close()
        await db.close()
        log.info("coupon_query_stopped")


CLEANUP_INTERVAL_SECONDS = 300.0
"""How often each worker deletes long-ended reservations and old idempotency keys."""


async def clean_reservations(
    db: Database, stop: asyncio.Event, *, interval: float = CLEANUP_INTERVAL_SECONDS
) -> None:
    """Keep the reservation tables small until ``stop`` is set.

    Only housekeeping: an expired reservation stopped counting at its ``expires_at``
    already. Every worker runs it (the deletes are idempotent); a failure is logged and
    tried again next time, never a reason to stop serving.
    """
    while not stop.is_set():
        try:
            async with db.transaction() as conn:
                reservations, keys = await reservation_store.delete_ended(conn)
            if reservations or keys:
                log.info("reservations_cleaned", reservations=reservations, keys=keys)
        except Exception as exc:
            log.warning("reservations_cleanup_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def run(settings: Settings) -> None:
    """Run ``serve`` on uvloop: what ``punchcard serve coupon-query`` calls."""
    uvloop.run(serve(settings))
