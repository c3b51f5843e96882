"""The composition root of the returns service: what ``punchcard serve returns`` runs."""

from __future__ import annotations

import asyncio

from punchcard_platform.db import Database
from punchcard_platform.service import ConsumerWiring, serve_consumer
from punchcard_platform.settings import Settings

from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

__all__ = ["DEFAULT_PORT", "serve"]

DEFAULT_PORT = 8082


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Consume ``pos.returns.v1``, resolve waiting returns and relay outcomes until SIGTERM."""

    def wire(db: Database) -> ConsumerWiring:
        resolver = PendingReturnResolver(settings, db)
        handler = ReturnHandler(settings, db, on_parked=resolver.wake)
        return ConsumerWiring(handler, [resolver.run])

    await serve_consumer(
        settings,
        name="returns",
        topic=settings.topics.returns,
        default_port=DEFAULT_PORT,
        wire=wire,
        stop=stop,
    )
