"""/healthz, /readyz and /metrics for every service, on its own port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from punchcard_platform.errors import ConfigurationError

__all__ = ["QuietServer", "health_app", "serve_app", "serve_health", "stop_on_signals"]

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


async def serve_app(
    config: uvicorn.Config, stop: asyncio.Event, *, sockets: list[socket.socket] | None = None
) -> None:
    """Serve an ASGI app until ``stop`` is set, then finish open requests and return.

    ``sockets``: already listening sockets to accept on (several processes sharing one
    port) instead of binding ``config.host:config.port``. If the server ends by itself,
    ``stop`` is set so the rest of the service stops too.
    """
    server = QuietServer(config)

    async def stop_when_told() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.ensure_future(stop_when_told())
    try:
        # Awaited here, not in a task of its own: uvicorn raises SystemExit when it cannot
        # bind, and only a direct await lets us turn that into a readable error.
        await server.serve(sockets=sockets)
    except SystemExit as exc:
        raise ConfigurationError(
            f"cannot serve HTTP on {config.host}:{config.port} (in use, or not an address "
            "of this machine): set PUNCHCARD_HTTP_HOST / PUNCHCARD_HTTP_PORT"
        ) from exc
    finally:
        watcher.cancel()
        stop.set()


async def serve_health(host: str, port: int, ready: ReadinessProbe, stop: asyncio.Event) -> None:
    """Serve the health app until ``stop`` is set."""
    config = uvicorn.Config(
        health_app(ready),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    await serve_app(config, stop)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the service finishes its work and exits cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
