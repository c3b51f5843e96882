"""Running a consumer service: the loop, the outbox relay and the health port, until SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.health import serve_health, stop_on_signals
from punchcard_platform.records import BatchHandler
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings

__all__ = ["BackgroundTask", "run_consumer_service"]

log = structlog.get_logger(__name__)

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]


async def run_consumer_service(
    settings: Settings,
    *,
    name: str,
    topic: str,
    handler: BatchHandler[Any],
    db: Database,
    default_port: int,
    extra_tasks: Sequence[BackgroundTask] = (),
    stop: asyncio.Event | None = None,
) -> None:
    """Consume, relay the outbox and answer health checks until stopped.

    If any part fails for good, the others are stopped too and the error is raised, so a
    supervisor restarts the whole process instead of leaving half of it running.
    """
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    loop = ConsumerLoop(
        settings, handler=handler, topic=topic, group_id=settings.consumer_group(name)
    )
    relay = OutboxRelay(settings, db)
    port = settings.port_for(default_port)
    parts: list[BackgroundTask] = [
        loop.run,
        relay.run,
        lambda s: serve_health(settings.http_host, port, db.is_ready, s),
        *extra_tasks,
    ]
    log.info("service starting", service=name, topic=topic, http_port=port)
    tasks = [asyncio.ensure_future(part(stop)) for part in parts]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # One part ending means either stop was set or it failed: bring the rest down.
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        log.info("service stopped", service=name)
