"""/healthz, /readyz and /metrics for every service, on its own port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["QuietServer", "health_app", "serve_health"]

ReadinessProbe = Callable[[], Awaitable[bool]]


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the service it runs inside.

    The service owns SIGTERM (it must finish its batch first); uvicorn's own handler
    would re-raise the signal after shutting down and kill the process mid-batch.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def health_app(ready: ReadinessProbe) -> Starlette:
    """The three operational endpoints; readiness is whatever ``ready`` says."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if await ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )


async def serve_health(host: str, port: int, ready: ReadinessProbe, stop: asyncio.Event) -> None:
    """Serve the health app until ``stop`` is set."""
    server = QuietServer(
        uvicorn.Config(
            health_app(ready),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    serving = asyncio.ensure_future(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving
