"""The receipt consumer as a running service: the composition root.

Builds the handler from settings and hands it to the shared consumer service, which runs
the Kafka loop, the outbox relay, ``/healthz`` and ``/metrics``, and stops on SIGTERM.
"""

from __future__ import annotations

from punchcard_platform.db import Database
from punchcard_platform.service import run_consumer_service
from punchcard_platform.settings import Settings

from punchcard_receipt_consumer.handler import ReceiptHandler

__all__ = ["DEFAULT_PORT", "serve"]

DEFAULT_PORT = 8081


async def serve(settings: Settings) -> None:
    """Consume ``pos.receipts.v1`` until stopped; what ``punchcard serve receipt-consumer`` runs."""
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    try:
        await run_consumer_service(
            settings,
            name=ReceiptHandler.name,
            topic=settings.topics.receipts,
            handler=ReceiptHandler(db, settings.topics),
            db=db,
            default_port=DEFAULT_PORT,
        )
    finally:
        await db.close()
