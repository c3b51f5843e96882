"""Several coupon-query processes on one port, so every core serves requests.

Python runs one request at a time per process, so one process uses one core. The
supervisor binds the port once and starts ``PUNCHCARD_HTTP_WORKERS`` processes that
inherit the listening socket; the kernel hands each new connection to whichever
accepts first. Each worker has its own database pools, key cache and metrics (so
``/metrics`` reports the process that answered the scrape). SIGTERM or SIGINT is passed
on to every worker, which finishes its open requests; the supervisor exits 0 when all
did. If a worker dies by itself, the others are stopped and the command fails, so an
orchestrator restarts the whole service rather than running it short of capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import structlog
import uvloop
from punchcard_platform.errors import ConfigurationError, PunchcardError
from punchcard_platform.health import stop_on_signals
from punchcard_platform.logging import configure_logging
from punchcard_platform.settings import Settings

from punchcard_coupon_query.app import DEFAULT_PORT, serve_worker

__all__ = ["SOCKET_FD_VARIABLE", "main", "supervise"]

SOCKET_FD_VARIABLE = "PUNCHCARD_COUPON_QUERY_SOCKET_FD"
"""Tells a worker which inherited file descriptor is the listening socket."""

_STOP_SECONDS = 30.0
log = structlog.get_logger(__name__)


def _listen(settings: Settings) -> socket.socket:
    host, port = settings.http_host, settings.port_for(DEFAULT_PORT)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot serve HTTP on {host}:{port} ({exc.strerror}): "
            "set PUNCHCARD_HTTP_HOST / PUNCHCARD_HTTP_PORT"
        ) from exc
    sock.set_inheritable(True)
    return sock


async def supervise(settings: Settings) -> None:
    """Run the workers until SIGTERM or SIGINT; raise if one of them failed."""
    sock = _listen(settings)
    env = {**os.environ, **settings.environment(), SOCKET_FD_VARIABLE: str(sock.fileno())}
    stop = asyncio.Event()
    stop_on_signals(stop)
    workers: list[asyncio.subprocess.Process] = []
    told_to_stop = False
    try:
        for _ in range(settings.http_workers):
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "punchcard_coupon_query.workers",
                    env=env,
                    pass_fds=(sock.fileno(),),
                )
            )
        log.info(
            "coupon_query_workers_started",
            workers=len(workers),
            pids=[w.pid for w in workers],
            port=sock.getsockname()[1],
        )
        waits = [asyncio.ensure_future(w.wait()) for w in workers]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
        told_to_stop = stop.is_set()
        stopping.cancel()
    finally:
        sock.close()  # the workers hold their own copies
        codes = await _stop_all(workers)
    # A worker told to stop before it could install its handler ends by the signal
    # itself; it was not serving yet, so nothing was cut short.
    clean = (0, -signal.SIGTERM) if told_to_stop else (0,)
    failed = {w.pid: code for w, code in zip(workers, codes, strict=True) if code not in clean}
    if failed or not told_to_stop:
        raise PunchcardError(f"coupon-query worker(s) ended by themselves: exit codes {failed}")
    log.info("coupon_query_workers_stopped", workers=len(workers))


async def _stop_all(workers: list[asyncio.subprocess.Process]) -> list[int]:
    """SIGTERM every worker still running, wait for them, SIGKILL any that hang."""
    for worker in workers:
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
    codes = []
    for worker in workers:
        try:
            codes.append(await asyncio.wait_for(worker.wait(), _STOP_SECONDS))
        except TimeoutError:
            worker.kill()
            codes.append(await worker.wait())
    return codes


def main() -> int:
    """A worker: serve on the inherited socket until SIGTERM."""
    settings = Settings()
    configure_logging(settings)
    sock = socket.socket(fileno=int(os.environ[SOCKET_FD_VARIABLE]))
    try:
        uvloop.run(serve_worker(settings, sock))
    except PunchcardError as exc:
        print(f"punchcard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
