"""The composition root of coupon-query: build the app, serve it, stop cleanly.

``create_app`` takes its settings and database from the caller, so tests and the CLI
build the same application with what they have.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
import uvicorn
import uvloop
from fastapi import FastAPI
from punchcard_platform.db import Database
from punchcard_platform.health import serve_app, stop_on_signals
from punchcard_platform.settings import Settings

from punchcard_coupon_query.api import (
    PROBLEM_MEDIA_TYPE,
    install_error_handlers,
    manager,
    operations,
    reader,
)
from punchcard_coupon_query.metrics import RequestMetricsMiddleware

__all__ = ["DEFAULT_PORT", "create_app", "run", "serve"]

DEFAULT_PORT = 8080
log = structlog.get_logger(__name__)

_DESCRIPTION = """\
Coupon eligibility, points, receipts and returns for app backends, and the coupon
catalog for administrators (CONTRACT.md section 5). Every `/v1` call needs
`Authorization: Bearer <key>`; errors are `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings, db: Database) -> FastAPI:
    """The coupon-query application over an open database pool (which the caller closes)."""
    app = FastAPI(
        title="Punchcard coupon-query",
        version="1.0.0",
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    install_error_handlers(app)
    app.include_router(reader)
    app.include_router(manager)
    app.include_router(operations)
    app.add_middleware(RequestMetricsMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_documents(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app


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


async def serve(settings: Settings) -> None:
    """Serve the API until SIGTERM or SIGINT, then finish open requests and close the pool."""
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    try:
        config = uvicorn.Config(
            create_app(settings, db),
            host=settings.http_host,
            port=settings.port_for(DEFAULT_PORT),
            loop="uvloop",
            http="httptools",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        log.info("coupon_query_starting", host=settings.http_host, port=config.port)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve_app(config, stop)
    finally:
        await db.close()
        log.info("coupon_query_stopped")


def run(settings: Settings) -> None:
    """Run ``serve`` on uvloop: what ``punchcard serve coupon-query`` calls."""
    uvloop.run(serve(settings))
