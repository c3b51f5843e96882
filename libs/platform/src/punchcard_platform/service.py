"""Running a consumer service: the loop, the outbox relay and the health port, until SIGTERM.

The health port opens first and the service then waits for PostgreSQL and Kafka, saying
so in its log and answering /readyz with 503, instead of exiting: under a supervisor an
exit while a dependency is down is only a crash loop. Settings that can never work (a
malformed URL, a wrong password, a taken port) still end the process with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.health import serve_health, stop_on_signals
from punchcard_platform.heap import freeze_startup_objects
from punchcard_platform.records import BatchHandler
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings

__all__ = ["BackgroundTask", "ConsumerWiring", "serve_consumer"]

log = structlog.get_logger(__name__)

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsumerWiring:
    """What a service builds once its database is there: its handler and any extra tasks."""

    handler: BatchHandler[Any]
    extra_tasks: Sequence[BackgroundTask] = field(default_factory=tuple)


class _Readiness:
    """/readyz: ready only while the database and the broker answer and the loop is not halted."""

    def __init__(self) -> None:
        self.db: Database | None = None
        self.loop: ConsumerLoop[Any] | None = None

    async def __call__(self) -> bool:
        loop = self.loop
        if self.db is None or loop is None or not loop.broker_reachable or loop.halted:
            return False
        return await self.db.is_ready()


async def serve_consumer(
    settings: Settings,
    *,
    name: str,
    topic: str,
    default_port: int,
    wire: Callable[[Database], ConsumerWiring],
    stop: asyncio.Event | None = None,
) -> None:
    """Wait for the database, then consume, relay the outbox and answer health checks.

    If any part fails for good, the others are stopped too and the error is raised, so a
    supervisor restarts the whole process instead of leaving half of it running.
    """
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    port = settings.port_for(default_port)
    readiness = _Readiness()
    log.info("service starting", service=name, topic=topic, http_port=port)
    health = asyncio.ensure_future(serve_health(settings.http_host, port, readiness, stop))
    db: Database | None = None
    try:
        db = await Database.connect_when_reachable(settings, stop)
        if db is not None:
            readiness.db = db
            wiring = wire(db)
            loop = ConsumerLoop(
                settings,
                handler=wiring.handler,
                topic=topic,
                group_id=settings.consumer_group(name),
                db=db,
            )
            readiness.loop = loop
            relay = OutboxRelay(settings, db)
            freeze_startup_objects()
            await _run_until_one_ends([loop.run, relay.run, *wiring.extra_tasks], stop)
    finally:
        stop.set()
        await asyncio.gather(health, return_exceptions=True)
        if db is not None:
            await db.close()
        log.info("service stopped", service=name)
    if health.done() and not health.cancelled() and health.exception() is not None:
        raise health.exception()  # type: ignore[misc]


async def _run_until_one_ends(parts: Sequence[BackgroundTask], stop: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(part(stop)) for part in parts]
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        # One part ending means either stop was set or it failed: bring the rest down.
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        waiter.cancel()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
