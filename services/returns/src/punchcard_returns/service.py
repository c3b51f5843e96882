"""The composition root of the returns service: what ``punchcard serve returns`` runs."""

from __future__ import annotations

from punchcard_platform.db import Database
from punchcard_platform.service import run_consumer_service
from punchcard_platform.settings import Settings

from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

__all__ = ["DEFAULT_PORT", "serve"]

DEFAULT_PORT = 8082


async def serve(settings: Settings) -> None:
    """Consume ``pos.returns.v1``, resolve waiting returns and relay outcomes until SIGTERM."""
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    try:
        resolver = PendingReturnResolver(settings, db)
        handler = ReturnHandler(settings, db, on_parked=resolver.wake)
        await run_consumer_service(
            settings,
            name="returns",
            topic=settings.topics.returns,
            handler=handler,
            db=db,
            default_port=DEFAULT_PORT,
            extra_tasks=[resolver.run],
        )
    finally:
        await db.close()
